"""A spec edit that lands while a fire's writes are in flight.

The edit's watch event can reach the controller's cache before the answer to the
fire's writes does (the Kubernetes API sends both at once; seen on the real
kube-apiserver under load: a schedule suspended during an `@every 1s` fire went on
firing for as long as the test waited). The controller must then decide on the
edited spec, not on the spec its fire read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any, cast

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import Kind, parse_time
from sympozium_schedule.ports.store import Create, GroupResults, Ref, Store, Write
from sympozium_schedule.runtime.controller import Controller, ControllerSettings
from tests import support
from tests.faults.conftest import KEEP_ALL, PATIENCE, instance_obj, now, schedule_obj

poll = partial(support.eventually, timeout=PATIENCE, interval=0.01)
HB = Ref(Kind.SCHEDULE, "default", "hb")


class EditDuringWrites:
    """A SQLiteStore where, once armed, the next fire's writes commit, then the schedule
    is suspended by someone else, and the fire's answer is handed back only after the
    controller's cache holds that edit."""

    def __init__(self, store: SQLiteStore):
        self.store = store
        self.controller: Controller | None = None
        self.armed = False
        self.edited_at: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def write_groups(self, groups: Sequence[Sequence[Write]]) -> GroupResults:
        results = await self.store.write_groups(groups)
        if self.armed and any(isinstance(w, Create) for group in groups for w in group):
            self.armed = False
            obj = await self.store.get(HB)
            obj["spec"] = dict(obj["spec"]) | {"suspend": True}
            await self.store.update(obj)
            self.edited_at = now()
            controller = self.controller
            assert controller is not None

            def cached_suspended() -> bool:
                cached = controller.schedules.get("default", "hb")
                return bool(cached and (cached.get("spec") or {}).get("suspend"))

            await poll(cached_suspended, what="the edit in the controller's cache")
        return results


async def test_a_suspend_that_races_a_fire_stops_the_fires(tmp_path: Any) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    racing = EditDuringWrites(store)
    try:
        await store.create(instance_obj())
        await store.create(schedule_obj("hb", "@every 1s", **KEEP_ALL))
        controller = Controller(cast(Store, racing), settings=ControllerSettings(record_events=False))
        racing.controller = controller
        task = asyncio.create_task(controller.run())
        try:
            await asyncio.wait_for(controller.ready.wait(), PATIENCE)

            async def runs() -> list[dict[str, Any]]:
                return (await store.list(Kind.AGENT_RUN)).items

            await poll(lambda: _count(runs, 1), what="a first run")
            racing.armed = True
            await poll(lambda: racing.edited_at is not None, what="a fire raced by the edit")

            async def suspended() -> bool:
                status = (await store.get(HB)).get("status") or {}
                return status.get("phase") == "Suspended"

            await poll(suspended, what="phase Suspended")
            await asyncio.sleep(2.5)  # two ticks go by
            late = [r["metadata"]["name"] for r in await runs()
                    if _scheduled(r) > racing.edited_at + timedelta(seconds=1)]
            assert late == [], "no tick after the suspend fires"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.close()


async def _count(runs: Any, n: int) -> bool:
    return len(await runs()) >= n


def _scheduled(run: dict[str, Any]) -> Any:
    parsed = parse_time(run["metadata"]["annotations"]["sympozium.ai/scheduled-time"])
    assert parsed is not None
    return parsed
