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


@contextlib.asynccontextmanager
async def opened(data_dir: Path) -> AsyncIterator[Store]:
    try:
        store = SQLiteStore(store_file(data_dir))
    except Unavailable as exc:
        raise CliError(str(exc)) from exc
    try:
        yield store
    finally:
        await store.close()


def run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)
