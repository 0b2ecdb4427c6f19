"""The writer of a store, as its callers see it: submit an op, await what it came to.

Two of them run the same :class:`~sympozium_schedule.adapters.sqlite.engine.Engine`:
:class:`ThreadWriter`, a thread of this process (the CLI, tests: nothing to
start), and ``child.ProcessWriter``, a process of its own, for the scheduler:
there the SQL and the writer's Python run beside the event loop instead of
taking turns with it for the GIL.

Holding this process's watches back. A watch that read this process's newest
changes before their writers got the results would hand a controller its own
writes as news (it has not updated its cache yet): a second decision for every
fire. So while a write is in flight, watches here read only below the
revision this process knew of when it was submitted, until the write's result
has been delivered (and its caller's continuation has run).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sympozium_schedule.adapters.sqlite.engine import Engine, Op, Outcome

Clock = Callable[[], datetime]
MAX_BATCH = 2000  # ops per transaction at most


@dataclass(slots=True)
class Pending:
    ident: int
    op: Op
    future: asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop


def _deliver(results: list[tuple[asyncio.Future[Outcome], Outcome]],
             release: Callable[[], None]) -> None:
    for future, outcome in results:
        if not future.done():
            future.set_result(outcome)
    # After the callers' continuations, which set_result has just scheduled: they
    # update their caches before any watch of this process sees the writes.
    asyncio.get_running_loop().call_soon(release)


class Writer(abc.ABC):
    """What both writers share: submitting, holding watches back, delivering results."""

    def __init__(self, on_commit: Callable[[], None]):
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._holds: dict[int, int] = {}  # request -> the revision watches stay below
        self._known = 0  # a revision the store has reached (a lower bound of the current one)
        self._next = 0

    def submit(self, op: Op) -> asyncio.Future[Outcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        with self._lock:
            self._next += 1
            ident = self._next
            self._holds[ident] = self._known + 1
        self._send(Pending(ident, op, future, loop))
        return future

    @abc.abstractmethod
    def _send(self, pending: Pending) -> None:
        """Hand ``pending`` to the committing side (a thread or a process)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Commit what was handed over, then end."""

    def watch_limit(self) -> int | None:
        """Watches of this process read changes below this revision (None: all)."""
        with self._lock:
            return min(self._holds.values()) if self._holds else None

    def seen(self, revision: int) -> None:
        """The store has reached ``revision`` (a read saw it)."""
        with self._lock:
            self._known = max(self._known, revision)

    def _settle(self, batch: list[Pending], outcomes: list[Outcome], revision: int | None) -> None:
        """Deliver results (from the writer's thread): one wake-up per event loop."""
        if revision is not None:
            self.seen(revision)
        idents = [p.ident for p in batch]

        def release() -> None:
            with self._lock:
                for ident in idents:
                    self._holds.pop(ident, None)

        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Outcome]]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
        loops = list(by_loop.items())
        for i, (loop, results) in enumerate(loops):
            last = i == len(loops) - 1
            try:
                loop.call_soon_threadsafe(_deliver, results, release if last else _nothing)
            except RuntimeError:  # a loop closed meanwhile
                if last:
                    release()
        if not loops:
            release()
        if any(ok for ok, _ in outcomes):
            self._on_commit()


def _nothing() -> None:
    return None


class ThreadWriter(Writer):
    """The engine in a thread of this process."""

    def __init__(self, path: Path, clock: Clock, on_commit: Callable[[], None], *,
                 keep_changes: int, event_ttl: timedelta,
                 before_reconnect: Callable[[], None] | None = None):
        super().__init__(on_commit)
        self._clock = clock
        self._engine = Engine(path, keep_changes=keep_changes, event_ttl=event_ttl,
                              before_reconnect=before_reconnect)
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def _send(self, pending: Pending) -> None:
        self._queue.put(pending)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stopping = False
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                outcomes, revision = self._engine.commit([p.op for p in batch], self._clock())
                self._settle(batch, outcomes, revision)
                if stopping:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._engine.close()

