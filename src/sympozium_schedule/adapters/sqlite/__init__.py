"""The embedded store: one SQLite file (WAL) that several processes share.

The controller, the CLI and tests open the same file. Writes go through one
writer per process (a thread, or for the scheduler a process of its own) that
groups concurrent writes into one transaction (group commit); every write bumps
a store-wide revision (the resourceVersion) and appends to a change log that
watchers in any process follow.

``SQLiteStore`` is imported on first use: the writer process imports this
package and must not pay for the models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sympozium_schedule.adapters.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]


def __getattr__(name: str) -> Any:
    if name == "SQLiteStore":
        from sympozium_schedule.adapters.sqlite.store import SQLiteStore

        return SQLiteStore
    raise AttributeError(name)
