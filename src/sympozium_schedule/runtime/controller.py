"""The schedule controller: informers in, decisions out, one timer for everything.

Event driven. Informer events (a schedule applied, a run finished, an
instance created) mark schedules dirty; a single heap of wake-up times, armed
as one asyncio timer, marks them dirty when a tick is due. A worker drains the
dirty set: for each schedule it asks the pure core what to do
(:func:`~sympozium_schedule.core.decide.reconcile`) and executes the decision
(delete, create, write status once). Nothing is polled per schedule and
nothing is written when nothing is due, because the core's status for an idle
schedule equals the stored one.

Never two runs for one tick: run names come from the tick, a create that
finds the name taken counts as done, and status writes are conditional on the
resourceVersion the decision was based on (a conflict means re-read and
decide again).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from sympozium_schedule.core.decide import (
    MANAGED_STATUS_KEYS,
    Decision,
    Note,
    Outcome,
    Suspension,
    reconcile,
)
from sympozium_schedule.core.manual import tick_failed, trigger
from sympozium_schedule.core.merge import diff_patch
from sympozium_schedule.core.model import (
    LABEL_SCHEDULE,
    MEMORY_KEY,
    Kind,
    ObjectView,
    RunView,
    ScheduleView,
    memory_configmap_name,
)
from sympozium_schedule.core.runs import RunTemplate
from sympozium_schedule.core.shards import SHARD_STATUS_KEYS
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    Create,
    Delete,
    EventType,
    Forbidden,
    Invalid,
    Labels,
    NotFound,
    Obj,
    PatchStatus,
    Ref,
    Store,
    StoreError,
    Write,
    WriteResult,
)
from sympozium_schedule.runtime.clock import Clock, system_clock
from sympozium_schedule.runtime.events import EventRecorder
from sympozium_schedule.runtime.informer import Informer, Key, key_of, run_informers
from sympozium_schedule.runtime.metrics import Metrics

log = structlog.get_logger("controller")

# Store calls of one pass in flight at once: the next chunk is decided while one
# is being written, and a burst never queues more than this.
_CHUNKS_IN_FLIGHT = 2

# Re-read the wall clock at least this often while idle, so a clock step
# (NTP, a suspended laptop) cannot leave a timer armed for the wrong instant.
_MAX_SLEEP = 60.0

# The status keys written: the core's, and the owner's (sharded replicas; removed otherwise).
_STATUS_KEYS = MANAGED_STATUS_KEYS + SHARD_STATUS_KEYS


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
    run_labels: Labels = field(default_factory=lambda: {LABEL_SCHEDULE: None})
    chunk_size: int = 256  # decisions per store call in a pass
    retry_initial: float = 0.5
    retry_max: float = 30.0
    record_events: bool = True


_Planned = tuple[Key, Obj, ScheduleView, Decision]


class Controller:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        settings: ControllerSettings | None = None,
        metrics: Metrics | None = None,
        leader: Leadership | None = None,
    ):
        self.store = store
        self.clock = clock
        self.settings = settings or ControllerSettings()
        self.metrics = metrics or Metrics()
        self.leader = leader
        ns = self.settings.namespaces
        self.schedules = Informer(store, Kind.SCHEDULE, namespaces=ns, on_change=self._on_schedule)
        self.runs = Informer(store, Kind.AGENT_RUN, namespaces=ns, labels=self.settings.run_labels,
                             on_change=self._on_run)
        self.instances = Informer(store, Kind.INSTANCE, namespaces=ns, on_change=self._on_instance)
        self.memory = Informer(store, Kind.CONFIG_MAP, namespaces=ns,
                               labels=self.settings.memory_labels)
        self.events = EventRecorder(store, metrics=self.metrics, clock=clock)
        self.metrics.watch_phases(self._phases)
        self.synced = asyncio.Event()  # caches filled
        self.ready = asyncio.Event()  # caches filled and a first pass made (timers armed)
        self.passes = 0

        self._runs_by_schedule: dict[Key, set[str]] = {}
        self._instance_of: dict[Key, Key] = {}
        self._schedules_by_instance: dict[Key, set[Key]] = {}
        self._views: dict[Key, tuple[str, ScheduleView]] = {}
        self._templates: dict[Key, tuple[str, RunTemplate]] = {}
        self._dirty: set[Key] = set()
        self._wakeup = asyncio.Event()
        self._heap: list[tuple[float, Key]] = []
        self._wake_at: dict[Key, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._retries: dict[Key, float] = {}
        self._refusals: dict[Key, str] = {}  # the last permanent refusal said, per schedule

    # --- informer handlers: keep the indexes, mark schedules dirty ------------------------

    def _on_schedule(self, change: EventType, obj: Obj) -> None:
        key = key_of(obj)
        old_instance = self._instance_of.pop(key, None)
        if old_instance is not None:
            self._schedules_by_instance.get(old_instance, set()).discard(key)
        if change is EventType.DELETED:
            self._views.pop(key, None)
            self._wake_at.pop(key, None)
            self._retries.pop(key, None)
            self._refusals.pop(key, None)
            self.events.forget(str((obj.get("metadata") or {}).get("uid")))
            return
        ref = (obj.get("spec") or {}).get("instanceRef")
        if isinstance(ref, str):
            instance = (key[0], ref)
            self._instance_of[key] = instance
            self._schedules_by_instance.setdefault(instance, set()).add(key)
        self.mark(key)

    def _on_run(self, change: EventType, obj: Obj) -> None:
        key = self._index_run(change, obj)
        if key is not None:
            self.mark(key)

    def _index_run(self, change: EventType, obj: Obj) -> Key | None:
        """Keep runs-by-schedule current; returns the schedule's key."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        schedule = labels.get(LABEL_SCHEDULE)
        if not schedule:
            return None
        ns, name = key_of(obj)
        key = (ns, schedule)
        names = self._runs_by_schedule.setdefault(key, set())
        if change is EventType.DELETED:
            names.discard(name)
        else:
            names.add(name)
        return key

    def _on_instance(self, change: EventType, obj: Obj) -> None:
        if change is EventType.DELETED:
            self._templates.pop(key_of(obj), None)
        for key in list(self._schedules_by_instance.get(key_of(obj), ())):
            self.mark(key)

    def _phases(self) -> list[str]:
        return [str((o.get("status") or {}).get("phase") or "Unknown")
                for o in self.schedules.cache.values()]

    # --- the dirty set and the one timer ------------------------------------------------

    def mark(self, key: Key) -> None:
        self._dirty.add(key)
        self._wakeup.set()

    def mark_all(self) -> None:
        for key in self.schedules.cache:
            self._dirty.add(key)
        self._wakeup.set()

    def _arm(self, key: Key, when: datetime | None) -> None:
        if when is None:
            self._wake_at.pop(key, None)
            return
        stamp = when.timestamp()
        if self._wake_at.get(key) == stamp:
            return
        self._wake_at[key] = stamp
        heapq.heappush(self._heap, (stamp, key))
        if self._heap[0][0] == stamp:
            self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if len(self._heap) > 2 * len(self._wake_at) + 1024:  # drop superseded entries
            self._heap = [(t, k) for k, t in self._wake_at.items()]
            heapq.heapify(self._heap)
        while self._heap and self._wake_at.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        loop = asyncio.get_running_loop()
        if self._heap:
            delay = self._heap[0][0] - self.clock().timestamp()
        else:
            delay = _MAX_SLEEP
        self._timer = loop.call_later(min(max(delay, 0.0), _MAX_SLEEP), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.clock().timestamp()
        due = False
        while self._heap and self._heap[0][0] <= now:
            stamp, key = heapq.heappop(self._heap)
            if self._wake_at.get(key) == stamp:
                del self._wake_at[key]
                self._dirty.add(key)
                due = True
        if due:
            self._wakeup.set()
        self._rearm()

    def next_wake(self) -> datetime | None:
        """The earliest armed wake-up (for tests and the status line)."""
        if not self._wake_at:
            return None
        return datetime.fromtimestamp(min(self._wake_at.values()), self.clock().tzinfo)

    # --- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(run_informers(self.schedules, self.runs, self.instances, self.memory))
            group.create_task(self.events.run())
            group.create_task(self._work())

    async def _work(self) -> None:
        for informer in (self.schedules, self.runs, self.instances, self.memory):
            await informer.synced.wait()
        self.synced.set()  # a standby is ready from here on; only the leader passes
        self.mark_all()
        self._rearm()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self.leader is not None and not self.leader.is_leading:
                    await self.leader.wait_leading()
                    self.mark_all()
                    continue
                await self._pass()
                self.passes += 1
                self.ready.set()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _pass(self) -> None:
        """Decide for every dirty schedule and execute the decisions.

        Decisions with writes are sent to the store in chunks (one
        ``write_groups`` call each) while the next ones are being decided, so the
        store works in parallel with the core; decisions with nothing to write
        cost no store call at all. A decision whose writes did not all succeed
        (the run's name taken, a conflict) goes through :meth:`_execute`, which
        handles each case.
        """
        keys, self._dirty = self._dirty, set()
        now = self.clock()
        slots = asyncio.Semaphore(_CHUNKS_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        chunk: list[_Planned] = []

        async def flush(batch: list[_Planned]) -> None:
            try:
                await self._write_batch(batch, now)
            finally:
                slots.release()

        async def send(batch: list[_Planned]) -> None:
            await slots.acquire()
            task = asyncio.create_task(flush(batch))
            running.add(task)
            task.add_done_callback(running.discard)

        for key in keys:
            planned = self._decide(key, now)
            if planned is None:
                continue
            obj, view, decision = planned
            if self._nothing_to_write(obj, decision):
                self._arm(key, decision.wake_at)
                self._retries.pop(key, None)
                continue
            if decision.suspend is not None:  # a spec update after the status: not batched
                await self._execute(key, obj, view, decision, now)
                continue
            chunk.append((key, obj, view, decision))
            if len(chunk) >= self.settings.chunk_size:
                await send(chunk)
                chunk = []
        if chunk:
            await send(chunk)
        if running:
            await asyncio.gather(*running)

    def _writes(self, obj: Obj, decision: Decision) -> list[Write]:
        ns = (obj.get("metadata") or {}).get("namespace") or "default"
        writes: list[Write] = [Delete(Ref(Kind.AGENT_RUN, ns, name), missing_ok=True)
                               for name in decision.delete]
        if decision.create is not None:
            writes.append(Create(decision.create))
        patch = self._status_patch(obj, decision.status)
        if patch:
            writes.append(PatchStatus(Ref.of(obj), patch,
                                      (obj.get("metadata") or {}).get("resourceVersion")))
        return writes

    async def _write_batch(self, batch: list[_Planned], now: datetime) -> None:
        if self.leader is not None:
            lost = [p for p in batch if not self.leader.owns(p[0])]
            for key, *_ in lost:
                self.mark(key)
            if lost:
                batch = [p for p in batch if self.leader.owns(p[0])]
                if not batch:
                    return
        writes = [self._writes(obj, decision) for _, obj, _, decision in batch]
        try:
            results = await self.store.write_groups(writes)
        except StoreError:
            results = [[] for _ in batch]  # each goes the careful way below
        counts = {"delete": 0, "create": 0, "status": 0}
        retry: list[_Planned] = []
        for planned, wanted, got in zip(batch, writes, results, strict=True):
            key, obj, view, decision = planned
            if len(got) == len(wanted) and not any(isinstance(r, StoreError) for r in got):
                self._written(key, obj, decision, wanted, got, counts)
                self._remember_view(key, view, decision)
                continue
            refused = got[-1] if got and isinstance(wanted[len(got) - 1], Create) else None
            if isinstance(refused, Invalid | Forbidden):
                # The run's create was refused for good: not tried a second time below.
                for write, result in zip(wanted, got, strict=False):
                    if isinstance(write, Delete) and not isinstance(result, StoreError):
                        self._forget_run(write.ref.namespace, write.ref.name)
                planned = (key, obj, view, self._create_refused(view, decision, refused, now))
            retry.append(planned)
        m = self.metrics  # counted once a chunk: each inc() takes a lock
        m.deletes.inc(counts["delete"])
        m.creates.inc(counts["create"])
        m.status_writes.inc(counts["status"])
        for key, obj, view, decision in retry:
            await self._execute(key, obj, view, decision, now)

    def _remember_view(self, key: Key, view: ScheduleView, decision: Decision) -> None:
        """Cache the view of the status just written, from the decision itself: the
        next reconcile of this schedule then parses nothing."""
        current = self.schedules.get(*key)
        if current is None or decision.status_view is None:
            return
        meta = ObjectView.of(current)
        if meta.uid != view.meta.uid or meta.generation != view.meta.generation:
            # The cache already holds someone's edit (its watch event came before our
            # writes' answer): that spec is parsed afresh, never dressed as the old one.
            return
        rv = str((current.get("metadata") or {}).get("resourceVersion"))
        self._views[key] = (rv, replace(view, meta=meta, status=decision.status_view))

    def _written(self, key: Key, obj: Obj, decision: Decision, writes: list[Write],
                 results: list[WriteResult], counts: dict[str, int]) -> None:
        """Bring the caches up to date with writes that all succeeded, then account."""
        for write, result in zip(writes, results, strict=True):
            if isinstance(write, Delete):
                self._forget_run(write.ref.namespace, write.ref.name)
                counts["delete"] += 1
            elif isinstance(write, Create):
                assert isinstance(result, dict)
                self._observe_run(result)
                counts["create"] += 1
            else:
                assert isinstance(result, dict)
                self.schedules.observe(result, notify=False)
                counts["status"] += 1
        self._account(obj, decision, key)
        self._arm(key, decision.wake_at)
        self._retries.pop(key, None)

    def _nothing_to_write(self, obj: Obj, decision: Decision) -> bool:
        return (decision.create is None and not decision.delete and not decision.notes
                and decision.suspend is None and not self._status_patch(obj, decision.status))

    def _status_patch(self, obj: Obj, status: dict[str, Any]) -> dict[str, Any]:
        if self.leader is not None:
            status = status | dict(self.leader.owner_status(key_of(obj)))
        return diff_patch(obj.get("status") or {}, status, _STATUS_KEYS)

    def _view(self, key: Key, obj: Obj) -> ScheduleView:
        rv = str((obj.get("metadata") or {}).get("resourceVersion"))
        cached = self._views.get(key)
        if cached is not None and cached[0] == rv:
            return cached[1]
        view = ScheduleView.of(obj, previous=cached[1] if cached is not None else None)
        self._views[key] = (rv, view)
        return view

    def _template(self, namespace: str, name: str) -> RunTemplate | None:
        """What the instance gives every run, derived once per instance version."""
        instance = self.instances.get(namespace, name)
        if instance is None:
            return None
        rv = str((instance.get("metadata") or {}).get("resourceVersion"))
        cached = self._templates.get((namespace, name))
        if cached is not None and cached[0] == rv:
            return cached[1]
        template = RunTemplate.of(instance)
        self._templates[(namespace, name)] = (rv, template)
        return template

    def _inputs(self, key: Key, view: ScheduleView
                ) -> tuple[list[RunView], RunTemplate | None, str | None]:
        ns = key[0]
        runs = []
        for name in self._runs_by_schedule.get(key, ()):
            run = self.runs.get(ns, name)
            if run is not None:
                runs.append(RunView.of(run))
        instance = memory = None
        if view.spec is not None:
            instance = self._template(ns, view.spec.instance_ref)
            cm = self.memory.get(ns, memory_configmap_name(view.spec.instance_ref))
            data = (cm or {}).get("data") or {}
            value = data.get(MEMORY_KEY) if isinstance(data, dict) else None
            memory = value if isinstance(value, str) else None
        return runs, instance, memory

    def _decide(self, key: Key, now: datetime) -> tuple[Obj, ScheduleView, Decision] | None:
        obj = self.schedules.get(*key)
        if obj is None or (self.leader is not None and not self.leader.owns(key)):
            self._wake_at.pop(key, None)
            return None
        view = self._view(key, obj)
        runs, instance, memory = self._inputs(key, view)
        try:
            return obj, view, reconcile(view, runs, instance, memory, now)
        except Exception:  # a bug must not take the other schedules down with it
            log.exception("reconcile failed", namespace=key[0], schedule=key[1])
            self.metrics.errors.labels("reconcile").inc()
            self._retry_later(key, now)
            return None

    # --- executing a decision --------------------------------------------------------------

    async def _execute(self, key: Key, obj: Obj, view: ScheduleView, decision: Decision,
                       now: datetime) -> None:
        ns, name = key
        blog = log.bind(namespace=ns, schedule=name)
        try:
            if self.leader is not None and not self.leader.owns(key):
                self.mark(key)
                return
            for run_name in decision.delete:
                await self._delete_run(ns, run_name)
            if decision.create is not None:
                decision = await self._create_run(view, decision, now, blog)
            if decision.suspend is not None:
                # The spec first: had the status (which records the failure as seen) gone
                # first and the update then lost a race, the pause would be forgotten.
                obj = await self._suspend(obj, decision.suspend)
            await self._write_status(obj, decision.status)
            self._account(obj, decision, key)
            self._arm(key, decision.wake_at)
            self._retries.pop(key, None)
            self._refusals.pop(key, None)
        except Conflict:
            # Someone else wrote the schedule since we read it: re-read, decide again.
            await self._refresh(key)
            self.mark(key)
        except NotFound:
            await self._refresh(key)
        except StoreError as exc:
            if exc.temporary:
                blog.warning("store error, will retry", error=str(exc))
                self.metrics.errors.labels("store").inc()
                self._retry_later(key, now)
            else:
                self._refused(key, obj, exc, now)
        except Exception:
            blog.exception("executing a decision failed")
            self.metrics.errors.labels("internal").inc()
            self._retry_later(key, now)

    async def _create_run(self, view: ScheduleView, decision: Decision, now: datetime,
                          blog: Any) -> Decision:
        assert decision.create is not None
        run = decision.create
        ref = Ref.of(run)
        try:
            created = await self.store.create(run)
        except AlreadyExists:
            existing = await self.store.get(ref)
            owners = ObjectView.of(existing).owner_uids
            if view.meta.uid in owners:
                self._observe_run(existing)  # a fire cut short earlier: it counts as done
                return decision
            holder = ", ".join(owners) or "no schedule"
            return tick_failed(view, decision, "RunNameTaken",
                               f"an AgentRun named {ref.name} already exists and belongs to "
                               f"{holder}; delete or rename it", now)
        except (Invalid, Forbidden) as exc:
            return self._create_refused(view, decision, exc, now)
        self._observe_run(created)
        self.metrics.creates.inc()
        return decision

    def _create_refused(self, view: ScheduleView, decision: Decision, exc: StoreError,
                        now: datetime) -> Decision:
        """A run's create refused for good (422 invalid, 403 forbidden: RBAC, a quota, an
        admission plugin): the tick is reported (TickSkipped, a Warning Event) and consumed,
        and the next tick tries again; the Event is not repeated while the reason persists."""
        reason = "RunForbidden" if isinstance(exc, Forbidden) else "RunRejected"
        failed = tick_failed(view, decision, reason, f"the store refused the run: {exc}", now)
        return self._once(view, failed)

    @staticmethod
    def _once(view: ScheduleView, decision: Decision) -> Decision:
        """Drop a Warning the schedule's conditions already show (same type and reason)."""
        shown = {(c.type, c.reason) for c in view.status.conditions if c.status == "True"}
        notes = tuple(n for n in decision.notes
                      if not (n.type == "Warning" and ("TickSkipped", n.reason) in shown))
        return replace(decision, notes=notes)

    def _observe_run(self, run: Obj) -> None:
        self.runs.observe(run, notify=False)
        self._index_run(EventType.ADDED, run)

    async def _delete_run(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self.store.delete(Ref(Kind.AGENT_RUN, namespace, name))
            self.metrics.deletes.inc()
        self._forget_run(namespace, name)

    def _forget_run(self, namespace: str, name: str) -> None:
        gone = self.runs.get(namespace, name)
        self.runs.forget(namespace, name, notify=False)
        if gone is not None:
            self._index_run(EventType.DELETED, gone)

    async def _suspend(self, obj: Obj, suspension: Suspension) -> Obj:
        """pauseOnFailure: set spec.suspend with its note, conditional on the version the
        decision read (a concurrent edit is a Conflict: read again, decide again)."""
        body = {k: v for k, v in obj.items() if k != "status"}
        body["spec"] = dict(obj.get("spec") or {}) | {
            "suspend": True, "suspendedBy": suspension.by, "suspendReason": suspension.reason[:1024]}
        updated = await self.store.update(body)
        self.schedules.observe(updated)  # notify: the suspended spec is decided again
        return updated

    async def _write_status(self, obj: Obj, status: dict[str, Any]) -> None:
        patch = self._status_patch(obj, status)
        if not patch:
            return
        meta = obj.get("metadata") or {}
        updated = await self.store.patch_status(
            Ref.of(obj), patch, resource_version=meta.get("resourceVersion"))
        self.metrics.status_writes.inc()
        self.schedules.observe(updated, notify=False)

    def _account(self, obj: Obj, decision: Decision, key: Key) -> None:
        """Metrics, a log line and Events for an executed decision."""
        ns, name = key
        m = self.metrics
        if decision.outcome is Outcome.BACKFILLED and decision.create is not None:
            m.fires.labels("backfill").inc()
            log.info("backfilled", namespace=ns, schedule=name,
                     run=decision.create["metadata"]["name"], tick=str(decision.tick))
        elif decision.outcome is Outcome.FIRED and decision.create is not None:
            assert decision.tick is not None
            # From the planned fire (the tick plus its jitter; for a buffered tick, the
            # moment it could start): the delay the scheduler added, not the one asked for.
            lag = (self.clock() - (decision.planned or decision.tick)).total_seconds()
            m.scheduled_fires.inc()
            m.fire_lag.observe(max(lag, 0.0))
            log.info("fired", namespace=ns, schedule=name, run=decision.create["metadata"]["name"],
                     tick=decision.tick.isoformat(), lag_ms=round(lag * 1000, 1))
        elif decision.outcome is Outcome.SKIPPED:
            m.skips.labels(decision.skip_reason or "other").inc()
            log.info("tick skipped", namespace=ns, schedule=name, reason=decision.skip_reason,
                     tick=decision.tick.isoformat() if decision.tick else None)
        elif decision.outcome is Outcome.RECORDED:
            log.info("recorded a run created before a restart", namespace=ns, schedule=name,
                     tick=str(decision.tick))
        for note in decision.notes:
            if note.type == "Warning" and note.reason not in ("TickSkipped",):
                m.errors.labels(note.reason).inc()
                log.warning("schedule needs attention", namespace=ns, schedule=name,
                            reason=note.reason, message=note.message)
            if self.settings.record_events:
                self.events.record(obj, note)

    async def _refresh(self, key: Key) -> None:
        try:
            fresh = await self.store.get(Ref(Kind.SCHEDULE, *key))
        except NotFound:
            self.schedules.forget(*key)
        except StoreError:
            self._retry_later(key, self.clock())
        else:
            self.schedules.observe(fresh)

    def _refused(self, key: Key, obj: Obj, exc: StoreError, now: datetime) -> None:
        """A permanent refusal of a write other than the run's create (a status patch
        forbidden by RBAC, refused by validation): said once, as a log line and a Warning
        Event, then tried again only at the longest back-off, since it needs a person."""
        first = key not in self._refusals or self._refusals[key] != str(exc)
        self._refusals[key] = str(exc)
        self.metrics.errors.labels("store_refused").inc()
        if first:
            log.error("the store refused a write; fix the cause (RBAC, the object)",
                      namespace=key[0], schedule=key[1], error=str(exc))
            if self.settings.record_events:
                self.events.record(obj, Note("Warning", "StoreRefused", str(exc)))
        self._retries[key] = self.settings.retry_max
        self._arm(key, now + timedelta(seconds=self.settings.retry_max))

    def _retry_later(self, key: Key, now: datetime) -> None:
        delay = self._retries.get(key, self.settings.retry_initial / 2) * 2
        delay = min(delay, self.settings.retry_max)
        self._retries[key] = delay
        self._arm(key, now + timedelta(seconds=delay * (0.75 + random.random() / 2)))

    # --- manual trigger ---------------------------------------------------------------------


async def trigger_now(store: Store, namespace: str, name: str, *,
                      clock: Clock = system_clock) -> Decision:
    """Start a run of a schedule now (the CLI's ``trigger``); the policy still applies.

    Reads what it needs straight from the store, so it works with or without a
    controller running. The status update is conditional and retried on a
    conflict, so a fire landing at the same moment is never miscounted.
    """
    ref = Ref(Kind.SCHEDULE, namespace, name)
    obj = await store.get(ref)
    view = ScheduleView.of(obj)
    listing = await store.list(Kind.AGENT_RUN, namespace=namespace, labels={LABEL_SCHEDULE: name})
    runs = [RunView.of(r) for r in listing.items]
    instance = memory = None
    if view.spec is not None:
        with contextlib.suppress(NotFound):
            instance = await store.get(Ref(Kind.INSTANCE, namespace, view.spec.instance_ref))
        with contextlib.suppress(NotFound):
            cm = await store.get(Ref(Kind.CONFIG_MAP, namespace,
                                     memory_configmap_name(view.spec.instance_ref)))
            value = (cm.get("data") or {}).get(MEMORY_KEY)
            memory = value if isinstance(value, str) else None
    decision = trigger(view, runs, instance, memory, clock())
    assert decision.create is not None and decision.tick is not None
    for run_name in decision.delete:
        with contextlib.suppress(NotFound):
            await store.delete(Ref(Kind.AGENT_RUN, namespace, run_name))
    run = await store.create(decision.create)
    run_ref = {k: run[k] for k in ("apiVersion", "kind")} | {
        "name": run["metadata"]["name"], "namespace": namespace}
    patch = diff_patch(obj.get("status") or {}, decision.status, MANAGED_STATUS_KEYS)
    version = obj["metadata"].get("resourceVersion")
    for _ in range(10):
        try:
            await store.patch_status(ref, patch, resource_version=version)
            break
        except Conflict:
            fresh = await store.get(ref)
            version = fresh["metadata"].get("resourceVersion")
            status = fresh.get("status") or {}
            active = [a for a in status.get("active") or [] if a.get("name") not in decision.delete]
            if all(a.get("name") != run_ref["name"] for a in active):
                active.append(run_ref)
            patch = {
                "totalRuns": int(status.get("totalRuns") or 0) + 1,
                "lastRunName": run_ref["name"],
                "lastRunTime": decision.status["lastRunTime"],
                "active": active,
            }
    return decision
