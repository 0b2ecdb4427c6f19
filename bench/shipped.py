"""The scheduler as a user starts it, and what the benchmarks read off it.

:class:`Shipped` is ``sympozium-schedule run`` with the defaults a user gets: its
own NATS server, the router, the local runner, the web console, logs at ``info``.
The only flags added are where things go: ``--data-dir``, ``--metrics-port`` (for
``/readyz`` and ``/metrics``), ``--console-address`` on a free loopback port (the
default one may be taken by another test on a shared machine), ``--log-format
json`` (the log is parsed), and, where a benchmark says so, ``--agent-command``.

Its processes, measured apart: **the scheduler** is the ``run`` process plus the
store's writer process it starts (``adapters/sqlite/child.py``); **NATS** is the
``nats-server`` it starts. Memory is each process's RSS, and the scheduler's is
also given as PSS (shared pages split between the processes that map them, so
the two processes' interpreter is not counted twice).

:class:`Commits` sees each commit of a store as it happens: inotify on the WAL
(the commit is the write that makes the rows visible), then a read of the change
log's new rows. A figure that "stops at commit" stops at the moment its rows
became visible to a reader, to within the time of that read (~1 ms).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import RunProcess, free_port, program
from sympozium_schedule.core.model import parse_time
from sympozium_schedule.runtime.paths import store_path

READY_EVENT = "scheduler running"  # every timer armed, /readyz 200
PASS_EVENT = "first pass done"  # every schedule decided (after ready, on a restart)


class Shipped(RunProcess):
    def __init__(self, data_dir: Path, *, log_level: str = "info", extra: Sequence[str] = (),
                 agent_command: str | None = None, gc_trace: bool = False):
        super().__init__(data_dir, log_level=log_level, gc_trace=gc_trace)
        self.console_port = free_port()
        self.args = [*program(), "run", "--data-dir", str(data_dir), "--metrics-port",
                     str(self.port), "--console-address", f"127.0.0.1:{self.console_port}",
                     "--log-format", "json", "--log-level", log_level,
                     *(["--agent-command", agent_command] if agent_command else []), *extra]

    # --- when -------------------------------------------------------------------------------

    def logged(self, event: str) -> float | None:
        """The wall time of the first log line ``event`` (its own timestamp)."""
        for line in self.log_lines():
            if line.get("event") == event:
                stamp = parse_time(line.get("timestamp"))
                return stamp.timestamp() if stamp else None
        return None

    def wait_logged(self, event: str, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.logged(event)
            if found is not None:
                return found
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"`run` exited:\n{self.log_tail()}")
            time.sleep(0.02)
        raise TimeoutError(f"no {event!r} line after {timeout}s:\n{self.log_tail()}")

    # --- its processes ---------------------------------------------------------------------------

    def family(self) -> dict[str, list[psutil.Process]]:
        main = self.process()
        out: dict[str, list[psutil.Process]] = {"scheduler": [main], "nats": [], "other": []}
        for child in main.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(child.cmdline())
                if "nats-server" in cmd:
                    out["nats"].append(child)
                elif "sympozium_schedule.adapters.sqlite.child" in cmd:
                    out["scheduler"].append(child)
                else:
                    out["other"].append(child)  # agents and their sandboxes
        return out

    def cpu(self, processes: Sequence[psutil.Process]) -> float:
        total = 0.0
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def memory(self, processes: Sequence[psutil.Process]) -> tuple[float, float]:
        """(RSS, PSS) in MiB, summed."""
        rss = pss = 0.0
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                info = proc.memory_full_info()
                rss += info.rss
                pss += info.pss
        return rss / 2**20, pss / 2**20


# --- commits, as they happen ---------------------------------------------------------------------

_IN_MODIFY, _IN_CLOEXEC, _IN_NONBLOCK = 0x2, 0o2000000, 0o4000
_EVENT = struct.Struct("iIII")


@dataclass
class Change:
    rv: int
    kind: str
    namespace: str
    name: str
    type: str
    seen: float  # wall time this process first read it


@dataclass
class Commits:
    """Every change row of a store, stamped with when it became visible here."""

    data_dir: Path
    on_change: Callable[[Change], None] | None = None
    changes: list[Change] = field(default_factory=list)
    since: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Commits:
        conn = sqlite3.connect(f"file:{store_path(self.data_dir)}?mode=ro", uri=True)
        with contextlib.closing(conn):
            self.since = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
        self._thread = threading.Thread(target=self._run, name="commits", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        conn = sqlite3.connect(f"file:{store_path(self.data_dir)}?mode=ro", uri=True,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        try:
            if libc.inotify_add_watch(fd, str(self.data_dir).encode(), _IN_MODIFY) < 0:
                raise OSError(ctypes.get_errno(), "inotify_add_watch")
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 65536)  # the events only say "written": drain them
                self._read(conn)
        finally:
            conn.close()
            os.close(fd)

    def _read(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT rv, kind, namespace, name, type FROM changes WHERE rv > ? "
                            "ORDER BY rv", (self.since,)).fetchall()
        now = time.time()
        for rv, kind, namespace, name, type_ in rows:
            change = Change(rv, kind, namespace, name, type_, now)
            self.changes.append(change)
            if self.on_change is not None:
                self.on_change(change)
        if rows:
            self.since = rows[-1][0]


def first_seen(changes: Sequence[Change], kind: str, type_: str) -> dict[str, float]:
    """Each object's first change of that kind and type, and when it was seen."""
    out: dict[str, float] = {}
    for c in changes:
        if c.kind == kind and c.type == type_ and c.name not in out:
            out[c.name] = c.seen
    return out


def rounded(values: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in values.items()}
