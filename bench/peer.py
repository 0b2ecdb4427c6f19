"""Side by side with the peer: ``sympozium-schedule run`` and APScheduler 3, same run, same machine.

    python -m bench peer [--repeats N] [--quick]

The peer is what a Python user picks instead: APScheduler 3 with its SQLAlchemy job store on
SQLite and a job persisting one record per fire (bench/apscheduler_peer.py says how it is set
up: as kindly as the comparison allows). Each repeat measures both, one after the other, the
order alternating between repeats, each on 10,000 schedules seeded beforehand by a separate
process (our store through ``SQLiteStore``; the peer's job store through a paused scheduler):

1. **Start-up, memory, idle**: the quiet mix of the idle benchmark (cron in four zones and
   ``@every``, nothing due for the next minutes). Ours is ``run`` as shipped: it starts its
   NATS server, the runner and the router. Cold: the first start on the seeded store (ours also
   writes 10,000 initial statuses); restart: the second. Start-up: from just before the fork to
   ready (ours: the "scheduler running" line, logged when every timer is armed; the peer: its
   "ready" line, printed when ``scheduler.start()`` has returned). RSS: max over 3 s after ready
   (ours: the scheduler process; its nats-server child is reported apart). Idle: CPU seconds of
   the process over 60 s, 5 s after the cold start was ready (ours: nats-server apart).
2. **Burst**: 10,000 ``* * * * *`` due at one minute boundary M. Done when every fire's record
   is committed: ours, every AgentRun for M and every status with ``lastScheduleTime`` M (a
   read-only connection polling every 20 ms); the peer, every record for M (the same poll).
   Ours runs with ``--no-runner`` here: the runner would start agents, work the peer's job
   does not do (NATS and the router run); and with ``--log-level warning``, as the peer logs
   nothing (its logger has no handler) while ours would log a line per fire at info.
3. **Fire lag**: 1,000 schedules firing every minute, their ticks spread evenly over the
   minute, among 9,000 quiet ones (10,000); one minute of fires from 2 s after ready. Lag:
   the record's transaction start minus its tick (ours: the AgentRun's creationTimestamp,
   which the store stamps when the transaction begins; the peer: the time just before its
   INSERT). Ours with ``--no-runner``, as in 2.

The table gives our figure, the peer's in the floor column, and the ratio (ours / the
peer's: below 1 we are ahead on a lower-is-better figure). --quick: 1,000 schedules, a 10 s
idle window, a burst of 1,000 at a boundary 20 s ahead, 100 schedules for the lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from bench.apscheduler_peer import RUNS_DB
from bench.common import (
    PROJECT_DIR,
    Figure,
    Options,
    Report,
    RunProcess,
    cpu_seconds,
    data_dir,
    fires,
    instance_obj,
    list_objects,
    main_for,
    quiet_schedules,
    read_only,
    schedule_obj,
    summary,
)
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import Kind, format_time, parse_time
from sympozium_schedule.ports.store import Obj
from sympozium_schedule.runtime.paths import store_path

NAME = "peer"
DESCRIPTION = ("side by side with APScheduler 3 (SQLAlchemy job store on SQLite, one record per "
               "fire): start-up, memory, idle, burst, fire lag; 10,000 schedules")
STEADY = 3.0
SETTLE = 5.0
POLL = 0.02
LAG_START = 2.0


@dataclass(frozen=True)
class Size:
    schedules: int
    idle_window: float
    burst_lead: float
    lag_schedules: int
    lag_period: int  # seconds


FULL = Size(10_000, 60.0, 40.0, 1_000, 60)
QUICK = Size(1_000, 10.0, 20.0, 100, 60)


# --- seeding --------------------------------------------------------------------------------


async def _seed_ours(path: Path, together: list[Obj], spread: list[tuple[Obj, datetime]],
                     created: datetime) -> None:
    current = [created]
    store = SQLiteStore(path, clock=lambda: current[0])
    try:
        await store.create(instance_obj())
        await asyncio.gather(*(store.create(obj) for obj in together))
        for obj, at in spread:  # the store reads its clock once per transaction
            current[0] = at
            await store.create(obj)
    finally:
        await store.close()


def seed_ours(directory: Path, together: list[Obj], created: datetime,
              spread: list[tuple[Obj, datetime]] | None = None) -> None:
    asyncio.run(_seed_ours(store_path(directory), together, spread or [], created))


def peer_job(obj: Obj, created: datetime) -> dict[str, Any]:
    """Our schedule as the peer's job spec (bench/apscheduler_peer.trigger)."""
    spec = obj["spec"]
    expression = spec["schedule"]
    name = obj["metadata"]["name"]
    if expression.startswith("@every "):
        text = expression.removeprefix("@every ")
        seconds = {"h": 3600, "m": 60, "s": 1}[text[-1]] * int(text[:-1])
        return {"id": name, "every": seconds, "start": created.timestamp() + seconds}
    return {"id": name, "cron": expression, "zone": spec.get("timeZone", "UTC")}


def seed_peer(directory: Path, jobs: list[dict[str, Any]]) -> None:
    jobs_file = directory / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    with (directory / "peer-seed.log").open("ab") as log:
        subprocess.run([sys.executable, "-m", "bench.apscheduler_peer", "seed", str(directory),
                        str(jobs_file)], cwd=PROJECT_DIR, check=True, stdout=log, stderr=log)


# --- the processes ------------------------------------------------------------------------------


class Ours(RunProcess):
    """``sympozium-schedule run`` as shipped (NATS server, runner, router), or with extra flags."""

    def __init__(self, directory: Path, *extra: str, log_level: str = "info"):
        super().__init__(directory, log_level=log_level)
        # RunProcess starts `run --no-runner --no-router`: here what a user starts.
        self.args = [a for a in self.args if a not in ("--no-runner", "--no-router")] + list(extra)

    def ready(self) -> float:
        polled = self.wait_ready()
        if "info" not in self.args:  # no "scheduler running" line: /readyz's first 200
            return polled
        deadline = time.time() + 2.0
        while time.time() < deadline:  # the line may trail /readyz a little
            for line in self.log_lines():
                if line.get("event") == "scheduler running":
                    stamp = parse_time(line.get("timestamp"))
                    if stamp is not None:
                        return stamp.timestamp()
            time.sleep(0.02)
        return polled

    def children(self) -> list[psutil.Process]:
        return self.process().children()


class Peer:
    """``python -m bench.apscheduler_peer run DIR``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.log_path = directory / "peer.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> float:
        self._log = self.log_path.open("ab")
        self._offset = self.log_path.stat().st_size  # a restart appends: read its own lines
        self.started_at = time.time()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.apscheduler_peer", "run", str(self.directory)],
            cwd=PROJECT_DIR, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return self.started_at

    def ready(self, timeout: float = 120.0) -> float:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the peer exited with {self.popen.returncode}:\n"
                                   f"{self.log_path.read_text()[-2000:]}")
            with self.log_path.open("rb") as handle:
                handle.seek(self._offset)
                text = handle.read().decode(errors="replace")
            for raw in text.splitlines():
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if isinstance(line, dict) and line.get("event") == "ready":
                        return float(line["at"])
            time.sleep(0.01)
        raise TimeoutError("the peer was not ready")

    def process(self) -> psutil.Process:
        assert self.popen is not None
        return psutil.Process(self.popen.pid)

    def children(self) -> list[psutil.Process]:
        return []

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


Product = Ours | Peer


def _rss(product: Product) -> tuple[float, float]:
    """(max RSS MiB of the process, of its children) over STEADY seconds."""
    proc = product.process()
    rss = child = 0
    until = time.time() + STEADY
    while time.time() < until:
        rss = max(rss, proc.memory_info().rss)
        child = max([child, *(c.memory_info().rss for c in product.children())])
        time.sleep(0.5)
    return rss / 2**20, child / 2**20


# --- 1. start-up, memory, idle -----------------------------------------------------------------------


def startup_idle(options: Options, size: Size, which: str) -> dict[str, Any]:
    with data_dir(options, f"{NAME}-{which}") as directory:
        created = datetime.now(UTC) - timedelta(seconds=1)
        quiet = quiet_schedules(size.schedules, created=created, quiet_for=size.idle_window + 300)
        if which == "ours":
            seed_ours(directory, [obj for obj, _ in quiet], created)
        else:
            seed_peer(directory, [peer_job(obj, created) for obj, _ in quiet])
        out: dict[str, Any] = {}
        for start in ("cold", "restart"):
            product: Product = Ours(directory) if which == "ours" else Peer(directory)
            try:
                began = product.start()
                ready = product.ready()
                rss, child = _rss(product)
                out[start] = {"start_s": round(ready - began, 4), "rss_mib": round(rss, 1),
                              "child_rss_mib": round(child, 1)}
                if start == "cold":
                    time.sleep(SETTLE)
                    proc, children = product.process(), product.children()
                    cpu0, kids0, t0 = cpu_seconds(proc), sum(cpu_seconds(c) for c in children), time.time()
                    time.sleep(size.idle_window)
                    elapsed = time.time() - t0
                    out["idle_cpu_percent"] = round((cpu_seconds(proc) - cpu0) / elapsed * 100, 4)
                    out["idle_child_cpu_percent"] = round(
                        (sum(cpu_seconds(c) for c in children) - kids0) / elapsed * 100, 4)
            finally:
                product.stop()
    return out


# --- 2. burst ----------------------------------------------------------------------------------------


def _boundary(after: float) -> float:
    return (int(after) // 60 + 1) * 60.0


def burst(options: Options, size: Size, which: str) -> dict[str, Any]:
    n = size.schedules
    with data_dir(options, f"{NAME}-{which}-burst") as directory:
        tick = _boundary(time.time() + size.burst_lead)
        created = datetime.fromtimestamp(tick - 59, UTC)
        objs = [schedule_obj(f"burst-{i:05d}", "* * * * *") for i in range(n)]
        if which == "ours":
            seed_ours(directory, objs, created)
            product: Product = Ours(directory, "--no-runner", log_level="warning")
        else:
            seed_peer(directory, [peer_job(o, created) for o in objs])
            product = Peer(directory)
        try:
            product.start()
            ready = product.ready()
            if ready > tick - 1:
                raise RuntimeError(f"{which} was ready only {ready - tick:+.1f} s from the tick")
            proc = product.process()
            done_at, cpu0 = None, None
            if which == "ours":
                conn = read_only(directory)
                since = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
                needle = f'"lastScheduleTime":"{format_time(datetime.fromtimestamp(tick, UTC))}"'
            else:
                conn = _runs_reader(directory)
            time.sleep(max(0.0, tick - 1 - time.time()))
            cpu0 = cpu_seconds(proc)
            while time.time() < tick + 120:
                now = time.time()
                if which == "ours":
                    runs = conn.execute("SELECT count(*) FROM objects WHERE kind='AgentRun'").fetchone()[0]
                    statuses = conn.execute(
                        "SELECT count(*) FROM changes WHERE rv > ? AND kind='SympoziumSchedule' "
                        "AND type='MODIFIED'", (since,)).fetchone()[0]
                    if runs >= n and statuses >= n and conn.execute(
                            "SELECT count(*) FROM objects WHERE kind='SympoziumSchedule' "
                            "AND instr(status, ?) > 0", (needle,)).fetchone()[0] >= n:
                        done_at = now
                        break
                elif conn.execute("SELECT count(*) FROM runs WHERE tick = ?", (tick,)).fetchone()[0] >= n:
                    done_at = now
                    break
                time.sleep(max(0.0, POLL - (time.time() - now)))
            cpu = cpu_seconds(proc) - cpu0
            conn.close()
        finally:
            product.stop()
        records = _records(directory, which)
    at_tick = [r for r in records if r[1] == tick]
    per_job: dict[str, int] = {}
    for job, _, _ in at_tick:
        per_job[job] = per_job.get(job, 0) + 1
    return {"done_s": round(done_at - tick, 4) if done_at else float("nan"),
            "lost": n - sum(1 for c in per_job.values() if c == 1), "cpu_s": round(cpu, 3),
            "first_s": round(min((b - t for _, t, b in at_tick), default=float("nan")), 4)}


def _runs_reader(directory: Path) -> Any:
    import sqlite3

    conn = sqlite3.connect(f"file:{directory / RUNS_DB}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _records(directory: Path, which: str) -> list[tuple[str, float, float]]:
    """(schedule, tick, record's transaction start) of every fire."""
    if which == "ours":
        return [(f.schedule, f.tick.timestamp(), f.created.timestamp())
                for f in fires(list_objects(directory, Kind.AGENT_RUN))]
    with contextlib.closing(_runs_reader(directory)) as conn:
        return [(str(j), float(t), float(b)) for j, t, b in conn.execute("SELECT job, tick, began FROM runs")]


# --- 3. fire lag -------------------------------------------------------------------------------------


def fire_lag(options: Options, size: Size, which: str) -> dict[str, Any]:
    k, period = size.lag_schedules, size.lag_period
    with data_dir(options, f"{NAME}-{which}-lag") as directory:
        now = datetime.now(UTC).replace(microsecond=0)
        base = now - timedelta(seconds=2 * period)
        spread = [(schedule_obj(f"lag-{i:04d}", f"@every {period}s"),
                   base + timedelta(seconds=period * i / k)) for i in range(k)]
        # @every counts from the creation second (the store stamps whole seconds)
        spread = [(o, at.replace(microsecond=0)) for o, at in spread]
        quiet = quiet_schedules(size.schedules - k, created=now, quiet_for=600)
        if which == "ours":
            seed_ours(directory, [o for o, _ in quiet], now, spread)
            product: Product = Ours(directory, "--no-runner", log_level="warning")
        else:
            seed_peer(directory, [peer_job(o, at) for o, at in spread]
                      + [peer_job(o, now) for o, _ in quiet])
            product = Peer(directory)
        try:
            product.start()
            ready = product.ready()
            window = (ready + LAG_START, ready + LAG_START + period)
            time.sleep(max(0.0, window[1] + 3.0 - time.time()))
        finally:
            product.stop()
        records = _records(directory, which)
    expected = set()
    for obj, at in spread:
        first = at.timestamp() + period
        t = first + max(0, -(-(window[0] - first) // period)) * period
        while t < window[1]:
            expected.add((obj["metadata"]["name"], t))
            t += period
    got = {(job, tick): began for job, tick, began in records if (job, tick) in expected}
    lags = [(began - tick) * 1000 for (_, tick), began in got.items()]
    return {"fires": len(lags), "expected": len(expected), "lost": len(expected) - len(got),
            **{f"{k2}_ms": round(v, 2) for k2, v in summary(lags).items() if k2 != "n"}}


# --- the report -----------------------------------------------------------------------------------


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    order = ("ours", "peer") if index % 2 == 0 else ("peer", "ours")
    out: dict[str, Any] = {"order": list(order)}
    for part, fn in (("startup_idle", startup_idle), ("burst", burst), ("fire_lag", fire_lag)):
        for which in order:
            out.setdefault(which, {})[part] = fn(options, size, which)
            print(f"   repeat {index + 1} {which} {part}: {out[which][part]}", flush=True)
    return out


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]

    def pair(key: str, label: str, unit: str, get: Any) -> Figure:
        return Figure(key, label, unit, [get(r["ours"]) for r in runs],
                      floor=[get(r["peer"]) for r in runs], floor_label="APScheduler 3")

    n = size.schedules
    figures = [
        pair("cold_start_s", f"start -> ready, cold ({n:,} schedules; ours writes their statuses)", "s",
             lambda p: p["startup_idle"]["cold"]["start_s"]),
        pair("restart_s", "start -> ready, restart", "s", lambda p: p["startup_idle"]["restart"]["start_s"]),
        pair("rss_mib", "RSS after a restart, the scheduler process", "MiB",
             lambda p: p["startup_idle"]["restart"]["rss_mib"]),
        pair("cold_rss_mib", "RSS after a cold start", "MiB", lambda p: p["startup_idle"]["cold"]["rss_mib"]),
        Figure("nats_rss_mib", "our nats-server child's RSS (the peer has none)", "MiB",
               [r["ours"]["startup_idle"]["restart"]["child_rss_mib"] for r in runs]),
        pair("idle_cpu_percent", f"idle CPU, {size.idle_window:g} s, the scheduler process", "% core",
             lambda p: p["startup_idle"]["idle_cpu_percent"]),
        Figure("nats_idle_cpu_percent", "our nats-server child's idle CPU", "% core",
               [r["ours"]["startup_idle"]["idle_child_cpu_percent"] for r in runs]),
        pair("burst_s", f"burst of {n:,}: tick -> every fire's record committed", "s",
             lambda p: p["burst"]["done_s"]),
        pair("burst_cpu_s", "burst: CPU seconds of the scheduler process", "s",
             lambda p: p["burst"]["cpu_s"]),
        pair("lag_p50_ms", f"fire lag p50 ({size.lag_schedules:,} every minute among {n:,})", "ms",
             lambda p: p["fire_lag"]["p50_ms"]),
        pair("lag_p99_ms", "fire lag p99", "ms", lambda p: p["fire_lag"]["p99_ms"]),
        pair("lag_max_ms", "fire lag max", "ms", lambda p: p["fire_lag"]["max_ms"]),
        pair("lost", "ticks lost (burst and lag)", "",
             lambda p: float(p["burst"]["lost"] + p["fire_lag"]["lost"])),
    ]
    import apscheduler
    import sqlalchemy

    return Report(NAME, DESCRIPTION, {
        "schedules": n, "idle_window_s": size.idle_window, "lag_schedules": size.lag_schedules,
        "ours": "sympozium-schedule run --data-dir D --metrics-port P --log-format json --log-level info "
                "(as shipped: NATS server, runner, router); burst and lag with --no-runner",
        "peer": f"APScheduler {apscheduler.__version__} BackgroundScheduler, SQLAlchemyJobStore "
                f"(SQLAlchemy {sqlalchemy.__version__}) on SQLite, WAL + synchronous=NORMAL, "
                "ThreadPoolExecutor(10), misfire_grace_time=None, coalesce=True; the job INSERTs "
                "one record into another SQLite file and commits",
        "stop instants": "start-up: ready (ours: the 'scheduler running' log line's timestamp; the "
                         "peer: after scheduler.start()); burst: every record committed (a 20 ms "
                         "poll); lag: the record's transaction start",
        "ratio": "ours / the peer's (the floor column)",
    }, figures, runs)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
