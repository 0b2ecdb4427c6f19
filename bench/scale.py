"""100,000 schedules on one machine, as shipped: start-up, memory, idle cost.

    python -m bench scale [--repeats N] [--quick]

Each repeat seeds 100,000 quiet schedules (the idle benchmark's mix; nothing due
for the window) and starts ``sympozium-schedule run`` as shipped (bench/shipped.py)
twice on the same store, as bench/startup_memory.py does with 10,000:

- cold: the first start, whose first pass writes 100,000 initial statuses;
- restart: the statuses already there.

Start-up stops at the "scheduler running" log line (every timer armed); "first
pass done" (every schedule decided) is kept beside it. Memory: RSS of the run
process plus its store writer, max over 3 s after "first pass done"; nats-server
apart. Then, on the restarted process, idle: the scheduler's CPU over a window of
``BENCH_SCALE_IDLE`` seconds (default 120; the target speaks of a steady state,
not of a length) and the store's writes over it.

The floors: importing the CLI (start-up, memory, as in startup_memory) and an
idle asyncio process (idle), in the same repeat.

Then ``apply -f`` of 100,000 objects (:func:`apply_once`): one YAML file of 100
SympoziumInstances and 99,900 SympoziumSchedules (a fleet's mix, see
:func:`apply_documents`), applied into a new data directory by the console script
as a user runs it; the clock runs from just before the fork to the process's exit
(which comes after its last commit). Its floor, in the same repeat on the same
file: PyYAML's C loader and the same rows written bare in one transaction
(bench/floors.py ``apply``, which says what it leaves out). ``BENCH_SCALE_ONLY=apply``
measures only this, into bench/results/scale-apply.json (scale.json keeps the rest).

Fire lag at 100,000 fires an hour is bench/fire_lag.py's (``BENCH_FIRE_LAG_SIZE=100k``:
100,000 hourly schedules, into bench/results/fire_lag-100k.json).

--quick: 10,000 schedules (and objects applied), a 10 s idle window.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.common import (
    Figure,
    Options,
    Report,
    cpu_seconds,
    data_dir,
    main_for,
    program,
    quiet_schedules,
    read_only,
    revision,
    seed,
)
from bench.shipped import Shipped
from bench.startup_memory import import_floor, start_once
from sympozium_schedule.adapters.sqlite.schema import SCHEMA
from sympozium_schedule.core.model import API_VERSION, LABEL_INSTANCE, Kind
from sympozium_schedule.ports.store import Obj

NAME = "scale"
DESCRIPTION = "100,000 schedules: start-up, memory, idle (`run` as shipped)"
TARGET_COLD_S = 5.0
TARGET_RESTART_S = 3.0
TARGET_RSS_MIB = 500e6 / 2**20  # 500 MB
TARGET_IDLE_PERCENT = 0.1
TARGET_APPLY_PER_S = 10_000


@dataclass(frozen=True)
class Size:
    schedules: int
    idle: float


FULL = Size(schedules=100_000, idle=120.0)
QUICK = Size(schedules=10_000, idle=10.0)


def _idle_window(size: Size) -> float:
    return float(os.environ.get("BENCH_SCALE_IDLE", size.idle))


# --- apply -f ---------------------------------------------------------------------------------

# A fleet as a user would write it: per agent (instance) a few dozen schedules, with
# the spec fields in the proportions a fleet might have them. Deterministic.
_APPLY_EXPRESSIONS = (("*/30 * * * *", None), ("0 9 * * 1-5", "Europe/Warsaw"),
                      ("@every 1h", None), ("15 3 * * *", "America/New_York"),
                      ("@daily", None), ("0 */6 * * *", "Asia/Tokyo"), ("@every 10m", None),
                      ("30 2 1 * *", "Europe/London"), ("0 8 * * 1", "Australia/Sydney"),
                      ("@hourly", None))
_APPLY_TYPES = ("scheduled", "heartbeat", "sweep")
_APPLY_POLICIES = ("Forbid", "Allow", "Replace", "BufferOne")
INSTANCES_PER_MANIFEST = 100


def apply_documents(n: int) -> list[Obj]:
    """``n`` objects: ``INSTANCES_PER_MANIFEST`` SympoziumInstances (the agents; fewer
    when ``n`` is small) and SympoziumSchedules spread over them, so no schedule
    waits for a missing instance (which apply reports as a warning per schedule)."""
    instances = min(INSTANCES_PER_MANIFEST, max(1, n // 100))
    docs: list[Obj] = [
        {"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
         "metadata": {"name": f"agent-{i:03d}", "labels": {"team": f"team-{i % 7}"}},
         "spec": {"agents": {"default": {"model": "gpt-4o-mini"}}}}
        for i in range(instances)]
    for i in range(n - instances):
        agent = f"agent-{i % instances:03d}"
        expression, zone = _APPLY_EXPRESSIONS[i % len(_APPLY_EXPRESSIONS)]
        spec: dict[str, Any] = {
            "instanceRef": agent, "schedule": expression,
            "task": (f"Check the services of {agent} (item {i}): summarise what changed "
                     "since the last run and open a ticket for anything failing.")[: 60 + i % 90],
            "type": _APPLY_TYPES[i % 3], "concurrencyPolicy": _APPLY_POLICIES[i % 4],
        }
        if zone:
            spec["timeZone"] = zone
        if i % 5 == 0:
            spec["includeMemory"] = False
        if i % 4 == 1:
            spec["startingDeadlineSeconds"] = 300
        if i % 8 == 2:
            spec["jitter"] = "2m"
        if i % 10 == 3:
            spec["firstTick"] = "afterInterval"
        if i % 20 == 4:
            spec["exclude"] = [{"schedule": "* * 25,26 12 *"},
                               {"start": "2026-12-28", "end": "2027-01-02"}]
        if i % 25 == 5:
            spec["successfulRunsHistoryLimit"] = 5
            spec["failedRunsHistoryLimit"] = 2
        if i % 50 == 6:
            spec["suspend"] = True
        docs.append({"apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
                     "metadata": {"name": f"{agent}-task-{i:06d}",
                                  "labels": {LABEL_INSTANCE: agent, "team": f"team-{i % 7}"}},
                     "spec": spec})
    return docs


def write_manifest(path: Path, n: int) -> None:
    """One YAML file of ``n`` documents (block style, as ``kubectl get -o yaml`` writes)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w") as f:
        yaml.dump_all(apply_documents(n), f, Dumper=dumper, sort_keys=False,
                      default_flow_style=False, width=1000)


def apply_once(directory: Path, manifest: Path, n: int) -> dict[str, Any]:
    """``sympozium-schedule apply -f MANIFEST`` into a new data directory, as a user
    runs it (its output to a file), then the floor (bench/floors.py ``apply``) on the
    same file; each timed from just before the fork to the process's exit. The
    product's exit is after its last commit (the store is closed before it exits);
    checked: ``n`` objects in the store and ``n`` lines "created"."""
    target = directory / f"apply-{time.time_ns()}"
    out = directory / "apply.out"
    with out.open("wb") as stdout:
        began = time.perf_counter()
        done = subprocess.run([*program(), "apply", "-f", str(manifest), "--data-dir", str(target)],
                              stdout=stdout, stderr=subprocess.PIPE, check=False)
        product = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"apply failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    lines = out.read_text().splitlines()
    with contextlib.closing(read_only(target)) as conn:
        stored = conn.execute("SELECT count(*) FROM objects").fetchone()[0]
    if stored != n or len(lines) != n or not all(line.endswith(" created") for line in lines):
        raise RuntimeError(f"apply stored {stored} objects, printed {len(lines)} lines; {n} expected")
    schema = directory / "schema.sql"
    schema.write_text(SCHEMA)
    floor_db = directory / f"floor-{time.time_ns()}.db"
    began = time.perf_counter()
    floor_done = subprocess.run([sys.executable, "-m", "bench.floors", "apply", str(manifest),
                                 str(schema), str(floor_db)], capture_output=True, text=True,
                                check=True)
    floor = time.perf_counter() - began
    if int(floor_done.stdout.strip()) != n:
        raise RuntimeError(f"the floor wrote {floor_done.stdout.strip()} objects, {n} expected")
    warnings = len(done.stderr.decode().splitlines())
    return {"apply_s": round(product, 3), "floor_s": round(floor, 3), "objects": n,
            "warnings": warnings}


def measure_apply(options: Options, n: int) -> tuple[list[Figure], list[dict[str, Any]]]:
    """Repeats of :func:`apply_once` on one manifest of ``n`` documents."""
    runs = []
    with data_dir(options, f"{NAME}-apply") as directory:
        manifest = directory / "fleet.yaml"
        write_manifest(manifest, n)
        size = manifest.stat().st_size
        for i in range(options.repeats):
            run = apply_once(directory, manifest, n)
            run["manifest_bytes"] = size
            print(f"   apply repeat {i + 1}: {n} objects ({size / 1e6:.1f} MB) in "
                  f"{run['apply_s']:.2f} s ({n / run['apply_s']:,.0f}/s); floor "
                  f"{run['floor_s']:.2f} s ({n / run['floor_s']:,.0f}/s)", flush=True)
            runs.append(run)
    figures = [
        Figure("apply_s", f"apply -f of {n:,} objects: start -> exit, all committed", "s",
               [r["apply_s"] for r in runs], target=n / TARGET_APPLY_PER_S,
               floor=[r["floor_s"] for r in runs], floor_label="C loader + bare rows, 1 tx"),
        Figure("apply_per_s", "apply -f: objects per second", "/s",
               [n / r["apply_s"] for r in runs], target=TARGET_APPLY_PER_S, better="higher",
               floor=[n / r["floor_s"] for r in runs], floor_label="C loader + bare rows, 1 tx"),
    ]
    return figures, runs


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    window = _idle_window(size)
    with data_dir(options, NAME) as directory:
        created = datetime.now(UTC) - timedelta(seconds=1)
        began = time.time()
        seed(directory, quiet_schedules(size.schedules, created=created, quiet_for=window + 600))
        seeded = time.time() - began
        floor_s, floor_rss = import_floor()
        run = Shipped(directory)
        try:
            cold = start_once(run)
        finally:
            run.stop()
        run = Shipped(directory)
        floor = subprocess.Popen([sys.executable, "-m", "bench.floors", "idle"])
        try:
            warm = start_once(run)
            family = run.family()
            floor_proc = psutil.Process(floor.pid)
            rev_before = revision(directory)
            began = time.time()
            cpu_before = run.cpu(family["scheduler"])
            nats_before = run.cpu(family["nats"])
            floor_before = cpu_seconds(floor_proc)
            time.sleep(window)
            elapsed = time.time() - began
            idle = (run.cpu(family["scheduler"]) - cpu_before) / elapsed
            nats_idle = (run.cpu(family["nats"]) - nats_before) / elapsed
            floor_idle = (cpu_seconds(floor_proc) - floor_before) / elapsed
            writes = revision(directory) - rev_before
        finally:
            run.stop()
            floor.terminate()
            floor.wait(10)
    print(f"   repeat {index + 1}: seeded in {seeded:.0f} s; cold start {cold['start_s']:.2f} s "
          f"(decided {cold['decided_s']:.2f}), RSS {cold['rss_mib']:.0f} MiB; restart "
          f"{warm['start_s']:.2f} s (decided {warm['decided_s']:.2f}), RSS {warm['rss_mib']:.0f} MiB "
          f"(PSS {warm['pss_mib']:.0f}); nats-server {warm['nats_rss_mib']:.0f} MiB; idle "
          f"{idle:.3%} of a core over {elapsed:.0f} s (nats-server {nats_idle:.3%}, floor "
          f"{floor_idle:.3%}), {writes} writes; import floor {floor_s:.2f} s", flush=True)
    return {"cold": cold, "warm": warm, "floor_s": round(floor_s, 4),
            "floor_rss_mib": round(floor_rss, 1), "idle_percent": round(idle * 100, 4),
            "nats_idle_percent": round(nats_idle * 100, 4),
            "floor_idle_percent": round(floor_idle * 100, 4), "idle_writes": writes,
            "idle_window_s": round(elapsed, 1), "seed_s": round(seeded, 1)}


APPLY_CONFIG = {
    "apply_command": "sympozium-schedule apply -f FILE --data-dir NEW (the console script, "
                     "stdout to a file)",
    "apply_clock": "perf_counter just before the fork -> the process's exit (its store closed, "
                   "every object committed); checked after: every object stored, one line each",
    "apply_manifest": "one YAML file: 100 SympoziumInstances and the rest SympoziumSchedules "
                      "spread over them (bench/scale.py apply_documents: 10 expressions in 5 "
                      "zones, 3 types, 4 policies, optional fields in proportions)",
    "apply_floor": "python -m bench.floors apply: yaml.CSafeLoader reads the file, one objects "
                   "row and one changes row per document in one transaction (no checks, no "
                   "look-ups, no order, no output), same clock",
}


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    n_apply = size.schedules
    if os.environ.get("BENCH_SCALE_ONLY") == "apply":
        # Only apply -f, into its own result file: scale.json keeps the figures below.
        figures, apply_runs = measure_apply(options, n_apply)
        return Report(f"{NAME}-apply", f"{n_apply:,} objects: apply -f", APPLY_CONFIG, figures,
                      apply_runs)
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
        Figure("cold_decided_s", "start -> every schedule decided, cold", "s",
               [r["cold"]["decided_s"] for r in runs]),
        Figure("warm_decided_s", "start -> every schedule decided, restart", "s",
               [r["warm"]["decided_s"] for r in runs]),
        Figure("cold_rss_mib", "scheduler RSS (run + store writer), cold", "MiB",
               [r["cold"]["rss_mib"] for r in runs], target=TARGET_RSS_MIB,
               floor=floor_rss, floor_label="import cli.main, peak"),
        Figure("warm_rss_mib", "scheduler RSS (run + store writer), restart", "MiB",
               [r["warm"]["rss_mib"] for r in runs], target=TARGET_RSS_MIB,
               floor=floor_rss, floor_label="import cli.main, peak"),
        Figure("nats_rss_mib", "nats-server RSS (apart)", "MiB",
               [r["warm"]["nats_rss_mib"] for r in runs]),
        Figure("idle_percent", "idle: scheduler CPU over the window", "% core",
               [r["idle_percent"] for r in runs], target=TARGET_IDLE_PERCENT,
               floor=[r["floor_idle_percent"] for r in runs], floor_label="idle asyncio process"),
        Figure("idle_writes", "idle: store writes over the window", "",
               [float(r["idle_writes"]) for r in runs], target=0, gate="worst"),
        Figure("nats_idle_percent", "idle: nats-server CPU (apart)", "% core",
               [r["nats_idle_percent"] for r in runs]),
    ]
    apply_figures, apply_runs = measure_apply(options, n_apply)
    figures += apply_figures
    for run, applied in zip(runs, apply_runs, strict=True):
        run["apply"] = applied
    return Report(NAME, DESCRIPTION, {
        "schedules": size.schedules, "idle_window_s": _idle_window(size),
        "command": "sympozium-schedule run (as shipped, bench/shipped.py)",
        "start": "fork -> 'scheduler running' (every timer armed); decided: 'first pass done'",
        "rss": "run process + store writer, max over 3 s after 'first pass done'",
        "fire_lag": "at 100k fires/hour: bench/fire_lag.py, BENCH_FIRE_LAG_SIZE=100k",
        **APPLY_CONFIG,
    }, figures, runs)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
