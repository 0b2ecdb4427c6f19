"""Driving the real ``sympozium-schedule`` command as a subprocess.

Every test gets its own data directory under ``tmp_path``; ``SYMPOZIUM_DATA_DIR``
points under ``tmp_path`` too, so a command that forgot ``--data-dir`` can never
touch the user's real store.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sympozium_schedule import manifests
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import Kind
from tests import support

PROGRAM = (sys.executable, "-m", "sympozium_schedule.cli.main")
SAMPLES = manifests.path("samples")
DEMO_YAML = manifests.path("demo.yaml")
EVERYTHING = "schedules,instances,runs,configmaps,events"
# More workers than cores on purpose: on a machine busy with other work the OS
# shares the CPU out per process, and a CLI start-up is mostly CPU.
WORKERS = 4


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    def __str__(self) -> str:
        return f"{' '.join(self.args)} -> {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


class Cli:
    """The CLI bound to one data directory."""

    def __init__(self, data_dir: Path, env: dict[str, str]):
        self.data_dir = data_dir
        self.env = env

    def command(self, *args: str, data_dir: bool = True) -> list[str]:
        return [*PROGRAM, *args, *(["--data-dir", str(self.data_dir)] if data_dir else [])]

    def __call__(self, *args: str, stdin: str | None = None, data_dir: bool = True,
                 env: dict[str, str] | None = None, timeout: float = 60) -> Result:
        done = subprocess.run(self.command(*args, data_dir=data_dir), input=stdin,
                              capture_output=True, text=True, env=env or self.env, timeout=timeout)
        return Result(tuple(args), done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> Result:
        result = self(*args, stdin=stdin)
        assert result.code == 0, str(result)
        return result

    def many(self, *commands: tuple[str, ...], data_dir: bool = True) -> list[Result]:
        """Independent commands at once, results in order: each is a Python start-up
        (a third of a CPU second), and they need not wait for one another."""
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return list(pool.map(lambda args: self(*args, data_dir=data_dir), commands))

    def apply_text(self, text: str, *args: str) -> Result:
        return self("apply", "-f", "-", *args, stdin=textwrap.dedent(text))

    def snapshot(self) -> list[dict[str, Any]]:
        """Every object of every kind in every namespace, as ``get -o json`` prints them."""
        listing = self.ok("get", EVERYTHING, "-A", "-o", "json").json()
        assert listing["kind"] == "List"
        items: list[dict[str, Any]] = listing["items"]
        return items

    def runs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.ok("get", "runs", "-o", "json").json()["items"]
        return items


AGENT = f"{shlex.quote(sys.executable)} -m sympozium_schedule.agents.demo"
RUN_FLAGS = ("--agent-command", AGENT, "--agent-env", "DEMO_AGENT_SECONDS=0.1", "--max-parallel", "8",
             "--log-format", "json")


def _is_our_nats_server(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"nats-server" in cmdline and str(data_dir).encode() in cmdline


class Scheduler:
    """The `run` processes of one test, on one data directory.

    At the end, whatever is still running is stopped, each by its id: the `run`
    processes (SIGTERM, then SIGKILL), and the nats-server a SIGKILLed `run`
    leaves behind (noted by the pid in its ports file, checked against /proc).
    """

    def __init__(self, cli: Cli, log: Path):
        self.cli = cli
        self.log = log
        self.processes: list[subprocess.Popen[str]] = []
        self.nats_pids: set[int] = set()

    def start(self, *extra: str, flags: tuple[str, ...] = RUN_FLAGS,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        with self.log.open("a") as out:
            process = subprocess.Popen(
                self.cli.command("run", *flags, *extra),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                env=self.cli.env | {"SYMPOZIUM_SCHEDULE_PROG": "sympozium-schedule"} | (env or {}))
        self.processes.append(process)
        return process

    def note_nats_servers(self) -> None:
        for ports in (self.cli.data_dir / "nats-ports").glob("*_*.ports"):
            pid = int(ports.stem.rsplit("_", 1)[1])
            if _is_our_nats_server(pid, self.cli.data_dir):
                self.nats_pids.add(pid)

    def live_nats_servers(self) -> list[int]:
        self.note_nats_servers()
        return [pid for pid in self.nats_pids if _is_our_nats_server(pid, self.cli.data_dir)]

    def stop(self, process: subprocess.Popen[str]) -> int:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run did not stop within 15s of SIGTERM; log:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def cleanup(self) -> None:
        self.note_nats_servers()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        for pid in self.nats_pids:
            if _is_our_nats_server(pid, self.cli.data_dir):
                os.kill(pid, signal.SIGTERM)


@pytest.fixture
def scheduler(cli: Cli, tmp_path: Path) -> Iterator[Scheduler]:
    started = Scheduler(cli, tmp_path / "run.log")
    yield started
    started.cleanup()


def stored_runs(data_dir: Path) -> list[dict[str, Any]]:
    """The runs, read straight from the store: polling through the CLI would cost a
    Python start-up per poll on a machine the scheduler needs."""
    async def read() -> list[dict[str, Any]]:
        store = SQLiteStore(data_dir / "store.db")
        try:
            return (await store.list(Kind.AGENT_RUN)).items
        finally:
            await store.close()

    return asyncio.run(read())


def base_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SYMPOZIUM_DATA_DIR"] = str(tmp_path / "from-env")
    env.pop("XDG_DATA_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data", base_env(tmp_path))


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """One data directory for a module whose tests only read, or only try writes
    that must fail: seeding it once saves a dozen CLI start-ups."""
    root = tmp_path_factory.mktemp("module")
    return Cli(root / "data", base_env(root))


# A CLI start-up per look is costly: look less often than the other suites.
wait_for = functools.partial(support.wait_for, interval=0.2)


def instance_yaml(name: str = "alice", namespace: str | None = None) -> str:
    metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
    return yaml.safe_dump({
        "apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumInstance", "metadata": metadata,
        "spec": {"agents": {"default": {"model": "gpt-4o"}}},
    }, sort_keys=False)


def schedule_yaml(name: str, schedule: str, *, instance: str = "alice", namespace: str | None = None,
                  **spec: Any) -> str:
    """A SympoziumSchedule manifest; ``spec`` adds (or overrides) fields by their CRD names."""
    metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
    return yaml.safe_dump({
        "apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule", "metadata": metadata,
        "spec": {"instanceRef": instance, "schedule": schedule, "task": "Check in."} | spec,
    }, sort_keys=False)
