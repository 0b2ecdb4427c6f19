"""Fire lag in embedded mode: schedules ticking every period, spread over the period.

    python -m bench fire_lag [--repeats N] [--quick]
    BENCH_FIRE_LAG_SIZE=100k python -m bench fire_lag   # 100,000 hourly: 100,000 fires/hour

Each repeat seeds a fresh data directory with ``@every`` schedules (concurrencyPolicy
Allow, so the unfinished runs of ``--no-runner`` never skip a tick; firstTick
afterInterval) whose creationTimestamps are spread evenly over one period
(``@every`` counts from the creation second, so the ticks are spread too), starts
the real ``sympozium-schedule run --no-runner --no-router`` on it (log level info,
JSON, as a user's ``run`` logs) and measures a window that starts 2 s after it is
ready.

Where the clock stops. The figure gated against the target is the lag **at commit**:
the ``lag_ms`` of the process's own ``fired`` log line, which the executor computes
when the store has answered the write group creating the run (after its COMMIT),
minus the planned fire time. A tick fired in a round with more than 32 fires is
logged as one ``fired (a burst)`` line per tick with the largest lag of the round,
and every fire of that round counts with that largest lag (an upper bound). Kept
beside it: the lag **at transaction start**, the run's creationTimestamp (stamped
when the store's transaction creating it begins) minus its tick, read back from the
store after the window.

The floor, in the same window: a bare Python process (``bench.floors timers``)
arming one ``loop.call_at`` timer per tick of the window, the same instants, each
measuring its own lag. A tick with no run by the end of the window (+3 s) is lost.

Sizes: 1,000 schedules ``@every 1m``, two periods (default); 100,000 ``@every 1h``
(``BENCH_FIRE_LAG_SIZE=100k``: 100,000 fires an hour, about 28 a second), a 3-minute
window after the cold start (the first pass writes 100,000 initial statuses), into
bench/results/fire_lag-100k.json; --quick: 100 schedules every 10 s, a 20 s window.
--gc-trace: the ``run`` process also logs its full garbage collections (a
sitecustomize on its PYTHONPATH); each repeat then lists the collections in the
window and the fires they delayed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    IMG_DIR,
    Figure,
    Options,
    Report,
    RunProcess,
    cpu_seconds,
    data_dir,
    fires,
    list_objects,
    main_for,
    schedule_obj,
    seed,
    summary,
)
from sympozium_schedule.core.model import Kind

NAME = "fire_lag"
DESCRIPTION = "fire lag, 1,000 @every-1m schedules spread over the minute (embedded `run`)"
TARGET_P99_MS = 100.0
START_DELAY = 2.0  # the window starts this long after /readyz says ready
GRACE = 3.0        # a run later than this after the window's end counts as lost


@dataclass(frozen=True)
class Size:
    schedules: int
    period: int  # seconds
    window: int  # seconds measured per repeat

    @property
    def per_hour(self) -> float:
        return self.schedules * 3600 / self.period


FULL = Size(schedules=1000, period=60, window=120)
QUICK = Size(schedules=100, period=10, window=20)
HUNDRED_K = Size(schedules=100_000, period=3600, window=180)
SIZES = {"100k": HUNDRED_K}


def _every(period: int) -> str:
    return f"@every {period // 60}m" if period % 60 == 0 else f"@every {period}s"


def ticks_in(anchors: dict[str, datetime], period: int, start: float, end: float) -> set[tuple[str, float]]:
    """Every (schedule, tick) with start <= tick < end; ticks are anchor + k * period, k >= 1."""
    found = set()
    for name, anchor in anchors.items():
        a = anchor.timestamp()
        k = max(int((start - a) // period), 1)
        while a + k * period < end:
            t = a + k * period
            if t >= start:
                found.add((name, t))
            k += 1
    return found


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    with data_dir(options, NAME) as directory:
        # Creation times spread over the last period: the first ticks fall in the next one.
        began = time.time()
        step = size.period / size.schedules
        base = datetime.fromtimestamp(began - size.period, UTC)
        schedules = [(schedule_obj(f"lag-{i:05d}", _every(size.period)),
                      base + timedelta(seconds=i * step)) for i in range(size.schedules)]
        seed(directory, schedules)
        anchors = {obj["metadata"]["name"]: created.replace(microsecond=0)
                   for obj, created in schedules}

        with RunProcess(directory, log_level="info", gc_trace=options.gc_trace) as run:
            ready = run.wait_ready()
            start = ready + START_DELAY
            end = start + size.window
            expected = ticks_in(anchors, size.period, start, end)
            targets = directory / "floor-targets.json"
            targets.write_text(json.dumps(sorted(t for _, t in expected)))
            floor = _start_floor(targets)
            proc = run.process()
            cpu_before, wall_before = cpu_seconds(proc), time.time()
            time.sleep(max(0.0, end - time.time()))
            cpu = (cpu_seconds(proc) - cpu_before) / (time.time() - wall_before)
            time.sleep(GRACE)
            floor_out, floor_err = floor.communicate(timeout=60)
        if floor.returncode != 0:
            raise RuntimeError(f"the timer floor failed: {floor_err.decode()}")
        floor_result = json.loads(floor_out)
        floor_lags = [x * 1000 for x in floor_result["lags"]]

        got = {(f.schedule, f.tick.timestamp()): f for f in fires(list_objects(directory, Kind.AGENT_RUN))}
        measured = [got[key] for key in expected if key in got]
        lags = [f.lag * 1000 for f in measured]
        lost = len(expected) - len(measured)
        at_commit = committed_lags(run.log_path, expected)
        # --gc-trace: the collections in the window, and the fires a collection delayed.
        pauses = [(stop - ms / 1000, stop, gen, ms) for stop, gen, ms in run.gc_pauses()
                  if start <= stop and stop - ms / 1000 < end + GRACE]
        in_gc = [f for f in measured if any(b < f.created.timestamp() and e > f.tick.timestamp()
                                            for b, e, _, _ in pauses)]
    lag = summary(lags)
    commit = summary(at_commit.lags)
    floor_summary = summary(floor_lags)
    print(f"   repeat {index + 1}: {len(measured)} fires; lag at commit p50 {commit['p50']:.1f} ms "
          f"p99 {commit['p99']:.1f} ms max {commit['max']:.1f} ms ({at_commit.in_bursts} in "
          f"bursts, {at_commit.missing} not logged); at transaction start p50 {lag['p50']:.1f} "
          f"ms p99 {lag['p99']:.1f} ms; floor p50 {floor_summary['p50']:.2f} ms "
          f"p99 {floor_summary['p99']:.2f} ms; lost {lost}; controller CPU {cpu:.1%}", flush=True)
    gc_info = None
    if options.gc_trace:
        gc_info = {"pauses_ms": [round(ms, 1) for _, _, gen, ms in pauses],
                   "generations": [gen for _, _, gen, _ in pauses],
                   "fires_delayed": len(in_gc),
                   "their_max_lag_ms": round(max((f.lag for f in in_gc), default=0) * 1000, 1)}
        print(f"     gc: collections in the window (ms) {gc_info['pauses_ms']}; fires overlapping "
              f"one {len(in_gc)}, their max lag {gc_info['their_max_lag_ms']} ms", flush=True)
    return {"lag_ms": commit, "lag_at_transaction_start_ms": lag,
            "logged": {"each": len(at_commit.lags) - at_commit.in_bursts,
                       "in_bursts": at_commit.in_bursts, "missing": at_commit.missing},
            "floor_ms": floor_summary, "lost": lost, "expected": len(expected),
            "floor_skipped": floor_result["skipped"], "controller_cpu": round(cpu, 4),
            "startup_s": round(ready - run.started_at, 3), "gc": gc_info,
            "_lags": at_commit.lags, "_floor": floor_lags,
            "_offsets": [(tick - start, ms) for tick, ms in at_commit.offsets]}


@dataclass(frozen=True)
class Committed:
    lags: list[float]  # ms, one per expected fire found in the log
    offsets: list[tuple[float, float]]  # (tick, ms)
    in_bursts: int  # counted with their round's largest lag
    missing: int  # expected fires with no log line (lost, or logged after the window)


def committed_lags(log_path: Path, expected: set[tuple[str, float]]) -> Committed:
    """Each expected fire's lag at commit, from the process's JSON log (module docstring)."""
    each: dict[tuple[str, float], float] = {}
    bursts: dict[float, float] = {}
    with log_path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"fired' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            tick = record.get("tick")
            if not isinstance(tick, str):
                continue
            stamp = datetime.fromisoformat(tick).timestamp()
            if record.get("event") == "fired":
                each[(str(record.get("schedule")), stamp)] = float(record["lag_ms"])
            elif record.get("event") == "fired (a burst)":
                bursts[stamp] = max(bursts.get(stamp, 0.0), float(record["lag_ms_max"]))
    lags, offsets, in_bursts, missing = [], [], 0, 0
    for key in expected:
        ms = each.get(key)
        if ms is None and key[1] in bursts:
            ms = bursts[key[1]]
            in_bursts += 1
        if ms is None:
            missing += 1
            continue
        lags.append(ms)
        offsets.append((key[1], ms))
    return Committed(lags, offsets, in_bursts, missing)


def _start_floor(targets: Path) -> Any:
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "bench.floors", "timers", str(targets)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def chosen_size(options: Options) -> tuple[str, Size]:
    """(result name, size): BENCH_FIRE_LAG_SIZE picks a larger size into its own file."""
    wanted = os.environ.get("BENCH_FIRE_LAG_SIZE", "")
    if wanted:
        if wanted not in SIZES:
            raise SystemExit(f"BENCH_FIRE_LAG_SIZE={wanted!r}: expected one of {', '.join(SIZES)}")
        return f"{NAME}-{wanted}", SIZES[wanted]
    return NAME, QUICK if options.quick else FULL


def measure(options: Options) -> Report:
    name, size = chosen_size(options)
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    floor_p50 = [r["floor_ms"]["p50"] for r in runs]
    floor_p99 = [r["floor_ms"]["p99"] for r in runs]
    figures = [
        Figure("p50_ms", "fire lag p50, at commit", "ms", [r["lag_ms"]["p50"] for r in runs],
               floor=floor_p50, floor_label="idle call_at p50"),
        Figure("p99_ms", "fire lag p99, at commit", "ms", [r["lag_ms"]["p99"] for r in runs],
               target=TARGET_P99_MS, floor=floor_p99, floor_label="idle call_at p99"),
        Figure("max_ms", "fire lag max, at commit", "ms", [r["lag_ms"]["max"] for r in runs],
               floor=[r["floor_ms"]["max"] for r in runs], floor_label="idle call_at max"),
        Figure("p99_start_ms", "fire lag p99, at transaction start (creationTimestamp)", "ms",
               [r["lag_at_transaction_start_ms"]["p99"] for r in runs]),
        Figure("unlogged", "expected fires with no `fired` log line", "",
               [float(r["logged"]["missing"]) for r in runs], target=0, gate="worst"),
        Figure("lost", "ticks lost", "", [float(r["lost"]) for r in runs], target=0, gate="worst"),
        Figure("cpu", "controller CPU while firing", "% core",
               [r["controller_cpu"] * 100 for r in runs]),
    ]
    if options.draw:
        draw(runs, size, name)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    description = DESCRIPTION if size is not HUNDRED_K else (
        "fire lag, 100,000 @every-1h schedules spread over the hour (100,000 fires/hour, embedded `run`)")
    return Report(name, description, {
        "schedules": size.schedules, "schedule": _every(size.period), "window_s": size.window,
        "fires_per_hour": size.per_hour,
        "concurrencyPolicy": "Allow", "firstTick": "afterInterval",
        "command": "sympozium-schedule run --no-runner --no-router --log-level info --log-format json",
        "lag": "at commit: the `fired` log line's lag_ms (the executor's clock when the store "
               "answered the write group, after COMMIT, minus the planned fire time; a burst "
               "round's fires count with its largest lag); at transaction start: AgentRun "
               "creationTimestamp - sympozium.ai/scheduled-time, read from the store",
    }, figures, public)


def draw(runs: list[dict[str, Any]], size: Size, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lags = sorted(x for r in runs for x in r["_lags"])
    floor = sorted(max(x, 1e-3) for r in runs for x in r["_floor"])
    fig, (cdf, scatter) = plt.subplots(1, 2, figsize=(11, 4.2))
    for values, label in ((lags, "fire lag (committed - tick)"), (floor, "floor: idle call_at lag")):
        ys = [i / len(values) for i in range(1, len(values) + 1)]
        cdf.plot([max(v, 1e-3) for v in values], ys, label=label)
    cdf.axvline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1, label="target p99 = 100 ms")
    cdf.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    cdf.set_xscale("log")
    cdf.set_xlabel("lag (ms, log scale)")
    cdf.set_ylabel("fraction of fires")
    cdf.set_title(f"{size.schedules:,} schedules, {_every(size.period)}, "
                  f"{len(runs)} runs x {size.window} s")
    cdf.legend(loc="lower right", fontsize=8)
    for i, r in enumerate(runs):
        scatter.scatter([x for x, _ in r["_offsets"]], [y for _, y in r["_offsets"]], s=3, alpha=0.5,
                        label=f"run {i + 1}")
    scatter.axhline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1)
    scatter.set_xlabel("tick, seconds into the window")
    scatter.set_ylabel("fire lag (ms)")
    scatter.set_title("fire lag over the window")
    scatter.legend(loc="upper right", fontsize=8, markerscale=3)
    fig.tight_layout()
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG_DIR / f"{name}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
