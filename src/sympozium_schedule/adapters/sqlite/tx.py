"""One write transaction: the statements every write is made of.

Writer side: runs in the writer thread, or in the writer process
(``adapters.sqlite.child``), so it imports nothing but the standard library and
orjson (a process that imports the models would take a tenth of a second more
to start). Kinds and change types are their plain strings here.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import orjson

# etcd's default request limit: the same ceiling as a cluster.
MAX_OBJECT_BYTES = 1_500_000

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


class Refused(Exception):
    """A write the store refuses, named as the port names it (``NotFound``,
    ``AlreadyExists``, ``Conflict``, ``Invalid``, ``Unavailable``); the caller's
    side turns it into that StoreError."""

    def __init__(self, error: str, message: str):
        super().__init__(message)
        self.error = error
        self.message = message


def dumps(value: Any) -> str:
    # orjson: an order of magnitude faster than json on the fire path, and it refuses
    # what UTF-8 cannot hold (lone surrogates) by itself.
    return orjson.dumps(value).decode()


def storable(value: Any, what: str) -> str:
    """``value`` as JSON text the database can hold, or ``Invalid``: not JSON at all,
    or text with lone surrogates (valid in Python, not in UTF-8)."""
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise Refused("Invalid", f"{what} cannot be stored: {exc}") from exc


def check_size(body: str, status: str | None) -> None:
    size = len(body.encode()) + (len(status.encode()) if status else 0)
    if size > MAX_OBJECT_BYTES:
        raise Refused("Invalid",
                      f"the object is {size} bytes, more than the {MAX_OBJECT_BYTES} allowed")


def assemble(body: str, status: str | None, rv: int) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(body)
    obj["metadata"]["resourceVersion"] = str(rv)
    if status is not None:
        obj["status"] = orjson.loads(status)
    return obj


class Tx:
    """One write transaction, shared by every write in a group commit.

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

    def row(self, kind: str, namespace: str, name: str) -> tuple[str, int, str, str | None] | None:
        found: tuple[str, int, str, str | None] | None = self.conn.execute(
            "SELECT uid, rv, body, status FROM objects WHERE kind=? AND namespace=? AND name=?",
            (kind, namespace, name),
        ).fetchone()
        return found

    def insert(self, kind: str, namespace: str, name: str, uid: str, rv: int, owner: str | None,
               body: str, status: str | None) -> None:
        """A new row; sqlite3.IntegrityError when the name is taken."""
        self.conn.execute(
            "INSERT INTO objects (kind, namespace, name, uid, rv, owner, body, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, namespace, name, uid, rv, owner, body, status),
        )

    def change(self, kind: str, namespace: str, name: str, rv: int, change: str,
               body: str | None = None) -> None:
        self.changes.append((rv, kind, namespace, name, change, body))

    def flush(self) -> None:
        if self.changes:
            self.conn.executemany(
                "INSERT INTO changes (rv, kind, namespace, name, type, body) "
                "VALUES (?, ?, ?, ?, ?, ?)", self.changes)
            self.changes = []

    def patch_status(self, kind: str, namespace: str, name: str, rv: int, patch: str,
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
            (rv, patch, kind, namespace, name, expected, expected, patch, patch,
             MAX_OBJECT_BYTES),
        ).fetchone()
        if found is not None:
            self.change(kind, namespace, name, rv, MODIFIED)
        return found

    def set_status(self, kind: str, namespace: str, name: str, rv: int, status: str,
                   expected: str) -> bool:
        """Write a status merged by the caller from the version ``expected``: one plain
        UPDATE, no JSON work. False when nothing was written (a missing object, a stale
        version, a result too large); the caller then asks why."""
        written = self.conn.execute(
            "UPDATE objects SET rv=?, status=? WHERE kind=? AND namespace=? AND name=? AND rv=? "
            "AND length(body) + ? <= ?",
            (rv, status, kind, namespace, name, expected, len(status), MAX_OBJECT_BYTES),
        ).rowcount == 1
        if written:
            self.change(kind, namespace, name, rv, MODIFIED)
        return written

    def put(self, kind: str, namespace: str, name: str, uid: str, rv: int, owner: str | None,
            body: str, status: str | None, change: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, uid, rv, owner, body, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, namespace, name, uid, rv, owner, body, status),
        )
        self.change(kind, namespace, name, rv, change)

    def remove(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete one object and, depth first, everything it owns."""
        found = self.row(kind, namespace, name)
        if found is None:
            return
        owned = self.conn.execute(
            "SELECT kind, namespace, name, uid FROM objects WHERE owner=?", (uid,)
        ).fetchall()
        for child_kind, child_ns, child_name, child_uid in owned:
            self.remove(child_kind, child_ns, child_name, child_uid)
        rv = self.bump()
        self.conn.execute(
            "DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
            (kind, namespace, name),
        )
        last = assemble(found[2], found[3], rv)  # stamped with the deletion's version
        self.change(kind, namespace, name, rv, DELETED, dumps(last))
