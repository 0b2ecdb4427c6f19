"""What the local runner is given: the operator's choices and how to start a run's bridge.

Kept apart from :mod:`~sympozium_schedule.runtime.runner` because they are built
where the process is put together (``runtime.app`` from the command line,
``runtime.messaging`` the bridge): saying what the runner gets should not take
importing how it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sympozium_schedule.ports.store import Obj
from sympozium_schedule.runtime.agent import BUILTIN_AGENTS, LOG_LIMIT
from sympozium_schedule.runtime.sandbox import Sandbox

__all__ = ["BridgeFactory", "RunnerSettings"]

# Runs the IPC bridge of one run until the event is set, then lets it send what is
# still queued and return.
BridgeFactory = Callable[[Obj, Path, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    data_dir: Path
    # Agents by name; an instance picks one with the sympozium.ai/agent annotation.
    agents: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(BUILTIN_AGENTS))
    default_agent: str = "demo"
    default_timeout: timedelta = timedelta(minutes=10)
    max_parallel: int = 4
    # Variables the operator passes to every agent (--agent-env), values resolved.
    env: Mapping[str, str] = field(default_factory=dict)
    sandbox: Sandbox | None = None
    log_limit: int = LOG_LIMIT
