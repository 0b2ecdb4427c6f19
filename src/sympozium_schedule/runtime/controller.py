"""The schedule controller: informers in, decisions out, one timer for everything.

Event driven. Informer events (a schedule applied, a run finished, an
instance created) mark schedules dirty (``runtime.caches``); a single heap of
wake-up times, armed as one timer (``runtime.timers``), marks them dirty when
a tick is due. A worker drains the dirty set: for each schedule it asks the
pure core what to do (:func:`~sympozium_schedule.core.decide.reconcile`) and
hands the decisions that write something, a chunk at a time, to the one
executor (``runtime.execute``), which writes them and follows up on the
results. Nothing is polled per schedule and nothing is written when nothing
is due, because the core's status for an idle schedule equals the stored one.

Never two runs for one tick: run names come from the tick, a create that
finds the name taken by this schedule counts as done, and status writes are
conditional on the resourceVersion the decision was based on (a conflict
means read again and decide again).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from sympozium_schedule.core.decide import reconcile
from sympozium_schedule.core.model import LABEL_SCHEDULE
from sympozium_schedule.core.status import standing
from sympozium_schedule.ports.store import Labels, Obj, Store
from sympozium_schedule.runtime.caches import Caches
from sympozium_schedule.runtime.clock import Clock, MonotonicClock, monotonic, system_clock
from sympozium_schedule.runtime.events import EventRecorder
from sympozium_schedule.runtime.execute import Backoff, Executor, Planned, plan
from sympozium_schedule.runtime.informer import Key, run_informers
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.timers import CallLater, Timers, loop_call_later
from sympozium_schedule.runtime.trigger import trigger_now

__all__ = ["Controller", "ControllerSettings", "Leadership", "trigger_now"]

log = structlog.get_logger("controller")

# Store calls of one pass in flight at once: the next chunk is decided while one
# is being written, and a burst never queues more than this.
_CHUNKS_IN_FLIGHT = 2


class Leadership(Protocol):
    """Which schedules this replica acts on when several run (Kubernetes mode): all of them
    while it holds the one Lease (adapters/kubernetes/leader.py), or those of the shards it
    holds (adapters/kubernetes/sharding.py, which marks a shard it takes over dirty)."""

    @property
    def is_leading(self) -> bool: ...  # acts on any schedule at all

    async def wait_leading(self) -> None: ...

    def owns(self, key: Key) -> bool: ...

    def owner_status(self, key: Key) -> Mapping[str, Any]: ...  # status fields naming the owner


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    namespaces: tuple[str, ...] | None = None
    # Kubernetes: Sympozium labels memory ConfigMaps sympozium.ai/component=memory;
    # watching every ConfigMap in a cluster would be wasteful.
    memory_labels: Labels | None = None
    # The runs watched: those of schedules (None: every run, for a runner that shares
    # the controller's informer in embedded mode).
    run_labels: Labels | None = field(default_factory=lambda: {LABEL_SCHEDULE: None})
    chunk_size: int = 256  # decisions per store call in a pass
    retry_initial: float = 0.5
    retry_max: float = 30.0
    record_events: bool = True


class Controller:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        settings: ControllerSettings | None = None,
        metrics: Metrics | None = None,
        leader: Leadership | None = None,
        call_later: CallLater = loop_call_later,
        monotonic_clock: MonotonicClock = monotonic,
        rng: random.Random | None = None,
    ):
        """``clock`` is the wall clock the controller decides by and ``call_later`` how
        its one timer sleeps (tests pass a virtual clock and its own timer);
        ``monotonic_clock`` paces the Event recorder."""
        self.store = store
        self.clock = clock
        self.settings = settings or ControllerSettings()
        self.metrics = metrics or Metrics()
        self.leader = leader
        s = self.settings
        self.caches = Caches(store, namespaces=s.namespaces, run_labels=s.run_labels,
                             memory_labels=s.memory_labels, mark=self.mark, forget=self._forget)
        self.schedules, self.runs = self.caches.schedules, self.caches.runs
        self.instances, self.memory = self.caches.instances, self.caches.memory
        self.events = EventRecorder(store, metrics=self.metrics, clock=clock,
                                    monotonic_clock=monotonic_clock)
        self.timers = Timers(clock, self._due, call_later=call_later)
        self.executor = Executor(
            store, self.caches, self.timers, self.events, self.metrics, clock=clock,
            backoff=Backoff(s.retry_initial, s.retry_max), record_events=s.record_events,
            owns=self._owns, owner=self._owner, mark=self.mark, rng=rng)
        self.metrics.watch_phases(self._phases)
        self.synced = asyncio.Event()  # caches filled
        self.ready = asyncio.Event()  # caches filled and a first pass made (timers armed)
        # Every schedule decided at least once since the start (see _start_from_status).
        self.decided_all = asyncio.Event()
        self.passes = 0
        self.busy = False  # a pass is being made
        self._dirty: set[Key] = set()
        # Schedules armed from their stored status at start, decided in the background.
        self._deferred: dict[Key, None] = {}
        self._wakeup = asyncio.Event()

    # --- what marks a schedule dirty ---------------------------------------------------------

    def mark(self, key: Key) -> None:
        self._dirty.add(key)
        self._wakeup.set()

    def mark_all(self) -> None:
        self._dirty.update(self.schedules.cache)
        self._wakeup.set()

    def _due(self, keys: list[Key]) -> None:
        self._dirty.update(keys)
        self._wakeup.set()

    def _forget(self, key: Key, obj: Obj) -> None:
        """A schedule was deleted."""
        self.timers.disarm(key)
        self.executor.forget(key)
        self.events.forget(str((obj.get("metadata") or {}).get("uid")))

    def _phases(self) -> list[str]:
        return [str((o.get("status") or {}).get("phase") or "Unknown")
                for o in self.schedules.cache.values()]

    def _owns(self, key: Key) -> bool:
        return self.leader is None or self.leader.owns(key)

    def _owner(self, key: Key) -> Mapping[str, Any]:
        """The status fields naming this replica (a sharded one's shard and identity; the
        one leader gives none, so stale ones are removed)."""
        return self.leader.owner_status(key) if self.leader is not None else {}

    def next_wake(self) -> datetime | None:
        """The earliest armed wake-up (for tests and the status line)."""
        return self.timers.next_wake()

    @property
    def idle(self) -> bool:
        """Nothing dirty or deferred and no pass under way (tests wait for this)."""
        return not self._dirty and not self._deferred and not self.busy

    # --- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(run_informers(*self.caches.informers))
            group.create_task(self.events.run())
            group.create_task(self._work())

    async def _work(self) -> None:
        for informer in self.caches.informers:
            await informer.synced.wait()
        self.synced.set()  # a standby is ready from here on; only the leader passes
        self.timers.start()
        self._wakeup.set()
        fresh = True  # (re)starting: _start_from_status says what to decide first
        try:
            while True:
                if not self._dirty and self._deferred and not fresh:
                    # Quiet: decide the next few schedules armed from their status.
                    chunk = list(itertools.islice(self._deferred, self.settings.chunk_size))
                    self._dirty.update(chunk)
                    await asyncio.sleep(0)  # a timer due meanwhile goes first
                else:
                    await self._wakeup.wait()
                self._wakeup.clear()
                if self.leader is not None and not self.leader.is_leading:
                    await self.leader.wait_leading()
                    fresh = True
                if fresh:
                    self._start_from_status()
                    fresh = False
                self.busy = True
                try:
                    await self._pass()
                finally:
                    self.busy = False
                self.passes += 1
                self.ready.set()
                if not self._deferred:
                    self.decided_all.set()
        finally:
            self.timers.stop()

    def _start_from_status(self) -> None:
        """What a (re)start decides before it is ready, and what it leaves for later.

        A schedule whose stored status stands (written for this spec, its next tick still
        ahead: :func:`~sympozium_schedule.core.status.standing`) has its timer armed from
        that status and is decided in the background, a chunk at a time whenever the
        controller is otherwise quiet; every other schedule is decided now. So a restart
        of 10,000 idle schedules arms them all without deciding each first, and fires
        nothing later than a full first pass would."""
        now = self.clock()
        self._dirty.clear()
        self._deferred.clear()
        for key, obj in self.schedules.cache.items():
            meta = obj.get("metadata") or {}
            generation = meta.get("generation")
            rests, wake = standing(obj.get("status") or {},
                                   generation if isinstance(generation, int) else 1, now)
            if rests:
                self.timers.arm(key, wake)
                self._deferred[key] = None
            else:
                self._dirty.add(key)

    async def _pass(self) -> None:
        """Decide for every dirty schedule and execute the decisions.

        Decisions that write are sent to the executor in chunks while the next ones
        are being decided, so the store works in parallel with the core; decisions
        with nothing to write cost no store call at all, only their wake-up."""
        keys, self._dirty = self._dirty, set()
        for key in keys:
            self._deferred.pop(key, None)
        now = self.clock()
        slots = asyncio.Semaphore(_CHUNKS_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        chunk: list[Planned] = []

        async def flush(batch: list[Planned]) -> None:
            try:
                await self.executor.execute(batch, now)
            finally:
                slots.release()

        async def send(batch: list[Planned]) -> None:
            await slots.acquire()
            task = asyncio.create_task(flush(batch))
            running.add(task)
            task.add_done_callback(running.discard)

        for key in keys:
            planned = self._decide(key, now)
            if planned is None:
                continue
            chunk.append(planned)
            if len(chunk) >= self.settings.chunk_size:
                await send(chunk)
                chunk = []
        if chunk:
            await send(chunk)
        if running:
            await asyncio.gather(*running)

    def _decide(self, key: Key, now: datetime) -> Planned | None:
        """The decision about ``key`` as steps to write; None when it writes nothing (its
        wake-up is armed here) or it could not be made."""
        obj = self.schedules.get(*key)
        if obj is None or not self._owns(key):
            self.timers.disarm(key)
            return None
        try:
            view = self.caches.view(key, obj)
            inputs = self.caches.inputs(key, view)
            decision = reconcile(view, inputs.runs, inputs.instance, inputs.memory, now)
            planned = plan(key, obj, view, decision, self._owner(key))
        except Exception:  # a bug must not take the other schedules down with it
            log.exception("reconcile failed", namespace=key[0], schedule=key[1])
            self.metrics.errors.labels("reconcile").inc()
            self.executor.retry_later(key, now)
            return None
        if planned is None:
            self.timers.arm(key, decision.wake_at)
            self.executor.retries.pop(key, None)
        return planned
