"""What the benchmarks share: machine facts, statistics, the figure table and the
result files, the real ``sympozium-schedule run`` process, and seeding a store.

A benchmark module defines ``NAME``, ``DESCRIPTION`` and ``measure(options) ->
Report``: it repeats its experiment ``options.repeats`` times, each repeat
measuring the product and its floor side by side (same machine, same minute),
and returns one :class:`Figure` per target. :func:`finish` prints the table and
writes ``bench/results/<name>.json``.

Percentiles are linear interpolation between order statistics (numpy's default);
a figure's value is the median over repeats, its spread the min..max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import psutil

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import (
    ANNOTATION_SCHEDULED_TIME,
    API_VERSION,
    LABEL_INSTANCE,
    Kind,
    parse_time,
)
from sympozium_schedule.ports.store import Obj
from sympozium_schedule.runtime.paths import store_path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
IMG_DIR = PROJECT_DIR / "docs" / "img"
NAMESPACE = "default"
INSTANCE = "bench"


# --- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    repeats: int = 3
    quick: bool = False
    keep: bool = False  # keep each repeat's data directory (for a post-mortem)
    plots: bool = True  # measurement runs draw docs/img/*.png; --quick and --profile never do
    profile: bool = False  # where the benchmark supports it: a py-spy/pyinstrument profile
    gc_trace: bool = False  # log the `run` process's slow garbage collections (see GC_TRACE)
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    @property
    def draw(self) -> bool:
        return self.plots and not self.quick and not self.profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="independent repeats per benchmark (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced sizes: a smoke check of the harness, not a measurement")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--no-plots", action="store_true", help="do not redraw docs/img/*.png")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the product where the benchmark supports it")
    parser.add_argument("--gc-trace", action="store_true",
                        help="record the run process's garbage-collection pauses (fire_lag)")


def options_from(args: argparse.Namespace) -> Options:
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    return Options(repeats=repeats, quick=args.quick, keep=args.keep, plots=not args.no_plots,
                   profile=args.profile, gc_trace=args.gc_trace)


# --- machine facts ---------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _nats_version() -> str:
    from sympozium_schedule.adapters.nats.server import NatsServerError, find_binary

    try:
        done = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, timeout=10)
    except (NatsServerError, OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return done.stdout.strip() or done.stderr.strip()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# Set by ``python -m bench --at REF``: "<sha>:<snapshot src dir>".
SOURCE_ENV = "SYMPOZIUM_BENCH_SOURCE"


def source() -> dict[str, Any]:
    """The commit measured, and whether src/ differed from it (others edit it meanwhile)."""
    pinned = os.environ.get(SOURCE_ENV)
    if pinned:
        import sympozium_schedule

        sha, _, where = pinned.partition(":")
        if not str(Path(sympozium_schedule.__file__).resolve()).startswith(str(Path(where).resolve())):
            raise RuntimeError(f"--at: sympozium_schedule was imported from "
                               f"{sympozium_schedule.__file__}, not the snapshot {where}")
        return {"commit": sha, "src_modified": False, "src_diff_sha1": None, "snapshot": True}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    diff = git("diff", "HEAD", "--", "src", "pyproject.toml")
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown",
            "src_tree": git("rev-parse", "--short", "HEAD:src") or "unknown",
            "src_modified": bool(diff),
            "src_diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:10] if diff else None}


def _measured_code(facts: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies the code under measurement: commits that touch only bench/ or
    docs/ meanwhile change nothing measured."""
    return facts.get("src_tree", facts["commit"]), facts["src_modified"], facts["src_diff_sha1"]


def machine() -> dict[str, Any]:
    return {
        "source": source(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "nats_server": _nats_version(),
    }


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between order statistics."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of a sample (the unit of the sample)."""
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else float("nan")}


Better = Literal["lower", "higher"]
Gate = Literal["median", "worst"]


@dataclass
class Figure:
    """One measured figure: a value per repeat, its target and its floor per repeat.

    ``gate`` says what must meet the target: the median over repeats, or every
    repeat (``worst``, for figures that must hold always: lost ticks, writes).
    """

    key: str
    label: str
    unit: str
    values: list[float]
    target: float | None = None
    better: Better = "lower"
    floor: list[float] | None = None
    floor_label: str = ""
    gate: Gate = "median"

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def worst(self) -> float:
        return (max if self.better == "lower" else min)(self.values)

    @property
    def floor_median(self) -> float | None:
        return statistics.median(self.floor) if self.floor else None

    @property
    def ratio(self) -> float | None:
        floor = self.floor_median
        if floor is None or floor <= 0:
            return None
        return self.median / floor

    @property
    def passed(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        value = self.median if self.gate == "median" else self.worst
        return value <= self.target if self.better == "lower" else value >= self.target

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "label": self.label, "unit": self.unit,
            "median": _round(self.median), "min": _round(min(self.values)),
            "max": _round(max(self.values)), "values": [_round(v) for v in self.values],
            "target": self.target, "better": self.better, "gate": self.gate,
            "floor": {"label": self.floor_label, "median": _round(self.floor_median),
                      "values": [_round(v) for v in self.floor]} if self.floor else None,
            "ratio": _round(self.ratio), "passed": self.passed,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


@dataclass
class Report:
    name: str
    description: str
    config: dict[str, Any]
    figures: list[Figure]
    repeats: list[dict[str, Any]] = field(default_factory=list)  # per-repeat details, small
    notes: list[str] = field(default_factory=list)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def table(report: Report) -> str:
    rows = [("figure", "median", "spread (min..max)", "target", "floor (median)", "ratio", "pass")]
    for f in report.figures:
        op = "<=" if f.better == "lower" else ">="
        target = f"{op} {_fmt(f.target, f.unit)}" + (" every run" if f.gate == "worst" else "") \
            if f.target is not None else "-"
        floor = f"{_fmt(f.floor_median, f.unit)} ({f.floor_label})" if f.floor else "-"
        ratio = f"{f.ratio:.1f}x" if f.ratio is not None else "-"
        verdict = {True: "PASS", False: "FAIL", None: "-"}[f.passed]
        rows.append((f.label, _fmt(f.median, f.unit),
                     f"{_fmt(min(f.values))}..{_fmt(max(f.values))}", target, floor, ratio, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def finish(report: Report, options: Options, *, machine_facts: dict[str, Any],
           load: tuple[list[float], list[float]], started: float) -> Path:
    """Print the table and write the result file; its path."""
    print(f"\n== {report.name}: {report.description}")
    src = machine_facts["source"]
    print(f"   commit {src['commit']}{' + local changes in src/' if src['src_modified'] else ''}; "
          f"{machine_facts['cpu']}, {machine_facts['cores']} cores; load average "
          f"{' '.join(map(str, load[0]))} before, {' '.join(map(str, load[1]))} after; "
          f"{options.repeats} repeat(s){', QUICK (reduced sizes)' if options.quick else ''}")
    print(table(report))
    for note in report.notes:
        print(f"   note: {note}")
    after = source()
    if _measured_code(after) != _measured_code(machine_facts["source"]):
        report.notes.append(f"src/ changed during this run (commit {machine_facts['source']['commit']} "
                            f"-> {after['commit']}, modified {after['src_modified']}): the repeats "
                            "may have measured different code")
        print(f"   note: {report.notes[-1]}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # Smoke checks and profiled (perturbed) runs never overwrite the measurement.
    suffix = ".quick" if options.quick else ".profiled" if options.profile else ""
    path = RESULTS_DIR / f"{report.name}{suffix}.json"
    document = {
        "benchmark": report.name,
        "description": report.description,
        "when": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "quick": options.quick,
        "profiled": options.profile,
        "gc_trace": options.gc_trace,
        "repeats": options.repeats,
        "machine": machine_facts,
        "load_average": {"before": load[0], "after": load[1]},
        "config": report.config,
        "figures": [f.as_json() for f in report.figures],
        "runs": report.repeats,
        "notes": report.notes,
    }
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    print(f"   wrote {path.relative_to(PROJECT_DIR)}")
    return path


Measure = Callable[[Options], Report]


def run_benchmark(name: str, measure: Measure, options: Options) -> Report:
    facts = machine()
    before, started = load_average(), time.time()
    report = measure(options)
    finish(report, options, machine_facts=facts, load=(before, load_average()), started=started)
    return report


def main_for(name: str, measure: Measure, description: str) -> int:
    """``python -m bench.<name> [--quick] [--repeats N]``: one benchmark alone."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    add_arguments(parser)
    report = run_benchmark(name, measure, options_from(parser.parse_args()))
    return 0 if all(f.passed is not False for f in report.figures) else 1


# --- data directories --------------------------------------------------------------------------


@contextlib.contextmanager
def data_dir(options: Options, label: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"sympozium-bench-{label}-", dir=options.work_dir))
    try:
        yield path
    finally:
        if options.keep:
            print(f"   kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the real `run` process ------------------------------------------------------------------------


def program() -> list[str]:
    """The installed console script (what a user runs), else the module."""
    script = Path(sys.executable).parent / "sympozium-schedule"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sympozium_schedule.cli.main"]


# A sitecustomize for the `run` process (--gc-trace): every full (generation 2)
# collection, and any collection over 5 ms, as "<end wall time> <generation> <ms>".
GC_TRACE = """\
import gc, os, time
_path, _began = os.environ.get("BENCH_GC_TRACE"), [0.0]
def _trace(phase, info):
    if phase == "start":
        _began[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _began[0]) * 1000
    if info["generation"] == 2 or ms > 5:
        with open(_path, "a") as f:
            f.write(f"{time.time():.4f} {info['generation']} {ms:.2f}\\n")
if _path:
    gc.callbacks.append(_trace)
"""


class RunProcess:
    """``sympozium-schedule run --no-runner --no-router`` on a data directory.

    Readiness is ``/readyz`` answering 200, which it does once the controller's
    first pass is done and every timer is armed (the same moment the process
    logs "scheduler running"). Its stderr goes to ``<data-dir>/run-<n>.log``.
    """

    _count = 0

    def __init__(self, data_dir: Path, *, log_level: str = "warning",
                 metrics_port: int | None = None, extra: Sequence[str] = (),
                 gc_trace: bool = False):
        self.data_dir = data_dir
        self.gc_trace = data_dir / "gc-trace.txt" if gc_trace else None
        self.port = metrics_port or free_port()
        RunProcess._count += 1
        self.log_path = data_dir / f"run-{RunProcess._count}.log"  # one per start: parsed alone
        self.args = [*program(), "run", "--no-runner", "--no-router", "--log-level", log_level,
                     "--log-format", "json", "--metrics-port", str(self.port),
                     "--data-dir", str(data_dir), *extra]
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # wall clock, just before the fork
        self.ready_at = 0.0    # wall clock, the first /readyz 200 seen

    def start(self) -> float:
        env = dict(os.environ, PYTHONUNBUFFERED="1", SYMPOZIUM_DATA_DIR=str(self.data_dir))
        if self.gc_trace is not None:
            hook = self.data_dir / "gc-hook"
            hook.mkdir(exist_ok=True)
            (hook / "sitecustomize.py").write_text(GC_TRACE)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
            env["BENCH_GC_TRACE"] = str(self.gc_trace)
        self._log = self.log_path.open("ab")
        self.started_at = time.time()
        self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=self._log, env=env)
        return self.started_at

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.01) -> float:
        """Poll /readyz; the wall-clock time it first answered 200."""
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"`run` exited with {self.popen.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = self._get("/readyz", timeout=1.0)
                if status == 200:
                    self.ready_at = time.time()
                    return self.ready_at
            time.sleep(interval)
        raise TimeoutError(f"`run` not ready after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {sample name with labels: value}."""
        _, text = self._get("/metrics", timeout=10.0)
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def gc_pauses(self) -> list[tuple[float, int, float]]:
        """(wall time at the end, generation, milliseconds) of each traced collection."""
        pauses = []
        if self.gc_trace is not None:
            with contextlib.suppress(OSError):
                for line in self.gc_trace.read_text().splitlines():
                    end, gen, ms = line.split()
                    pauses.append((float(end), int(gen), float(ms)))
        return pauses

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        with contextlib.suppress(OSError):
            for raw in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    loaded = json.loads(raw)
                    if isinstance(loaded, dict):
                        lines.append(loaded)
        return lines

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


# --- seeding ----------------------------------------------------------------------------------


def instance_obj(name: str = INSTANCE) -> Obj:
    return {"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"agents": {"default": {"model": "gpt-4o"}}}}


def schedule_obj(name: str, expression: str, *, policy: str = "Allow",
                 first_tick: str = "afterInterval", instance: str = INSTANCE) -> Obj:
    return {
        "apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {LABEL_INSTANCE: instance}},
        "spec": {"instanceRef": instance, "schedule": expression, "type": "scheduled",
                 "task": f"Benchmark task of {name}: check the cluster and report.",
                 "concurrencyPolicy": policy, "firstTick": first_tick, "includeMemory": False},
    }


async def _seed(path: Path, schedules: Sequence[tuple[Obj, datetime]]) -> int:
    current = [schedules[0][1] if schedules else datetime.now(UTC)]
    store = SQLiteStore(path, clock=lambda: current[0])
    try:
        await store.create(instance_obj())
        if len({created for _, created in schedules}) <= 1:
            # One creation time for all: let the writer group-commit them.
            await asyncio.gather(*(store.create(obj) for obj, _ in schedules))
        else:
            # The store reads its clock once per transaction: one create at a time,
            # so each schedule gets its own creationTimestamp.
            for obj, created in schedules:
                current[0] = created
                await store.create(obj)
        return store.revision()
    finally:
        await store.close()


def seed(data_dir: Path, schedules: Sequence[tuple[Obj, datetime]]) -> int:
    """Create the bench instance and ``schedules`` (object, creationTimestamp) in the
    data directory's store, through a SQLiteStore whose clock returns each
    schedule's creation time; the store's revision afterwards."""
    return asyncio.run(_seed(store_path(data_dir), schedules))


# --- reading the store back -----------------------------------------------------------------------


def read_only(data_dir: Path) -> sqlite3.Connection:
    """A raw read-only connection for cheap polling while `run` writes (WAL lets it
    read without blocking the writer). It knows the store's layout (the
    ``objects`` table, a ``status`` column): fine for a benchmark, not for code."""
    uri = f"file:{store_path(data_dir)}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


async def _list(path: Path, kind: Kind) -> list[Obj]:
    store = SQLiteStore(path)
    try:
        return (await store.list(kind, namespace=NAMESPACE)).items
    finally:
        await store.close()


def list_objects(data_dir: Path, kind: Kind) -> list[Obj]:
    return asyncio.run(_list(store_path(data_dir), kind))


def revision(data_dir: Path) -> int:
    with contextlib.closing(read_only(data_dir)) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0])


@dataclass(frozen=True)
class Fire:
    run: str
    schedule: str
    tick: datetime
    created: datetime

    @property
    def lag(self) -> float:
        return (self.created - self.tick).total_seconds()


def fires(runs: Sequence[Obj]) -> list[Fire]:
    """Each AgentRun's tick (its scheduled-time annotation) and creationTimestamp."""
    found = []
    for run in runs:
        meta = run["metadata"]
        tick = parse_time((meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME))
        created = parse_time(meta.get("creationTimestamp"))
        if tick is None or created is None:
            continue
        found.append(Fire(meta["name"], (meta.get("labels") or {}).get("sympozium.ai/schedule", ""),
                          tick, created))
    return found


def spawn_python(code: str, *args: str) -> subprocess.Popen[bytes]:
    """A helper Python process (a floor), unbuffered, output captured."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def asdict_rounded(obj: Any) -> dict[str, Any]:
    return {k: _round(v) if isinstance(v, float) else v for k, v in asdict(obj).items()}


# --- profiling ----------------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy from $PY_SPY, PATH or the venv (it is not a project dependency)."""
    candidates = [os.environ.get("PY_SPY"), shutil.which("py-spy"),
                  str(Path(sys.executable).parent / "py-spy")]
    return next((c for c in candidates if c and Path(c).exists()), None)


class Profiler:
    """py-spy sampling a running process (``record --format raw``) between start and stop."""

    def __init__(self, pid: int, out: Path, *, rate: int = 200, gil: bool = False):
        """``gil``: sample only the thread holding the GIL. For a GIL-bound process that
        is where the wall time goes (without it, a thread waiting for the GIL is counted
        in whatever frame it waits); time in C code that releases the GIL (SQLite's)
        is then not counted."""
        self.out = out
        binary = py_spy()
        self.popen: subprocess.Popen[bytes] | None = None
        if binary is None:
            print("   (no py-spy: set PY_SPY=/path/to/py-spy to profile)")
            return
        self.popen = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--nonblocking", "--threads", *(["--gil"] if gil else []), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> str | None:
        """Stop sampling; a summary of where the samples were."""
        if self.popen is None:
            return None
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return None
        if not self.out.exists():
            return f"py-spy wrote nothing: {self.popen.stderr.read().decode() if self.popen.stderr else ''}"
        return profile_summary(self.out)


def _frame(text: str) -> str:
    """``fn (path/to/module.py:123)`` -> ``fn (module.py)``: one row per function."""
    name, _, where = text.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3."):
        if marker in where:
            where = where.split(marker, 1)[1]
    where = where.split("src/", 1)[-1]
    return f"{name} ({where})" if where else name


def profile_summary(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks,
    and the share per thread."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    callers: dict[str, dict[str, int]] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):  # py-spy --subprocesses
            frames = frames[1:]
        if frames and frames[0].startswith("thread ("):
            threads[frames[0]] = threads.get(frames[0], 0) + count
            frames = frames[1:]
        names = [_frame(f) for f in frames if f]
        if not names:
            continue
        total += count
        own[names[-1]] = own.get(names[-1], 0) + count
        if len(names) > 1:
            by = callers.setdefault(names[-1], {})
            by[names[-2]] = by.get(names[-2], 0) + count
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + count
    if not total:
        return "no samples"
    lines = [f"{total} samples; by thread: " + ", ".join(
        f"{t} {c / total:.0%}" for t, c in sorted(threads.items(), key=lambda kv: -kv[1]))]
    lines.append("  self%  incl%  function")
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {count / total:5.1%}  {inclusive[name] / total:5.1%}  {name}")
    lines.append("  -- callers of the top self-time functions")
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:6]:
        top_callers = sorted(callers.get(name, {}).items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"  {name}: " + ", ".join(f"{c} {n / count:.0%}" for c, n in top_callers))
    lines.append("  -- inclusive, top (excluding the event loop's own frames)")
    shown = 0
    for name, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if any(s in name for s in ("asyncio/", "_run_once", "run_forever", "<module>", "runpy",
                                   "threading.py", "_bootstrap", "typer", "click")):
            continue
        lines.append(f"  {count / total:5.1%}  {name}")
        shown += 1
        if shown >= top:
            break
    return "\n".join(lines)


# Expressions of a realistic, quiet mix: (expression, time zone). Cron in several zones
# makes start-up compile and query real cron, not only @every arithmetic.
_QUIET_MIX = (("@every 1h", "UTC"), ("0 3 * * *", "America/New_York"),
              ("30 2 * * 1-5", "Europe/Warsaw"), ("*/30 * * * *", "UTC"),
              ("0 */6 * * *", "Asia/Tokyo"), ("@every 24h", "UTC"))


def quiet_schedules(n: int, *, created: datetime, quiet_for: float) -> list[tuple[Obj, datetime]]:
    """``n`` schedules (firstTick afterInterval) from a mix of expressions and zones,
    keeping only the expressions with no tick between ``created`` and ``quiet_for``
    seconds after now, so nothing fires while a benchmark watches."""
    from sympozium_schedule.core.cron import compile_schedule

    horizon = datetime.now(UTC).timestamp() + quiet_for
    mix = []
    for expression, zone in _QUIET_MIX:
        nxt = compile_schedule(expression, time_zone=zone, anchor=created).next_after(created)
        if nxt is None or nxt.timestamp() > horizon:
            mix.append((expression, zone))
    if not mix:
        raise RuntimeError("no expression of the mix is quiet for that long: try again later")
    schedules = []
    for i in range(n):
        expression, zone = mix[i % len(mix)]
        obj = schedule_obj(f"quiet-{i:05d}", expression)
        obj["spec"]["timeZone"] = zone
        schedules.append((obj, created))
    return schedules
