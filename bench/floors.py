"""Floor processes: what a bare Python process on this machine does, for comparison.

Run as ``python -m bench.floors <mode> ...`` by the benchmarks, alongside the
product, so both see the same machine at the same moment. Standard library only
(the apply floor imports PyYAML and orjson, in the function): the floor must not
pay for the product's imports.

    timers FILE   arm one loop.call_at timer per wall-clock instant listed in FILE
                  (a JSON list of Unix times) and print the lag of each (seconds), as JSON
    idle          an asyncio loop with nothing to do, until SIGTERM
    apply FILE SCHEMA DB
                  the floor of ``apply -f FILE``: PyYAML's C loader reads every document
                  (and nothing else is imported but orjson, for the rows' JSON), and each
                  becomes the store's rows, bare (see :func:`apply_rows`)

And in process, :func:`same_rows`: the rows a burst wrote, written again bare.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path

# Instants closer than this to the start cannot be armed in time: not counted.
_ARM_MARGIN = 0.2


async def timers(targets: list[float]) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = asyncio.Event()
    now = time.time()
    armed = [t for t in sorted(targets) if t > now + _ARM_MARGIN]
    if not armed:
        return {"lags": [], "skipped": len(targets)}
    remaining = [len(armed)]

    def fire(target: float) -> None:
        lags.append(time.time() - target)
        remaining[0] -= 1
        if not remaining[0]:
            done.set()

    # Wall-clock instants on the loop's monotonic clock, as the controller arms its
    # timer (it computes a delay from the wall clock and calls call_later).
    offset = loop.time() - time.time()
    for target in armed:
        loop.call_at(target + offset, fire, target)
    await done.wait()
    return {"lags": lags, "skipped": len(targets) - len(armed)}


async def idle() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def same_rows(directory: Path, fires: int, *, chunk: int) -> float:
    """Seconds to write, bare, the rows a burst of ``fires`` wrote in ``directory``'s store:
    per fire the AgentRun row and its change row, the schedule's status (a conditional
    UPDATE) and its change row; per chunk of ``chunk`` fires one transaction that reads
    and bumps the revision. The store's own schema and pragmas, on a fresh file in the
    same directory; the bodies and statuses are the texts the store wrote."""
    from sympozium_schedule.adapters.sqlite.schema import SCHEMA, connect

    source = sqlite3.connect(f"file:{directory / 'store.db'}?mode=ro", uri=True)
    try:
        schedules = source.execute(
            "SELECT namespace, name, uid, body, status FROM objects WHERE kind='SympoziumSchedule' "
            "ORDER BY name LIMIT ?", (fires,)).fetchall()
        runs = source.execute(
            "SELECT namespace, name, uid, owner, body FROM objects WHERE kind='AgentRun' "
            "ORDER BY name LIMIT ?", (fires,)).fetchall()
    finally:
        source.close()
    floor = directory / "floor.db"
    conn = connect(floor)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO objects (kind, namespace, name, uid, rv, owner, body, status) "
            "VALUES ('SympoziumSchedule', ?, ?, ?, 1, NULL, ?, NULL)",
            [(ns, name, uid, body) for ns, name, uid, body, _ in schedules])
        conn.execute("UPDATE meta SET value=1 WHERE key='revision'")
        conn.execute("COMMIT")
        pairs = list(zip(schedules, runs, strict=False))
        began = time.perf_counter()
        for start in range(0, len(pairs), chunk):
            conn.execute("BEGIN IMMEDIATE")
            revision = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            inserts, updates, changes = [], [], []
            for schedule, run in pairs[start:start + chunk]:
                (s_ns, s_name, _, _, status), (r_ns, r_name, r_uid, owner, body) = schedule, run
                revision += 1
                inserts.append((r_ns, r_name, r_uid, revision, owner, body))
                changes.append((revision, "AgentRun", r_ns, r_name, "ADDED", None))
                revision += 1
                updates.append((revision, status, s_ns, s_name))
                changes.append((revision, "SympoziumSchedule", s_ns, s_name, "MODIFIED", None))
            conn.executemany(
                "INSERT INTO objects (kind, namespace, name, uid, rv, owner, body, status) "
                "VALUES ('AgentRun', ?, ?, ?, ?, ?, ?, NULL)", inserts)
            conn.executemany(
                "UPDATE objects SET rv=?, status=? WHERE kind='SympoziumSchedule' AND namespace=? "
                "AND name=? AND rv=1", updates)
            conn.executemany("INSERT INTO changes (rv, kind, namespace, name, type, body) "
                             "VALUES (?, ?, ?, ?, ?, ?)", changes)
            conn.execute("UPDATE meta SET value=? WHERE key='revision'", (revision,))
            conn.execute("COMMIT")
        return time.perf_counter() - began
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{floor}{suffix}").unlink(missing_ok=True)


def apply_rows(manifest: Path, schema: str, db: Path) -> int:
    """Read ``manifest`` with ``yaml.CSafeLoader`` (libyaml; its resolvers and
    constructor as PyYAML ships them) and write, in one transaction on a new file with
    the store's schema (``schema``: its SQL) and pragmas, what the store writes per
    object: its ``objects`` row (its body the document with namespace, uid, generation
    and creationTimestamp, as JSON by orjson) and its ``changes`` row, then the
    revision. Left out: checking anything (kinds, names, fields, cron, the CRDs'
    schemas, aliases), the dependency order, looking up what exists, the output
    lines. The count of rows written."""
    import os

    import orjson
    import yaml

    with manifest.open() as f:
        documents = [d for d in yaml.load_all(f, Loader=yaml.CSafeLoader) if d is not None]
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        uids = os.urandom(16 * len(documents)).hex()
        objects, changes = [], []
        for rv, doc in enumerate(documents, start=1):
            meta = doc["metadata"]
            namespace = meta.setdefault("namespace", "default")
            uid = uids[32 * (rv - 1):32 * rv]
            meta.update(uid=uid, generation=1, creationTimestamp=created)
            objects.append((doc["kind"], namespace, meta["name"], uid, rv,
                            orjson.dumps(doc).decode()))
            changes.append((rv, doc["kind"], namespace, meta["name"]))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO objects (kind, namespace, name, uid, rv, owner, body, status) "
                         "VALUES (?, ?, ?, ?, ?, NULL, ?, NULL)", objects)
        conn.executemany("INSERT INTO changes (rv, kind, namespace, name, type, body) "
                         "VALUES (?, ?, ?, ?, 'ADDED', NULL)", changes)
        conn.execute("UPDATE meta SET value=? WHERE key='revision'", (len(documents),))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(documents)


def main(argv: list[str]) -> int:
    if argv[:1] == ["timers"] and len(argv) == 2:
        targets = json.loads(Path(argv[1]).read_text())
        print(json.dumps(asyncio.run(timers(targets))))
        return 0
    if argv[:1] == ["apply"] and len(argv) == 4:
        print(apply_rows(Path(argv[1]), Path(argv[2]).read_text(), Path(argv[3])))
        return 0
    if argv == ["idle"]:
        asyncio.run(idle())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
