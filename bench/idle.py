"""Idle cost: 10,000 schedules, none due for the next minute.

    python -m bench idle [--repeats N] [--quick] [--profile]

Each repeat seeds 10,000 schedules (a mix of cron expressions in several zones and
``@every``, firstTick afterInterval, keeping only expressions with no tick in the
next few minutes), starts the real ``sympozium-schedule run --no-runner --no-router``,
waits until it is ready and 5 s more (the first pass's status writes settle), then
measures one minute:

- CPU: user + system seconds of the ``run`` process (psutil) over the window, as a
  share of one core. Its nats-server child (started by ``run`` even with
  --no-router) is reported apart: it is another process, not the controller.
- store writes: the store's revision (a counter of writes) before and after.

The floor, over the same window: a bare ``asyncio`` process with nothing to do
(``bench.floors idle``), started with the product.

--quick: 1,000 schedules, a 10 s window. --profile: py-spy samples the window
(with --idle off, so the summary shows what the CPU did).
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
    Profiler,
    Report,
    RunProcess,
    cpu_seconds,
    data_dir,
    main_for,
    quiet_schedules,
    revision,
    seed,
)

NAME = "idle"
DESCRIPTION = "idle cost: 10,000 schedules, none due in the next minute (embedded `run`)"
TARGET_CPU_PERCENT = 1.0
SETTLE = 5.0


@dataclass(frozen=True)
class Size:
    schedules: int
    window: float


FULL = Size(schedules=10_000, window=60.0)
QUICK = Size(schedules=1_000, window=10.0)


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    with data_dir(options, NAME) as directory:
        created = datetime.now(UTC) - timedelta(seconds=1)
        seed(directory, quiet_schedules(size.schedules, created=created,
                                        quiet_for=size.window + 180))
        floor = subprocess.Popen([sys.executable, "-m", "bench.floors", "idle"])
        profile = None
        try:
            with RunProcess(directory) as run:
                run.wait_ready()
                time.sleep(SETTLE)
                proc = run.process()
                floor_proc = psutil.Process(floor.pid)
                children = proc.children()
                rev_before = revision(directory)
                profiler = Profiler(run.pid, directory / "idle.pyspy") if options.profile else None
                began = time.time()
                cpu_before = cpu_seconds(proc)
                floor_before = cpu_seconds(floor_proc)
                child_before = sum(cpu_seconds(c) for c in children)
                time.sleep(size.window)
                elapsed = time.time() - began
                cpu = (cpu_seconds(proc) - cpu_before) / elapsed
                floor_cpu = (cpu_seconds(floor_proc) - floor_before) / elapsed
                child_cpu = (sum(cpu_seconds(c) for c in children) - child_before) / elapsed
                rev_after = revision(directory)
                rss = proc.memory_info().rss
                if profiler is not None:
                    profile = profiler.stop()
        finally:
            floor.terminate()
            floor.wait(10)
    writes = rev_after - rev_before
    print(f"   repeat {index + 1}: run CPU {cpu:.3%} of a core, nats-server {child_cpu:.3%}, "
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
        Figure("cpu_percent", "run process CPU over the window", "% core",
               [r["cpu_percent"] for r in runs], target=TARGET_CPU_PERCENT,
               floor=[r["floor_cpu_percent"] for r in runs], floor_label="idle asyncio process"),
        Figure("writes", "store writes over the window", "", [float(r["writes"]) for r in runs],
               target=0, gate="worst"),
        Figure("nats_cpu_percent", "its nats-server child's CPU", "% core",
               [r["nats_server_cpu_percent"] for r in runs]),
    ]
    return Report(NAME, DESCRIPTION, {
        "schedules": size.schedules, "window_s": size.window, "settle_s": SETTLE,
        "command": "sympozium-schedule run --no-runner --no-router --log-level warning",
        "cpu": "psutil user+system seconds of the run process / wall seconds",
        "writes": "store revision after - before (the revision counts every write)",
    }, figures, runs)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
