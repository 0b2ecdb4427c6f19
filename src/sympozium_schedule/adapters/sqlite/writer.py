"""The single writer thread of this process, committing queued jobs in groups.

Writes queue up and the thread commits whatever is queued as one transaction
(group commit), which is what lets a burst of thousands of fires land in a few
transactions. A job that fails in a way that may have left half its writes
undoes the group, and every job of it is then tried in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sympozium_schedule.adapters.sqlite.schema import connect
from sympozium_schedule.adapters.sqlite.tx import Job, Tx
from sympozium_schedule.core.model import format_time
from sympozium_schedule.ports.store import StoreError, Unavailable

Clock = Callable[[], datetime]
_MAX_BATCH = 2000

@dataclass(slots=True)
class Pending:
    job: Job
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def settle_all(results: list[tuple[asyncio.Future[Any], bool, Any]],
               release: Callable[[], None] | None = None) -> None:
    for future, ok, value in results:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    if release is not None:
        # After the callers' continuations, which set_result has just scheduled:
        # they update their caches before any watch of this process sees the writes.
        asyncio.get_running_loop().call_soon(release)


class Writer:
    """The single writer thread of this process, committing queued jobs in groups."""

    def __init__(self, path: Path, clock: Clock, on_commit: Callable[[], None],
                 keep_changes: int, event_ttl: timedelta, on_failure: Callable[[], None]):
        self._path = path
        self._clock = clock
        self._on_commit = on_commit
        self._on_failure = on_failure
        self._reader_suspect = False
        self._holds: list[int] = []
        self._holds_lock = threading.Lock()
        self._pending_hold: int | None = None
        self._keep = keep_changes
        self._event_ttl = event_ttl
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._commits = 0
        self._thread.start()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(Pending(job, future, loop))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stopping = False
                while len(batch) < _MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                if conn is None:
                    if self._reader_suspect:
                        # The reader shares the file's descriptors and shared memory
                        # with any connection this process opens: reopen it first, now
                        # that the cause may be fixed (see SQLiteStore._reopen_reader).
                        self._on_failure()
                        self._reader_suspect = False
                    try:
                        conn = connect(self._path)
                    except sqlite3.Error as exc:
                        self._settle(batch, [(False, unavailable(exc))] * len(batch), None)
                        continue
                outcomes, healthy = self._commit(conn, batch)
                if not healthy:
                    # A connection that failed (read-only file, disk full) can stay
                    # failed after the cause is fixed: open a fresh one next time, once
                    # the reader has let go of the file too (see on_failure).
                    conn.close()
                    conn = None
                    self._reader_suspect = True
                self._settle(batch, outcomes, self._take_hold())
                if any(ok for ok, _ in outcomes):
                    self._on_commit()
                if stopping:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _commit(self, conn: sqlite3.Connection,
                batch: list[Pending]) -> tuple[list[tuple[bool, Any]], bool]:
        """Commit a group: each job's outcome, and False when the database itself failed."""
        healthy = True
        try:
            outcomes = self._transaction(conn, batch)
        except Poisoned:
            # A job failed in a way that may have left half its writes: undo the
            # group and give every job a transaction of its own.
            outcomes = []
            for pending in batch:
                try:
                    outcomes.extend(self._transaction(conn, [pending]))
                except Poisoned as exc:
                    outcomes.append((False, exc.cause))
                except sqlite3.Error as exc:
                    healthy = False
                    outcomes.append((False, unavailable(exc)))
        except sqlite3.Error as exc:
            healthy = False
            outcomes = [(False, unavailable(exc))] * len(batch)
        return outcomes, healthy

    # --- holding this process's watches back until the writers have heard back ----------
    #
    # A watch that read this process's newest changes before their writers got the
    # results would hand a controller its own writes as news (it has not updated
    # its cache yet): a second decision for every fire. So from just before a group
    # commits until its results are delivered, watches here read only below it.

    def _hold(self, first: int) -> None:
        with self._holds_lock:
            self._holds.append(first)
            self._pending_hold = first

    def _take_hold(self) -> Callable[[], None] | None:
        first, self._pending_hold = self._pending_hold, None
        if first is None:
            return None

        def release() -> None:
            with self._holds_lock, contextlib.suppress(ValueError):
                self._holds.remove(first)

        return release

    def watch_limit(self) -> int | None:
        """Watches of this process read changes below this revision (None: all)."""
        with self._holds_lock:
            return min(self._holds) if self._holds else None

    def _settle(self, batch: list[Pending], outcomes: list[tuple[bool, Any]],
                release: Callable[[], None] | None) -> None:
        # One wake-up of each event loop per group, not one per job: with thousands of
        # jobs a group, the self-pipe writes were a visible share of the burst profile.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for pending, (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, ok, value))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(settle_all, results, release)
                release = None  # released by the first loop's delivery
            except RuntimeError:  # a loop closed meanwhile
                continue
        if release is not None:
            release()

    def _transaction(self, conn: sqlite3.Connection, batch: list[Pending]) -> list[tuple[bool, Any]]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            tx = Tx(conn, start, self._clock())
            outcomes: list[tuple[bool, Any]] = []
            for pending in batch:
                try:
                    outcomes.append((True, pending.job(tx)))
                except StoreError as exc:
                    outcomes.append((False, exc))
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    raise Poisoned(exc) from exc
            tx.flush()
            if tx.revision != start:
                conn.execute("UPDATE meta SET value=? WHERE key='revision'", (tx.revision,))
                self._commits += 1
                if self._commits % 500 == 0:
                    self._compact(tx)
                self._hold(start + 1)
            conn.execute("COMMIT")
            return outcomes
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            release = self._take_hold()
            if release is not None:
                release()
            raise

    def _compact(self, tx: Tx) -> None:
        """Trim the change log and expire Events (Kubernetes keeps Events an hour)."""
        horizon = tx.revision - self._keep
        if horizon > 0:
            tx.conn.execute("DELETE FROM changes WHERE rv <= ?", (horizon,))
            tx.conn.execute(
                "UPDATE meta SET value=max(value, ?) WHERE key='compacted'", (horizon,)
            )
        cutoff = format_time(tx.now - self._event_ttl)
        tx.conn.execute(
            "DELETE FROM objects WHERE kind='Event' AND "
            "json_extract(body, '$.metadata.creationTimestamp') < ?",
            (cutoff,),
        )


class Poisoned(Exception):
    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


def unavailable(exc: sqlite3.Error) -> Unavailable:
    return Unavailable(f"the store could not be written ({exc})")


