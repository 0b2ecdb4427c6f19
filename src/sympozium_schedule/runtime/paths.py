"""Where the embedded mode keeps its files. Kept free of heavy imports: every
CLI command reads it, and a `get` should not pay for loading NATS and aiohttp."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "SYMPOZIUM_DATA_DIR"


def default_data_dir() -> Path:
    """``$SYMPOZIUM_DATA_DIR``, else ``$XDG_DATA_HOME/sympozium-schedule``
    (``~/.local/share/sympozium-schedule``)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sympozium-schedule"


def store_path(data_dir: Path) -> Path:
    return data_dir / "store.db"


def runs_dir(data_dir: Path) -> Path:
    """Where the local runner keeps one folder per AgentRun."""
    return data_dir / "runs"


def run_dir(data_dir: Path, namespace: str, name: str) -> Path:
    """One AgentRun's folder: its IPC folder, working folder and log."""
    return runs_dir(data_dir) / namespace / name


def run_log(data_dir: Path, namespace: str, name: str) -> Path:
    """What the agent printed (stdout and stderr) for one AgentRun."""
    return run_dir(data_dir, namespace, name) / "agent.log"


def run_ipc(data_dir: Path, namespace: str, name: str) -> Path:
    """The run's IPC folder in Sympozium's layout (input/, output/, schedules/)."""
    return run_dir(data_dir, namespace, name) / "ipc"


def run_work(data_dir: Path, namespace: str, name: str) -> Path:
    """The agent's working folder and HOME."""
    return run_dir(data_dir, namespace, name) / "work"


def run_tmp(data_dir: Path, namespace: str, name: str) -> Path:
    """The agent's TMPDIR."""
    return run_dir(data_dir, namespace, name) / "tmp"
