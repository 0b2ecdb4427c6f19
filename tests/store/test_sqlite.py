"""What only the SQLite store promises: group commit, the file's failure modes, several processes.

The behaviour every adapter shares is in test_contract.py; these tests open
SQLiteStore themselves because they need its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from sympozium_schedule.adapters.sqlite.store import MAX_OBJECT_BYTES, SQLiteStore
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import EventType, Expired, Invalid, Obj, Unavailable
from tests.store.conftest import configmap, name_of, next_event, ref, rv, schedule


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "store.db")
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[Callable[[], None]]:
    """Another connection holds the file's write lock until the returned call.

    The writer thread then waits in BEGIN IMMEDIATE (its busy timeout is 10 s)
    while jobs pile up in its queue, so what is submitted meanwhile commits in
    at most two groups: the jobs the thread took before it blocked, and the rest.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            conn.execute("ROLLBACK")

    try:
        yield release
    finally:
        release()
        conn.close()


# --- group commit ---------------------------------------------------------------------------


async def test_a_burst_of_concurrent_creates_all_land_with_unique_increasing_versions(
    sqlite: SQLiteStore,
) -> None:
    count = 500
    with write_lock_held(sqlite.path) as release:
        tasks = [asyncio.create_task(sqlite.create(configmap(f"cm-{n:03d}"))) for n in range(count)]
        await asyncio.sleep(0)  # each task queues its job before its first suspension
        assert not any(t.done() for t in tasks)
        release()
        created = await asyncio.gather(*tasks)

    versions = [int(rv(o)) for o in created]
    assert versions == sorted(set(versions)), "versions repeat or do not follow the submission order"
    assert sqlite.revision() == versions[-1]
    listing = await sqlite.list(Kind.CONFIG_MAP)
    assert sorted(listing.items, key=name_of) == created


async def test_a_job_that_fails_unexpectedly_fails_alone_and_its_group_commits(
    sqlite: SQLiteStore,
) -> None:
    # A lone surrogate survives the JSON round trip in _prepare but cannot be encoded
    # as UTF-8, so it fails inside the job (in _check_size), not before it is queued:
    # the one way a caller can make a job raise something other than a StoreError.
    bad = configmap("bad", data={"MEMORY.md": "half a pair: \ud800"})
    goods = [configmap(f"good-{n}") for n in range(10)]
    before = sqlite.revision()

    with write_lock_held(sqlite.path) as release:
        tasks = [asyncio.create_task(sqlite.create(o)) for o in [*goods[:5], bad, *goods[5:]]]
        await asyncio.sleep(0)
        release()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    failed = outcomes.pop(5)
    assert isinstance(failed, Invalid | UnicodeError), failed
    assert all(isinstance(o, dict) for o in outcomes), outcomes
    versions = [int(rv(o)) for o in outcomes if isinstance(o, dict)]
    assert versions == sorted(set(versions))
    assert sqlite.revision() == before + len(goods)  # the failed job left no trace
    assert {name_of(o) for o in (await sqlite.list(Kind.CONFIG_MAP)).items} == {
        name_of(o) for o in goods}


# Each write puts ``text`` into a schedule: a new one, or ``existing``'s spec or status.
WRITES: dict[str, Callable[[SQLiteStore, Obj, str], Awaitable[Obj]]] = {
    "create": lambda store, existing, text: store.create(schedule("new", task=text)),
    "update": lambda store, existing, text: store.update(schedule(name_of(existing), task=text)),
    "patch_status": lambda store, existing, text: store.patch_status(
        ref(existing), {"lastRunName": text}),
}


@pytest.mark.parametrize("operation", list(WRITES))
async def test_text_the_file_cannot_hold_is_invalid(sqlite: SQLiteStore, operation: str) -> None:
    """A lone surrogate (valid in a Python str and in JSON escapes, not in UTF-8) is
    the object's fault: Invalid, like any other refusal, not a UnicodeEncodeError."""
    surrogate = "half a pair: \ud800"
    existing = await sqlite.create(schedule("hb"))

    with pytest.raises(Invalid):
        await WRITES[operation](sqlite, existing, surrogate)

    assert (await sqlite.list(Kind.SCHEDULE)).items == [existing]


# --- size -----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", list(WRITES))
async def test_an_object_over_the_size_limit_is_invalid(sqlite: SQLiteStore, operation: str) -> None:
    big = "x" * (MAX_OBJECT_BYTES + 1)
    existing = await sqlite.create(schedule("hb"))

    with pytest.raises(Invalid, match="bytes"):
        await WRITES[operation](sqlite, existing, big)

    assert (await sqlite.list(Kind.SCHEDULE)).items == [existing]


async def test_an_object_just_under_the_limit_is_stored(sqlite: SQLiteStore) -> None:
    created = await sqlite.create(configmap(data={"MEMORY.md": "x" * (MAX_OBJECT_BYTES - 2000)}))

    assert await sqlite.get(ref(created)) == created


# --- the file becomes unwritable ------------------------------------------------------------


async def _chattr(flag: str, *paths: Path) -> str | None:
    """Run chattr; the error text when it fails."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "chattr", flag, *map(str, paths),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        return "chattr is not installed"
    _, err = await proc.communicate()
    return None if proc.returncode == 0 else err.decode(errors="replace").strip()


async def test_writes_fail_while_the_file_is_unwritable_and_work_again_after(
    sqlite: SQLiteStore,
) -> None:
    """Permission bits are checked when a file is opened and the store keeps its files
    open, so chmod cannot make a running store read-only (for root it would not even
    stop an open). The immutable attribute is checked on every write: the nearest
    thing to a file system remounted read-only that a test can do, and it needs root."""
    if os.geteuid() != 0:
        pytest.skip("only root (CAP_LINUX_IMMUTABLE) can make an open file unwritable")
    kept = await sqlite.create(configmap("kept"))
    run = await sqlite.create(schedule("hb"))
    # Not the -shm file: SQLite maps it into memory, and a store into a mapped page of
    # an immutable file is a SIGBUS that kills the test process.
    locked = [sqlite.path, sqlite.path.with_name(sqlite.path.name + "-wal")]
    assert all(p.exists() for p in locked)
    if (error := await _chattr("+i", *locked)) is not None:
        pytest.skip(f"cannot set the immutable attribute here: {error}")
    try:
        with pytest.raises(Unavailable, match="could not be written"):
            await sqlite.create(configmap("refused"))
        with pytest.raises(Unavailable, match="could not be written"):
            await sqlite.patch_status(ref(run), {"phase": "Active"})
        assert await sqlite.get(ref(kept)) == kept
        assert (await sqlite.list(Kind.CONFIG_MAP)).items == [kept]
    finally:
        assert await _chattr("-i", *locked) is None

    later = await sqlite.create(configmap("later"))
    assert {name_of(o) for o in (await sqlite.list(Kind.CONFIG_MAP)).items} == {"kept", "later"}
    assert await sqlite.get(ref(later)) == later


# Runs in a child process (without root's permission-bypassing capabilities when
# the tests run as root): fills a store, makes the file or its directory
# read-only, opens the store again, reads, writes, restores the permissions and
# writes once more. Prints what each step did as JSON.
_READ_ONLY_SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path
from sympozium_schedule.adapters.sqlite.store import SQLiteStore
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import Ref

def cm(name):
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": {}}

async def attempt(action):
    try:
        await action()
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

async def main(directory, what):
    path = Path(directory) / "store.db"
    first = SQLiteStore(path)
    await first.create(cm("before"))
    await first.close()
    target = path if what == "file" else Path(directory)
    mode = target.stat().st_mode
    target.chmod(0o444 if what == "file" else 0o555)
    steps = {}
    try:
        try:
            store = SQLiteStore(path)
        except Exception as exc:
            steps["open"] = f"{type(exc).__name__}: {exc}"
            return steps
        steps["open"] = "ok"
        steps["get"] = await attempt(lambda: store.get(Ref(Kind.CONFIG_MAP, "default", "before")))
        steps["list"] = await attempt(lambda: store.list(Kind.CONFIG_MAP))
        steps["create"] = await attempt(lambda: store.create(cm("during")))
        # The fix an operator makes: SQLite created -wal/-shm with the file's own
        # (read-only) permissions, so they are restored too.
        target.chmod(mode)
        for extra in (Path(directory) / "store.db-wal", Path(directory) / "store.db-shm"):
            if extra.exists():
                extra.chmod(0o644)
        steps["create after the fix"] = await attempt(lambda: store.create(cm("after")))
        await store.close()
        return steps
    finally:
        target.chmod(mode)

print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
"""


# Root ignores permission bits through two capabilities; without them, root is bound
# by the owner's bits like anyone else (the files stay root's, and so does the venv).
_WITHOUT_DAC_CAPABILITIES = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


async def run_python(script: str, *args: str, bound_by_permissions: bool = False) -> str:
    command = [sys.executable, "-c", script, *args]
    if bound_by_permissions and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv (util-linux) is missing to drop "
                        "CAP_DAC_OVERRIDE, so permission bits would not apply")
        command = _WITHOUT_DAC_CAPABILITIES + command
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode()


async def read_only_steps(tmp_path: Path, what: str) -> dict[str, str]:
    steps: dict[str, str] = json.loads(await run_python(
        _READ_ONLY_SCRIPT, str(tmp_path), what, bound_by_permissions=True))
    return steps


READ_ONLY = [pytest.param("file", id="file-0444"), pytest.param("directory", id="directory-0555")]


@pytest.mark.parametrize("what", READ_ONLY)
async def test_opening_a_read_only_store_raises_nothing_but_unavailable(
    tmp_path: Path, what: str,
) -> None:
    steps = await read_only_steps(tmp_path, what)

    assert steps["open"] == "ok" or steps["open"].startswith("Unavailable: "), steps


@pytest.mark.parametrize("what", READ_ONLY)
async def test_a_read_only_store_serves_reads_and_refuses_writes_until_fixed(
    tmp_path: Path, what: str,
) -> None:
    steps = await read_only_steps(tmp_path, what)

    assert steps.get("open") == "ok", steps
    assert (steps["get"], steps["list"]) == ("ok", "ok"), steps
    assert steps["create"].startswith("Unavailable: "), steps
    assert steps["create after the fix"] == "ok", steps


# --- several processes on one file ----------------------------------------------------------

_WRITER_SCRIPT = r"""
import asyncio, json, sys
from sympozium_schedule.adapters.sqlite.store import SQLiteStore

async def main(path):
    store = SQLiteStore(path)
    try:
        created = await store.create(
            {"kind": "ConfigMap", "metadata": {"name": "from-another-process"}, "data": {}})
    finally:
        await store.close()
    return created

print(json.dumps(asyncio.run(main(sys.argv[1]))))
"""


async def test_a_write_by_another_process_reaches_a_watch_here(sqlite: SQLiteStore) -> None:
    listing = await sqlite.list(Kind.CONFIG_MAP)
    async with aclosing(sqlite.watch(Kind.CONFIG_MAP,
                                     resource_version=listing.resource_version)) as events:
        created: Obj = json.loads(await run_python(_WRITER_SCRIPT, str(sqlite.path)))
        event = await next_event(events, timeout=1.0)

    assert (event.type, event.object) == (EventType.ADDED, created)
    assert await sqlite.get(ref(created)) == created


async def test_an_idle_watch_backed_off_far_still_sees_another_process_at_once(tmp_path: Path) -> None:
    """While inotify reports the store's commits, an idle watch sleeps up to 30 s between
    reads (an idle scheduler wakes for nothing); another process's commit must still
    reach it at once, not at the next read."""
    store = SQLiteStore(tmp_path / "store.db", poll_interval=0.05, max_poll_interval=0.05)
    try:
        listing = await store.list(Kind.CONFIG_MAP)
        async with aclosing(store.watch(Kind.CONFIG_MAP,
                                        resource_version=listing.resource_version)) as events:
            waiting = asyncio.ensure_future(next_event(events, timeout=60.0))
            await asyncio.sleep(3.5)  # backs off: 0.05, 0.1, ... 1.6, then 3.2 s asleep
            assert not waiting.done()
            created: Obj = json.loads(await run_python(_WRITER_SCRIPT, str(store.path)))
            event = await asyncio.wait_for(waiting, timeout=1.0)
    finally:
        await store.close()

    assert (event.type, event.object) == (EventType.ADDED, created)


async def test_a_version_that_is_not_a_number_is_expired(sqlite: SQLiteStore) -> None:
    with pytest.raises(Expired):
        async with aclosing(sqlite.watch(Kind.CONFIG_MAP, resource_version="abc")) as events:
            await next_event(events)


async def test_a_cancelled_watch_stops_even_when_a_commit_wakes_it_at_that_moment(
    tmp_path: Path,
) -> None:
    """Pulse.wait waited with asyncio.wait_for, which on Python 3.11 returns normally
    when the cancellation arrives after the awaited event has fired but before the
    waiting task resumes (CPython gh-86296, fixed in 3.12): the cancellation is lost.
    An informer's watch that loses it keeps running, and whoever awaits it after
    cancelling (runtime.informer.running, app shutdown) waits for ever.

    The wake-up is ``Watches.notify``, which the writer thread calls after every commit;
    calling it from the loop places it at a chosen turn, which a commit cannot. The
    cancellation comes 0 to 6 turns of the event loop after it, one of which meets
    the window."""
    store = SQLiteStore(tmp_path / "store.db", poll_interval=60.0)
    listing = await store.list(Kind.CONFIG_MAP)

    async def consume() -> None:
        async with aclosing(store.watch(Kind.CONFIG_MAP,
                                        resource_version=listing.resource_version)) as events:
            async for _ in events:
                pass

    swallowed = []
    try:
        for turns in range(7):
            consumer = asyncio.create_task(consume())
            for _ in range(3):
                await asyncio.sleep(0)  # the watch is parked, waiting for a wake-up
            store._watches.notify()
            for _ in range(turns):
                await asyncio.sleep(0)
            consumer.cancel()
            await asyncio.wait({consumer}, timeout=0.2)  # a cancellation that works takes microseconds
            if not consumer.cancelled():
                swallowed.append(turns)
            while not consumer.done():
                consumer.cancel()
                await asyncio.wait({consumer}, timeout=0.05)
    finally:
        await store.close()

    assert swallowed == [], f"cancellations {swallowed} turns after a wake-up were ignored"


# --- the scheduler's writer process ---------------------------------------------------------


def _writer_children() -> list[int]:
    """This process's children that are store writers (from /proc: psutil is a bench extra)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if parent == os.getpid() and "sympozium_schedule.adapters.sqlite.child" in command:
            found.append(int(entry.name))
    return found


async def test_the_writer_process_starts_with_the_store_not_with_its_first_write(tmp_path: Path) -> None:
    # Started by the first write, it made the first fire after every restart wait for a
    # Python start (~0.2-0.4 s idle, over a second on a loaded machine).
    store = SQLiteStore(tmp_path / "store.db", writer="process")
    try:
        (pid,) = _writer_children()
        created = await store.create(schedule("first"))
        assert created["metadata"]["name"] == "first"
        assert _writer_children() == [pid]  # the write went to the process already running
    finally:
        await store.close()
    assert _writer_children() == []
