"""Driving the real ``sympozium-schedule`` command as a subprocess.

Every test gets its own data directory under ``tmp_path``; ``SYMPOZIUM_DATA_DIR``
points under ``tmp_path`` too, so a command that forgot ``--data-dir`` can never
touch the user's real store.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sympozium_schedule import manifests
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
