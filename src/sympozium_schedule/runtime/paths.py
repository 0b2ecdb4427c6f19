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
