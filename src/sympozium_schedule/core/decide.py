"""The fire decision: given what is stored and the time, what should happen.

:func:`reconcile` is the whole scheduling policy as one pure function. It
returns a frozen :class:`Decision` (a run to create, runs to delete, the
status to hold, events for people, when to look again); the runtime executes
it and writes the status once. Calling it again with the same inputs yields
the same decision, so a reconcile with nothing due writes nothing.

The cursor is ``status.lastScheduleTime``: the most recent tick that was
handled (fired or skipped). Ticks after it and up to ``now`` are "missed";
only the most recent of them is considered (at most one catch-up run), and
only within ``startingDeadlineSeconds`` when that is set. An edit of the spec
(``metadata.generation`` moved past ``status.observedGeneration``) or a resume
moves the cursor to ``now``: ticks from before the change are never replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from sympozium_schedule.core.cron import Schedule, compile_schedule, floor_second
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import (
    Condition,
    Kind,
    RunView,
    ScheduleSpec,
    ScheduleStatus,
    ScheduleView,
    format_time,
)
from sympozium_schedule.core.runs import RunTemplate, build_agent_run

READY = "Ready"
TICK_SKIPPED = "TickSkipped"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The status keys this project owns; anything else in status is left alone.
MANAGED_STATUS_KEYS = (
    "phase", "lastRunTime", "lastScheduleTime", "nextRunTime", "lastRunName",
    "totalRuns", "active", "conditions", "observedGeneration",
)


class Outcome(StrEnum):
    FIRED = "fired"
    RECORDED = "recorded"  # the tick's run already existed; only the status was behind
    SKIPPED = "skipped"
    IDLE = "idle"
    SUSPENDED = "suspended"
    ERROR = "error"


class SkipReason(StrEnum):
    FORBID = "ConcurrencyPolicyForbid"
    DEADLINE = "MissedStartingDeadline"


@dataclass(frozen=True, slots=True)
class Note:
    """Something a person should see: becomes a Kubernetes Event on the schedule."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


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


class TriggerRefused(Exception):
    """A manual trigger that the schedule's state or policy does not allow."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the concurrency policy makes of a due tick."""

    fire: bool
    delete: tuple[str, ...]
    skip: SkipReason | None
    message: str


class _StatusBuilder:
    """Accumulates the next status from the stored one, keeping transitions stable."""

    def __init__(self, schedule: ScheduleView, now: datetime):
        st = schedule.status
        self.now = now
        self.generation = schedule.meta.generation
        self.previous = {c.type: c for c in st.conditions}
        self.conditions: dict[str, Condition] = dict(self.previous)
        self.notes: list[Note] = []
        self.phase = st.phase
        self.last_run_time = st.last_run_time
        self.last_schedule_time = st.last_schedule_time
        self.next_run_time: datetime | None = st.next_run_time
        self.last_run_name = st.last_run_name
        self.total_runs = st.total_runs

    def condition(self, type_: str, status: Literal["True", "False"], reason: str,
                  message: str, *, note: Literal["Normal", "Warning"] | None = None) -> None:
        old = self.previous.get(type_)
        changed = old is None or old.status != status or old.reason != reason
        since = old.last_transition_time if old and old.status == status else format_time(
            floor_second(self.now))
        self.conditions[type_] = Condition(type_, status, reason, message, since, self.generation)
        if note is not None and changed:
            self.notes.append(Note(note, reason, message))

    def _ordered_conditions(self) -> list[Condition]:
        order = [READY, TICK_SKIPPED]
        return sorted(self.conditions.values(),
                      key=lambda c: (order.index(c.type) if c.type in order else 99, c.type))

    def view(self, active: Sequence[dict[str, Any]]) -> ScheduleStatus:
        """What :meth:`build` gives, parsed (kept equal by tests/core)."""
        return ScheduleStatus(
            phase=self.phase or None, last_run_time=self.last_run_time,
            last_schedule_time=self.last_schedule_time, next_run_time=self.next_run_time,
            last_run_name=self.last_run_name or None, total_runs=self.total_runs,
            observed_generation=self.generation, conditions=tuple(self._ordered_conditions()),
            active=tuple(active))

    def build(self, active: Sequence[dict[str, Any]]) -> dict[str, Any]:
        status: dict[str, Any] = {"observedGeneration": self.generation}
        if self.phase:
            status["phase"] = self.phase
        if self.last_run_time:
            status["lastRunTime"] = format_time(self.last_run_time)
        if self.last_schedule_time:
            status["lastScheduleTime"] = format_time(self.last_schedule_time)
        if self.next_run_time:
            status["nextRunTime"] = format_time(self.next_run_time)
        if self.last_run_name:
            status["lastRunName"] = self.last_run_name
        status["totalRuns"] = self.total_runs
        if active:
            status["active"] = list(active)
        if self.conditions:
            status["conditions"] = [c.to_dict() for c in self._ordered_conditions()]
        return status


def _ref(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": Kind.AGENT_RUN.api_version, "kind": Kind.AGENT_RUN.value,
            "name": name, "namespace": namespace}


def owned_runs(schedule: ScheduleView, runs: Sequence[RunView]) -> list[RunView]:
    """Runs of this schedule incarnation: a run owned by an older schedule of
    the same name (deleted and re-created) is not ours to count or prune."""
    uid = schedule.meta.uid
    return [r for r in runs if not r.owner_uids or not uid or uid in r.owner_uids]


def history_to_prune(spec: ScheduleSpec, runs: Sequence[RunView]) -> list[str]:
    """Names of the finished runs beyond the history limits (the oldest of each kind)."""
    finished = sorted((r for r in runs if r.finished), key=lambda r: r.order_key, reverse=True)
    ok = [r.name for r in finished if r.succeeded]
    failed = [r.name for r in finished if not r.succeeded]
    doomed = ok[spec.successful_runs_history_limit:] + failed[spec.failed_runs_history_limit:]
    return sorted(doomed)


def _plan(spec: ScheduleSpec, active: Sequence[RunView], due: datetime,
          now: datetime) -> _Plan:
    late = now - due
    deadline = spec.starting_deadline_seconds
    if deadline is not None and late.total_seconds() > deadline:  # (no timedelta: int64 fits)
        return _Plan(False, (), SkipReason.DEADLINE,
                     f"skipped the {format_time(due)} tick: it is {late.total_seconds():.0f}s "
                     f"late, beyond startingDeadlineSeconds={deadline}")
    if active and spec.concurrency_policy == "Forbid":
        blocking = active[-1]
        return _Plan(False, (), SkipReason.FORBID,
                     f"skipped the {format_time(due)} tick: AgentRun {blocking.name} is still "
                     f"{blocking.phase or 'Pending'} (concurrencyPolicy: Forbid)")
    if active and spec.concurrency_policy == "Replace":
        names = tuple(r.name for r in active)
        return _Plan(True, names, None,
                     f"deleted unfinished AgentRun(s) {', '.join(names)} to start the "
                     f"{format_time(due)} run (concurrencyPolicy: Replace)")
    return _Plan(True, (), None, "")


def _due_and_next(schedule: ScheduleView, spec: ScheduleSpec, compiled: Schedule,
                  cursor: datetime | None, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The tick to handle now (if any) and the next fire time after it.

    Written to cost one or two forward queries in the common cases (nothing due;
    exactly one tick due) and to look backwards only after a gap of several
    missed ticks, because this runs for every schedule on every fire and start.
    """
    creation = schedule.meta.creation or _EPOCH
    initial: datetime | None = None
    if cursor is None:
        if spec.first_tick == "immediate":
            initial = floor_second(creation)
            if initial > now:  # our clock is behind the store's: due at creation
                return None, initial
            cursor = initial - timedelta(microseconds=1)  # the creation tick itself counts
        else:
            cursor = creation
    upcoming_tick = compiled.next_after(cursor)
    if upcoming_tick is None or upcoming_tick > now:
        if initial is not None:
            return initial, upcoming_tick
        return None, upcoming_tick
    following = compiled.next_after(upcoming_tick)
    if following is None or following > now:
        return upcoming_tick, following
    return compiled.latest_at_or_before(now), compiled.next_after(now)


def _error(builder: _StatusBuilder, exc: SpecError, hint: str) -> None:
    builder.phase = "Error"
    builder.next_run_time = None
    builder.condition(READY, "False", exc.reason, f"{exc} ({hint})", note="Warning")


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
    b = _StatusBuilder(schedule, now)
    mine = owned_runs(schedule, runs)
    active = sorted((r for r in mine if not r.finished), key=lambda r: r.order_key)
    active_refs = [_ref(schedule.meta.namespace, r.name) for r in active]

    def done(outcome: Outcome, *, delete: tuple[str, ...] = (), wake: datetime | None = None,
             refs: Sequence[dict[str, Any]] = active_refs, create: dict[str, Any] | None = None,
             tick: datetime | None = None, skip: SkipReason | None = None) -> Decision:
        return Decision(b.build(refs), create, tick, delete, tuple(b.notes), wake, outcome, skip,
                        b.view(refs))

    spec = schedule.spec
    if spec is None:
        assert schedule.spec_error is not None
        _error(b, schedule.spec_error, "fix the field and apply again")
        return done(Outcome.ERROR)
    prune = tuple(history_to_prune(spec, mine))
    try:
        compiled = compile_schedule(
            spec.schedule, time_zone=spec.time_zone, anchor=schedule.meta.creation or _EPOCH
        )
    except SpecError as exc:
        _error(b, exc, "fix the expression and apply again")
        return done(Outcome.ERROR, delete=prune)

    st = schedule.status
    was_suspended = st.phase == "Suspended"
    if spec.suspend:
        b.phase = "Suspended"
        b.next_run_time = None
        b.condition(READY, "False", "Suspended",
                    "spec.suspend is true: no runs are created until it is set to false",
                    note="Normal")
        return done(Outcome.SUSPENDED, delete=prune)

    if instance is None:
        _error(b, SpecError("spec.instanceRef", spec.instance_ref,
                            f"SympoziumInstance not found in namespace "
                            f"{schedule.meta.namespace!r}", reason="InstanceNotFound"),
               "create the instance or point spec.instanceRef at an existing one")
        return done(Outcome.ERROR, delete=prune)
    template = RunTemplate.of(instance)
    if template.model is None:
        _error(b, SpecError("spec.instanceRef", spec.instance_ref,
                            "the SympoziumInstance has no spec.agents.default.model",
                            reason="InstanceInvalid"),
               "set spec.agents.default.model on the instance")
        return done(Outcome.ERROR, delete=prune)

    cursor = st.last_schedule_time
    # Runs of ticks after the cursor exist only when a fire was cut short between
    # creating its run and writing status (a crash, a failed status write, a lost
    # race with another controller): count every one of them, move the cursor past
    # them, and never create a second run for their ticks.
    unrecorded = sorted(
        (r for r in mine if not r.manual and r.scheduled_time is not None
         and (cursor is None or r.scheduled_time > cursor)),
        key=lambda r: r.order_key)
    if unrecorded:
        newest = unrecorded[-1]
        assert newest.scheduled_time is not None
        b.total_runs += len(unrecorded)
        b.last_run_time = newest.scheduled_time
        b.last_run_name = newest.name
        cursor = b.last_schedule_time = newest.scheduled_time
        if TICK_SKIPPED in b.conditions:
            b.condition(TICK_SKIPPED, "False", "RunCreated",
                        f"the {format_time(newest.scheduled_time)} tick fired")
    edited = st.observed_generation is not None and st.observed_generation != schedule.meta.generation
    if edited or was_suspended:
        cursor = max(cursor, now) if cursor else now
        b.last_schedule_time = cursor
    b.phase = "Active"
    b.condition(READY, "True", "Scheduled", "the schedule is valid and active",
                note="Normal" if was_suspended else None)

    due, b.next_run_time = _due_and_next(schedule, spec, compiled, cursor, now)
    if due is None:
        if unrecorded:
            return done(Outcome.RECORDED, delete=prune, wake=b.next_run_time,
                        tick=unrecorded[-1].scheduled_time)
        return done(Outcome.IDLE, delete=prune, wake=b.next_run_time)

    b.last_schedule_time = due
    plan = _plan(spec, active, due, now)
    if not plan.fire:
        assert plan.skip is not None
        b.condition(TICK_SKIPPED, "True", plan.skip.value, plan.message)
        # Every skip is its own occurrence: an event each time, not only on transitions.
        b.notes.append(Note("Warning" if plan.skip is SkipReason.DEADLINE else "Normal",
                            "TickSkipped", plan.message))
        return done(Outcome.SKIPPED, delete=prune, wake=b.next_run_time, skip=plan.skip, tick=due)

    run = build_agent_run(schedule, spec, template, memory, due)
    name = run["metadata"]["name"]
    b.last_run_time = due
    b.last_run_name = name
    b.total_runs += 1
    if plan.delete:
        b.notes.append(Note("Normal", "RunReplaced", plan.message))
    b.notes.append(Note("Normal", "RunCreated",
                        f"created AgentRun {name} for the {format_time(due)} tick"))
    if TICK_SKIPPED in b.conditions:
        b.condition(TICK_SKIPPED, "False", "RunCreated", f"the {format_time(due)} tick fired")
    refs = [r for r in active_refs if r["name"] not in plan.delete]
    refs.append(_ref(schedule.meta.namespace, name))
    return done(Outcome.FIRED, delete=plan.delete + prune, wake=b.next_run_time, refs=refs,
                create=run, tick=due)


def trigger(
    schedule: ScheduleView,
    runs: Sequence[RunView],
    instance: Mapping[str, Any] | RunTemplate | None,
    memory: str | None,
    now: datetime,
) -> Decision:
    """A manual run now, outside the cron; the concurrency policy still applies.

    The cursor is untouched: a manual run neither consumes nor replays a tick.
    """
    spec = schedule.spec
    if spec is None:
        raise TriggerRefused(f"the schedule is invalid: {schedule.spec_error}")
    if instance is None:
        raise TriggerRefused(
            f"SympoziumInstance {spec.instance_ref!r} not found in namespace "
            f"{schedule.meta.namespace!r}")
    template = RunTemplate.of(instance)
    if template.model is None:
        raise TriggerRefused(
            f"SympoziumInstance {spec.instance_ref!r} has no spec.agents.default.model")
    b = _StatusBuilder(schedule, now)
    active = sorted((r for r in owned_runs(schedule, runs) if not r.finished),
                    key=lambda r: r.order_key)
    tick = floor_second(now)
    plan = _plan(spec.model_copy(update={"starting_deadline_seconds": None}), active, tick, now)
    if not plan.fire:
        raise TriggerRefused(plan.message.replace(f"skipped the {format_time(tick)} tick: ", ""))
    run = build_agent_run(schedule, spec, template, memory, tick, manual=True)
    name = run["metadata"]["name"]
    b.last_run_time = tick
    b.last_run_name = name
    b.total_runs += 1
    b.notes.append(Note("Normal", "RunTriggered", f"created AgentRun {name} (manual trigger)"))
    if plan.delete:
        b.notes.append(Note("Normal", "RunReplaced", plan.message))
    refs = [_ref(schedule.meta.namespace, r.name) for r in active if r.name not in plan.delete]
    refs.append(_ref(schedule.meta.namespace, name))
    status = b.build(refs)
    # A manual run says nothing about whether the controller has seen the latest
    # spec; advancing observedGeneration here would hide an edit from it.
    if schedule.status.observed_generation is None:
        status.pop("observedGeneration", None)
    else:
        status["observedGeneration"] = schedule.status.observed_generation
    return Decision(status, run, tick, plan.delete, tuple(b.notes), None, Outcome.FIRED)


def tick_failed(schedule: ScheduleView, decision: Decision, reason: str, message: str,
                now: datetime) -> Decision:
    """The tick's run could not be created for a reason retrying will not fix.

    ``RunNameTaken``: the name belongs to an object this schedule does not own;
    creating under another name would break the one-run-per-tick guarantee.
    ``RunRejected``: the store refused the run (too large, invalid). Either way
    the tick is consumed and the schedule says why, instead of retrying forever.
    """
    if decision.tick is None or decision.create is None:
        raise ValueError("tick_failed needs a decision that creates a run")
    stored = schedule.status
    planned = replace(schedule, status=ScheduleStatus.from_dict(decision.status))
    b = _StatusBuilder(planned, now)
    b.last_run_time = stored.last_run_time
    b.last_run_name = stored.last_run_name
    b.total_runs = stored.total_runs
    name = decision.create["metadata"]["name"]
    text = f"skipped the {format_time(decision.tick)} tick: {message}"
    b.condition(TICK_SKIPPED, "True", reason, text)
    notes = (Note("Warning", reason, text),)
    active = [a for a in decision.status.get("active", []) if a.get("name") != name]
    return Decision(b.build(active), None, decision.tick, (), notes,
                    decision.wake_at, Outcome.SKIPPED, None)
