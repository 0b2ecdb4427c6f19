"""Start-up time and memory with 10,000 schedules.

    python -m bench startup_memory [--repeats N] [--quick] [--profile]

Each repeat seeds 10,000 quiet schedules (the idle benchmark's mix: cron in several
zones and ``@every``, firstTick afterInterval, nothing due soon) and starts the real
``sympozium-schedule run --no-runner --no-router --log-level info`` twice on it:

- cold: the first start on the seeded store, whose first pass also writes every
  schedule's initial status (10,000 writes);
- warm: a restart on the same store, statuses already there (the usual restart).

Start-up is from just before the fork to the timestamp of the process's
"scheduler running" log line, which it logs once the controller's first pass is
done and every timer is armed (/readyz turns 200 at the same moment; its first 200
seen by a 10 ms poll is kept as a cross-check). RSS is psutil's, of the ``run``
process, 3 s after ready (max of samples every 0.5 s); its nats-server child is
reported apart.

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
    RunProcess,
    data_dir,
    main_for,
    profile_summary,
    py_spy,
    quiet_schedules,
    seed,
)
from sympozium_schedule.core.model import parse_time

NAME = "startup_memory"
DESCRIPTION = "start-up time and RSS with 10,000 schedules (embedded `run`)"
TARGET_START_S = 3.0
TARGET_RSS_MIB = 150.0
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


def _logged_ready(run: RunProcess) -> float | None:
    for line in run.log_lines():
        if line.get("event") == "scheduler running":
            stamp = parse_time(line.get("timestamp"))
            return stamp.timestamp() if stamp else None
    return None


def start_once(run: RunProcess) -> dict[str, Any]:
    """Start, wait until ready, sample RSS; the process keeps running."""
    started = run.start()
    polled = run.wait_ready()
    logged = _logged_ready(run)
    deadline = time.time() + 2.0
    while logged is None and time.time() < deadline:  # the line may trail /readyz a little
        time.sleep(0.02)
        logged = _logged_ready(run)
    proc = run.process()
    rss, nats = 0, 0
    steady_until = time.time() + STEADY
    while time.time() < steady_until:
        rss = max(rss, proc.memory_info().rss)
        nats = max([nats, *(c.memory_info().rss for c in proc.children())])
        time.sleep(0.5)
    return {"start_s": round((logged or polled) - started, 4),
            "readyz_s": round(polled - started, 4),
            "rss_mib": round(rss / 2**20, 1), "nats_rss_mib": round(nats / 2**20, 1)}


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
        run = RunProcess(directory, log_level="info")
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
        run = RunProcess(directory, log_level="info")
        try:
            cold = start_once(run)
        finally:
            run.stop()
        run = RunProcess(directory, log_level="info")
        try:
            warm = start_once(run)
        finally:
            run.stop()
    print(f"   repeat {index + 1}: cold start {cold['start_s']:.2f} s (readyz {cold['readyz_s']:.2f}), "
          f"RSS {cold['rss_mib']:.0f} MiB; warm start {warm['start_s']:.2f} s, RSS "
          f"{warm['rss_mib']:.0f} MiB; nats-server {warm['nats_rss_mib']:.0f} MiB; import floor "
          f"{floor_s:.2f} s {floor_rss:.0f} MiB", flush=True)
    return {"cold": cold, "warm": warm, "floor_s": round(floor_s, 4),
            "floor_rss_mib": round(floor_rss, 1)}


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    floor_s = [r["floor_s"] for r in runs]
    floor_rss = [r["floor_rss_mib"] for r in runs]
    figures = [
        Figure("cold_start_s", "start -> every timer armed, cold (writes statuses)", "s",
               [r["cold"]["start_s"] for r in runs], target=TARGET_START_S,
               floor=floor_s, floor_label="import cli.main"),
        Figure("warm_start_s", "start -> every timer armed, restart", "s",
               [r["warm"]["start_s"] for r in runs], target=TARGET_START_S,
               floor=floor_s, floor_label="import cli.main"),
        Figure("cold_rss_mib", "RSS after a cold start", "MiB",
               [r["cold"]["rss_mib"] for r in runs], target=TARGET_RSS_MIB,
               floor=floor_rss, floor_label="import cli.main, peak"),
        Figure("warm_rss_mib", "RSS after a restart", "MiB",
               [r["warm"]["rss_mib"] for r in runs], target=TARGET_RSS_MIB,
               floor=floor_rss, floor_label="import cli.main, peak"),
        Figure("nats_rss_mib", "its nats-server child's RSS", "MiB",
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
        "command": "sympozium-schedule run --no-runner --no-router --log-level info",
        "start": "fork -> timestamp of the 'scheduler running' log line",
        "rss": f"psutil RSS of the run process, max over {STEADY:.0f} s after ready",
    }, figures, runs, notes)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
