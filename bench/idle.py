"""Idle cost: 10,000 schedules, none due for the next minute.

    python -m bench idle [--repeats N] [--quick] [--profile]

Each repeat seeds 10,000 schedules (a mix of cron expressions in several zones and
``@every``, firstTick afterInterval, keeping only expressions with no tick in the
window), starts ``sympozium-schedule run`` as shipped (bench/shipped.py: NATS
server, router, runner, console), waits until every schedule is decided and 5 s
more (the first pass's status writes settle), then measures a window of 10 minutes
(``BENCH_IDLE_WINDOW=<seconds>`` shortens it; the result file records the window):

- CPU: user + system seconds of the scheduler (the ``run`` process and its store
  writer process, psutil) over the window, as a share of one core. Its nats-server
  child is reported apart: it is another program.
- store writes: the store's revision (a counter of writes) before and after.

The floor, over the same window: a bare ``asyncio`` process with nothing to do
(``bench.floors idle``), started with the product.

--quick: 1,000 schedules, a 10 s window. --profile: py-spy samples the window
(with --idle off, so the summary shows what the CPU did).
"""

from __future__ import annotations

import os
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
    Profiler,
    Report,
    cpu_seconds,
    data_dir,
    main_for,
    quiet_schedules,
    revision,
    seed,
)
from bench.shipped import PASS_EVENT, Shipped

NAME = "idle"
DESCRIPTION = "idle cost: 10,000 schedules, none due in the window (`run` as shipped)"
TARGET_CPU_PERCENT = 0.05
SETTLE = 5.0


@dataclass(frozen=True)
class Size:
    schedules: int
    window: float


FULL = Size(schedules=10_000, window=600.0)
QUICK = Size(schedules=1_000, window=10.0)


def _window(size: Size) -> float:
    """The window: ``BENCH_IDLE_WINDOW`` seconds if set (the target's is 600 s)."""
    return float(os.environ.get("BENCH_IDLE_WINDOW", size.window))


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    with data_dir(options, NAME) as directory:
        created = datetime.now(UTC) - timedelta(seconds=1)
        window = _window(size)
        seed(directory, quiet_schedules(size.schedules, created=created,
                                        quiet_for=window + 180))
        floor = subprocess.Popen([sys.executable, "-m", "bench.floors", "idle"])
        profile = None
        try:
            with Shipped(directory) as run:
                run.wait_logged(PASS_EVENT)
                run.wait_ready()
                time.sleep(SETTLE)
                family = run.family()
                floor_proc = psutil.Process(floor.pid)
                rev_before = revision(directory)
                profiler = Profiler(run.pid, directory / "idle.pyspy") if options.profile else None
                began = time.time()
                cpu_before = run.cpu(family["scheduler"])
                floor_before = cpu_seconds(floor_proc)
                child_before = run.cpu(family["nats"])
                time.sleep(window)
                elapsed = time.time() - began
                cpu = (run.cpu(family["scheduler"]) - cpu_before) / elapsed
                floor_cpu = (cpu_seconds(floor_proc) - floor_before) / elapsed
                child_cpu = (run.cpu(family["nats"]) - child_before) / elapsed
                rev_after = revision(directory)
                rss = run.memory(family["scheduler"])[0] * 2**20
                if profiler is not None:
                    profile = profiler.stop()
        finally:
            floor.terminate()
            floor.wait(10)
    writes = rev_after - rev_before
    print(f"   repeat {index + 1}: scheduler CPU {cpu:.3%} of a core, nats-server {child_cpu:.3%}, "
          f"floor {floor_cpu:.3%}; store writes {writes}; RSS {rss / 2**20:.0f} MiB", flush=True)
    if profile:
        print("   profile (py-spy, the idle window):")
        print("\n".join("     " + line for line in profile.splitlines()))
    return {"cpu_percent": round(cpu * 100, 4), "floor_cpu_percent": round(floor_cpu * 100, 4),
            "nats_server_cpu_percent": round(child_cpu * 100, 4), "writes": writes,
            "window_s": round(elapsed, 2), "rss_mib": round(rss / 2**20, 1), "profile": profile}


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    figures = [
        Figure("cpu_percent", "scheduler CPU (run + its store writer) over the window", "% core",
               [r["cpu_percent"] for r in runs], target=TARGET_CPU_PERCENT,
               floor=[r["floor_cpu_percent"] for r in runs], floor_label="idle asyncio process"),
        Figure("writes", "store writes over the window", "", [float(r["writes"]) for r in runs],
               target=0, gate="worst"),
        Figure("nats_cpu_percent", "its nats-server child's CPU", "% core",
               [r["nats_server_cpu_percent"] for r in runs]),
    ]
    return Report(NAME, DESCRIPTION, {
        "schedules": size.schedules, "window_s": _window(size), "settle_s": SETTLE,
        "command": "sympozium-schedule run (as shipped, bench/shipped.py)",
        "cpu": "psutil user+system seconds of the run process and its store writer / wall "
               "seconds; nats-server apart",
        "writes": "store revision after - before (the revision counts every write)",
    }, figures, runs)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
