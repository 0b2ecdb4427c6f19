"""One agent as a process: started in a session of its own, held to its time limit,
and stopped with its whole process group.

Kept apart from :mod:`~sympozium_schedule.runtime.runner`, which decides which run
goes when and writes its status: whatever that bookkeeping does, an agent (and
anything it left running) must not outlive its time limit, its AgentRun or the
runner, and the signals and grace periods that ensure it are this module's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sympozium_schedule.ports.store import Obj
from sympozium_schedule.runtime.agent import Output

__all__ = ["Background", "Tracked", "kill", "supervise"]

_KILL_GRACE = 3.0
_DRAIN_GRACE = 5.0

# Runs a coroutine as a task its owner waits for before it stops (LocalRunner._background).
Background = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(slots=True)
class Tracked:
    obj: Obj
    process: asyncio.subprocess.Process | None = None
    deleted: bool = False  # its AgentRun is gone: no status to write, the folder goes
    stopping: bool = False  # the runner is shutting down: the run is interrupted

    @property
    def cancelled(self) -> bool:
        return self.deleted or self.stopping


async def supervise(tracked: Tracked, argv: tuple[str, ...], env: dict[str, str], cwd: Path,
                    timeout: timedelta, output: Output,
                    background: Background) -> tuple[int | None, str]:
    """Start the agent, copy its output, enforce the time limit. When the agent
    exits, whatever it left running in its process group is killed too."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    tracked.process = process
    pumps = [asyncio.create_task(output.pump(process.stdout, is_stdout=True)),
             asyncio.create_task(output.pump(process.stderr, is_stdout=False))]
    error = ""
    try:
        exit_code: int | None = await asyncio.wait_for(process.wait(), timeout.total_seconds())
    except TimeoutError:
        kill(tracked, background)
        await process.wait()
        exit_code = process.returncode
        error = f"timed out after {timeout} (spec.timeout or the runner's --run-timeout)"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    _, pending = await asyncio.wait(pumps, timeout=_DRAIN_GRACE)
    for pump in pending:
        pump.cancel()
    return exit_code, error


def kill(tracked: Tracked, background: Background) -> None:
    """SIGTERM to the agent's process group now; SIGKILL, in the background, if it
    has not exited after a grace period."""
    process = tracked.process
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)

    async def finish() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), _KILL_GRACE)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    background(finish())
