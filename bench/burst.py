"""Burst: 10,000 schedules due at the same instant, on the scheduler as shipped.

    python -m bench burst [--repeats N] [--quick] [--profile]

Each repeat seeds 10,000 ``* * * * *`` schedules (firstTick afterInterval,
concurrencyPolicy Allow) created within the minute before a minute boundary M
chosen far enough ahead for seeding and start-up to finish first, starts
``sympozium-schedule run`` as shipped (bench/shipped.py: its NATS server, router,
runner and console; the runner's agent is ``--agent-command true``, so the agents'
own work is not counted as the scheduler's, though their launches still share the
machine), and waits for M.

(--quick: all created at one second, ``@every 15s``, so it need not wait for a minute.)

Where the clock stops, both from M, at commit: a change is stamped when the bench,
woken by inotify on the store's WAL, first reads it (bench/shipped.py Commits):
- all runs committed: the last AgentRun of tick M to become visible;
- all statuses committed: the last schedule whose status write for M became
  visible (its first status change after M), checked afterwards: every status has
  ``lastScheduleTime`` = M.
Fires/s is schedules / the statuses time. Lost ticks: schedules without exactly
one run for M. The controller's /metrics are saved as a cross-check.

The floor, in the same repeat right after the burst (bench/floors.py same_rows):
the store's rows written bare, with the store's own schema, pragmas and chunks of
the controller's size: per fire the AgentRun row (the body the store wrote), its
change row, the schedule's status (one conditional UPDATE, the status text the
store wrote) and its change row; per chunk the revision. It leaves out deciding,
serialising, the controller's caches, the Events (at most 100 in a burst, rate
limited) and the runner's writes.

--quick: 1,000 schedules. --profile: py-spy samples the scheduler process from
M - 1 s until the statuses are committed, only the thread holding the GIL.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from bench.common import (
    IMG_DIR,
    Figure,
    Options,
    Profiler,
    Report,
    data_dir,
    fires,
    list_objects,
    main_for,
    read_only,
    schedule_obj,
    seed,
)
from bench.floors import same_rows
from bench.shipped import READY_EVENT, Commits, Shipped, first_seen
from sympozium_schedule.core.model import Kind, format_time

NAME = "burst"
DESCRIPTION = "burst: 10,000 schedules due at the same instant (`run` as shipped)"
TARGET_S = 1.0
TARGET_FLOOR_RATIO = 3.0
CHUNK = 256  # the controller's chunk (ControllerSettings.chunk_size)


@dataclass(frozen=True)
class Size:
    schedules: int
    lead: float  # seconds from seeding to the tick: seeding plus start-up must fit


FULL = Size(schedules=10_000, lead=30.0)
QUICK = Size(schedules=1_000, lead=8.0)
QUICK_EVERY = 15


def _next_boundary(after: float) -> float:
    return (int(after) // 60 + 1) * 60.0


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
        names = {f"burst-{i:05d}" for i in range(size.schedules)}
        profile = None
        with Shipped(directory, agent_command="true") as run:
            ready = run.wait_logged(READY_EVENT)
            if ready > tick - 2:
                raise RuntimeError(f"`run` was ready only {ready - tick:+.1f} s from the tick: "
                                   "raise Size.lead")
            commits = Commits(directory).start()
            family = run.family()
            time.sleep(max(0.0, tick - 1 - time.time()))
            profiler = (Profiler(run.pid, directory / "burst.pyspy", gil=True)
                        if options.profile else None)
            cpu_before = run.cpu(family["scheduler"])
            main_before = run.cpu(family["scheduler"][:1])
            me = psutil.Process()
            me_before = run.cpu([me])
            other_before = run.cpu(family["other"] + family["nats"])
            done_at = None
            while time.time() < tick + 60:
                seen = first_seen([c for c in commits.changes if c.seen >= tick],
                                  Kind.SCHEDULE.value, "MODIFIED")
                if names <= seen.keys():
                    done_at = max(seen[n] for n in names)
                    break
                time.sleep(0.05)
            family = run.family()
            cpu = run.cpu(family["scheduler"]) - cpu_before
            main_cpu = run.cpu(family["scheduler"][:1]) - main_before
            bench_cpu = run.cpu([me]) - me_before
            other = run.cpu(family["other"] + family["nats"]) - other_before
            if profiler is not None:
                profile = profiler.stop()
            commits.stop()
            metrics = run.metrics()
        runs_seen = first_seen(commits.changes, Kind.AGENT_RUN.value, "ADDED")
        runs_list = list_objects(directory, Kind.AGENT_RUN)
        at_tick = [f for f in fires(runs_list) if f.tick.timestamp() == tick]
        per_schedule: dict[str, int] = {}
        for f in at_tick:
            per_schedule[f.schedule] = per_schedule.get(f.schedule, 0) + 1
        lost = size.schedules - sum(1 for c in per_schedule.values() if c == 1)
        committed = sorted(runs_seen[f.run] - tick for f in at_tick if f.run in runs_seen)
        needle = f'"lastScheduleTime":"{format_time(datetime.fromtimestamp(tick, UTC))}"'
        with contextlib.closing(read_only(directory)) as conn:
            statuses_ok = conn.execute(
                "SELECT count(*) FROM objects WHERE kind='SympoziumSchedule' AND instr(status, ?) > 0",
                (needle,)).fetchone()[0]
        floor = same_rows(directory, size.schedules, chunk=CHUNK)
    runs_done = committed[-1] if len(committed) == size.schedules else float("nan")
    status_done = (done_at - tick) if done_at is not None else float("nan")
    print(f"   repeat {index + 1}: first run committed +{committed[0] if committed else float('nan'):.3f} s, "
          f"all {len(committed)} by +{runs_done:.3f} s, all statuses by +{status_done:.3f} s "
          f"({size.schedules / status_done:.0f} fires/s); lost {lost}; statuses at M {statuses_ok}; "
          f"scheduler CPU {cpu:.2f} s (main {main_cpu:.2f} s; other processes {other:.2f} s; "
          f"this bench {bench_cpu:.2f} s); same-rows floor {floor:.3f} s",
          flush=True)
    if profile:
        print("   profile (py-spy --gil, M - 1 s until all statuses committed):")
        print("\n".join("     " + line for line in profile.splitlines()))
    return {
        "first_run_s": round(committed[0], 4) if committed else None,
        "runs_done_s": round(runs_done, 4), "statuses_done_s": round(status_done, 4),
        "fires_per_s": round(size.schedules / status_done), "lost": lost,
        "statuses_at_tick": statuses_ok, "runs": len(at_tick),
        "scheduler_cpu_s": round(cpu, 3), "main_cpu_s": round(main_cpu, 3),
        "bench_cpu_s": round(bench_cpu, 3), "other_cpu_s": round(other, 3),
        "floor_s": round(floor, 4), "startup_s": round(ready - run.started_at, 3),
        "metrics": {k: v for k, v in metrics.items()
                    if k.startswith(("sympozium_schedule_fires_total",
                                     "sympozium_schedule_store_writes_total",
                                     "sympozium_schedule_events_dropped_total"))},
        "profile": profile, "_committed": committed,
        "_statuses": sorted(s - tick for s in first_seen(
            [c for c in commits.changes if c.seen >= tick], Kind.SCHEDULE.value, "MODIFIED").values()),
    }


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    floor = [r["floor_s"] for r in runs]
    figures = [
        Figure("runs_done_s", "all runs committed (from the tick)", "s",
               [r["runs_done_s"] for r in runs], target=TARGET_S, floor=floor,
               floor_label="the same rows, bare"),
        Figure("statuses_done_s", "all runs and statuses committed (from the tick)", "s",
               [r["statuses_done_s"] for r in runs], target=TARGET_S, floor=floor,
               floor_label="the same rows, bare"),
        Figure("floor_ratio", "statuses committed / same-rows floor", "x",
               [r["statuses_done_s"] / r["floor_s"] for r in runs], target=TARGET_FLOOR_RATIO),
        Figure("fires_per_s", "fires per second (schedules / statuses time)", "/s",
               [r["fires_per_s"] for r in runs], better="higher",
               floor=[size.schedules / f for f in floor], floor_label="same rows/s, bare"),
        Figure("lost", "ticks lost", "", [float(r["lost"]) for r in runs], target=0, gate="worst"),
        Figure("first_run_s", "first run committed", "s", [r["first_run_s"] for r in runs]),
        Figure("cpu_s", "scheduler CPU during the burst (main + writer process)", "s",
               [r["scheduler_cpu_s"] for r in runs]),
    ]
    if options.draw:
        draw(runs, size)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    return Report(NAME, DESCRIPTION, {
        "schedules": size.schedules, "schedule": "* * * * *", "firstTick": "afterInterval",
        "concurrencyPolicy": "Allow",
        "command": "sympozium-schedule run (as shipped, bench/shipped.py) --agent-command true",
        "schedule_quick": f"@every {QUICK_EVERY}s, one creation second",
        "stop": "commit: the bench reads each change as it becomes visible (inotify on the WAL)",
        "floor": f"the same rows bare, chunks of {CHUNK}, the store's schema (bench/floors.py)",
    }, figures, public)


def draw(runs: list[dict[str, Any]], size: Size) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, r in enumerate(runs):
        committed = r["_committed"]
        line, = ax.step(committed, range(1, len(committed) + 1), where="post",
                        label=f"run {i + 1}: runs committed")
        statuses = r["_statuses"]
        ax.step(statuses, range(1, len(statuses) + 1), where="post", linestyle="--",
                color=line.get_color(), label=f"run {i + 1}: statuses committed")
    ax.axvline(TARGET_S, color="red", linestyle=":", linewidth=1, label=f"target: {TARGET_S:g} s")
    ax.set_xlim(left=-0.05)
    ax.set_xlabel("seconds after the tick")
    ax.set_ylabel("schedules")
    ax.set_title(f"{size.schedules} schedules due at the same instant (`run` as shipped)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG_DIR / "burst.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
