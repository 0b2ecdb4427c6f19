"""The console's settings, apart from the server (aiohttp): ``run`` reads its flags into
them at once and starts the server only once the scheduler is armed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 8730


@dataclass(slots=True)
class ConsoleSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # When the port was not chosen by the person (the default) and is taken, listen on
    # a free one instead of refusing to start: two schedulers on one machine both get a
    # console.
    port_fallback: bool = True
    read_only: bool = False
    allowed_origins: tuple[str, ...] = ()
    queue_size: int = 1000
    heartbeat: float = 15.0
    # Called once with the address (and the embedded token) when the console listens.
    announce: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
