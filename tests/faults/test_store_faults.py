"""The store's file turned read-only, or its disk full, under a running scheduler.

A real ``sympozium-schedule run`` (warm, see conftest) fires five ``@every 1s``
schedules; halfway between two ticks (nothing in flight) the store stops taking
writes for three seconds, then recovers. The scheduler must say so (the metric
``sympozium_schedule_errors_total{kind="store"}`` on ``--metrics-port`` and a log
line; a condition cannot be written to a store that refuses writes), keep running,
and afterwards catch up as the rules say: per schedule at most one run for the
ticks missed meanwhile (the most recent one), every tick before and after present,
no tick twice, every object whole and every run counted in its schedule's status.

How the store is made to refuse writes, as root (where chmod stops nothing) and
under a process that already holds the file open (so permissions, which are only
checked at open, stop nothing either):

* ``read-only``: ``chattr +i`` on ``store.db`` and ``store.db-wal``. On ext4 (the test's
  tmp directory here) an immutable file refuses writes even through descriptors
  opened before it became immutable (EPERM), which SQLite reports as a disk I/O
  error; a probe checks that first, and the case is skipped where it does not hold.
  ``store.db-shm`` stays writable: SQLite maps it, and a write fault on an immutable
  mapping is SIGBUS. Needs CAP_LINUX_IMMUTABLE (root).
* ``disk-full``: the data directory is a 16 MiB tmpfs; the WAL is checkpointed and
  truncated (so the next commit must allocate), then a filler file takes every free
  block. Writes get ENOSPC, SQLite's "database or disk is full", as on a full disk;
  deleting the filler recovers. Needs CAP_SYS_ADMIN to mount (skipped otherwise).
* ``file-size-limit``: a full disk for one process, which needs no privilege and so
  runs everywhere: the RLIMIT_FSIZE of the ``run`` process and of its children (the
  store's writer process) lowered to one byte with prlimit(2), so their every write to
  a file fails with EFBIG (Python ignores SIGXFSZ; the output goes to a pipe, which the
  limit does not cover), then raised back.

Separately, in process: a fault landing between a run's creation and the write of
its schedule's status, which timing cannot aim at in a real process.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import re
import resource
import sqlite3
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import (
    Create,
    GroupResults,
    NotFound,
    Obj,
    PatchStatus,
    Ref,
    Store,
    StoreError,
    Unavailable,
    Write,
    WriteResult,
)
from sympozium_schedule.runtime.controller import Controller, ControllerSettings
from tests import support
from tests.faults.conftest import (
    KEEP_ALL,
    PATIENCE,
    SECOND,
    RunProcess,
    Runs,
    created,
    floor_tick,
    instance_obj,
    now,
    objects,
    rows,
    schedule_obj,
    schedule_of,
    seed,
    tick_of,
    wait_for,
)
from tests.support import free_port

SCHEDULES = [f"every-{n}" for n in range(5)]
OUTAGE = timedelta(seconds=3)
# Ticks this close before the fault may be unfired when it lands (a loaded machine).
GRACE = timedelta(seconds=0.75)
STORE_ERRORS = re.compile(r'^sympozium_schedule_errors_total\{kind="store"\} (\S+)$', re.M)


# --- the faults ------------------------------------------------------------------------------


class Fault(abc.ABC):
    """Make the store refuse writes under a running `run`, then undo it."""

    def prepare(self, data_dir: Path) -> None:
        """Before anything is written (a fault may need the directory to be special);
        by default nothing."""
        return None

    @abc.abstractmethod
    def inject(self, process: RunProcess, data_dir: Path) -> None: ...

    @abc.abstractmethod
    def recover(self, process: RunProcess, data_dir: Path) -> None: ...

    def cleanup(self, data_dir: Path) -> None:
        """Whatever state the test ended in; by default nothing."""
        return None


def _chattr(flag: str, *paths: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True,
                          check=check)


class ReadOnlyFiles(Fault):
    def prepare(self, data_dir: Path) -> None:
        probe = data_dir / "immutable-probe"
        with probe.open("w") as handle:
            try:
                done = _chattr("+i", probe, check=False)
            except FileNotFoundError:
                pytest.skip("read-only: no chattr on this machine")
            if done.returncode != 0:
                pytest.skip(f"read-only: chattr +i is not allowed here ({done.stderr.strip()})")
            try:
                handle.write("x")
                handle.flush()
                refused = False
            except PermissionError:
                refused = True
            finally:
                _chattr("-i", probe)
        probe.unlink()
        if not refused:
            pytest.skip("read-only: this filesystem lets an open file be written despite chattr +i")

    def _files(self, data_dir: Path) -> list[Path]:
        return [data_dir / "store.db", data_dir / "store.db-wal"]

    def inject(self, process: RunProcess, data_dir: Path) -> None:
        files = self._files(data_dir)
        assert all(f.exists() for f in files), "the WAL exists while the store is open"
        _chattr("+i", *files)

    def recover(self, process: RunProcess, data_dir: Path) -> None:
        _chattr("-i", *self._files(data_dir))

    def cleanup(self, data_dir: Path) -> None:
        with contextlib.suppress(OSError):
            _chattr("-i", *(f for f in self._files(data_dir) if f.exists()), check=False)


class FullDisk(Fault):
    def __init__(self) -> None:
        self.mounted = False

    def prepare(self, data_dir: Path) -> None:
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                                   str(data_dir)], capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("disk-full: no mount command on this machine")
        if done.returncode != 0:
            pytest.skip(f"disk-full: cannot mount a tmpfs here ({done.stderr.strip()})")
        self.mounted = True

    def inject(self, process: RunProcess, data_dir: Path) -> None:
        # An empty WAL: the next commit must allocate blocks (a WAL that had grown
        # would take a few more commits into blocks it already owns).
        conn = sqlite3.connect(data_dir / "store.db", timeout=10)
        try:
            wait_for(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
                     what="a checkpoint that truncates the WAL")
        finally:
            conn.close()
        filler = os.open(data_dir / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12):
                with contextlib.suppress(OSError):  # ENOSPC, checked below
                    while os.write(filler, b"\0" * chunk) > 0:
                        pass
        finally:
            os.close(filler)
        assert os.statvfs(data_dir).f_bavail == 0

    def recover(self, process: RunProcess, data_dir: Path) -> None:
        (data_dir / "filler").unlink()

    def cleanup(self, data_dir: Path) -> None:
        if self.mounted:
            done = subprocess.run(["umount", str(data_dir)], capture_output=True, text=True)
            if done.returncode != 0:  # still busy: detach it anyway
                subprocess.run(["umount", "-l", str(data_dir)], capture_output=True, text=True)


def family(pid: int) -> list[int]:
    """``pid`` and its child processes (the store's writer process is one)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


class FileSizeLimit(Fault):
    """For `run` and its children: the store's writes are committed by a child process."""

    def inject(self, process: RunProcess, data_dir: Path) -> None:
        for pid in family(process.pid):
            _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))

    def recover(self, process: RunProcess, data_dir: Path) -> None:
        for pid in family(process.pid):
            _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


FAULTS = {"read-only": ReadOnlyFiles, "disk-full": FullDisk, "file-size-limit": FileSizeLimit}


@pytest.fixture(params=list(FAULTS))
def fault(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Fault]:
    made = FAULTS[request.param]()
    try:
        made.prepare(data_dir)
        yield made
    finally:
        made.cleanup(data_dir)


# --- what the scheduler says ---------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except OSError as exc:  # refused while it starts, or a 503 (HTTPError is an OSError)
        code = getattr(exc, "code", 0)
        return int(code or 0), ""


def store_errors(port: int) -> float:
    status, text = get(port, "/metrics")
    found = STORE_ERRORS.search(text) if status == 200 else None
    return float(found.group(1)) if found else 0.0


def store_error_lines(process: RunProcess) -> list[dict[str, Any]]:
    return [r for r in process.logs() if r.get("event") == "store error, will retry"]


def ticks_of(all_runs: list[dict[str, Any]], name: str) -> list[datetime]:
    return sorted(tick_of(r) for r in all_runs if schedule_of(r) == name)


# --- the test ----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_store_that_refuses_writes_is_reported_survived_and_caught_up(
        fault: Fault, data_dir: Path, runs: Runs) -> None:
    seed(data_dir, instance_obj(), *(schedule_obj(name, "@every 1s", **KEEP_ALL) for name in SCHEDULES))
    port = free_port()
    process = runs.warm("--metrics-port", str(port))
    process.go()
    process.wait_ready()
    wait_for(lambda: all(len(ticks_of(objects(data_dir, Kind.AGENT_RUN), n)) >= 2 for n in SCHEDULES),
             what="two runs of every schedule before the fault")

    # Halfway between ticks: no fire is in flight when the writes start failing.
    time.sleep(max(0.0, (floor_tick(now()) + 1.5 * SECOND - now()).total_seconds()))
    fault.inject(process, data_dir)
    broken_at = now()
    wait_for(lambda: store_errors(port) >= 1, what="sympozium_schedule_errors_total{kind=store}")
    (first, *_) = wait_for(lambda: store_error_lines(process), what="a 'store error' log line")
    assert first["level"] == "warning", first
    assert first["schedule"] in SCHEDULES, first
    assert first["namespace"] == "default", first
    assert "could not be written" in first["error"], first
    time.sleep(max(0.0, (broken_at + OUTAGE - now()).total_seconds()))
    assert process.alive(), process.tail()
    assert get(port, "/healthz")[0] == 200

    fault.recover(process, data_dir)
    fixed_at = now()
    wait_for(lambda: all(ticks_of(objects(data_dir, Kind.AGENT_RUN), n)[-1]
                         >= floor_tick(fixed_at) + 2 * SECOND for n in SCHEDULES),
             what="every schedule firing again after the store recovered")
    assert process.terminate() == 0, process.tail()

    check_whole(data_dir)
    all_runs = objects(data_dir, Kind.AGENT_RUN)
    during = [r["metadata"]["name"] for r in all_runs if broken_at < created(r) < fixed_at]
    assert not during, f"runs were written while the store refused writes: {during}"
    for name in SCHEDULES:
        ticks = ticks_of(all_runs, name)
        assert len(set(ticks)) == len(ticks), f"{name}: a tick has two runs: {ticks}"
        before = [t for t in ticks if t < broken_at]
        after = [t for t in ticks if t > broken_at]
        catch_up = after[0]
        # The first fire after the recovery is the most recent tick at that moment; the
        # ticks missed meanwhile get no run of their own (at most one catch-up).
        assert catch_up >= floor_tick(fixed_at), (name, catch_up, fixed_at)
        assert not [t for t in ticks if broken_at < t < catch_up], name
        for start, end in ((before[0], before[-1]), (catch_up, ticks[-1])):
            expected = [start + k * SECOND for k in range(int((end - start) / SECOND) + 1)]
            assert [t for t in ticks if start <= t <= end] == expected, name
        assert before[-1] >= floor_tick(broken_at - GRACE), (name, before[-1], broken_at)
    check_counted(data_dir)


def check_whole(data_dir: Path) -> None:
    """No half-written object: the file is consistent and every row parses."""
    conn = sqlite3.connect(f"file:{data_dir / 'store.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    for kind, name, body, status in rows(data_dir):
        parsed = json.loads(body)
        assert (parsed["kind"], parsed["metadata"]["name"]) == (kind, name)
        assert status is None or isinstance(json.loads(status), dict), (kind, name)


def check_counted(data_dir: Path) -> None:
    """Every run is counted in its schedule's status (history limits keep them all,
    and without a runner every run stays unfinished, so active lists them all)."""
    all_runs = objects(data_dir, Kind.AGENT_RUN)
    for schedule in objects(data_dir, Kind.SCHEDULE):
        name = schedule["metadata"]["name"]
        mine = sorted((r for r in all_runs if schedule_of(r) == name), key=tick_of)
        status = schedule.get("status") or {}
        assert status.get("phase") == "Active", status
        assert status.get("totalRuns") == len(mine), (
            f"{name}: status.totalRuns is {status.get('totalRuns')}, but {len(mine)} runs exist")
        assert status.get("lastRunName") == mine[-1]["metadata"]["name"], name
        assert sorted(a["name"] for a in status.get("active") or []) == sorted(
            r["metadata"]["name"] for r in mine), name


# --- in process: a fault between a run's creation and its schedule's status -------------------


class FailingWrites:
    """A SQLiteStore whose writes fail with the error it raises for a read-only or full
    disk (Unavailable) while ``broken``; ``break_after_create`` breaks it the moment a
    run's creation returns, before the controller writes the schedule's status. (The
    SQLite store commits a fire's writes in one transaction; the port does not promise
    that, and the Kubernetes API cannot: a fault can land between them.)"""

    def __init__(self, store: SQLiteStore):
        self.store = store
        self.broken = False
        self.break_after_create = False
        self.created: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _check(self) -> None:
        if self.broken:
            raise Unavailable("the store could not be written (database or disk is full)")

    async def create(self, obj: Obj) -> Obj:
        self._check()
        done = await self.store.create(obj)
        if obj.get("kind") == Kind.AGENT_RUN.value:
            self.created.append(done["metadata"]["name"])
            if self.break_after_create:
                self.broken, self.break_after_create = True, False
        return done

    async def update(self, obj: Obj) -> Obj:
        self._check()
        return await self.store.update(obj)

    async def patch_status(self, ref: Ref, patch: Mapping[str, Any], *,
                           resource_version: str | None = None) -> Obj:
        self._check()
        return await self.store.patch_status(ref, patch, resource_version=resource_version)

    async def delete(self, ref: Ref, *, uid: str | None = None) -> None:
        self._check()
        await self.store.delete(ref, uid=uid)

    async def write_groups(self, groups: Sequence[Sequence[Write]]) -> GroupResults:
        """One write at a time, as the port allows ("nothing is atomic across writes")
        and as the Kubernetes adapter does: so the store can fail between two of them."""
        results: GroupResults = []
        for group in groups:
            done: list[WriteResult] = []
            for write in group:
                try:
                    if isinstance(write, Create):
                        done.append(await self.create(write.obj))
                    elif isinstance(write, PatchStatus):
                        done.append(await self.patch_status(
                            write.ref, write.patch, resource_version=write.resource_version))
                    else:
                        try:
                            await self.delete(write.ref, uid=write.uid)
                        except NotFound:
                            if not write.missing_ok:
                                raise
                        done.append(None)
                except StoreError as exc:
                    done.append(exc)
                    break
            results.append(done)
        return results


async def test_a_run_created_just_before_the_store_failed_is_counted_after_it_recovers(
        tmp_path: Path) -> None:
    """The run of tick T is created, then the store fails before the schedule's status
    says so; it recovers after T+1 has passed. The catch-up fires the most recent tick,
    and the run of T, which exists, must still be counted in the status."""
    store = SQLiteStore(tmp_path / "store.db")
    failing = FailingWrites(store)
    try:
        await store.create(instance_obj())
        await store.create(schedule_obj("hb", "@every 1s", **KEEP_ALL))
        controller = Controller(cast(Store, failing), settings=ControllerSettings(
            retry_initial=0.2, retry_max=0.5, record_events=False))
        task = asyncio.create_task(controller.run())
        try:
            await asyncio.wait_for(controller.ready.wait(), PATIENCE)
            await poll(lambda: len(failing.created) >= 2, what="two runs")
            failing.break_after_create = True
            await poll(lambda: failing.broken, what="the next run, then the failure")
            caught = failing.created[-1]
            broke_at = now()
            await asyncio.sleep(max(0.0, (floor_tick(broke_at) + 2.2 * SECOND - now()).total_seconds()))
            failing.broken = False
            await poll(lambda: fired_after(failing, caught) >= 2, what="two fires after the recovery")

            async def settled() -> bool:  # the latest run's status is written (no fire in flight)
                status = (await store.get(Ref(Kind.SCHEDULE, "default", "hb"))).get("status") or {}
                return bool(status.get("lastRunName") == failing.created[-1])

            await poll(settled, what="the status of the latest run")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        status = (await store.get(Ref(Kind.SCHEDULE, "default", "hb")))["status"]
        stored = [r["metadata"]["name"] for r in (await store.list(Kind.AGENT_RUN)).items]
    finally:
        await store.close()
    assert caught in stored
    assert Counter(stored) == Counter(failing.created), "every run created once"
    assert caught in [a["name"] for a in status["active"]]
    assert status["totalRuns"] == len(stored), (
        f"status.totalRuns is {status['totalRuns']} but the schedule has {len(stored)} runs: "
        f"{caught}, created just before the store failed, is never counted")


def fired_after(failing: FailingWrites, name: str) -> int:
    return len(failing.created) - failing.created.index(name) - 1


poll = partial(support.eventually, timeout=PATIENCE, interval=0.01)
