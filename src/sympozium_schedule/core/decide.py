"""The fire decision: given what is stored and the time, what should happen.

:func:`reconcile` is the whole scheduling policy as one pure function. It
returns a frozen :class:`Decision` (a run to create, runs to delete, the
status to hold, events for people, when to look again); the runtime executes
it and writes the status once. Calling it again with the same inputs yields
the same decision, so a reconcile with nothing due writes nothing.

The cursor is ``status.lastScheduleTime``: the most recent tick that was
handled (fired, buffered or skipped). Ticks after it and up to ``now`` are
"missed"; only the most recent of them is considered (at most one catch-up
run), and only within ``startingDeadlineSeconds`` when that is set. An edit of
the spec (``metadata.generation`` moved past ``status.observedGeneration``) or
a resume moves the cursor to ``now``: ticks from before the change are never
replayed, and ticks still waiting in the buffer are dropped.

Ticks come from the schedule's :class:`~sympozium_schedule.core.timetable.Timetable`
(every spec merged, bounded by startTime/endTime); a tick is due at its planned
fire time (the tick plus its jitter). What happens to a due tick is decided by
:func:`plan_tick`: excluded, too late, skipped, buffered or fired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from sympozium_schedule.core import backfill
from sympozium_schedule.core.cron import floor_second
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import (
    BUFFERING_POLICIES,
    EPOCH,
    RunView,
    ScheduleSpec,
    ScheduleStatus,
    ScheduleView,
    format_time,
)
from sympozium_schedule.core.runs import RunTemplate, build_agent_run
from sympozium_schedule.core.status import (
    MANAGED_STATUS_KEYS,
    READY,
    TICK_SKIPPED,
    Note,
    StatusBuilder,
    run_ref,
)
from sympozium_schedule.core.timetable import Timetable

__all__ = [
    "BUFFER_ALL_LIMIT", "MANAGED_STATUS_KEYS", "READY", "TICK_SKIPPED", "Decision", "Note",
    "Outcome", "SkipReason", "Suspension", "history_to_prune", "owned_runs", "reconcile",
]

_MICRO = timedelta(microseconds=1)
# The most ticks BufferAll keeps waiting; later ones are skipped (BufferFull).
BUFFER_ALL_LIMIT = 100
PAUSED_BY = "sympozium-schedule (pauseOnFailure)"


class Outcome(StrEnum):
    FIRED = "fired"
    BACKFILLED = "backfilled"  # a run of a past tick, asked for by a backfill
    RECORDED = "recorded"  # the tick's run already existed; only the status was behind
    SKIPPED = "skipped"
    BUFFERED = "buffered"  # the tick waits for the unfinished run (BufferOne, BufferAll)
    IDLE = "idle"
    SUSPENDED = "suspended"
    PAUSED = "paused"  # a run failed and pauseOnFailure suspends the schedule
    COMPLETED = "completed"  # maxRuns reached or endTime passed: no more fires
    ERROR = "error"


class SkipReason(StrEnum):
    FORBID = "ConcurrencyPolicyForbid"
    DEADLINE = "MissedStartingDeadline"
    EXCLUDED = "Excluded"
    BUFFER_FULL = "BufferFull"


@dataclass(frozen=True, slots=True)
class Suspension:
    """Suspend the schedule with a note (pauseOnFailure): the runtime updates its spec."""

    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    status: dict[str, Any]
    create: dict[str, Any] | None
    tick: datetime | None
    delete: tuple[str, ...]
    notes: tuple[Note, ...]
    wake_at: datetime | None
    outcome: Outcome
    skip_reason: SkipReason | None = None
    # ``status`` as a parsed view (what ScheduleStatus.from_dict would give), so a
    # caller that writes it can cache its view without parsing it back.
    status_view: ScheduleStatus | None = None
    # When the created run's tick was planned to fire (its jitter included; for a
    # buffered tick, the moment it could start): fire lag is measured from here.
    planned: datetime | None = None
    suspend: Suspension | None = None


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What the policies make of a due tick."""

    action: Literal["fire", "skip", "buffer"]
    delete: tuple[str, ...] = ()
    skip: SkipReason | None = None
    message: str = ""


_FIRE = TickPlan("fire")  # the common answer, shared


@dataclass(frozen=True, slots=True)
class _Ticks:
    due: datetime | None  # the tick to handle now
    due_at: datetime | None  # when it was planned to fire
    next: datetime | None  # the next tick after it (status.nextRunTime)
    next_at: datetime | None  # when that one is planned to fire (the wake-up)


def _order(run: RunView) -> datetime:
    return run.order_key


def owned_runs(schedule: ScheduleView, runs: Sequence[RunView]) -> list[RunView]:
    """Runs of this schedule incarnation: a run owned by an older schedule of
    the same name (deleted and re-created) is not ours to count or prune."""
    uid = schedule.meta.uid
    return [r for r in runs if not r.owner_uids or not uid or uid in r.owner_uids]


def history_to_prune(spec: ScheduleSpec, runs: Sequence[RunView]) -> list[str]:
    """Names of the finished runs beyond the history limits (the oldest of each kind)."""
    if not runs:
        return []
    finished = sorted((r for r in runs if r.finished), key=_order, reverse=True)
    ok = [r.name for r in finished if r.succeeded]
    failed = [r.name for r in finished if not r.succeeded]
    doomed = ok[spec.successful_runs_history_limit:] + failed[spec.failed_runs_history_limit:]
    return sorted(doomed)


def plan_tick(spec: ScheduleSpec, table: Timetable | None, active: Sequence[RunView],
              due: datetime, due_at: datetime, now: datetime, *, busy: bool,
              buffered: int) -> TickPlan:
    """Excluded, too late, or what the concurrency policy makes of it. ``busy``: a run
    of the schedule is unfinished, or one starts in this very decision."""
    tick = format_time(due)
    exclusion = table.excluded_by(due) if table is not None else None
    if exclusion is not None:
        return TickPlan("skip", skip=SkipReason.EXCLUDED,
                     message=f"skipped the {tick} tick: excluded by spec.exclude ({exclusion.text})")
    late = now - due_at
    deadline = spec.starting_deadline_seconds
    if deadline is not None and late.total_seconds() > deadline:  # (no timedelta: int64 fits)
        return TickPlan("skip", skip=SkipReason.DEADLINE,
                     message=f"skipped the {tick} tick: it is {late.total_seconds():.0f}s late, "
                             f"beyond startingDeadlineSeconds={deadline}")
    if not busy:
        return _FIRE
    policy = spec.concurrency_policy
    blocking = (f"AgentRun {active[-1].name} is still {active[-1].phase or 'Pending'}" if active
                else "a buffered tick is starting")
    if policy == "Forbid":
        return TickPlan("skip", skip=SkipReason.FORBID,
                     message=f"skipped the {tick} tick: {blocking} (concurrencyPolicy: Forbid)")
    if policy in BUFFERING_POLICIES:
        limit = 1 if policy == "BufferOne" else BUFFER_ALL_LIMIT
        if buffered < limit:
            return TickPlan("buffer", message=f"the {tick} tick waits: {blocking} "
                                           f"(concurrencyPolicy: {policy})")
        return TickPlan("skip", skip=SkipReason.BUFFER_FULL,
                     message=f"skipped the {tick} tick: {blocking} and {buffered} tick(s) already "
                             f"wait, the most concurrencyPolicy: {policy} keeps")
    if policy == "Replace" and active:
        names = tuple(r.name for r in active)
        return TickPlan("fire", delete=names,
                     message=f"deleted unfinished AgentRun(s) {', '.join(names)} to start the "
                             f"{tick} run (concurrencyPolicy: Replace)")
    return _FIRE


def _ticks(schedule: ScheduleView, spec: ScheduleSpec, table: Timetable,
           cursor: datetime | None, now: datetime) -> _Ticks:
    """The tick to handle now (if any) and the next one after it.

    Written to cost one or two forward queries in the common cases (nothing due;
    exactly one tick due) and to look backwards only after a gap of several
    missed ticks, because this runs for every schedule on every fire and start.
    The creation tick of ``firstTick: immediate`` is never delayed by jitter.
    """
    initial: datetime | None = None
    if cursor is None:
        creation = schedule.meta.creation or EPOCH
        if spec.first_tick == "immediate":
            initial = floor_second(max(creation, table.start) if table.start else creation)
            if table.end is not None and initial > table.end:
                initial, cursor = None, creation
            elif initial > now:  # our clock is behind the store's, or startTime is ahead
                return _Ticks(None, None, initial, initial)
            else:
                cursor = initial - _MICRO  # the creation tick itself counts
        else:
            cursor = creation
    ticks = _forward(table, cursor, now)
    if initial is not None and ticks.due is None:
        return _Ticks(initial, initial, ticks.next, ticks.next_at)
    return ticks


# What a timetable says after a cursor at ``now``, shared by every schedule with the
# same timetable (they are interned: timetable._intern) and cursor: a burst of
# 10,000 schedules on one expression asks it once. Held for one ``now`` at a time,
# so it keeps the answers of one pass and no more.
_SHARED: dict[tuple[int, datetime], tuple[Timetable, _Ticks]] = {}
_SHARED_AT: list[datetime | None] = [None]


def _forward(table: Timetable, cursor: datetime, now: datetime) -> _Ticks:
    if _SHARED_AT[0] != now:
        _SHARED.clear()
        _SHARED_AT[0] = now
    key = (id(table), cursor)
    found = _SHARED.get(key)
    if found is not None and found[0] is table:
        return found[1]
    ticks = _forward_of(table, cursor, now)
    _SHARED[key] = (table, ticks)
    return ticks


def _forward_of(table: Timetable, cursor: datetime, now: datetime) -> _Ticks:
    fire = table.fire_time
    upcoming = table.next_after(cursor)
    if upcoming is None or fire(upcoming) > now:
        upcoming_at = fire(upcoming) if upcoming is not None else None
        return _Ticks(None, None, upcoming, upcoming_at)
    following = table.next_after(upcoming)
    if following is None or fire(following) > now:
        return _Ticks(upcoming, fire(upcoming), following,
                      fire(following) if following is not None else None)
    latest = table.latest_at_or_before(now)
    if latest is not None and fire(latest) > now:  # its jitter has not elapsed yet
        latest = table.latest_at_or_before(latest - _MICRO)
    assert latest is not None  # ``following`` is at or before now
    after = table.next_after(latest)
    return _Ticks(latest, fire(latest), after, fire(after) if after is not None else None)


def _error(b: StatusBuilder, exc: SpecError, hint: str) -> None:
    b.phase = "Error"
    b.next_run_time = b.next_fire_time = None
    b.condition(READY, "False", exc.reason, f"{exc} ({hint})", note="Warning")


def _complete(b: StatusBuilder, reason: str, message: str) -> None:
    b.phase = "Completed"
    b.next_run_time = b.next_fire_time = None
    b.buffered = []
    b.condition(READY, "False", reason, message, note="Normal")


def _skipped(b: StatusBuilder, reason: SkipReason, message: str) -> None:
    b.condition(TICK_SKIPPED, "True", reason.value, message)
    # Every skip is its own occurrence: an event each time, not only on transitions.
    warning = reason in (SkipReason.DEADLINE, SkipReason.BUFFER_FULL)
    b.notes.append(Note("Warning" if warning else "Normal", "TickSkipped", message))


def _failure_to_pause(b: StatusBuilder, spec: ScheduleSpec, mine: Sequence[RunView],
                      edited: bool) -> Suspension | None:
    """pauseOnFailure: a run that failed since the last one acted on suspends the schedule.
    A failure older than the last edit of the spec (turning pauseOnFailure on, say) is
    taken as known, never acted on."""
    if not spec.pause_on_failure:
        b.last_failed_run = None
        return None
    failed = [r for r in mine if r.finished and not r.succeeded]
    newest = max(failed, key=lambda r: r.order_key, default=None)
    if newest is None or newest.name == b.last_failed_run:
        return None
    b.last_failed_run = newest.name
    if edited or spec.suspend:
        return None
    why = newest.error or f"phase {newest.phase}"
    return Suspension(PAUSED_BY, f"AgentRun {newest.name} failed: {why}")


def reconcile(
    schedule: ScheduleView,
    runs: Sequence[RunView],
    instance: Mapping[str, Any] | RunTemplate | None,
    memory: str | None,
    now: datetime,
) -> Decision:
    """Decide what this schedule needs at ``now``. Pure; see the module docstring.

    ``instance`` is the SympoziumInstance (or the :class:`RunTemplate` derived
    from it, which callers cache per instance version)."""
    b = StatusBuilder(schedule, now)
    namespace = schedule.meta.namespace
    mine = owned_runs(schedule, runs) if runs else []
    active = sorted((r for r in mine if not r.finished), key=_order) if mine else []
    active_refs = [run_ref(namespace, r.name) for r in active]

    backfilling: backfill.Backfilling | None = None  # set once the schedule can have runs

    def done(outcome: Outcome, *, delete: tuple[str, ...] = (), wake: datetime | None = None,
             refs: Sequence[dict[str, Any]] = active_refs, create: dict[str, Any] | None = None,
             tick: datetime | None = None, skip: SkipReason | None = None,
             planned: datetime | None = None, suspend: Suspension | None = None) -> Decision:
        if backfilling is not None:
            extra = backfilling.advance(b, busy=create is not None, now=now)
            if extra.wake is not None:
                wake = min(wake, extra.wake) if wake is not None else extra.wake
            if extra.run is not None:
                assert create is None
                create, outcome, tick = extra.run, Outcome.BACKFILLED, extra.tick
                delete = tuple(dict.fromkeys(extra.delete + delete))
                refs = [r for r in refs if r["name"] not in extra.delete]
                refs.append(run_ref(namespace, extra.run["metadata"]["name"]))
        return Decision(b.build(refs), create, tick, delete, tuple(b.notes), wake, outcome, skip,
                        b.view(refs), planned, suspend)

    spec = schedule.spec
    if spec is None:
        assert schedule.spec_error is not None
        _error(b, schedule.spec_error, "fix the field and apply again")
        return done(Outcome.ERROR)
    prune = tuple(history_to_prune(spec, mine))
    table = schedule.timetable
    if isinstance(table, SpecError):
        timing = table.reason in ("InvalidSchedule", "InvalidTimeZone")
        _error(b, table, "fix the expression and apply again" if timing
               else "fix the field and apply again")
        return done(Outcome.ERROR, delete=prune)
    assert table is not None, "ScheduleView.of compiles the timetable of a valid spec"

    st = schedule.status
    edited = st.observed_generation is not None and st.observed_generation != schedule.meta.generation
    pause = _failure_to_pause(b, spec, mine, edited)
    if pause is not None:
        b.notes.append(Note("Warning", "PausedOnFailure", f"suspending the schedule: {pause.reason}"))
        return done(Outcome.PAUSED, delete=prune, suspend=pause)

    was_suspended = st.phase == "Suspended"
    if spec.suspend:
        b.phase = "Suspended"
        b.next_run_time = b.next_fire_time = None
        b.buffered = []
        message = "spec.suspend is true: no runs are created until it is set to false"
        if spec.suspended_by or spec.suspend_reason:
            message = (f"suspended by {spec.suspended_by or 'someone'}: "
                       f"{spec.suspend_reason or 'no reason given'}")
        b.condition(READY, "False", "Suspended", message, note="Normal")
        return done(Outcome.SUSPENDED, delete=prune)

    if instance is None:
        _error(b, SpecError("spec.instanceRef", spec.instance_ref,
                            f"SympoziumInstance not found in namespace {namespace!r}",
                            reason="InstanceNotFound"),
               "create the instance or point spec.instanceRef at an existing one")
        return done(Outcome.ERROR, delete=prune)
    template = RunTemplate.of(instance)
    if template.model is None:
        _error(b, SpecError("spec.instanceRef", spec.instance_ref,
                            "the SympoziumInstance has no spec.agents.default.model",
                            reason="InstanceInvalid"),
               "set spec.agents.default.model on the instance")
        return done(Outcome.ERROR, delete=prune)

    backfilling = backfill.Backfilling(schedule, spec, table, template, memory, mine, active)
    if spec.max_runs is None:
        b.scheduled_runs = None
    elif b.scheduled_runs is None:
        b.scheduled_runs = 0
    cursor = st.last_schedule_time
    # Runs of ticks after the cursor exist only when a fire was cut short between
    # creating its run and writing status (a crash, a failed status write, a lost
    # race with another controller): count every one of them, move the cursor past
    # them, and never create a second run for their ticks.
    unrecorded = sorted(
        (r for r in mine if not r.out_of_band and r.scheduled_time is not None
         and (cursor is None or r.scheduled_time > cursor)),
        key=_order) if mine else []
    if unrecorded:
        newest = unrecorded[-1]
        assert newest.scheduled_time is not None
        b.total_runs += len(unrecorded)
        if b.scheduled_runs is not None:
            b.scheduled_runs += len(unrecorded)
        b.last_run_time = newest.scheduled_time
        b.last_run_name = newest.name
        cursor = b.last_schedule_time = newest.scheduled_time
        if TICK_SKIPPED in b.conditions:
            b.condition(TICK_SKIPPED, "False", "RunCreated",
                        f"the {format_time(newest.scheduled_time)} tick fired")
    if edited or was_suspended:
        cursor = max(cursor, now) if cursor else now
        b.last_schedule_time = cursor
        b.buffered = []
    b.phase = "Active"
    b.condition(READY, "True", "Scheduled", "the schedule is valid and active",
                note="Normal" if was_suspended else None)
    recorded = unrecorded[-1].scheduled_time if unrecorded else None
    if b.max_runs is not None and b.scheduled_runs is not None and b.scheduled_runs >= b.max_runs:
        _complete(b, "MaxRunsReached", f"maxRuns ({b.max_runs}) runs have been created: "
                                       "no further fires")
        return done(Outcome.RECORDED if unrecorded else Outcome.COMPLETED, delete=prune,
                    tick=recorded)

    ticks = _ticks(schedule, spec, table, cursor, now)
    b.next_run_time = ticks.next
    b.next_fire_time = ticks.next_at if table.jitter and ticks.next_at != ticks.next else None
    wake = ticks.next_at

    fire: datetime | None = None  # the tick whose run this decision creates
    planned: datetime | None = None
    too_late: datetime | None = None  # the last waiting tick dropped for the deadline
    # A waiting tick starts as soon as nothing of this schedule is running.
    while b.buffered and not active and fire is None:
        waiting = b.buffered.pop(0)
        late = now - table.fire_time(waiting)
        deadline = spec.starting_deadline_seconds
        if deadline is not None and late.total_seconds() > deadline:
            _skipped(b, SkipReason.DEADLINE,
                     f"skipped the buffered {format_time(waiting)} tick: it is "
                     f"{late.total_seconds():.0f}s late, beyond startingDeadlineSeconds={deadline}")
            too_late = waiting
            continue
        fire, planned = waiting, now

    plan: TickPlan | None = None
    if ticks.due is not None:
        b.last_schedule_time = ticks.due
        assert ticks.due_at is not None
        plan = plan_tick(spec, table, active, ticks.due, ticks.due_at, now,
                     busy=bool(active) or fire is not None, buffered=len(b.buffered))
        if plan.action == "skip":
            assert plan.skip is not None
            _skipped(b, plan.skip, plan.message)
        elif plan.action == "buffer":
            b.buffered.append(ticks.due)
            b.notes.append(Note("Normal", "TickBuffered", plan.message))
        else:
            fire, planned = ticks.due, ticks.due_at

    if fire is None:
        if table.end is not None and ticks.next is None and not b.buffered:
            _complete(b, "EndTimeReached", f"endTime {format_time(table.end)} has passed: "
                                           "no further fires")
            wake = None
        if plan is not None and plan.action == "buffer":
            return done(Outcome.BUFFERED, delete=prune, wake=wake, tick=ticks.due)
        if plan is not None:
            return done(Outcome.SKIPPED, delete=prune, wake=wake, skip=plan.skip, tick=ticks.due)
        if too_late is not None:
            return done(Outcome.SKIPPED, delete=prune, wake=wake, skip=SkipReason.DEADLINE,
                        tick=too_late)
        if unrecorded:
            return done(Outcome.RECORDED, delete=prune, wake=wake, tick=recorded)
        idle = Outcome.COMPLETED if b.phase == "Completed" else Outcome.IDLE
        return done(idle, delete=prune, wake=wake)

    run = build_agent_run(schedule, spec, template, memory, fire)
    name = run["metadata"]["name"]
    b.last_run_time = fire
    b.last_run_name = name
    b.total_runs += 1
    replaced = plan.delete if plan is not None and fire == ticks.due else ()
    if replaced:
        assert plan is not None
        b.notes.append(Note("Normal", "RunReplaced", plan.message))
    b.notes.append(Note("Normal", "RunCreated",
                        f"created AgentRun {name} for the {format_time(fire)} tick"))
    if TICK_SKIPPED in b.conditions and (plan is None or plan.action == "fire"):
        b.condition(TICK_SKIPPED, "False", "RunCreated", f"the {format_time(fire)} tick fired")
    refs = [r for r in active_refs if r["name"] not in replaced]
    refs.append(run_ref(namespace, name))
    if b.scheduled_runs is not None:
        b.scheduled_runs += 1
        if b.max_runs is not None and b.scheduled_runs >= b.max_runs:
            _complete(b, "MaxRunsReached", f"maxRuns ({b.max_runs}) runs have been created: "
                                           "no further fires")
            wake = None
    if b.phase != "Completed" and table.end is not None and ticks.next is None and not b.buffered:
        _complete(b, "EndTimeReached", f"endTime {format_time(table.end)} has passed: "
                                       "no further fires")
        wake = None
    return done(Outcome.FIRED, delete=replaced + prune, wake=wake, refs=refs, create=run,
                tick=fire, planned=planned)
