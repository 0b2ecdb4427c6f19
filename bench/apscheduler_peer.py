"""The peer of bench/peer.py: what a Python user picks instead of sympozium-schedule.

APScheduler 3 (``BackgroundScheduler``) with its SQLAlchemy job store on SQLite, and a job
that persists one record per fire (an INSERT into ``runs.sqlite``, committed on its own).

    python -m bench.apscheduler_peer seed DIR JOBS.json   # add the jobs (a paused scheduler)
    python -m bench.apscheduler_peer run DIR              # start; print {"event": "ready", ...}

Set up as kindly to the peer as the comparison allows: both databases with the pragmas our
store uses (WAL, ``synchronous=NORMAL``: the same durability), jobs and records in separate
files (no lock contention between the scheduler thread and the job threads), the default
executor (10 threads), ``misfire_grace_time=None`` and ``coalesce=True`` so that a burst
fires every job instead of dropping the late ones (the default grace of 1 s would), and no
job loaded before it is due (the job store is queried by next run time).

A job's record: its id, its tick (computed from its trigger's start and period, since
APScheduler passes no scheduled time to the job) and the wall time just before its INSERT
(the record's transaction start: the same stop instant as our store's creationTimestamp).
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

RUNS_DB = "runs.sqlite"
JOBS_DB = "jobs.sqlite"

_local = threading.local()
_runs_path: list[Path] = []


def _pragmas(conn: Any) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def fire(job_id: str, start: float, period: float) -> None:
    """The job: one persisted record per fire."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(_runs_path[0], isolation_level=None, timeout=30)
        _pragmas(conn)
    now = time.time()
    tick = start + math.floor((now - start) / period + 1e-6) * period
    conn.execute("BEGIN")
    conn.execute("INSERT INTO runs (job, tick, began) VALUES (?, ?, ?)", (job_id, tick, time.time()))
    conn.execute("COMMIT")


def scheduler(directory: Path, *, paused: bool = False) -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{directory / JOBS_DB}")
    event.listen(engine, "connect", lambda conn, _record: _pragmas(conn))
    _runs_path[:] = [directory / RUNS_DB]
    with sqlite3.connect(directory / RUNS_DB) as conn:
        _pragmas(conn)
        conn.execute("CREATE TABLE IF NOT EXISTS runs (job TEXT NOT NULL, tick REAL NOT NULL, "
                     "began REAL NOT NULL)")
    sched = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)},
        executors={"default": ThreadPoolExecutor(10)},
        job_defaults={"misfire_grace_time": None, "coalesce": True},
        timezone=UTC)
    sched.start(paused=paused)
    return sched


def trigger(job: dict[str, Any]) -> tuple[Any, float, float]:
    """(trigger, start, period) of a job spec: ``{"every": seconds, "start": unix}`` or
    ``{"cron": "m h dom mon dow", "zone": name}`` (cron's period is a minute: only the
    burst's ``* * * * *`` has its tick computed from it)."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if "every" in job:
        start = datetime.fromtimestamp(job["start"], UTC)
        return IntervalTrigger(seconds=job["every"], start_date=start), job["start"], job["every"]
    return CronTrigger.from_crontab(job["cron"], timezone=ZoneInfo(job.get("zone", "UTC"))), 0.0, 60.0


def seed(directory: Path, jobs_file: Path) -> None:
    jobs = json.loads(jobs_file.read_text())
    sched = scheduler(directory, paused=True)
    try:
        for job in jobs:
            trig, start, period = trigger(job)
            sched.add_job(fire, trig, args=(job["id"], start, period), id=job["id"])
    finally:
        sched.shutdown(wait=False)


def run(directory: Path) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sched = scheduler(directory)
    print(json.dumps({"event": "ready", "at": time.time()}), flush=True)
    stop.wait()
    sched.pause()  # no job submitted to an executor being shut down
    sched.shutdown(wait=False)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "seed":
        seed(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 2 and argv[0] == "run":
        run(Path(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # The job store keeps the job as "bench.apscheduler_peer:fire": run everything from that
    # module, not from __main__ (a second copy, whose fire() would not be the one stored).
    from bench.apscheduler_peer import main as _main

    sys.exit(_main(sys.argv[1:]))
