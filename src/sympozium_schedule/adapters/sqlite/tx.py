"""One write transaction: the statements every write job is made of."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sympozium_schedule.adapters.sqlite.codec import MAX_OBJECT_BYTES, assemble, dumps
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import EventType


class Tx:
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

    def set_status(self, kind: Kind, namespace: str, name: str, rv: int, status: str,
                   expected: str) -> bool:
        """Write a status merged by the caller from the version ``expected``: one plain
        UPDATE, no JSON work. False when nothing was written (a missing object, a stale
        version, a result too large); the caller then asks why."""
        written = self.conn.execute(
            "UPDATE objects SET rv=?, status=? WHERE kind=? AND namespace=? AND name=? AND rv=? "
            "AND length(body) + ? <= ?",
            (rv, status, kind.value, namespace, name, expected, len(status), MAX_OBJECT_BYTES),
        ).rowcount == 1
        if written:
            self.change(kind, namespace, name, rv, EventType.MODIFIED)
        return written

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
        last = assemble(found[2], found[3], rv)  # stamped with the deletion's version
        self.change(kind, namespace, name, rv, EventType.DELETED, dumps(last))


Job = Callable[[Tx], Any]
