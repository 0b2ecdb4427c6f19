"""Start-up time and memory with 10,000 schedules.

    python -m bench startup_memory [--repeats N] [--quick] [--profile]

Each repeat seeds 10,000 quiet schedules (the idle benchmark's mix: cron in several
zones and ``@every``, firstTick afterInterval, nothing due soon) and starts the real
``sympozium-schedule run`` as shipped (bench/shipped.py: its NATS server, router,
runner and console) twice on it:

- cold: the first start on the seeded store, whose first pass also writes every
  schedule's initial status (10,000 writes);
- warm: a restart on the same store, statuses already there (the usual restart).

Start-up is from just before the fork to the timestamp of the process's
"scheduler running" log line, which it logs once every timer is armed (on a
restart, schedules whose stored status still stands are armed from it and decided
in the background). Also kept: the first /readyz 200 (the metrics server starts
after the timers are armed) and "first pass done" (every schedule decided; the bus
side starts meanwhile). Memory, sampled every 0.5 s for 3 s after "first pass done":
the scheduler is the ``run`` process plus its store writer process (RSS summed,
and PSS); its nats-server child is reported apart.

The floor, in the same repeat: ``python -c 'import sympozium_schedule.cli.main'``
(what every command pays before doing anything): its wall time and peak RSS.

--quick: 1,000 schedules. --profile: py-spy samples the cold start (from the fork,
so it launches the process itself) and the summary is printed and saved.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from bench.common import (
    Figure,
    Options,
    Report,
    data_dir,
    main_for,
    profile_summary,
    py_spy,
    quiet_schedules,
    seed,
)
from bench.shipped import PASS_EVENT, READY_EVENT, Shipped

NAME = "startup_memory"
DESCRIPTION = "start-up time and RSS with 10,000 schedules (`run` as shipped)"
TARGET_COLD_S = 1.5
TARGET_RESTART_S = 0.5
TARGET_RSS_MIB = 80.0
STEADY = 3.0
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent
# across fork and exec, so the child would report this (large) process's peak.
FLOOR_CODE = ("import sympozium_schedule.cli.main; "
              "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")


@dataclass(frozen=True)
class Size:
    schedules: int


FULL = Size(schedules=10_000)
QUICK = Size(schedules=1_000)


def start_once(run: Shipped) -> dict[str, Any]:
    """Start, wait until every timer is armed, then until every schedule is decided and
    the bus side is up; sample memory; the process keeps running."""
    started = run.start()
    armed = run.wait_logged(READY_EVENT)
    polled = run.wait_ready()  # the metrics server starts after the timers are armed
    decided = run.wait_logged(PASS_EVENT)
    rss = pss = main_rss = nats = 0.0
    steady_until = time.time() + STEADY
    while time.time() < steady_until:
        family = run.family()
        r, p = run.memory(family["scheduler"])
        rss, pss = max(rss, r), max(pss, p)
        main_rss = max(main_rss, run.memory(family["scheduler"][:1])[0])
        nats = max(nats, run.memory(family["nats"])[0])
        time.sleep(0.5)
    return {"start_s": round(armed - started, 4), "readyz_s": round(polled - started, 4),
            "decided_s": round(decided - started, 4),
            "rss_mib": round(rss, 1), "pss_mib": round(pss, 1), "main_rss_mib": round(main_rss, 1),
            "writer_rss_mib": round(rss - main_rss, 1), "nats_rss_mib": round(nats, 1)}


def import_floor() -> tuple[float, float]:
    """(seconds, peak RSS MiB) of importing the CLI module in a fresh interpreter."""
    began = time.time()
    done = subprocess.run([sys.executable, "-c", FLOOR_CODE], capture_output=True, text=True,
                          check=True)
    elapsed = time.time() - began
    return elapsed, int(done.stdout.strip()) / 1024  # VmHWM is in kB


def profiled_cold_start(options: Options, size: Size) -> str | None:
    binary = py_spy()
    if binary is None:
        print("   (no py-spy: set PY_SPY=/path/to/py-spy to profile)")
        return None
    with data_dir(options, f"{NAME}-profile") as directory:
        created = datetime.now(UTC) - timedelta(seconds=1)
        seed(directory, quiet_schedules(size.schedules, created=created, quiet_for=600))
        out = directory / "startup.pyspy"
        run = Shipped(directory)
        run.args = [binary, "record", "--rate", "250", "--format", "raw", "--threads",
                    "--subprocesses", "-o", str(out), "--", *run.args]
        run.start()
        run.wait_ready()
        # Stop the profiled process, not py-spy: py-spy writes its file when its child exits.
        for child in psutil.Process(run.pid).children():
            child.terminate()
        assert run.popen is not None
        run.popen.wait(60)
        run.stop()
        return profile_summary(out) if out.exists() else "py-spy wrote nothing"


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    with data_dir(options, NAME) as directory:
        created = datetime.now(UTC) - timedelta(seconds=1)
        seed(directory, quiet_schedules(size.schedules, created=created, quiet_for=600))
        floor_s, floor_rss = import_floor()
        run = Shipped(directory)
        try:
            cold = start_once(run)
        finally:
            run.stop()
        run = Shipped(directory)
        try:
            warm = start_once(run)
        finally:
            run.stop()
    print(f"   repeat {index + 1}: cold start {cold['start_s']:.2f} s (readyz {cold['readyz_s']:.2f}, "
          f"decided {cold['decided_s']:.2f}), scheduler RSS {cold['rss_mib']:.0f} MiB; restart "
          f"{warm['start_s']:.2f} s (readyz {warm['readyz_s']:.2f}, decided {warm['decided_s']:.2f}), "
          f"scheduler RSS {warm['rss_mib']:.0f} MiB (main {warm['main_rss_mib']:.0f}, writer "
          f"{warm['writer_rss_mib']:.0f}, PSS {warm['pss_mib']:.0f}); nats-server "
          f"{warm['nats_rss_mib']:.0f} MiB; import floor {floor_s:.2f} s {floor_rss:.0f} MiB",
          flush=True)
    return {"cold": cold, "warm": warm, "floor_s": round(floor_s, 4),
            "floor_rss_mib": round(floor_rss, 1)}


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    floor_s = [r["floor_s"] for r in runs]
    floor_rss = [r["floor_rss_mib"] for r in runs]
    figures = [
        Figure("cold_start_s", "start -> every timer armed, cold (writes statuses)", "s",
               [r["cold"]["start_s"] for r in runs], target=TARGET_COLD_S,
               floor=floor_s, floor_label="import cli.main"),
        Figure("warm_start_s", "start -> every timer armed, restart", "s",
               [r["warm"]["start_s"] for r in runs], target=TARGET_RESTART_S,
               floor=floor_s, floor_label="import cli.main"),
        Figure("cold_decided_s", "start -> every schedule decided, bus side up, cold", "s",
               [r["cold"]["decided_s"] for r in runs]),
        Figure("warm_decided_s", "start -> every schedule decided, bus side up, restart", "s",
               [r["warm"]["decided_s"] for r in runs]),
        Figure("cold_rss_mib", "scheduler RSS (run + its store writer) after a cold start", "MiB",
               [r["cold"]["rss_mib"] for r in runs], target=TARGET_RSS_MIB,
               floor=floor_rss, floor_label="import cli.main, peak"),
        Figure("warm_rss_mib", "scheduler RSS (run + its store writer) after a restart", "MiB",
               [r["warm"]["rss_mib"] for r in runs], target=TARGET_RSS_MIB,
               floor=floor_rss, floor_label="import cli.main, peak"),
        Figure("warm_main_rss_mib", "the run process alone, RSS, after a restart", "MiB",
               [r["warm"]["main_rss_mib"] for r in runs]),
        Figure("warm_pss_mib", "scheduler PSS (shared pages split), after a restart", "MiB",
               [r["warm"]["pss_mib"] for r in runs]),
        Figure("nats_rss_mib", "its nats-server child's RSS (apart)", "MiB",
               [r["warm"]["nats_rss_mib"] for r in runs]),
    ]
    notes = []
    if options.profile:
        profile = profiled_cold_start(options, size)
        if profile:
            print("   profile (py-spy, a cold start from the fork until ready):")
            print("\n".join("     " + line for line in profile.splitlines()))
            notes.append("profile of a cold start:\n" + profile)
    return Report(NAME, DESCRIPTION, {
        "schedules": size.schedules,
        "command": "sympozium-schedule run (as shipped, bench/shipped.py)",
        "start": "fork -> timestamp of the 'scheduler running' log line (every timer armed)",
        "decided": "fork -> timestamp of the 'first pass done' log line",
        "rss": f"psutil RSS of the run process plus its store writer process, max over "
               f"{STEADY:.0f} s after 'first pass done'; nats-server apart",
    }, figures, runs, notes)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
