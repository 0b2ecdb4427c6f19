"""Retention: what the data directory keeps while `run` fires for a long time.

    python -m bench retention [--repeats N] [--quick]

Each repeat starts the real ``sympozium-schedule run`` as shipped (its NATS server, the local
runner with the demo agent in the Landlock sandbox, the router, one IPC bridge per run) on a
data directory with 4 schedules firing every second (default history limits: 3 succeeded,
1 failed), and samples the size of each part of the data directory every 15 s: ``store.db``
(with its WAL), the NATS server's files, the run folders, and the logs. A day of one schedule
every 20 s is 4,320 fires; this runs ~240 fires a minute, so 10 minutes here are ~2,400 fires,
more than half a day of that schedule.

Figures: fires in the window; the run folders at the end (what the history limits keep);
growth of each part over the second half of the window, per 1,000 fires; and the store's
bound: its change log keeps the last 200,000 writes, so ``store.db`` grows (measured per fire)
until the log is full, then stays. No floor: nothing to compare a disk footprint with.

--quick: a 2-minute window.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    Figure,
    Options,
    Report,
    data_dir,
    free_port,
    main_for,
    program,
    schedule_obj,
    seed,
)

NAME = "retention"
DESCRIPTION = "retention: the data directory while `run` fires 4 schedules a second"
SCHEDULES = 4
SAMPLE_EVERY = 15.0
CHANGE_LOG_ROWS = 200_000  # SQLiteStore's keep_changes


@dataclass(frozen=True)
class Size:
    window: float


FULL = Size(window=600.0)
QUICK = Size(window=120.0)


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a run folder removed while we walked it
                total += (Path(root) / name).stat().st_size
    return total


def parts(directory: Path) -> dict[str, int]:
    store = sum(_bytes(p) for p in directory.glob("store.db*"))
    logs = sum(_bytes(p) for p in directory.glob("*.log*"))
    runs = directory / "runs"
    folders = sum(1 for _ in runs.glob("*/*")) if runs.exists() else 0
    return {"store": store, "nats": _bytes(directory / "nats"), "runs": _bytes(runs),
            "logs": logs, "run_folders": folders}


def fires(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^sympozium_schedule_fires_total\{trigger="schedule"\} ([0-9.e+]+)$', text,
                      re.M)
    return float(found.group(1)) if found else 0.0


def change_rows(directory: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"{(directory / 'store.db').resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM changes").fetchone()[0])
    finally:
        conn.close()


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    with data_dir(options, NAME) as directory:
        created = datetime.now(UTC) - timedelta(seconds=1)
        seed(directory, [(schedule_obj(f"r{i}", "@every 1s", policy="Forbid"), created)
                         for i in range(SCHEDULES)])
        port = free_port()
        agent = f"{shlex.quote(sys.executable)} -m sympozium_schedule.agents.demo"
        args = [*program(), "run", "--data-dir", str(directory), "--agent-command", agent,
                "--agent-env", "DEMO_AGENT_SECONDS=0.05", "--metrics-port", str(port),
                "--no-console", "--log-level", "warning", "--log-format", "json"]
        with (directory.parent / f"{directory.name}-run.log").open("wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            samples: list[dict[str, Any]] = []
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        fires(port)
                        break
                    except OSError:
                        time.sleep(0.2)
                began = time.monotonic()
                while time.monotonic() - began <= size.window:
                    samples.append({"t": time.monotonic() - began, "fires": fires(port),
                                    **parts(directory)})
                    time.sleep(SAMPLE_EVERY)
                rows = change_rows(directory)
            finally:
                process.terminate()
                process.wait(timeout=30)
    half = samples[len(samples) // 2]
    last = samples[-1]
    fired = last["fires"] - half["fires"]
    growth = {k: (last[k] - half[k]) / fired * 1000 if fired else 0.0
              for k in ("store", "nats", "runs", "logs")}
    return {"samples": samples, "fires": last["fires"], "second_half_fires": fired,
            "growth_per_1000": growth, "run_folders": last["run_folders"],
            "change_rows": rows, "rows_per_fire": rows / last["fires"] if last["fires"] else 0.0,
            "store_bytes": last["store"], "total_bytes": sum(last[k] for k in
                                                             ("store", "nats", "runs", "logs"))}


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    repeats = [one_repeat(options, size, i) for i in range(options.repeats)]
    kib = 1024.0

    def projected(r: dict[str, Any]) -> float:
        """store.db once its change log holds CHANGE_LOG_ROWS rows, from the measured growth."""
        to_fill = max(CHANGE_LOG_ROWS / max(r["rows_per_fire"], 1e-9) - r["fires"], 0.0)
        return (r["store_bytes"] + r["growth_per_1000"]["store"] * to_fill / 1000) / kib / kib

    figures = [
        Figure("fires", "fires in the window", "", [r["fires"] for r in repeats], better="higher"),
        Figure("run_folders", "run folders at the end (history limits keep 4 a schedule)", "",
               [r["run_folders"] for r in repeats], target=SCHEDULES * 4, gate="worst"),
        Figure("runs_growth", "run folders' growth, second half, per 1,000 fires", "KiB",
               [r["growth_per_1000"]["runs"] / kib for r in repeats], target=64.0),
        Figure("nats_growth", "NATS files' growth, second half, per 1,000 fires", "KiB",
               [r["growth_per_1000"]["nats"] / kib for r in repeats], target=64.0),
        Figure("logs_growth", "logs' growth, second half, per 1,000 fires", "KiB",
               [r["growth_per_1000"]["logs"] / kib for r in repeats], target=64.0),
        Figure("store_growth", "store.db growth per 1,000 fires (until the change log is full)",
               "KiB", [r["growth_per_1000"]["store"] / kib for r in repeats]),
        Figure("rows_per_fire", "change-log rows per fire", "", [r["rows_per_fire"] for r in repeats]),
        Figure("store_bound", "store.db when its change log is full (projected)", "MiB",
               [projected(r) for r in repeats]),
        Figure("total", "the data directory at the end", "MiB",
               [r["total_bytes"] / kib / kib for r in repeats]),
    ]
    return Report(NAME, DESCRIPTION, {
        "schedules": SCHEDULES, "every": "1s", "window_s": size.window,
        "sample_every_s": SAMPLE_EVERY, "history_limits": "3 succeeded, 1 failed (defaults)",
        "command": "sympozium-schedule run --agent-command <demo agent> --no-console",
    }, figures, [{k: v for k, v in r.items() if k != "samples"} | {"samples": r["samples"][::4]}
                 for r in repeats])


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
