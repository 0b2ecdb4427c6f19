"""SQLiteStore: the :class:`~sympozium_schedule.ports.store.Store` port on one SQLite file.

Layout. ``objects`` holds one row per object; its status is a column of its
own so a status write (one per fire) does not re-serialise the whole object.
``changes`` is the change log: one row per write, keyed by the store-wide
revision that is every object's ``resourceVersion``. ``owners`` indexes
ownerReferences so deleting a schedule deletes its runs, as Kubernetes'
garbage collector would.

Concurrency. Each process has one writer thread. Writes queue up and the
thread commits whatever is queued as one transaction (group commit), which is
what lets a burst of thousands of fires land in a few transactions. Reads
run on the event loop on a separate connection; WAL keeps them from blocking
on the writer. Watches poll the change log (an indexed range scan, cheap
enough at 10 Hz) and are woken at once by commits made in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from watchfiles import awatch

from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import Kind, check_name, format_time, is_dns1123_label
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    Create,
    EventType,
    Expired,
    GroupResults,
    Invalid,
    Known,
    Labels,
    Listing,
    NotFound,
    Obj,
    PatchStatus,
    Ref,
    StoreError,
    Unavailable,
    WatchEvent,
    Write,
    WriteResult,
    labels_match,
)

Clock = Callable[[], datetime]
Events = list[WatchEvent]
Rows = list[Any]  # module level: inside SQLiteStore, ``list`` names the port method

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    uid TEXT NOT NULL, rv INTEGER NOT NULL, owner TEXT, body TEXT NOT NULL, status TEXT,
    UNIQUE (kind, namespace, name)
);  -- a rowid table: objects are kilobytes, too big for WITHOUT ROWID's b-tree
CREATE INDEX IF NOT EXISTS objects_by_owner ON objects (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    rv INTEGER PRIMARY KEY, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    type TEXT NOT NULL, body TEXT
);
-- Without it, a watch of a quiet kind rescans every newer change of every kind.
CREATE INDEX IF NOT EXISTS changes_by_kind ON changes (kind, rv);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0), ('schema', 2);
"""

# Kinds whose status lives behind a /status subresource: create and update ignore it.
_STATUS_KINDS = frozenset({Kind.SCHEDULE, Kind.AGENT_RUN, Kind.INSTANCE})
_MANAGED_META = ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name")
MAX_OBJECT_BYTES = 1_500_000  # etcd's default request limit: the same ceiling as a cluster
_MAX_BATCH = 2000


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        with contextlib.suppress(sqlite3.OperationalError):
            # Fails on a read-only file or directory; the mode persists in the file, so a
            # store created by this class is in WAL mode already.
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-4096")  # 4 MiB a connection: counts against the RSS budget
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _connect_for_reading(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A reader, and whether it is degraded. When the file or its directory cannot be
    written, a WAL database cannot even create its shared-memory file, so SQLite
    refuses a normal or read-only open; it then reads the file as immutable, which
    is accurate while nobody can write it, and the store retries a normal open."""
    try:
        return _connect(path), False
    except sqlite3.OperationalError:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                               isolation_level=None, check_same_thread=False, timeout=10.0)
        return conn, True


def _dumps(value: Any) -> str:
    # orjson: an order of magnitude faster than json on the fire path, and it refuses
    # what UTF-8 cannot hold (lone surrogates) by itself.
    return orjson.dumps(value).decode()


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a store written by an incompatible version, instead of misreading it."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    except sqlite3.OperationalError:
        return  # a new file
    if row is not None and row[0] != SCHEMA_VERSION:
        raise Unavailable(f"the store at {path} has format {row[0]}; this version reads format "
                          f"{SCHEMA_VERSION}. Move it aside (or use another --data-dir).")


def _has_schema(conn: sqlite3.Connection) -> bool:
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return {"objects", "changes", "meta"} <= tables


def _storable(value: Any, what: str) -> str:
    """``value`` as JSON text the database can hold, or :class:`Invalid`: not JSON at
    all, or text with lone surrogates (valid in Python, not in UTF-8)."""
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise Invalid(f"{what} cannot be stored: {exc}") from exc


def _assemble(body: str, status: str | None, rv: int) -> Obj:
    obj: Obj = orjson.loads(body)
    obj["metadata"]["resourceVersion"] = str(rv)
    if status is not None:
        obj["status"] = orjson.loads(status)
    return obj


def _owner(obj: Obj) -> str | None:
    """The uid whose deletion deletes this object: its controller, else its first
    owner. (Kubernetes waits for every owner; every owner here is the one controller.)"""
    refs = [r for r in obj.get("metadata", {}).get("ownerReferences") or []
            if isinstance(r, dict) and r.get("uid")]
    for ref in refs:
        if ref.get("controller"):
            return str(ref["uid"])
    return str(refs[0]["uid"]) if refs else None


class _UidSource:
    """Random (version 4) UUIDs from a buffer: one getrandom() call per thousand
    uids instead of one per object, which showed up in the burst profile."""

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            if self._at + 16 > len(self._buffer):
                self._buffer, self._at = os.urandom(16 * 1024), 0
            chunk = self._buffer[self._at:self._at + 16]
            self._at += 16
        return str(uuid.UUID(bytes=chunk, version=4))


_UIDS = _UidSource()


class _Tx:
    """One write transaction, shared by every job in a group commit.

    Change-log rows are collected and inserted in one executemany at the end:
    with thousands of writes a group, one statement per row showed in profiles.
    """

    def __init__(self, conn: sqlite3.Connection, revision: int, now: datetime):
        self.conn = conn
        self.revision = revision
        self.now = now
        self.changes: list[tuple[int, str, str, str, str, str | None]] = []

    def bump(self) -> int:
        self.revision += 1
        return self.revision

    def row(self, kind: Kind, namespace: str, name: str) -> tuple[str, int, str, str | None] | None:
        found: tuple[str, int, str, str | None] | None = self.conn.execute(
            "SELECT uid, rv, body, status FROM objects WHERE kind=? AND namespace=? AND name=?",
            (kind.value, namespace, name),
        ).fetchone()
        return found

    def insert(self, kind: Kind, namespace: str, name: str, uid: str, rv: int, owner: str | None,
               body: str, status: str | None) -> None:
        """A new row; sqlite3.IntegrityError when the name is taken."""
        self.conn.execute(
            "INSERT INTO objects (kind, namespace, name, uid, rv, owner, body, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind.value, namespace, name, uid, rv, owner, body, status),
        )

    def change(self, kind: Kind, namespace: str, name: str, rv: int, change: EventType,
               body: str | None = None) -> None:
        self.changes.append((rv, kind.value, namespace, name, change.value, body))

    def flush(self) -> None:
        if self.changes:
            self.conn.executemany(
                "INSERT INTO changes (rv, kind, namespace, name, type, body) "
                "VALUES (?, ?, ?, ?, ?, ?)", self.changes)
            self.changes = []

    def patch_status(self, kind: Kind, namespace: str, name: str, rv: int, patch: str,
                     expected: str | None) -> tuple[str, str] | None:
        """Merge ``patch`` into status in one statement (SQLite's json_patch is RFC
        7386's merge patch). None when nothing was written: a missing object, a stale
        version, a patch that changes nothing or a result too large; the caller asks."""
        found: tuple[str, str] | None = self.conn.execute(
            "UPDATE objects SET rv=?, status=json_patch(coalesce(status, '{}'), ?) "
            "WHERE kind=? AND namespace=? AND name=? AND (? IS NULL OR rv=?) "
            "AND json_patch(coalesce(status, '{}'), ?) IS NOT coalesce(status, '{}') "
            "AND length(body) + length(json_patch(coalesce(status, '{}'), ?)) <= ? "
            "RETURNING body, status",
            (rv, patch, kind.value, namespace, name, expected, expected, patch, patch,
             MAX_OBJECT_BYTES),
        ).fetchone()
        if found is not None:
            self.change(kind, namespace, name, rv, EventType.MODIFIED)
        return found

    def put(self, kind: Kind, namespace: str, name: str, uid: str, rv: int, owner: str | None,
            body: str, status: str | None, change: EventType) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, uid, rv, owner, body, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind.value, namespace, name, uid, rv, owner, body, status),
        )
        self.change(kind, namespace, name, rv, change)

    def remove(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        """Delete one object and, depth first, everything it owns."""
        found = self.row(kind, namespace, name)
        if found is None:
            return
        owned = self.conn.execute(
            "SELECT kind, namespace, name, uid FROM objects WHERE owner=?", (uid,)
        ).fetchall()
        for child_kind, child_ns, child_name, child_uid in owned:
            self.remove(Kind(child_kind), child_ns, child_name, child_uid)
        rv = self.bump()
        self.conn.execute(
            "DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
            (kind.value, namespace, name),
        )
        last = _assemble(found[2], found[3], rv)  # stamped with the deletion's version
        self.change(kind, namespace, name, rv, EventType.DELETED, _dumps(last))


Job = Callable[[_Tx], Any]


@dataclass(slots=True)
class _Pending:
    job: Job
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle_all(results: list[tuple[asyncio.Future[Any], bool, Any]],
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


class _Writer:
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
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._commits = 0
        self._thread.start()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Pending(job, future, loop))
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
                        conn = _connect(self._path)
                    except sqlite3.Error as exc:
                        self._settle(batch, [(False, _unavailable(exc))] * len(batch), None)
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
                batch: list[_Pending]) -> tuple[list[tuple[bool, Any]], bool]:
        """Commit a group: each job's outcome, and False when the database itself failed."""
        healthy = True
        try:
            outcomes = self._transaction(conn, batch)
        except _Poisoned:
            # A job failed in a way that may have left half its writes: undo the
            # group and give every job a transaction of its own.
            outcomes = []
            for pending in batch:
                try:
                    outcomes.extend(self._transaction(conn, [pending]))
                except _Poisoned as exc:
                    outcomes.append((False, exc.cause))
                except sqlite3.Error as exc:
                    healthy = False
                    outcomes.append((False, _unavailable(exc)))
        except sqlite3.Error as exc:
            healthy = False
            outcomes = [(False, _unavailable(exc))] * len(batch)
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

    def _settle(self, batch: list[_Pending], outcomes: list[tuple[bool, Any]],
                release: Callable[[], None] | None) -> None:
        # One wake-up of each event loop per group, not one per job: with thousands of
        # jobs a group, the self-pipe writes were a visible share of the burst profile.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for pending, (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, ok, value))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, results, release)
                release = None  # released by the first loop's delivery
            except RuntimeError:  # a loop closed meanwhile
                continue
        if release is not None:
            release()

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            tx = _Tx(conn, start, self._clock())
            outcomes: list[tuple[bool, Any]] = []
            for pending in batch:
                try:
                    outcomes.append((True, pending.job(tx)))
                except StoreError as exc:
                    outcomes.append((False, exc))
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    raise _Poisoned(exc) from exc
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

    def _compact(self, tx: _Tx) -> None:
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


class _Poisoned(Exception):
    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


def _unavailable(exc: sqlite3.Error) -> Unavailable:
    return Unavailable(f"the store could not be written ({exc})")


class _Pulse:
    """Wakes every waiter when this process commits."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
        # that lands just as the event fires (CPython gh-86296), and a stuck watch then
        # blocks shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


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
    ):
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._poll = poll_interval
        self._max_poll = max_poll_interval
        self._follow = follow_other_processes
        self._file_watchers: dict[asyncio.AbstractEventLoop, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            init, _ = _connect_for_reading(self.path)
            try:
                _check_schema(init, self.path)
                try:
                    init.executescript(_SCHEMA)
                except sqlite3.OperationalError:
                    # A store that exists but cannot be written right now (read-only
                    # file or disk): open it for reading; writes fail until it recovers.
                    if not _has_schema(init):
                        raise
            finally:
                init.close()
            self._reader, self._degraded = _connect_for_reading(self.path)
            self._degraded_since = time.monotonic()
        except (sqlite3.Error, OSError) as exc:
            raise Unavailable(f"cannot open the store at {self.path}: {exc}") from exc
        self._pulses: list[tuple[asyncio.AbstractEventLoop, _Pulse]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer = _Writer(self.path, self._clock, self._notify, keep_changes, event_ttl,
                               self._reopen_reader_and_wait)
        self._closed = False

    # --- plumbing -------------------------------------------------------------------------

    def _notify(self) -> None:
        for loop, pulse in list(self._pulses):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(pulse.fire)

    async def _write(self, job: Job) -> Any:
        if self._closed:
            raise Unavailable("the store is closed")
        self._loop = asyncio.get_running_loop()
        return await self._writer.submit(job)

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
                        self._reader, self._degraded = _connect_for_reading(self.path)
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
                fresh = _connect(self.path)
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
        return _assemble(*rows[0])

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
        items = [_assemble(*row) for row in rows]
        return Listing([o for o in items if labels_match(o, labels)], str(revision))

    async def watch(
        self, kind: Kind, *, resource_version: str, namespace: str | None = None,
        labels: Labels | None = None, known: Known | None = None,
    ) -> AsyncIterator[WatchEvent]:
        try:
            cursor = int(resource_version)
        except ValueError as exc:
            raise Expired(f"resourceVersion {resource_version!r} is not one of this store") from exc
        if self._closed:
            raise Unavailable("the store is closed")
        shown: set[tuple[str, str]] = set()  # objects this watch reported as selected
        pulse = _Pulse()
        entry = (asyncio.get_running_loop(), pulse)
        self._pulses.append(entry)
        self._watch_other_processes()
        wait = self._poll
        try:
            while True:
                if self._closed:
                    raise Unavailable("the store is closed")
                compacted = self._read("SELECT value FROM meta WHERE key='compacted'")[0][0]
                if cursor < compacted:
                    raise Expired(f"resourceVersion {cursor} is older than the change log")
                limit = self._writer.watch_limit()
                rows = self._read(
                    "SELECT rv, namespace, name, type, body FROM changes WHERE kind=? AND rv>? "
                    "AND rv<? ORDER BY rv LIMIT 5000",
                    (kind.value, cursor, limit if limit is not None else 1 << 62))
                if not rows:
                    # Idle: back off (commits here, and in other processes through the
                    # file watcher, wake it at once), so an idle scheduler costs ~nothing.
                    await pulse.wait(wait)
                    wait = min(wait * 2, self._max_poll)
                    continue
                wait = self._poll
                cursor = rows[-1][0]
                for event in self._events(kind, rows, namespace, labels, known, shown):
                    yield event
        finally:
            self._pulses.remove(entry)

    def _watch_other_processes(self) -> None:
        """Wake this loop's watches when another process writes the store: its commits
        land in the WAL file, which watchfiles (inotify) reports within ~20 ms.

        ``step`` is also how often watchfiles' thread wakes while nothing happens (and
        takes the GIL to look at ``stop``): at 5 ms that alone was 0.8% of a core with
        10,000 idle schedules; 20 ms costs a quarter of it, and a CLI command's write
        reaches the controller ~15 ms later, which nobody waiting on a command sees."""
        loop = asyncio.get_running_loop()
        if not self._follow or loop in self._file_watchers or self._closed:
            return
        stop = asyncio.Event()
        wal = self.path.name + "-wal"

        async def follow() -> None:
            with contextlib.suppress(Exception):  # no inotify: the backed-off poll remains
                async for _changes in awatch(self.path.parent, stop_event=stop, recursive=False,
                                             debounce=50, step=20,
                                             watch_filter=lambda _c, p: p.endswith(wal)):
                    for pulse_loop, pulse in list(self._pulses):
                        if pulse_loop is loop:
                            pulse.fire()

        self._file_watchers[loop] = (stop, loop.create_task(follow()))

    def _events(self, kind: Kind, rows: Rows, namespace: str | None,
                labels: Labels | None, known: Known | None,
                shown: set[tuple[str, str]]) -> Events:
        """Coalesce a batch of changes into one event per object (its latest state),
        skipping what the caller already holds."""
        last: dict[tuple[str, str], tuple[int, str, str | None]] = {}
        for rv, ns, name, type_, body in rows:
            if namespace is not None and ns != namespace:
                continue
            last.pop((ns, name), None)
            last[(ns, name)] = (rv, type_, body)
        events: Events = []
        for (ns, name), (rv, type_, body) in last.items():
            if type_ == EventType.DELETED.value:
                obj = orjson.loads(body) if body else {
                    "kind": kind.value, "metadata": {"name": name, "namespace": ns}}
                change = EventType.DELETED
            else:
                if known is not None and _not_newer(known(ns, name), rv):
                    continue
                found = self._read(
                    "SELECT body, status, rv FROM objects WHERE kind=? AND namespace=? AND name=?",
                    (kind.value, ns, name))
                if not found:
                    continue  # deleted after this batch was read: its DELETED row comes next
                obj = _assemble(*found[0])
                change = EventType(type_)
            if labels_match(obj, labels):
                events.append(WatchEvent(change, obj))
                if change is EventType.DELETED:
                    shown.discard((ns, name))
                else:
                    shown.add((ns, name))
            elif change is not EventType.DELETED and (
                    (ns, name) in shown or (known is not None and known(ns, name))):
                # It left the selection: for this watch it is gone, as the API server says.
                shown.discard((ns, name))
                events.append(WatchEvent(EventType.DELETED, obj))
        return events

    async def create(self, obj: Obj) -> Obj:
        result: Obj = await self._write(self._create_job(obj))
        return result

    def _create_job(self, obj: Obj, *, owned: bool = False) -> Job:
        kind, namespace, draft = _prepare(obj, copy=not owned)
        if not draft["metadata"].get("name") and draft["metadata"].get("generateName"):
            base = str(draft["metadata"]["generateName"])
            draft["metadata"]["name"] = base + secrets.token_hex(3)[:5]
        name = _valid_name(draft)
        body_status = draft.pop("status", None)
        status = None if kind in _STATUS_KINDS or body_status is None else _dumps(body_status)
        owner = _owner(draft)
        uid = _UIDS.next()

        def job(tx: _Tx) -> Obj:
            meta = draft["metadata"]
            meta.pop("resourceVersion", None)
            meta.update(uid=uid, namespace=namespace, generation=1,
                        creationTimestamp=format_time(tx.now))
            body = _storable(draft, "the object")
            _check_size(body, status)
            try:  # the primary key decides "already exists": no read first
                tx.insert(kind, namespace, name, uid, tx.revision + 1, owner, body, status)
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"{kind.value} {namespace}/{name} already exists") from exc
            rv = tx.bump()
            tx.change(kind, namespace, name, rv, EventType.ADDED)
            created = dict(draft)  # private to this call since _prepare copied it
            created["metadata"] = dict(meta, resourceVersion=str(rv))
            if body_status is not None and status is not None:
                created["status"] = body_status
            return created

        return job

    async def update(self, obj: Obj) -> Obj:
        kind, namespace, draft = _prepare(obj)
        name = _valid_name(draft)
        expected = draft["metadata"].get("resourceVersion")
        draft.pop("status", None)
        owner = _owner(draft)

        def job(tx: _Tx) -> Obj:
            found = tx.row(kind, namespace, name)
            if found is None:
                raise NotFound(f"{kind.value} {namespace}/{name} not found")
            uid, rv, body, status = found
            if expected and str(expected) != str(rv):
                raise Conflict(f"{kind.value} {namespace}/{name} changed (resourceVersion "
                               f"{rv}, not {expected}): read it again and retry")
            current = orjson.loads(body)
            meta = {k: v for k, v in draft["metadata"].items() if k not in _MANAGED_META}
            for key in _MANAGED_META:
                if key in current["metadata"]:
                    meta[key] = current["metadata"][key]
            new = {k: v for k, v in draft.items() if k != "metadata"}
            new["metadata"] = meta
            if new.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            if new == current:
                return _assemble(body, status, rv)
            new_body = _dumps(new)
            _check_size(new_body, status)
            new_rv = tx.bump()
            tx.put(kind, namespace, name, uid, new_rv, owner, new_body, status, EventType.MODIFIED)
            return _assemble(new_body, status, new_rv)

        result: Obj = await self._write(job)
        return result

    async def patch_status(
        self, ref: Ref, patch: Mapping[str, Any], *, resource_version: str | None = None
    ) -> Obj:
        result: Obj = await self._write(self._patch_job(ref, patch, resource_version))
        return result

    def _patch_job(self, ref: Ref, patch: Mapping[str, Any], resource_version: str | None) -> Job:
        # Serialised here, once: refuses what the file cannot hold before queueing.
        text = _storable(dict(patch), "the status patch")
        expected = str(resource_version) if resource_version else None

        def job(tx: _Tx) -> Obj:
            new_rv = tx.revision + 1
            written = tx.patch_status(ref.kind, ref.namespace, ref.name, new_rv, text, expected)
            if written is not None:
                tx.bump()
                obj: Obj = orjson.loads(written[0])
                obj["metadata"]["resourceVersion"] = str(new_rv)
                obj["status"] = orjson.loads(written[1])
                return obj
            # Nothing written: say why (the uncommon path, so a second look is fine).
            found = tx.row(ref.kind, ref.namespace, ref.name)
            if found is None:
                raise NotFound(f"{ref} not found")
            _uid, rv, body, status = found
            if expected and expected != str(rv):
                raise Conflict(f"{ref} changed (resourceVersion {rv}, not {expected})")
            merged = tx.conn.execute("SELECT json_patch(?, ?)", (status or "{}", text)).fetchone()[0]
            if merged != (status or "{}"):
                _check_size(body, merged)
            return _assemble(body, status, rv)  # the patch changes nothing

        return job

    async def delete(self, ref: Ref, *, uid: str | None = None) -> None:
        await self._write(self._delete_job(ref, uid, missing_ok=False))

    @staticmethod
    def _delete_job(ref: Ref, uid: str | None, *, missing_ok: bool) -> Job:
        def job(tx: _Tx) -> None:
            found = tx.row(ref.kind, ref.namespace, ref.name)
            if found is None:
                if missing_ok:
                    return
                raise NotFound(f"{ref} not found")
            if uid and found[0] != uid:
                raise Conflict(f"{ref} is another incarnation (uid {found[0]}, not {uid})")
            tx.remove(ref.kind, ref.namespace, ref.name, found[0])

        return job

    async def write_groups(self, groups: Sequence[Sequence[Write]]) -> GroupResults:
        """All groups as one job of the writer: one queue entry, one future, one
        wake-up, instead of one each per write (what a burst of fires spends most on).

        The objects of Create writes are handed over: the store keeps and completes
        them (the copy create() makes showed in the burst profile)."""
        prepared: list[list[Job | StoreError]] = []
        for group in groups:
            jobs: list[Job | StoreError] = []
            for write in group:
                try:
                    jobs.append(self._job_for(write))
                except StoreError as exc:
                    jobs.append(exc)
                    break
            prepared.append(jobs)

        def job(tx: _Tx) -> GroupResults:
            results: GroupResults = []
            for jobs in prepared:
                done: list[WriteResult] = []
                for item in jobs:
                    if isinstance(item, StoreError):
                        done.append(item)
                        break
                    try:
                        done.append(item(tx))
                    except StoreError as exc:
                        done.append(exc)
                        break
                results.append(done)
            return results

        if not prepared:
            return []
        result: GroupResults = await self._write(job)
        return result

    def _job_for(self, write: Write) -> Job:
        if isinstance(write, Create):
            return self._create_job(write.obj, owned=True)
        if isinstance(write, PatchStatus):
            return self._patch_job(write.ref, write.patch, write.resource_version)
        return self._delete_job(write.ref, write.uid, missing_ok=write.missing_ok)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stop, task in self._file_watchers.values():
            stop.set()
            task.cancel()
        self._file_watchers.clear()
        await asyncio.to_thread(self._writer.stop)
        for _loop, pulse in self._pulses:
            pulse.fire()
        self._reader.close()

    def revision(self) -> int:
        """The store-wide revision (for tests and benchmarks: counts writes)."""
        rows = self._read("SELECT value FROM meta WHERE key='revision'")
        return int(rows[0][0])


def _prepare(obj: Obj, *, copy: bool = True) -> tuple[Kind, str, Obj]:
    """``obj`` (a deep copy unless the caller handed it over) with its kind and
    namespace checked."""
    if not isinstance(obj, dict):
        raise Invalid("an object must be a mapping")
    draft: Obj = orjson.loads(_storable(obj, "the object")) if copy else obj
    try:
        kind = Kind(str(draft.get("kind")))
    except ValueError as exc:
        known = ", ".join(k.value for k in Kind)
        raise Invalid(f"kind: {draft.get('kind')!r}: unknown kind (known: {known})") from exc
    meta = draft.get("metadata")
    if not isinstance(meta, dict):
        raise Invalid("metadata: must be a mapping")
    namespace = meta.get("namespace") or "default"
    if not isinstance(namespace, str) or not is_dns1123_label(namespace):
        raise Invalid(f"metadata.namespace: {namespace!r}: not a valid namespace name")
    meta["namespace"] = namespace
    draft.setdefault("apiVersion", kind.api_version)
    return kind, namespace, draft


def _valid_name(draft: Obj) -> str:
    try:
        return check_name(draft["metadata"].get("name"), field_path="metadata.name")
    except SpecError as exc:
        raise Invalid(str(exc)) from exc


def _not_newer(held: str | None, rv: int) -> bool:
    try:
        return held is not None and int(held) >= rv
    except ValueError:
        return False


def _check_size(body: str, status: str | None) -> None:
    size = len(body.encode()) + (len(status.encode()) if status else 0)
    if size > MAX_OBJECT_BYTES:
        raise Invalid(f"the object is {size} bytes, more than the {MAX_OBJECT_BYTES} allowed")
