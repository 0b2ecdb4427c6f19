"""Helpers every suite shares: waiting for what another process or task does, a free
port, seeding a store directly.

A timeout always names what was awaited and the last value seen. Suites bind their
own patience with ``functools.partial``: a loaded 2-core CI machine needs far more
than a passing test ever waits.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sympozium_schedule.adapters.sqlite import SQLiteStore

T = TypeVar("T")


def _timed_out(timeout: float, what: str, value: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {value!r})")


def wait_for(check: Callable[[], T], *, timeout: float, what: str = "the condition",
             interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, value)
        time.sleep(interval)


async def eventually(check: Callable[[], Any | Awaitable[Any]], *, timeout: float,
                     what: str = "the condition", interval: float = 0.02) -> Any:
    """:func:`wait_for` inside an event loop: ``check`` may be sync or async, and the
    loop keeps running the code under test between looks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise _timed_out(timeout, what, value)
        await asyncio.sleep(interval)


def free_port() -> int:
    """A loopback port nobody listens on right now (the usual small race is accepted:
    the servers started on it fail loudly if it was taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def seed_store(data_dir: Path, *objects: dict[str, Any]) -> None:
    """Create objects straight in a data directory's SQLite store, as another writer
    could: ones ``apply`` would refuse, or that only the scheduler writes (Events)."""
    async def write() -> None:
        store = SQLiteStore(data_dir / "store.db")
        try:
            for obj in objects:
                await store.create(obj)
        finally:
            await store.close()

    asyncio.run(write())
