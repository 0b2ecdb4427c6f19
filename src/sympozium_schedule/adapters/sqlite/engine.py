"""The writer's engine: it commits queued writes in groups, one transaction each.

Writer side (see ``tx``): standard library and orjson only. A write arrives as
an op, a plain tuple a process can be sent (``ops`` builds them):

- ``("create", kind, namespace, name, uid, owner, draft, status)``
- ``("set_status", kind, namespace, name, expected, status, patch)`` (patch: a dict)
- ``("patch", kind, namespace, name, expected, patch)``
- ``("update", kind, namespace, name, expected, owner, draft)``
- ``("delete", kind, namespace, name, uid, missing_ok)``
- ``("groups", [[op, ...], ...])``: each group's ops in order, a group ending at its
  first failure; groups do not affect each other.

Whatever is queued is committed as one transaction (group commit), which is
what lets a burst of thousands of fires land in a few transactions. A write
that fails in a way that may have left half of it undoes the group, and every
write of it is then tried in a transaction of its own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from sympozium_schedule.adapters.sqlite.schema import connect
from sympozium_schedule.adapters.sqlite.tx import (
    ADDED,
    MODIFIED,
    Refused,
    Tx,
    check_size,
    dumps,
    storable,
)

Op = tuple[Any, ...]
# What a write came to: (True, its value) or (False, (the port's error name, message)).
Outcome = tuple[bool, Any]

_MANAGED_META = ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name")


@lru_cache(maxsize=8)
def stamp(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (core.model.format_time, without importing it).
    Cached: every create of a transaction stamps the same instant."""
    utc = t if t.tzinfo is UTC else t.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat() + "Z"


def _create(tx: Tx, kind: str, namespace: str, name: str, uid: str, owner: str | None,
            draft: dict[str, Any], status: str | None) -> tuple[int, str]:
    meta = draft["metadata"]
    meta.pop("resourceVersion", None)
    created = stamp(tx.now)
    meta.update(uid=uid, namespace=namespace, generation=1, creationTimestamp=created)
    body = storable(draft, "the object")
    check_size(body, status)
    try:  # the primary key decides "already exists": no read first
        tx.insert(kind, namespace, name, uid, tx.revision + 1, owner, body, status)
    except sqlite3.IntegrityError as exc:
        raise Refused("AlreadyExists", f"{kind} {namespace}/{name} already exists") from exc
    rv = tx.bump()
    tx.change(kind, namespace, name, rv, ADDED)
    return rv, created


def _patch(tx: Tx, kind: str, namespace: str, name: str, expected: str | None,
           patch: str) -> tuple[str, str | None, int]:
    new_rv = tx.revision + 1
    written = tx.patch_status(kind, namespace, name, new_rv, patch, expected)
    if written is not None:
        tx.bump()
        return written[0], written[1], new_rv
    # Nothing written: say why (the uncommon path, so a second look is fine).
    found = tx.row(kind, namespace, name)
    if found is None:
        raise Refused("NotFound", f"{kind} {namespace}/{name} not found")
    _uid, rv, body, status = found
    if expected and expected != str(rv):
        raise Refused("Conflict", f"{kind} {namespace}/{name} changed (resourceVersion {rv}, "
                                  f"not {expected})")
    merged = tx.conn.execute("SELECT json_patch(?, ?)", (status or "{}", patch)).fetchone()[0]
    if merged != (status or "{}"):
        check_size(body, merged)
    return body, status, rv  # the patch changes nothing


def _set_status(tx: Tx, kind: str, namespace: str, name: str, expected: str, status: str,
                patch: dict[str, Any]) -> int | tuple[str, str | None, int]:
    """The new version; or, when the merged status could not be written as it is (gone,
    changed, too large), what the general patch makes of it."""
    rv = tx.revision + 1
    if tx.set_status(kind, namespace, name, rv, status, expected):
        tx.bump()
        return rv
    return _patch(tx, kind, namespace, name, expected, storable(patch, "the status patch"))


def _update(tx: Tx, kind: str, namespace: str, name: str, expected: str | None,
            owner: str | None, draft: dict[str, Any]) -> tuple[str, str | None, int]:
    found = tx.row(kind, namespace, name)
    if found is None:
        raise Refused("NotFound", f"{kind} {namespace}/{name} not found")
    uid, rv, body, status = found
    if expected and str(expected) != str(rv):
        raise Refused("Conflict", f"{kind} {namespace}/{name} changed (resourceVersion "
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
        return body, status, rv
    new_body = dumps(new)
    check_size(new_body, status)
    new_rv = tx.bump()
    tx.put(kind, namespace, name, uid, new_rv, owner, new_body, status, MODIFIED)
    return new_body, status, new_rv


def _delete(tx: Tx, kind: str, namespace: str, name: str, uid: str | None,
            missing_ok: bool) -> None:
    found = tx.row(kind, namespace, name)
    if found is None:
        if missing_ok:
            return
        raise Refused("NotFound", f"{kind} {namespace}/{name} not found")
    if uid and found[0] != uid:
        raise Refused("Conflict", f"{kind} {namespace}/{name} is another incarnation "
                                  f"(uid {found[0]}, not {uid})")
    tx.remove(kind, namespace, name, found[0])


_WRITES: dict[str, Callable[..., Any]] = {
    "create": _create, "set_status": _set_status, "patch": _patch, "update": _update,
    "delete": _delete,
}


def run_op(tx: Tx, op: Op) -> Any:
    """One op's value; :class:`Refused` when the store refuses it."""
    if op[0] == "groups":
        return [_group(tx, group) for group in op[1]]
    return _WRITES[op[0]](tx, *op[1:])


def _group(tx: Tx, ops: Sequence[Op]) -> list[Outcome]:
    done: list[Outcome] = []
    for op in ops:
        try:
            done.append((True, run_op(tx, op)))
        except Refused as exc:
            done.append((False, (exc.error, exc.message)))
            break
    return done


class _Poisoned(Exception):
    def __init__(self, cause: Exception):
        super().__init__(repr(cause))
        self.cause = cause


def _unavailable(exc: BaseException) -> Outcome:
    return False, ("Unavailable", f"the store could not be written ({exc})")


class Engine:
    """Commits groups of ops on one connection, reopening it after a failure."""

    def __init__(self, path: Path, *, keep_changes: int, event_ttl: timedelta,
                 before_reconnect: Callable[[], None] | None = None):
        self._path = path
        self._keep = keep_changes
        self._event_ttl = event_ttl
        self._before_reconnect = before_reconnect
        self._conn: sqlite3.Connection | None = None
        self._suspect = False
        self._commits = 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def commit(self, ops: Sequence[Op], now: datetime) -> tuple[list[Outcome], int | None]:
        """Each op's outcome, and the revision after the transaction (None if unknown)."""
        if self._conn is None:
            if self._suspect and self._before_reconnect is not None:
                self._before_reconnect()
            self._suspect = False
            try:
                self._conn = connect(self._path)
            except sqlite3.Error as exc:
                return [_unavailable(exc)] * len(ops), None
        conn = self._conn
        healthy, revision = True, None
        try:
            outcomes, revision = self._transaction(conn, ops, now)
        except _Poisoned:
            outcomes = []
            for op in ops:
                try:
                    one, revision = self._transaction(conn, [op], now)
                    outcomes.extend(one)
                except _Poisoned as exc:
                    outcomes.append((False, ("Invalid", f"the write failed: {exc.cause!r}")))
                except sqlite3.Error as exc:
                    healthy = False
                    outcomes.append(_unavailable(exc))
        except sqlite3.Error as exc:
            healthy = False
            outcomes = [_unavailable(exc)] * len(ops)
        if not healthy:
            # A connection that failed (read-only file, disk full) can stay failed after
            # the cause is fixed: open a fresh one next time.
            conn.close()
            self._conn = None
            self._suspect = True
        return outcomes, revision

    def _transaction(self, conn: sqlite3.Connection, ops: Sequence[Op],
                     now: datetime) -> tuple[list[Outcome], int]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            tx = Tx(conn, start, now)
            outcomes: list[Outcome] = []
            for op in ops:
                try:
                    outcomes.append((True, run_op(tx, op)))
                except Refused as exc:
                    outcomes.append((False, (exc.error, exc.message)))
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
            conn.execute("COMMIT")
            return outcomes, tx.revision
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _compact(self, tx: Tx) -> None:
        """Trim the change log and expire Events (Kubernetes keeps Events an hour)."""
        horizon = tx.revision - self._keep
        if horizon > 0:
            tx.conn.execute("DELETE FROM changes WHERE rv <= ?", (horizon,))
            tx.conn.execute(
                "UPDATE meta SET value=max(value, ?) WHERE key='compacted'", (horizon,)
            )
        cutoff = stamp(tx.now - self._event_ttl)
        tx.conn.execute(
            "DELETE FROM objects WHERE kind='Event' AND "
            "json_extract(body, '$.metadata.creationTimestamp') < ?",
            (cutoff,),
        )
