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
fire time (the tick plus its jitter), which :mod:`~sympozium_schedule.core.ticks`
works out. What happens to a due tick is decided by
:func:`~sympozium_schedule.core.policy.plan_tick`: excluded, too late, skipped,
buffered or fired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sympozium_schedule.core import backfill
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.history import history_to_prune, owned_runs
from sympozium_schedule.core.model import (
    RunView,
    ScheduleSpec,
    ScheduleStatus,
    ScheduleView,
    format_time,
)
from sympozium_schedule.core.policy import SkipReason, TickPlan, plan_tick
from sympozium_schedule.core.runs import RunTemplate, build_agent_run
from sympozium_schedule.core.status import (
    MANAGED_STATUS_KEYS,
    READY,
    TICK_SKIPPED,
    Note,
    StatusBuilder,
    run_ref,
)
from sympozium_schedule.core.ticks import due_ticks

__all__ = [
    "MANAGED_STATUS_KEYS", "READY", "TICK_SKIPPED", "Decision", "Note", "Outcome", "SkipReason",
    "Suspension", "reconcile",
]

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


def _order(run: RunView) -> datetime:
    return run.order_key


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


def _record_unrecorded(b: StatusBuilder, mine: Sequence[RunView],
                       cursor: datetime | None) -> tuple[datetime | None, list[RunView]]:
    """Count the runs of ticks after ``cursor`` in the status (see :func:`reconcile`);
    the cursor moved past them, and those runs, oldest first."""
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
    return cursor, unrecorded


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
        _record_unrecorded(b, mine, schedule.status.last_schedule_time)  # an edit broke it meanwhile
        return done(Outcome.ERROR)
    prune = tuple(history_to_prune(spec, mine))
    table = schedule.timetable
    if isinstance(table, SpecError):
        timing = table.reason in ("InvalidSchedule", "InvalidTimeZone")
        _error(b, table, "fix the expression and apply again" if timing
               else "fix the field and apply again")
        _record_unrecorded(b, mine, schedule.status.last_schedule_time)
        return done(Outcome.ERROR, delete=prune)
    assert table is not None, "ScheduleView.of compiles the timetable of a valid spec"

    st = schedule.status
    edited = st.observed_generation is not None and st.observed_generation != schedule.meta.generation
    if spec.max_runs is None:
        b.scheduled_runs = None
    elif b.scheduled_runs is None:
        b.scheduled_runs = 0
    # Runs of ticks after the cursor exist only when a fire was cut short between
    # creating its run and writing status (a crash, a failed status write, a lost
    # race with another controller or with an edit): count every one of them, move
    # the cursor past them, and never create a second run for their ticks. Before
    # anything else, so that a schedule suspended (or paused) meanwhile counts them too.
    cursor, unrecorded = _record_unrecorded(b, mine, st.last_schedule_time)
    recorded = unrecorded[-1].scheduled_time if unrecorded else None
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
        if unrecorded:
            return done(Outcome.RECORDED, delete=prune, tick=recorded)
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
    if edited or was_suspended:
        cursor = max(cursor, now) if cursor else now
        b.last_schedule_time = cursor
        b.buffered = []
    b.phase = "Active"
    b.condition(READY, "True", "Scheduled", "the schedule is valid and active",
                note="Normal" if was_suspended else None)
    if b.max_runs is not None and b.scheduled_runs is not None and b.scheduled_runs >= b.max_runs:
        _complete(b, "MaxRunsReached", f"maxRuns ({b.max_runs}) runs have been created: "
                                       "no further fires")
        return done(Outcome.RECORDED if unrecorded else Outcome.COMPLETED, delete=prune,
                    tick=recorded)

    ticks = due_ticks(schedule, spec, table, cursor, now)
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
