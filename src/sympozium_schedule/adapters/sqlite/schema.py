"""The file: its tables, and opening it for writing or (when it cannot be written) reading.

``objects`` holds one row per object; its status is a column of its own so a
status write (one per fire) does not re-serialise the whole object; ``owner``
indexes the controlling ownerReference, so deleting a schedule deletes its runs
as Kubernetes' garbage collector would. ``changes`` is the change log: one row
per write, keyed by the store-wide revision that is every object's
``resourceVersion``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 2
SCHEMA = """
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


def connect(path: Path) -> sqlite3.Connection:
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


def connect_for_reading(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A reader, and whether it is degraded. When the file or its directory cannot be
    written, a WAL database cannot even create its shared-memory file, so SQLite
    refuses a normal or read-only open; it then reads the file as immutable, which
    is accurate while nobody can write it, and the store retries a normal open."""
    try:
        return connect(path), False
    except sqlite3.OperationalError:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                               isolation_level=None, check_same_thread=False, timeout=10.0)
        return conn, True


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a store written by an incompatible version, instead of misreading it."""
    # Imported here: the writer process imports this module, and not the models.
    from sympozium_schedule.ports.store import Unavailable

    try:
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    except sqlite3.OperationalError:
        return  # a new file
    if row is not None and row[0] != SCHEMA_VERSION:
        raise Unavailable(f"the store at {path} has format {row[0]}; this version reads format "
                          f"{SCHEMA_VERSION}. Move it aside (or use another --data-dir).")


def has_schema(conn: sqlite3.Connection) -> bool:
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return {"objects", "changes", "meta"} <= tables

