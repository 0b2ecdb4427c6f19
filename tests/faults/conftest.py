"""Real ``sympozium-schedule run`` processes under faults: SIGKILL, a read-only store, a full disk.

A :class:`RunProcess` is the real command (the typer app ``sympozium-schedule`` is)
started *warm*: the interpreter imports the CLI and the runtime, then blocks on its
stdin until :meth:`RunProcess.go` before calling the app with the ``run`` arguments.
That takes the ~0.8 s of imports out of every restart, so a crash can be followed
by a restart at once and fifty of them fit in a minute; what runs after ``go`` is
exactly what ``sympozium-schedule run ...`` runs.

Flags: ``--no-runner`` (runs stay unexecuted, so phases never matter),
``--no-router`` and ``--nats-url`` pointing nowhere, so no NATS server is started and
nothing connects to one (only the router and the runner's bridges would). The
output comes back through a pipe read by a thread, so readiness (the
``scheduler running`` line, logged after the controller's first pass) is seen at
once and no log file sits on a filesystem a test is about to fill.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.core.model import (
    ANNOTATION_SCHEDULED_TIME,
    API_VERSION,
    LABEL_SCHEDULE,
    Kind,
    parse_time,
)
from tests import support

SECOND = timedelta(seconds=1)
# Nothing listens on the discard port: the URL only keeps `run` from starting a server.
NOWHERE = "nats://127.0.0.1:9"
RUN_FLAGS = ("--no-runner", "--no-router", "--nats-url", NOWHERE, "--log-format", "json")
READY_LINE = '"event": "scheduler running"'
# Generous for a loaded 2-core machine; a passing test never waits anywhere near this.
PATIENCE = 30.0
# Keep every run: the history limits would otherwise delete the evidence.
KEEP_ALL = {"concurrencyPolicy": "Allow", "successfulRunsHistoryLimit": 1000,
            "failedRunsHistoryLimit": 1000}

_WARM = """\
import sys
from sympozium_schedule.cli.main import app
import sympozium_schedule.cli.demo, sympozium_schedule.runtime.app, sympozium_schedule.runtime.http
if sys.stdin.readline() == "go\\n":
    app(sys.argv[1:], prog_name="sympozium-schedule")
"""


def now() -> datetime:
    return datetime.now(UTC)


class RunProcess:
    """One warm ``sympozium-schedule run``; see the module docstring."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str]):
        self.args = ("run", "--data-dir", str(data_dir), *RUN_FLAGS, *extra)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WARM, *self.args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.started: datetime | None = None
        self.ready_at: datetime | None = None
        self.ended: datetime | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not self._ready.is_set() and READY_LINE in line:
                self.ready_at = now()
                self._ready.set()
            self.lines.append(line)
        self._ready.set()  # the process ended: wake a waiter (it checks why)

    @property
    def pid(self) -> int:
        return self.process.pid

    def go(self) -> datetime:
        """Let it run (it has imported everything, or finishes that first)."""
        assert self.process.stdin is not None
        self.started = now()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self.started

    def wait_ready(self, timeout: float = PATIENCE) -> datetime:
        if not self._ready.wait(timeout) or self.ready_at is None:
            raise AssertionError(f"run was not ready within {timeout}s (exit code "
                                 f"{self.process.poll()}):\n{self.tail()}")
        return self.ready_at

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> datetime:
        """SIGKILL, then wait for the exit: nothing of it runs after the returned instant."""
        self.process.kill()
        self.process.wait(timeout=PATIENCE)
        self.ended = now()
        return self.ended

    def terminate(self) -> int:
        """SIGTERM (a clean stop); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run did not stop within {PATIENCE}s of SIGTERM:\n{self.tail()}")
        self.ended = now()
        return code

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (anything else it printed is skipped)."""
        out = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def tail(self, size: int = 4000) -> str:
        return "".join(self.lines)[-size:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=PATIENCE)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        self._reader.join(timeout=5)


class Runs:
    """Every RunProcess of one test, each stopped by its id at the end."""

    def __init__(self, data_dir: Path, env: dict[str, str]):
        self.data_dir = data_dir
        self.env = env
        self.started: list[RunProcess] = []

    def warm(self, *extra: str) -> RunProcess:
        process = RunProcess(self.data_dir, *extra, env=self.env)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            process.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SYMPOZIUM_DATA_DIR"] = str(tmp_path / "from-env")  # never the user's real store
    env.pop("EVENT_BUS_URL", None)
    env.pop("XDG_DATA_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def runs(data_dir: Path, run_env: dict[str, str]) -> Iterator[Runs]:
    started = Runs(data_dir, run_env)
    yield started
    started.close()


# --- the store, from the test's side ------------------------------------------------------


def instance_obj(name: str = "alice") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"agents": {"default": {"model": "gpt-4o"}}}}


def schedule_obj(name: str, schedule: str, *, instance: str = "alice", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"instanceRef": instance, "schedule": schedule, "task": "Check in."} | spec}


# Objects written as `apply` would (it creates them through the same store).
seed = support.seed_store


def rows(data_dir: Path) -> list[tuple[str, str, str, str | None]]:
    """(kind, name, body, status) of every stored object, straight from the file
    (read-only, so a test can look while the scheduler runs)."""
    conn = sqlite3.connect(f"file:{data_dir / 'store.db'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT kind, name, body, status FROM objects ORDER BY kind, name").fetchall()
    finally:
        conn.close()


def objects(data_dir: Path, kind: Kind) -> list[dict[str, Any]]:
    """Objects of one kind, parsed (``status`` joined in as the store does)."""
    out = []
    for kind_text, _name, body, status in rows(data_dir):
        if kind_text == kind.value:
            obj = json.loads(body)
            if status is not None:
                obj["status"] = json.loads(status)
            out.append(obj)
    return out


def schedule_of(run: dict[str, Any]) -> str:
    return str(run["metadata"].get("labels", {}).get(LABEL_SCHEDULE, ""))


def tick_of(run: dict[str, Any]) -> datetime:
    tick = parse_time(run["metadata"]["annotations"][ANNOTATION_SCHEDULED_TIME])
    assert tick is not None, run["metadata"]
    return tick


def created(obj: dict[str, Any]) -> datetime:
    stamp = parse_time(obj["metadata"]["creationTimestamp"])
    assert stamp is not None
    return stamp


def floor_tick(t: datetime) -> datetime:
    """The latest whole-second tick at or before ``t`` (``@every 1s`` ticks on whole seconds)."""
    return t.replace(microsecond=0)


wait_for = functools.partial(support.wait_for, timeout=PATIENCE)
