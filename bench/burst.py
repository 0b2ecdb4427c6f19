"""Burst: 10,000 schedules due at the same instant.

    python -m bench burst [--repeats N] [--quick] [--profile]

Each repeat seeds 10,000 ``* * * * *`` schedules (firstTick afterInterval,
concurrencyPolicy Allow) created within the minute before a minute boundary M
chosen far enough ahead for the seeding and the start-up to finish before it,
starts the real ``sympozium-schedule run --no-runner --no-router``, and waits for M.

(--quick: all created at one second, ``@every 15s``, so it need not wait for a minute.)

Two times, both from M:
- all runs created: the latest AgentRun creationTimestamp with tick M, read back
  from the store afterwards (exact: the store stamps it when its transaction begins);
- all statuses written: the first moment the bench process, polling the store every
  20 ms through a read-only SQLite connection, counts a status write per schedule in
  the change log (a cheap range scan) and then every status with ``lastScheduleTime`` =
  M (resolution: the poll interval plus the queries).
Fires/s is schedules / the statuses time. Lost ticks: schedules without exactly one
run for M. The controller's /metrics (fires, status writes) are read as a cross-check.

The floor, in the same repeat right after the burst: a bare SQLite write of the same
rows (one insert of an AgentRun-sized row per schedule, one status update per
schedule) in one transaction, with the store's pragmas, from Python's sqlite3.

--quick: 1,000 schedules. --profile: py-spy samples the controller from M - 1 s until
the statuses are written, only the thread holding the GIL (the burst is GIL-bound, so
that is where its time goes); the summary is printed and saved in the result file.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    IMG_DIR,
    Figure,
    Options,
    Profiler,
    Report,
    RunProcess,
    cpu_seconds,
    data_dir,
    fires,
    list_objects,
    main_for,
    read_only,
    schedule_obj,
    seed,
)
from sympozium_schedule.core.model import Kind, format_time

NAME = "burst"
DESCRIPTION = "burst: 10,000 schedules due at the same instant (embedded `run`)"
TARGET_S = 2.0
TARGET_RATE = 5000.0
POLL = 0.02


@dataclass(frozen=True)
class Size:
    schedules: int
    lead: float  # seconds from seeding to the tick: seeding plus start-up must fit


FULL = Size(schedules=10_000, lead=30.0)
QUICK = Size(schedules=1_000, lead=8.0)
# --quick cannot wait up to a minute for a boundary: all created at the same second,
# "@every 15s" ticks for all of them at that second + 15 s.
QUICK_EVERY = 15


def _next_boundary(after: float) -> float:
    return (int(after) // 60 + 1) * 60.0


def bare_sqlite(directory: Path, rows: int, run_body: str, status: str) -> float:
    """Seconds to insert ``rows`` run rows and update ``rows`` status rows in one
    transaction, with the store's pragmas, on a table like the store's."""
    conn = sqlite3.connect(directory / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, "
                 "body TEXT NOT NULL, status TEXT, PRIMARY KEY (kind, namespace, name)) WITHOUT ROWID")
    conn.executemany("INSERT INTO t VALUES ('S', 'default', ?, ?, NULL)",
                     [(f"s-{i:05d}", run_body) for i in range(rows)])
    began = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t VALUES ('R', 'default', ?, ?, NULL)",
                     [(f"r-{i:05d}", run_body) for i in range(rows)])
    conn.executemany("UPDATE t SET status=? WHERE kind='S' AND namespace='default' AND name=?",
                     [(status, f"s-{i:05d}") for i in range(rows)])
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    with data_dir(options, NAME) as directory:
        if options.quick:
            tick = float(int(time.time() + size.lead))
            created, expression = datetime.fromtimestamp(tick - QUICK_EVERY, UTC), f"@every {QUICK_EVERY}s"
        else:
            tick = _next_boundary(time.time() + size.lead)
            created, expression = datetime.fromtimestamp(tick - 59, UTC), "* * * * *"
        seed(directory, [(schedule_obj(f"burst-{i:05d}", expression), created)
                         for i in range(size.schedules)])
        needle = f'"lastScheduleTime":"{format_time(datetime.fromtimestamp(tick, UTC))}"'
        samples: list[tuple[float, int, int]] = []
        profile = None
        with RunProcess(directory) as run:
            ready = run.wait_ready()
            if ready > tick - 1:
                raise RuntimeError(f"`run` was ready only {ready - tick:+.1f} s from the tick: "
                                   "raise Size.lead")
            proc = run.process()
            conn = read_only(directory)
            since = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            time.sleep(max(0.0, tick - 1 - time.time()))
            profiler = (Profiler(run.pid, directory / "burst.pyspy", gil=True)
                        if options.profile else None)
            cpu_before = cpu_seconds(proc)
            done_at = None
            while time.time() < tick + 60:
                now = time.time()
                runs = conn.execute("SELECT count(*) FROM objects WHERE kind='AgentRun'").fetchone()[0]
                # Cheap enough to poll on a busy 2-core machine: a range scan of the change
                # log since the start (only the fires modify schedules meanwhile); the
                # statuses themselves are checked once it reaches the count.
                statuses = conn.execute(
                    "SELECT count(*) FROM changes WHERE rv > ? AND kind='SympoziumSchedule' "
                    "AND type='MODIFIED'", (since,)).fetchone()[0]
                samples.append((now - tick, runs, statuses))
                if statuses >= size.schedules and runs >= size.schedules and conn.execute(
                        "SELECT count(*) FROM objects WHERE kind='SympoziumSchedule' "
                        "AND instr(status, ?) > 0", (needle,)).fetchone()[0] >= size.schedules:
                    done_at = now
                    break
                time.sleep(max(0.0, POLL - (time.time() - now)))
            cpu = cpu_seconds(proc) - cpu_before
            if profiler is not None:
                profile = profiler.stop()
            conn.close()
            metrics = run.metrics()
        runs_list = list_objects(directory, Kind.AGENT_RUN)
        at_tick = [f for f in fires(runs_list) if f.tick.timestamp() == tick]
        per_schedule: dict[str, int] = {}
        for f in at_tick:
            per_schedule[f.schedule] = per_schedule.get(f.schedule, 0) + 1
        lost = size.schedules - sum(1 for c in per_schedule.values() if c == 1)
        lags = sorted(f.lag for f in at_tick)
        run_body = json.dumps(runs_list[0], separators=(",", ":")) if runs_list else "{}"
        schedules = list_objects(directory, Kind.SCHEDULE)
        status = json.dumps(schedules[0].get("status") or {}, separators=(",", ":"))
        floor = bare_sqlite(directory, size.schedules, run_body, status)
    runs_done = lags[-1] if lags else float("nan")
    status_done = (done_at - tick) if done_at is not None else float("nan")
    print(f"   repeat {index + 1}: first run +{lags[0] if lags else float('nan'):.3f} s, all "
          f"{len(lags)} runs by +{runs_done:.3f} s, all statuses by +{status_done:.3f} s "
          f"({size.schedules / status_done:.0f} fires/s); lost {lost}; controller CPU {cpu:.2f} s; "
          f"bare SQLite {floor:.3f} s", flush=True)
    if profile:
        print("   profile (py-spy --gil, M - 1 s until all statuses written):")
        print("\n".join("     " + line for line in profile.splitlines()))
    return {
        "first_run_s": round(lags[0], 4) if lags else None, "runs_done_s": round(runs_done, 4),
        "statuses_done_s": round(status_done, 4), "fires_per_s": round(size.schedules / status_done),
        "lost": lost, "runs": len(lags), "controller_cpu_s": round(cpu, 3),
        "floor_s": round(floor, 4), "startup_s": round(ready - run.started_at, 3),
        "metrics": {k: v for k, v in metrics.items()
                    if k.startswith(("sympozium_schedule_fires_total",
                                     "sympozium_schedule_store_writes_total",
                                     "sympozium_schedule_events_dropped_total"))},
        "profile": profile,
        "_created": lags, "_samples": samples,
    }


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    floor = [r["floor_s"] for r in runs]
    figures = [
        Figure("runs_done_s", "all runs created (last creationTimestamp - tick)", "s",
               [r["runs_done_s"] for r in runs], target=TARGET_S, floor=floor,
               floor_label="bare SQLite, same rows"),
        Figure("statuses_done_s", "all statuses written (store poll, 20 ms)", "s",
               [r["statuses_done_s"] for r in runs], target=TARGET_S, floor=floor,
               floor_label="bare SQLite, same rows"),
        Figure("fires_per_s", "fires per second (schedules / statuses time)", "/s",
               [r["fires_per_s"] for r in runs], target=TARGET_RATE, better="higher",
               floor=[size.schedules / f for f in floor], floor_label="bare SQLite rows/s"),
        Figure("lost", "ticks lost", "", [float(r["lost"]) for r in runs], target=0, gate="worst"),
        Figure("first_run_s", "first run created", "s", [r["first_run_s"] for r in runs]),
        Figure("cpu_s", "controller CPU during the burst", "s", [r["controller_cpu_s"] for r in runs]),
    ]
    if options.draw:
        draw(runs, size)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    return Report(NAME, DESCRIPTION, {
        "schedules": size.schedules, "schedule": "* * * * *", "firstTick": "afterInterval",
        "concurrencyPolicy": "Allow",
        "command": "sympozium-schedule run --no-runner --no-router --log-level warning",
        "schedule_quick": f"@every {QUICK_EVERY}s, one creation second",
        "runs_time": "latest AgentRun creationTimestamp - tick, from the store",
        "statuses_time": f"bench process polls the store read-only every {POLL * 1000:.0f} ms",
    }, figures, public)


def draw(runs: list[dict[str, Any]], size: Size) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, r in enumerate(runs):
        created = r["_created"]
        line, = ax.step(created, range(1, len(created) + 1), where="post",
                        label=f"run {i + 1}: runs created")
        xs = [s[0] for s in r["_samples"]]
        ax.plot(xs, [s[2] for s in r["_samples"]], linestyle="--", color=line.get_color(),
                label=f"run {i + 1}: statuses written (polled)")
    ax.axvline(TARGET_S, color="red", linestyle=":", linewidth=1, label="target: 2 s")
    ax.set_xlim(left=-0.1)
    ax.set_xlabel("seconds after the tick")
    ax.set_ylabel("schedules")
    ax.set_title(f"{size.schedules} schedules due at the same instant")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG_DIR / "burst.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
