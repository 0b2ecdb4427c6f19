"""The embedded store: one SQLite file (WAL) that several processes share.

The controller, the CLI and tests open the same file. Writes go through one
writer thread per process that groups concurrent writes into one transaction
(group commit); every write bumps a store-wide revision (the resourceVersion)
and appends to a change log that watchers in any process follow.
"""

from sympozium_schedule.adapters.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
