"""The store, opened for one command and always closed.

Every command that touches the store does all of its store work inside one
``asyncio.run`` and one :func:`opened` block: the store's writer thread is
stopped and its connections closed however the command ends.

Where the store lives: runtime.paths (free of heavy imports).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.cli.errors import CliError
from sympozium_schedule.ports.store import Store, Unavailable
from sympozium_schedule.runtime.paths import default_data_dir, store_path

store_file = store_path  # the name the commands use

T = TypeVar("T")


def data_dir_or_default(value: Path | None) -> Path:
    return value if value is not None else default_data_dir()


def check_data_dir(data_dir: Path, *, create: bool) -> Path:
    """The store file of ``data_dir``. Only ``apply`` (and ``run``) create a store: a
    read or a change of existing objects on a mistyped directory is an error, not
    an empty store that answers "No resources found"."""
    if data_dir.exists() and not data_dir.is_dir():
        raise CliError(f"--data-dir: {str(data_dir)!r}: not a directory", exit_code=2)
    path = store_file(data_dir)
    if not create and not path.exists():
        raise CliError(f"no store in {data_dir} (nothing was applied there and `run` never "
                       "started there); check --data-dir or $SYMPOZIUM_DATA_DIR")
    return path


@contextlib.asynccontextmanager
async def opened(data_dir: Path, *, create: bool = False) -> AsyncIterator[Store]:
    path = check_data_dir(data_dir, create=create)
    try:
        store = SQLiteStore(path)
    except Unavailable as exc:
        raise CliError(str(exc)) from exc
    try:
        yield store
    finally:
        await store.close()


def run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)
