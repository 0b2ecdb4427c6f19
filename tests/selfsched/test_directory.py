"""The router's directory (runtime/router/directory.py): what it answers from memory,
on a real SQLite store with real informers, shared (as ``run`` shares the controller's)
or its own (a router on its own), and when it asks the store instead."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import API_VERSION, LABEL_INSTANCE, LABEL_SOURCE, Kind
from sympozium_schedule.ports.store import Obj, Ref
from sympozium_schedule.runtime.informer import Informer, run_informers
from sympozium_schedule.runtime.router import AgentDirectory
from tests import support

eventually = functools.partial(support.eventually, timeout=20.0)
NS = "default"


def schedule(name: str, *, instance: str = "alice", agent: bool = True) -> Obj:
    labels = {LABEL_INSTANCE: instance} | ({LABEL_SOURCE: "agent"} if agent else {})
    return {"apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"instanceRef": instance, "schedule": "@hourly", "task": "t"}}


class World:
    def __init__(self, store: SQLiteStore, directory: AgentDirectory,
                 informers: tuple[Informer, Informer]):
        self.store, self.directory, self.informers = store, directory, informers


@pytest_asyncio.fixture(params=["shared", "own"])
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.create({"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
                        "metadata": {"name": "alice", "namespace": NS}, "spec": {}})
    if request.param == "shared":  # as run passes the controller's: every schedule cached
        instances, schedules = Informer(store, Kind.INSTANCE), Informer(store, Kind.SCHEDULE)
        directory = AgentDirectory(store, instances=instances, schedules=schedules)
        task = asyncio.create_task(run_informers(instances, schedules))
    else:
        directory = AgentDirectory(store)
        instances, schedules = directory.instances, directory.schedules
        task = asyncio.create_task(directory.run())
    await eventually(lambda: instances.synced.is_set() and schedules.synced.is_set(),
                     what="the informers to sync")
    try:
        yield World(store, directory, (instances, schedules))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_an_instance_exists_from_the_cache_and_a_new_one_from_the_store(world: World) -> None:
    assert await world.directory.instance_exists(NS, "alice")
    assert not await world.directory.instance_exists(NS, "bob")
    await world.store.create({"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
                              "metadata": {"name": "bob", "namespace": NS}, "spec": {}})
    assert await world.directory.instance_exists(NS, "bob"), "asked the store on a miss"


async def test_the_routers_own_create_counts_at_once(world: World) -> None:
    created = await world.store.create(schedule("alice-one"))
    world.directory.written(created)

    assert await world.directory.agent_schedules(NS, "alice") == ["alice-one"]
    assert await world.directory.schedule(NS, "alice-one", creating=False) == created


async def test_schedules_written_by_others_count_when_their_watch_comes(world: World) -> None:
    await world.store.create(schedule("alice-two"))
    await world.store.create(schedule("alice-by-hand", agent=False))
    await world.store.create(schedule("bob-x", instance="bob"))

    await eventually(lambda: world.informers[1].get(NS, "bob-x"), what="the last one watched")
    assert await world.directory.agent_schedules(NS, "alice") == ["alice-two"]
    assert await world.directory.agent_schedules(NS, "bob") == ["bob-x"]


async def test_a_delete_frees_the_place_at_once(world: World) -> None:
    created = await world.store.create(schedule("alice-gone"))
    world.directory.written(created)
    await world.store.delete(Ref.of(created))
    world.directory.deleted(created)

    assert await world.directory.agent_schedules(NS, "alice") == []
    assert await world.directory.schedule(NS, "alice-gone", creating=False) is None
    await eventually(lambda: world.informers[1].get(NS, "alice-gone") is None, what="the watch")
    assert await world.directory.agent_schedules(NS, "alice") == []


async def test_a_persons_schedule_is_found_although_only_agent_schedules_are_cached(
        world: World) -> None:
    person = await world.store.create(schedule("alice-mine", agent=False))
    await eventually(lambda: world.informers[1].synced.is_set(), what="sync")
    found = await world.directory.schedule(NS, "alice-mine", creating=False)
    assert found is not None
    assert found["metadata"]["uid"] == person["metadata"]["uid"]


async def test_a_stale_read_is_a_conflict_and_the_store_has_the_truth(world: World) -> None:
    """The directory may be a moment behind; the write based on what it said carries
    that resourceVersion, so the store refuses it and the router reads the store."""
    created = await world.store.create(schedule("alice-edit"))
    world.directory.written(created)
    remembered = await world.directory.schedule(NS, "alice-edit", creating=False)
    assert remembered is not None
    changed: dict[str, Any] = dict(created)
    changed["spec"] = dict(created["spec"]) | {"task": "changed by a person"}
    await world.store.update(changed)

    fresh = await world.directory.stored_schedule(NS, "alice-edit")
    assert fresh is not None
    assert fresh["spec"]["task"] == "changed by a person"
    assert fresh["metadata"]["resourceVersion"] != remembered["metadata"]["resourceVersion"]


async def test_before_the_informers_sync_the_store_is_asked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    try:
        await store.create(schedule("alice-early"))
        directory = AgentDirectory(store)  # its informers never started
        assert await directory.agent_schedules(NS, "alice") == ["alice-early"]
        assert await directory.schedule(NS, "alice-early", creating=True) is not None
    finally:
        await store.close()
