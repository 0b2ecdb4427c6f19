"""Executing decisions: one path from a decision to its writes, and from what the
writes came to, through :func:`~sympozium_schedule.core.followup.follow_up`, to what
happens next.

A chunk of decisions goes to the store as one ``write_groups`` call (a group of
steps per decision: delete runs, create the run, suspend, write the status;
the status patch is diffed once, when the decision is planned). Each result is
applied to the caches at once; then the core's follow-up says, per decision:
done (account for it, arm its wake-up), write the remaining steps, execute
another decision instead, read the schedule again, retry later or report a
refusal. Whatever has steps left goes round again, in the next call, the same
way: there is no second executor for errors.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from sympozium_schedule.core.decide import MANAGED_STATUS_KEYS, Decision, Note, Outcome
from sympozium_schedule.core.followup import (
    Action,
    FollowUp,
    Result,
    Step,
    Written,
    follow_up,
    steps_of,
)
from sympozium_schedule.core.merge import diff_patch
from sympozium_schedule.core.model import Kind, ObjectView, ScheduleView
from sympozium_schedule.core.shards import SHARD_STATUS_KEYS
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    Create,
    Delete,
    Forbidden,
    NotFound,
    Obj,
    PatchStatus,
    Ref,
    Store,
    StoreError,
    Unavailable,
    Update,
    Write,
    WriteResult,
)
from sympozium_schedule.runtime.caches import Caches
from sympozium_schedule.runtime.clock import Clock
from sympozium_schedule.runtime.events import EventRecorder
from sympozium_schedule.runtime.informer import Key
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.timers import Timers

log = structlog.get_logger("controller")

_DONE = Written(Result.DONE)
# The status keys written: the core's, and the owner's (sharded replicas; removed otherwise).
STATUS_KEYS = MANAGED_STATUS_KEYS + SHARD_STATUS_KEYS
# A round with more fires and skips than this logs a line per tick, not per schedule.
LINES_EACH = 32


@dataclass(slots=True)
class Planned:
    """A decision on its way to the store."""

    key: Key
    obj: Obj  # the schedule the decision was made from (then as written)
    view: ScheduleView
    decision: Decision
    patch: dict[str, Any]  # its status, as a merge patch of obj's
    steps: list[Step]
    done: int = 0  # steps written already


def status_patch(obj: Obj, decision: Decision, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The decision's status, with the owner's fields, as a merge patch of ``obj``'s."""
    status = decision.status | dict(owner) if owner else decision.status
    return diff_patch(obj.get("status") or {}, status, STATUS_KEYS)


def plan(key: Key, obj: Obj, view: ScheduleView, decision: Decision,
         owner: Mapping[str, Any] | None = None) -> Planned | None:
    """The decision as steps; None when it writes nothing and says nothing."""
    patch = status_patch(obj, decision, owner or {})
    steps = steps_of(decision, status=bool(patch))
    if not steps and not decision.notes:
        return None
    return Planned(key, obj, view, decision, patch, steps)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float
    maximum: float


class Executor:
    def __init__(self, store: Store, caches: Caches, timers: Timers, events: EventRecorder,
                 metrics: Metrics, *, clock: Clock, backoff: Backoff, record_events: bool,
                 owns: Callable[[Key], bool], owner: Callable[[Key], Mapping[str, Any]],
                 mark: Callable[[Key], None],
                 rng: random.Random | None = None):
        self.store = store
        self.caches = caches
        self.timers = timers
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.backoff = backoff
        self.record_events = record_events
        self._owns = owns
        self._owner = owner
        self._mark = mark
        self._rng = rng or random.Random()
        self.retries: dict[Key, float] = {}
        self._lines: list[tuple[str, str, str, Any, datetime | None, float]] = []
        self.refusals: dict[Key, str] = {}  # the last permanent refusal said, per schedule

    def forget(self, key: Key) -> None:
        self.retries.pop(key, None)
        self.refusals.pop(key, None)

    # --- the one path ---------------------------------------------------------------------

    async def execute(self, batch: list[Planned], now: datetime) -> None:
        """Write ``batch``, then whatever its follow-ups leave to write, round after round."""
        while batch:
            lost = [p for p in batch if not self._owns(p.key)]
            if lost:  # lost the lease or the shard: its next owner decides these
                for p in lost:
                    self._mark(p.key)
                batch = [p for p in batch if self._owns(p.key)]
                if not batch:
                    return
            rounds = [self._writes(p) for p in batch]
            try:
                results = await self.store.write_groups([writes for writes, _ in rounds])
            except Exception as exc:  # the call itself failed: each tries again later
                error = exc if isinstance(exc, StoreError) else Unavailable(
                    f"writing failed unexpectedly: {exc!r}")
                if not isinstance(exc, StoreError):
                    log.exception("writing a chunk of decisions failed")
                results = [[error] for _ in batch]
            answered = self.clock()  # when the writes came back: fire lag stops here
            counts = {"delete": 0, "create": 0, "status": 0, "fired": 0}
            following: list[Planned] = []
            for p, (writes, steps), got in zip(batch, rounds, results, strict=True):
                try:
                    written = [await self._apply(p, step, write, result, counts)
                               for step, write, result in zip(steps, writes, got, strict=False)]
                    after = follow_up(p.view, p.decision, p.steps[p.done:], written, now)
                    nxt = await self._follow(p, after, now, answered, counts)
                except Exception:  # a bug must not take the chunk down with it
                    log.exception("executing a decision failed", namespace=p.key[0],
                                  schedule=p.key[1])
                    self.metrics.errors.labels("internal").inc()
                    self.retry_later(p.key, now)
                    continue
                if nxt is not None:
                    following.append(nxt)
            m = self.metrics  # counted once a round: each inc() takes a lock
            m.deletes.inc(counts["delete"])
            m.creates.inc(counts["create"])
            m.status_writes.inc(counts["status"])
            m.scheduled_fires.inc(counts["fired"])
            self.said()
            batch = following

    def _writes(self, p: Planned) -> tuple[list[Write], list[Step]]:
        """The writes of the steps still to do, up to a spec update (the status after it
        needs the version it produces, so it goes in the next round)."""
        obj, decision = p.obj, p.decision
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        writes: list[Write] = []
        steps: list[Step] = []
        deleted = sum(1 for s in p.steps[:p.done] if s is Step.DELETE)
        for step in p.steps[p.done:]:
            steps.append(step)
            if step is Step.DELETE:
                writes.append(Delete(Ref(Kind.AGENT_RUN, ns, decision.delete[deleted]),
                                     missing_ok=True))
                deleted += 1
            elif step is Step.CREATE:
                assert decision.create is not None
                writes.append(Create(decision.create))
            elif step is Step.SUSPEND:
                assert decision.suspend is not None
                body = {k: v for k, v in obj.items() if k != "status"}
                body["spec"] = dict(obj.get("spec") or {}) | {
                    "suspend": True, "suspendedBy": decision.suspend.by,
                    "suspendReason": decision.suspend.reason[:1024]}
                writes.append(Update(body))
                break
            else:
                writes.append(PatchStatus(Ref(Kind.SCHEDULE, ns, meta["name"]), p.patch,
                                          meta.get("resourceVersion"), base=obj))
        return writes, steps

    async def _apply(self, p: Planned, step: Step, write: Write, result: WriteResult,
                     counts: dict[str, int]) -> Written:
        """Bring the caches up to date with one write's result; what it came to."""
        if not isinstance(result, StoreError):
            if step is Step.DELETE:
                assert isinstance(write, Delete)
                self.caches.forget_run(write.ref.namespace, write.ref.name)
                counts["delete"] += 1
            elif step is Step.CREATE:
                assert isinstance(result, dict)
                self.caches.observe_run(result)
                counts["create"] += 1
            elif step is Step.SUSPEND:
                assert isinstance(result, dict)
                p.obj = result
                self.caches.schedules.observe(result)  # notify: the suspended spec is decided again
            else:
                assert isinstance(result, dict)
                p.obj = result
                self.caches.wrote_status(p.key, result, p.view, p.decision)
                counts["status"] += 1
            return _DONE
        message = str(result)
        if isinstance(result, AlreadyExists) and isinstance(write, Create):
            return await self._holder(p, write)
        if isinstance(result, Conflict):
            return Written(Result.CONFLICT, message)
        if isinstance(result, NotFound):
            return Written(Result.GONE, message)
        if result.temporary:
            return Written(Result.UNAVAILABLE, message)
        return Written(Result.REFUSED, message, forbidden=isinstance(result, Forbidden))

    async def _holder(self, p: Planned, write: Create) -> Written:
        """The run's name is taken: by this schedule's own run (a fire cut short), or not."""
        ref = Ref.of(write.obj)
        try:
            existing = await self.store.get(ref)
        except StoreError as exc:
            return Written(Result.UNAVAILABLE, f"{ref} exists but could not be read: {exc}")
        owners = ObjectView.of(existing).owner_uids
        if p.view.meta.uid in owners:
            self.caches.observe_run(existing)
            return Written(Result.TAKEN, ours=True)
        return Written(Result.TAKEN, holder=", ".join(owners))

    async def _follow(self, p: Planned, after: FollowUp, now: datetime, answered: datetime,
                      counts: dict[str, int]) -> Planned | None:
        """Act on a follow-up; the decision to write in the next round, if any."""
        key = p.key
        action = after.action
        if action is Action.DONE:
            self.account(p.obj, after.decision, key, answered, counts)
            self.timers.arm(key, after.decision.wake_at)
            self.retries.pop(key, None)
            self.refusals.pop(key, None)
            return None
        if action is Action.CONTINUE:
            p.done += after.done
            if Step.STATUS in p.steps[p.done:]:
                p.patch = status_patch(p.obj, p.decision, self._owner(key))
            return p
        if action is Action.INSTEAD:
            replanned = plan(key, p.obj, p.view, after.decision, self._owner(key))
            if replanned is None:
                return None
            return replanned
        ns, name = key
        if action in (Action.REREAD, Action.FORGET):
            # Changed (or gone) since it was read: read it again, and decide again from it.
            try:
                fresh = await self.store.get(Ref(Kind.SCHEDULE, ns, name))
            except NotFound:
                self.caches.schedules.forget(ns, name)
            except StoreError:
                self.retry_later(key, self.clock())
            else:
                self.caches.schedules.observe(fresh)
                self._mark(key)
            return None
        if action is Action.RETRY:
            log.warning("store error, will retry", namespace=ns, schedule=name, error=after.message)
            self.metrics.errors.labels("store").inc()
            self.retry_later(key, now)
            return None
        self._refused(p.obj, key, after, now)
        return None

    # --- after a decision --------------------------------------------------------------------

    def retry_later(self, key: Key, now: datetime) -> None:
        delay = self.retries.get(key, self.backoff.initial / 2) * 2
        delay = min(delay, self.backoff.maximum)
        self.retries[key] = delay
        self.timers.arm(key, now + timedelta(seconds=delay * (0.75 + self._rng.random() / 2)))

    def _refused(self, obj: Obj, key: Key, after: FollowUp, now: datetime) -> None:
        """A permanent refusal of a write other than the run's create (a status patch
        forbidden by RBAC, refused by validation): said once, as a log line and a Warning
        Event, then tried again only at the longest back-off, since it needs a person."""
        first = self.refusals.get(key) != after.message
        self.refusals[key] = after.message
        self.metrics.errors.labels("store_refused").inc()
        if first:
            log.error("the store refused a write; fix the cause (RBAC, the object)",
                      namespace=key[0], schedule=key[1], error=after.message)
            if self.record_events and after.note is not None:
                self.events.record(obj, after.note)
        self.retries[key] = self.backoff.maximum
        self.timers.arm(key, now + timedelta(seconds=self.backoff.maximum))

    def account(self, obj: Obj, decision: Decision, key: Key, at: datetime,
                counts: dict[str, int]) -> None:
        """Metrics, a log line and Events for a decision executed by ``at``. The fires and
        skips of a round are counted in ``counts`` and said by :meth:`said`."""
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
            lag = (at - (decision.planned or decision.tick)).total_seconds()
            counts["fired"] += 1
            m.fire_lag.observe(max(lag, 0.0))
            self._lines.append(("fired", ns, name, decision.create["metadata"]["name"],
                                decision.tick, lag))
        elif decision.outcome is Outcome.SKIPPED:
            m.skips.labels(decision.skip_reason or "other").inc()
            self._lines.append(("tick skipped", ns, name, decision.skip_reason, decision.tick, 0.0))
        elif decision.outcome is Outcome.RECORDED:
            log.info("recorded a run whose status write was cut short (a restart, a conflict)",
                     namespace=ns, schedule=name, tick=str(decision.tick))
        self.notes(obj, key, decision.notes)

    def said(self) -> None:
        """The round's fires and skips: a line each, as long as there are few. A burst is
        one line per tick and kind (how many, the lag), each schedule's line at debug: ten
        thousand lines a second would cost the burst a fifth of its time, and whoever
        reads the log a screenful per fire."""
        lines, self._lines = self._lines, []
        if len(lines) <= LINES_EACH:
            for event, ns, name, what, tick, lag in lines:
                if event == "fired":
                    log.info(event, namespace=ns, schedule=name, run=what,
                             tick=tick.isoformat() if tick else None, lag_ms=round(lag * 1000, 1))
                else:
                    log.info(event, namespace=ns, schedule=name, reason=what,
                             tick=tick.isoformat() if tick else None)
            return
        groups: dict[tuple[str, datetime | None], list[float]] = {}
        for event, ns, name, what, tick, lag in lines:
            groups.setdefault((event, tick), []).append(lag)
            log.debug(event, namespace=ns, schedule=name, run_or_reason=what,
                      tick=tick.isoformat() if tick else None, lag_ms=round(lag * 1000, 1))
        for (event, tick), lags in groups.items():
            log.info(f"{event} (a burst)", schedules=len(lags),
                     tick=tick.isoformat() if tick else None,
                     lag_ms_max=round(max(lags) * 1000, 1) if event == "fired" else None)

    def notes(self, obj: Obj, key: Key, notes: Sequence[Note]) -> None:
        for note in notes:
            if note.type == "Warning" and note.reason not in ("TickSkipped",):
                self.metrics.errors.labels(note.reason).inc()
                log.warning("schedule needs attention", namespace=key[0], schedule=key[1],
                            reason=note.reason, message=note.message)
            if self.record_events:
                self.events.record(obj, note)
