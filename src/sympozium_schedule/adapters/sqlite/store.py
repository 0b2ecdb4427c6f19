"""SQLiteStore: the :class:`~sympozium_schedule.ports.store.Store` port on one SQLite file.

The rooms: ``schema`` (the tables, opening the file), ``codec`` (objects as
rows), ``tx`` (one transaction's statements), ``jobs`` (what each write does),
``writer`` (the writer thread and its group commits), ``watch`` (following the
change log). This module puts them together behind the port.

Concurrency. Each process has one writer thread; reads run on the event loop
on a separate connection, and WAL keeps them from blocking on the writer.
Watches are woken at once by commits made in this process, and by a file
follower for commits of other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sympozium_schedule.adapters.sqlite import ops
from sympozium_schedule.adapters.sqlite.child import ProcessWriter
from sympozium_schedule.adapters.sqlite.codec import MAX_OBJECT_BYTES
from sympozium_schedule.adapters.sqlite.schema import (
    SCHEMA,
    check_schema,
    connect,
    connect_for_reading,
    has_schema,
)
from sympozium_schedule.adapters.sqlite.tx import assemble
from sympozium_schedule.adapters.sqlite.watch import Watches
from sympozium_schedule.adapters.sqlite.writer import ThreadWriter, Writer
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import (
    GroupResults,
    Known,
    Labels,
    Listing,
    NotFound,
    Obj,
    Ref,
    Unavailable,
    WatchEvent,
    Write,
    labels_match,
)

__all__ = ["MAX_OBJECT_BYTES", "SQLiteStore"]

Clock = Callable[[], datetime]
Rows = list[Any]  # module level: inside SQLiteStore, ``list`` names the port method


class SQLiteStore:
    """An embedded, multi-process object store on one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Clock | None = None,
        poll_interval: float = 0.1,
        max_poll_interval: float = 1.0,
        follow_other_processes: bool = True,
        keep_changes: int = 200_000,
        event_ttl: timedelta = timedelta(hours=1),
        writer: Literal["thread", "process"] = "thread",
    ):
        """``writer``: where writes are committed; ``"process"`` (the scheduler's) runs
        them beside this process instead of in a thread of it (see ``child``)."""
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            init, _ = connect_for_reading(self.path)
            try:
                check_schema(init, self.path)
                try:
                    init.executescript(SCHEMA)
                except sqlite3.OperationalError:
                    # A store that exists but cannot be written right now (read-only
                    # file or disk): open it for reading; writes fail until it recovers.
                    if not has_schema(init):
                        raise
            finally:
                init.close()
            self._reader, self._degraded = connect_for_reading(self.path)
            self._degraded_since = time.monotonic()
        except (sqlite3.Error, OSError) as exc:
            raise Unavailable(f"cannot open the store at {self.path}: {exc}") from exc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: Writer | None = None
        self._watches = Watches(self.path, self._read, self._watch_limit, poll=poll_interval,
                                max_poll=max_poll_interval, follow=follow_other_processes)
        if writer == "process":
            process = ProcessWriter(self.path, self._watches.notify, keep_changes=keep_changes,
                                    event_ttl=event_ttl, clock=clock)
            process.start()  # beside the caller's start-up, not on its first write's path
            self._writer = process
        else:
            self._writer = ThreadWriter(self.path, self._clock, self._watches.notify,
                                        keep_changes=keep_changes, event_ttl=event_ttl,
                                        before_reconnect=self._reopen_reader_and_wait)
        self._closed = False

    # --- plumbing -------------------------------------------------------------------------

    def _watch_limit(self) -> int | None:
        return self._writer.watch_limit() if self._writer is not None else None

    async def _write(self, prepared: ops.Prepared) -> Any:
        if self._closed or self._writer is None:
            raise Unavailable("the store is closed")
        self._loop = asyncio.get_running_loop()
        return ops.settle(prepared, await self._writer.submit(prepared.op))

    def _reopen_reader_and_wait(self) -> None:
        """Called by the writer thread before it reconnects after a failed write.

        SQLite shares, within a process, a file's descriptors and its WAL
        shared memory among all connections to it. A reader opened while the
        file was read-only keeps a read-only mapping, which a new writer would
        join and stay broken after the cause is fixed. So the reader is reopened
        first, on its loop, and the writer waits for that.
        """
        loop = self._loop
        if loop is None or self._closed:
            return
        done = threading.Event()

        def reopen() -> None:
            try:
                if not self._closed:
                    with contextlib.suppress(sqlite3.Error):
                        self._reader.close()
                    with contextlib.suppress(sqlite3.Error):
                        self._reader, self._degraded = connect_for_reading(self.path)
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(reopen)
        except RuntimeError:  # the loop is closed
            return
        done.wait(2.0)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> Rows:
        if self._degraded and time.monotonic() - self._degraded_since > 1.0:
            self._degraded_since = time.monotonic()
            with contextlib.suppress(sqlite3.Error):
                fresh = connect(self.path)
                self._reader.close()
                self._reader, self._degraded = fresh, False
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"the store could not be read ({exc})") from exc

    # --- the port -------------------------------------------------------------------------

    async def get(self, ref: Ref) -> Obj:
        rows = self._read(
            "SELECT body, status, rv FROM objects WHERE kind=? AND namespace=? AND name=?",
            (ref.kind.value, ref.namespace, ref.name),
        )
        if not rows:
            raise NotFound(f"{ref} not found")
        return assemble(*rows[0])

    async def list(
        self, kind: Kind, *, namespace: str | None = None,
        labels: Labels | None = None,
    ) -> Listing:
        try:
            self._reader.execute("BEGIN")
            try:
                revision = self._reader.execute(
                    "SELECT value FROM meta WHERE key='revision'").fetchone()[0]
                where, params = ["kind=?"], [kind.value]
                if namespace is not None:
                    where.append("namespace=?")
                    params.append(namespace)
                for key, want in (labels or {}).items():
                    # In SQL, so objects that do not match are never parsed (the router
                    # counts an agent's schedules among all of a namespace's).
                    path = '$.metadata.labels."' + key.replace('"', "") + '"'
                    if want is None:
                        where.append("json_extract(body, ?) IS NOT NULL")
                        params.append(path)
                    else:
                        where.append("json_extract(body, ?) = ?")
                        params.extend((path, want))
                rows = self._reader.execute(
                    f"SELECT body, status, rv FROM objects WHERE {' AND '.join(where)} "
                    "ORDER BY namespace, name", params).fetchall()
            finally:
                self._reader.execute("COMMIT")
        except sqlite3.Error as exc:
            raise Unavailable(f"the store could not be read ({exc})") from exc
        if self._writer is not None:
            self._writer.seen(revision)
        items = [assemble(*row) for row in rows]
        return Listing([o for o in items if labels_match(o, labels)], str(revision))

    def watch(
        self, kind: Kind, *, resource_version: str, namespace: str | None = None,
        labels: Labels | None = None, known: Known | None = None,
    ) -> AsyncIterator[WatchEvent]:
        return self._watches.watch(kind, resource_version=resource_version, namespace=namespace,
                                   labels=labels, known=known)

    async def create(self, obj: Obj) -> Obj:
        result: Obj = await self._write(ops.create(obj))
        return result

    async def update(self, obj: Obj) -> Obj:
        result: Obj = await self._write(ops.update(obj))
        return result

    async def patch_status(
        self, ref: Ref, patch: Mapping[str, Any], *, resource_version: str | None = None
    ) -> Obj:
        result: Obj = await self._write(ops.patch_status(ref, patch, resource_version))
        return result

    async def delete(self, ref: Ref, *, uid: str | None = None) -> None:
        await self._write(ops.delete(ref, uid, missing_ok=False))

    async def write_groups(self, groups: Sequence[Sequence[Write]]) -> GroupResults:
        """All groups as one job of the writer: one queue entry, one future, one
        wake-up, instead of one each per write (what a burst of fires spends most on).

        The objects of Create writes are handed over: the store keeps and completes
        them (the copy create() makes showed in the burst profile)."""
        prepared = ops.groups(groups)
        if prepared is None:
            return []
        result: GroupResults = await self._write(prepared)
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._watches.closed = True
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
        self._watches.close()
        self._reader.close()

    def revision(self) -> int:
        """The store-wide revision (for tests and benchmarks: counts writes)."""
        rows = self._read("SELECT value FROM meta WHERE key='revision'")
        return int(rows[0][0])
