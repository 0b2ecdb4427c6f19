"""The real Controller on a real SQLite store, in virtual time.

The controller's wall clock and its one timer are both the test's
(:class:`VirtualTime`): ``await rig.advance(seconds)`` moves time forward,
firing every wake-up that falls due on the way, and waits after each until the
controller is quiet again (its passes done, its writes committed and seen by its
watches). A minute of ``@every 1s`` takes milliseconds and no test sleeps on a
tick; the store, the informers and the writes are the real ones. The runner is
not here: a test finishes a run by writing its status, as the runner does.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import API_VERSION, LABEL_SCHEDULE, Kind
from sympozium_schedule.ports.store import Obj, Ref
from sympozium_schedule.runtime.controller import Controller, ControllerSettings
from sympozium_schedule.runtime.metrics import Metrics

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, on a minute
PATIENCE = 10.0  # real seconds a quiet controller may take to settle; only a failure waits this long


@dataclass(eq=False)
class _Timer:
    deadline: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class VirtualTime:
    """A wall clock that moves only when told, and ``call_later`` on it."""

    now: datetime = T0
    _timers: list[tuple[float, int, _Timer]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def clock(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.now.timestamp()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now.timestamp() + max(delay, 0.0), callback)
        heapq.heappush(self._timers, (timer.deadline, next(self._order), timer))
        return timer

    def next_due(self, until: float) -> _Timer | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._timers and self._timers[0][0] <= until:
            return heapq.heappop(self._timers)[2]
        return None


class Rig:
    def __init__(self, store: SQLiteStore, time: VirtualTime, settings: ControllerSettings):
        self.store = store
        self.time = time
        self.metrics = Metrics()
        self.controller = Controller(store, clock=time.clock, settings=settings,
                                     metrics=self.metrics, call_later=time.call_later,
                                     monotonic_clock=time.monotonic, rng=random.Random(7))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.controller.run())
        await asyncio.wait_for(self.controller.ready.wait(), PATIENCE)
        await self.settle()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def settle(self) -> None:
        """Until the controller is quiet: no pass under way, nothing dirty, and the store's
        revision unchanged while its watches had the turns they need to report it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE
        quiet, last = 0, -1
        while quiet < 3:
            if self._task is not None and self._task.done():
                self._task.result()  # the controller died: say why
            revision = self.store.revision()
            quiet = quiet + 1 if self.controller.idle and revision == last else 0
            last = revision
            if loop.time() > deadline:
                raise AssertionError(f"the controller did not settle within {PATIENCE}s")
            await asyncio.sleep(0.005)

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward, firing each timer due on the way, in order."""
        until = self.time.now.timestamp() + seconds
        while (timer := self.time.next_due(until)) is not None:
            self.time.now = max(self.time.now, datetime.fromtimestamp(timer.deadline, UTC))
            timer.callback()
            await self.settle()
        self.time.now = datetime.fromtimestamp(until, UTC)
        await self.settle()

    async def at(self, when: datetime) -> None:
        await self.advance((when - self.time.now).total_seconds())

    # --- the store, as people and the runner change it -------------------------------------

    async def apply(self, *objs: Obj) -> None:
        for obj in objs:
            await self.store.create(obj)
        await self.settle()

    async def get(self, kind: Kind, name: str) -> Obj:
        return await self.store.get(Ref(kind, "default", name))

    async def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = (await self.get(Kind.SCHEDULE, name)).get("status") or {}
        return status

    async def runs(self, schedule: str) -> list[Obj]:
        listing = await self.store.list(Kind.AGENT_RUN, namespace="default",
                                        labels={LABEL_SCHEDULE: schedule})
        return sorted(listing.items, key=lambda r: r["metadata"]["name"])

    async def finish(self, run: str, phase: str = "Succeeded", error: str = "") -> None:
        """What the runner writes when a run ends."""
        status = {"phase": phase} | ({"error": error} if error else {})
        await self.store.patch_status(Ref(Kind.AGENT_RUN, "default", run), status)
        await self.settle()

    async def events(self, name: str, reason: str | None = None) -> list[Obj]:
        items = (await self.store.list(Kind.EVENT, namespace="default")).items
        return [e for e in items if e["involvedObject"]["name"] == name
                and (reason is None or e["reason"] == reason)]


def instance(name: str = "alice") -> Obj:
    return {"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"agents": {"default": {"model": "gpt-4o"}}}}


def schedule(name: str, expression: str = "@every 1s", *, instance_ref: str = "alice",
             **spec: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"instanceRef": instance_ref, "schedule": expression, "task": "Check in."}
            | spec}


@pytest.fixture
def vtime() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def settings() -> ControllerSettings:
    return ControllerSettings(retry_initial=0.5, retry_max=30.0)


@pytest.fixture
async def rig(tmp_path: Path, vtime: VirtualTime, settings: ControllerSettings,
              ) -> AsyncIterator[Rig]:
    store = SQLiteStore(tmp_path / "store.db", clock=vtime.clock)
    made = Rig(store, vtime, settings)
    try:
        yield made
    finally:
        await made.stop()
        await store.close()
