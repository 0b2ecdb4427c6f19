"""The Informer over a real store: list then watch, the cache, handlers, write-through, relist.

Most tests take the parametrized ``store`` fixture and so run over every adapter.
:class:`Gated` wraps a store to hold a list response or a watch event until the
test lets it through: that is how a test puts a write between a read the store
has made and the moment the informer sees it, as network latency would. The
relist tests need a watch that falls behind the change log; only the SQLite
store lets a test arrange that (a watch that is not woken while another
process writes), so they open SQLite stores themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.adapters.sqlite.store import SQLiteStore
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import EventType, Listing, Obj, Store, WatchEvent
from sympozium_schedule.runtime.informer import Informer
from tests.store.conftest import (
    ADAPTERS,
    NAMESPACE,
    OTHER_NAMESPACE,
    PATIENCE,
    SQLITE_KEEP_CHANGES,
    configmap,
    eventually,
    name_of,
    ref,
    rv,
    schedule,
)

ADDED, MODIFIED, DELETED = EventType.ADDED, EventType.MODIFIED, EventType.DELETED


class Recorder:
    """A handler that remembers (type, name, resourceVersion) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[EventType, str, str]] = []
        self.objects: list[Obj] = []

    def __call__(self, change: EventType, obj: Obj) -> None:
        self.calls.append((change, name_of(obj), rv(obj)))
        self.objects.append(obj)

    def since(self, start: int) -> list[tuple[EventType, str]]:
        return [(change, name) for change, name, _ in self.calls[start:]]


class Gated:
    """A store whose list responses and watch events wait at a gate when held."""

    def __init__(self, inner: Store):
        self.inner = inner
        self.list_gate = asyncio.Event()
        self.list_gate.set()
        self.list_waiting = asyncio.Event()
        self.watch_gate = asyncio.Event()
        self.watch_gate.set()
        self.waiting: list[WatchEvent] = []
        self.delivered: list[WatchEvent] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list(self, kind: Kind, **query: Any) -> Listing:
        listing = await self.inner.list(kind, **query)
        if not self.list_gate.is_set():
            self.list_waiting.set()
            await self.list_gate.wait()
        return listing

    async def watch(self, kind: Kind, **query: Any) -> AsyncIterator[WatchEvent]:
        async with aclosing(self.inner.watch(kind, **query)) as events:
            async for event in events:
                self.waiting.append(event)
                await self.watch_gate.wait()
                self.waiting.remove(event)
                self.delivered.append(event)
                yield event


async def until(predicate: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return predicate()

    await eventually(check, what=what)


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel an informer's ``run`` task once; it must end promptly (a lost
    cancellation used to hang here), and surface what it died of."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=PATIENCE)
    assert done, "the informer did not stop within PATIENCE of one cancellation"
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def started(informer: Informer) -> AsyncIterator[None]:
    """The informer running and synced for the duration of the block."""
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(PATIENCE):
            await informer.synced.wait()
        yield
    finally:
        await stop(task)


# --- list, watch, cache, handlers -----------------------------------------------------------


async def test_lists_then_watches_and_tells_the_handlers(store: Store) -> None:
    a = await store.create(schedule("a"))
    b = await store.create(schedule("b", namespace=OTHER_NAMESPACE))
    await store.create(configmap("not-a-schedule"))
    recorder = Recorder()
    informer = Informer(store, Kind.SCHEDULE, on_change=recorder)

    async with started(informer):
        assert informer.cache == {(NAMESPACE, "a"): a, (OTHER_NAMESPACE, "b"): b}
        assert sorted(recorder.since(0)) == [(ADDED, "a"), (ADDED, "b")]
        listed = len(recorder.calls)

        c = await store.create(schedule("c"))
        await until(lambda: informer.get(NAMESPACE, "c") == c, "c cached")
        a2 = await store.patch_status(ref(a), {"phase": "Active"})
        await until(lambda: informer.get(NAMESPACE, "a") == a2, "a's new status cached")
        await store.delete(ref(b))
        await until(lambda: informer.get(OTHER_NAMESPACE, "b") is None, "b dropped")

    assert recorder.since(listed) == [(ADDED, "c"), (MODIFIED, "a"), (DELETED, "b")]
    assert recorder.objects[-1]["metadata"]["uid"] == b["metadata"]["uid"]
    assert informer.cache == {(NAMESPACE, "a"): a2, (NAMESPACE, "c"): c}
    assert informer.relists == 1


@pytest.mark.parametrize(("namespaces", "expected"), [
    pytest.param(None, {(NAMESPACE, "a"), (OTHER_NAMESPACE, "b"), (NAMESPACE, "c"),
                        (OTHER_NAMESPACE, "d")}, id="all"),
    pytest.param((NAMESPACE,), {(NAMESPACE, "a"), (NAMESPACE, "c")}, id="one"),
    pytest.param((NAMESPACE, OTHER_NAMESPACE), {(NAMESPACE, "a"), (OTHER_NAMESPACE, "b"),
                                                (NAMESPACE, "c"), (OTHER_NAMESPACE, "d")},
                 id="two"),
])
async def test_caches_only_the_namespaces_it_watches(
    store: Store, namespaces: tuple[str, ...] | None, expected: set[tuple[str, str]],
) -> None:
    await store.create(schedule("a"))
    await store.create(schedule("b", namespace=OTHER_NAMESPACE))
    informer = Informer(store, Kind.SCHEDULE, namespaces=namespaces)

    async with started(informer):
        await store.create(schedule("c"))
        await store.create(schedule("d", namespace=OTHER_NAMESPACE))
        await store.create(schedule("marker", namespace="third"))
        await store.create(schedule("marker"))
        await until(lambda: (NAMESPACE, "marker") in informer.cache, "the marker cached")

    assert set(informer.cache) - {(NAMESPACE, "marker"), ("third", "marker")} == expected


async def test_caches_only_what_its_labels_select(store: Store) -> None:
    await store.create(schedule("a", labels={"team": "a"}))
    await store.create(schedule("b", labels={"team": "b"}))
    informer = Informer(store, Kind.SCHEDULE, labels={"team": "a"})

    async with started(informer):
        await store.create(schedule("c", labels={"team": "a"}))
        await store.create(schedule("d"))
        await store.create(schedule("marker", labels={"team": "a"}))
        await until(lambda: (NAMESPACE, "marker") in informer.cache, "the marker cached")

    assert set(informer.cache) == {(NAMESPACE, "a"), (NAMESPACE, "c"), (NAMESPACE, "marker")}


async def test_synced_is_set_once_the_first_list_is_in_the_cache(store: Store) -> None:
    created = await store.create(schedule("hb"))
    gated = Gated(store)
    gated.list_gate.clear()
    informer = Informer(gated, Kind.SCHEDULE)  # type: ignore[arg-type]
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(PATIENCE):
            await gated.list_waiting.wait()
        assert not informer.synced.is_set()
        assert informer.cache == {}

        gated.list_gate.set()
        async with asyncio.timeout(PATIENCE):
            await informer.synced.wait()
        assert informer.cache == {(NAMESPACE, "hb"): created}
    finally:
        await stop(task)


async def test_a_handler_that_raises_does_not_stop_the_others(store: Store) -> None:
    recorder = Recorder()

    def broken(change: EventType, obj: Obj) -> None:
        raise RuntimeError("a handler bug")

    informer = Informer(store, Kind.SCHEDULE, on_change=broken)
    informer.add_handler(recorder)

    async with started(informer):
        created = await store.create(schedule("hb"))
        await until(lambda: recorder.calls != [], "the second handler called")
        later = await store.create(schedule("later"))
        await until(lambda: informer.get(NAMESPACE, "later") == later, "the informer still running")

    assert informer.get(NAMESPACE, "hb") == created
    assert recorder.since(0) == [(ADDED, "hb"), (ADDED, "later")]


async def test_a_recreated_object_is_cached_as_its_new_incarnation(store: Store) -> None:
    first = await store.create(schedule("hb"))
    informer = Informer(store, Kind.SCHEDULE)

    async with started(informer):
        await store.delete(ref(first))
        second = await store.create(schedule("hb", task="Again."))
        await until(lambda: informer.get(NAMESPACE, "hb") == second, "the new incarnation cached")


# --- write-through ----------------------------------------------------------------------------


async def test_observe_caches_a_write_at_once_and_ignores_older_versions(store: Store) -> None:
    recorder = Recorder()
    informer = Informer(store, Kind.SCHEDULE, on_change=recorder)  # not running
    created = await store.create(schedule("hb"))
    patched = await store.patch_status(ref(created), {"phase": "Active"})

    informer.observe(created)
    informer.observe(patched)
    informer.observe(created)  # older: ignored

    assert informer.get(NAMESPACE, "hb") == patched
    assert recorder.since(0) == [(ADDED, "hb"), (MODIFIED, "hb")]


async def test_a_late_watch_event_does_not_undo_a_write_through(store: Store) -> None:
    created = await store.create(schedule("hb"))
    gated = Gated(store)
    recorder = Recorder()
    informer = Informer(gated, Kind.SCHEDULE, on_change=recorder)  # type: ignore[arg-type]

    async with started(informer):
        listed = len(recorder.calls)
        gated.watch_gate.clear()
        v2 = await store.patch_status(ref(created), {"phase": "Active"})
        await until(lambda: gated.waiting != [], "the watch holding v2")
        v3 = await store.patch_status(ref(created), {"phase": "Suspended"})
        informer.observe(v3)
        gated.watch_gate.set()
        marker = await store.create(schedule("marker"))
        await until(lambda: informer.get(NAMESPACE, "marker") == marker, "the watch caught up")

    # The watch did hand the informer v2 after v3 was observed (v3's own event may
    # come too, or be skipped by the store as already known).
    assert rv(gated.delivered[0].object) == rv(v2)
    assert informer.get(NAMESPACE, "hb") == v3
    assert recorder.since(listed) == [(MODIFIED, "hb"), (ADDED, "marker")]  # hb: observe's only


# --- relist after Expired (SQLite: a watch made to fall behind) -------------------------------


class Behind:
    """An informer's store that is not woken by another process's writes, and that other
    process. ``expire()`` has the other process write until the informer's watch
    position leaves the change log; ``wake()`` makes the informer's watch look again."""

    def __init__(self, path: Path):
        # The informer's watch polls once a minute and does not follow the file: only
        # commits made through this store wake it, so it cannot keep up with the other
        # process meanwhile.
        self.here = SQLiteStore(path, poll_interval=60.0, max_poll_interval=60.0,
                                follow_other_processes=False, keep_changes=SQLITE_KEEP_CHANGES)
        self.other = SQLiteStore(path, keep_changes=SQLITE_KEEP_CHANGES)

    async def expire(self) -> None:
        await ADAPTERS["sqlite"].expire(self.other)

    async def wake(self) -> None:
        await self.here.create(configmap("wake-up"))

    async def close(self) -> None:
        await self.here.close()
        await self.other.close()


@pytest.fixture
async def behind(tmp_path: Path) -> AsyncIterator[Behind]:
    stores = Behind(tmp_path / "store.db")
    try:
        yield stores
    finally:
        await stores.close()


async def test_a_relist_after_expired_tells_the_handlers_what_they_missed(behind: Behind) -> None:
    kept = await behind.here.create(schedule("kept"))
    doomed = await behind.here.create(schedule("doomed"))
    changed = await behind.here.create(schedule("changed"))
    recorder = Recorder()
    informer = Informer(behind.here, Kind.SCHEDULE, on_change=recorder)

    async with started(informer):
        listed = len(recorder.calls)
        await behind.other.delete(ref(doomed))
        changed2 = await behind.other.patch_status(ref(changed), {"phase": "Active"})
        fresh = await behind.other.create(schedule("fresh"))
        await behind.expire()
        await behind.wake()
        await until(lambda: informer.relists == 2, "a relist")
        await until(lambda: informer.get(NAMESPACE, "fresh") is not None, "fresh cached")

    assert informer.cache == {(NAMESPACE, "kept"): kept, (NAMESPACE, "changed"): changed2,
                              (NAMESPACE, "fresh"): fresh}
    missed = recorder.since(listed)
    # A modification the relist found may be reported as ADDED or MODIFIED: the
    # controller's handlers treat both alike.
    changed_as = [change for change, name in missed if name == "changed"]
    assert changed_as in ([ADDED], [MODIFIED]), missed
    assert sorted(missed) == sorted([(DELETED, "doomed"), (ADDED, "fresh"), (changed_as[0], "changed")])
    deleted = recorder.objects[listed + missed.index((DELETED, "doomed"))]
    assert deleted["metadata"]["uid"] == doomed["metadata"]["uid"]


async def test_a_relist_keeps_what_was_written_through_while_it_listed(behind: Behind) -> None:
    """An object the process wrote and observed after the relist's snapshot is newer than
    the snapshot: its absence from the list is not a deletion. With the Kubernetes
    adapter the list is a network round trip, so the window is real."""
    gated = Gated(behind.here)
    recorder = Recorder()
    informer = Informer(gated, Kind.SCHEDULE, on_change=recorder)  # type: ignore[arg-type]

    async with started(informer):
        gated.list_gate.clear()
        await behind.expire()
        await behind.wake()
        async with asyncio.timeout(PATIENCE):
            await gated.list_waiting.wait()  # the snapshot is taken
        created = await behind.here.create(schedule("written-meanwhile"))
        informer.observe(created)
        gated.list_gate.set()
        await until(lambda: informer.relists == 2, "the relist finished")

    assert (DELETED, "written-meanwhile") not in recorder.since(0), recorder.since(0)
    assert informer.get(NAMESPACE, "written-meanwhile") == created


# --- the store goes away under a running informer ----------------------------------------------

# Runs in a child process, so that a stalled event loop fails this test instead of hanging
# the test run. Prints "turning" if the event loop still runs after the store has closed.
_CLOSE_UNDER_A_RUNNING_INFORMER = r"""
import asyncio, sys
from sympozium_schedule.adapters.sqlite.store import SQLiteStore
from sympozium_schedule.core.model import Kind
from sympozium_schedule.runtime.informer import Informer

async def main(path):
    store = SQLiteStore(path)
    informer = Informer(store, Kind.SCHEDULE)
    task = asyncio.create_task(informer.run())
    async with asyncio.timeout(5):
        await informer.synced.wait()
    await store.close()
    await asyncio.sleep(0.3)
    print("turning", flush=True)
    task.cancel()

asyncio.run(main(sys.argv[1]))
"""


async def test_a_store_closing_under_a_running_informer_does_not_stall_the_event_loop(
    tmp_path: Path,
) -> None:
    """A watch on a closed store ends at once without an error, and the informer
    resumes a watch that ended without pausing or yielding: the two make a loop that
    never gives the event loop back. (The app closes its store in a finally block.)"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLOSE_UNDER_A_RUNNING_INFORMER, str(tmp_path / "store.db"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err, stalled = b"", b"", False
    try:
        async with asyncio.timeout(5):  # about 1 s when the loop keeps turning
            out, err = await proc.communicate()
    except TimeoutError:
        stalled = True
        proc.kill()
        await proc.wait()
    assert not stalled, "the event loop stalled once the store closed (the child was killed after 5 s)"
    assert proc.returncode == 0, err.decode(errors="replace")
    # (The informer may log its retries against the closed store before that line.)
    assert out.decode().strip().splitlines()[-1] == "turning"
