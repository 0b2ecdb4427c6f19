"""The status a decision writes, built from the stored one.

:class:`StatusBuilder` starts from the stored status and is changed field by
field while a decision is made; conditions keep their transition time unless
their status changes, so deciding twice on the same inputs writes nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sympozium_schedule.core.fire_times import floor_second
from sympozium_schedule.core.model import (
    Condition,
    Kind,
    ScheduleStatus,
    ScheduleView,
    format_time,
    parse_time,
)

READY = "Ready"
TICK_SKIPPED = "TickSkipped"
_ORDER = {READY: 0, TICK_SKIPPED: 1}

# The status keys this project owns; anything else in status is left alone.
MANAGED_STATUS_KEYS = (
    "phase", "lastRunTime", "lastScheduleTime", "nextRunTime", "lastRunName",
    "totalRuns", "active", "conditions", "observedGeneration",
    "nextFireTime", "buffered", "scheduledRuns", "remainingRuns", "lastFailedRun", "backfill",
)


@dataclass(frozen=True, slots=True)
class Note:
    """Something a person should see: becomes a Kubernetes Event on the schedule."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def run_ref(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": Kind.AGENT_RUN.api_version, "kind": Kind.AGENT_RUN.value,
            "name": name, "namespace": namespace}


class StatusBuilder:
    """Accumulates the next status from the stored one, keeping transitions stable."""

    def __init__(self, schedule: ScheduleView, now: datetime):
        st = schedule.status
        self.now = now
        self.generation = schedule.meta.generation
        self.previous = {c.type: c for c in st.conditions}
        self.conditions: dict[str, Condition] = dict(self.previous)
        self._ordered: list[Condition] | None = None
        self.notes: list[Note] = []
        self.phase = st.phase
        self.last_run_time = st.last_run_time
        self.last_schedule_time = st.last_schedule_time
        self.next_run_time: datetime | None = st.next_run_time
        self.next_fire_time: datetime | None = None
        self.last_run_name = st.last_run_name
        self.total_runs = st.total_runs
        self.buffered: list[datetime] = list(st.buffered)
        self.scheduled_runs = st.scheduled_runs
        self.max_runs = schedule.spec.max_runs if schedule.spec is not None else None
        self.last_failed_run = st.last_failed_run
        self.backfill = st.backfill

    def condition(self, type_: str, status: Literal["True", "False"], reason: str,
                  message: str, *, note: Literal["Normal", "Warning"] | None = None) -> None:
        old = self.previous.get(type_)
        changed = old is None or old.status != status or old.reason != reason
        if (not changed and old is not None and old.message == message
                and old.observed_generation == self.generation):
            if self.conditions.get(type_) is not old:
                self.conditions[type_] = old  # as it was: the same object
                self._ordered = None
            return
        since = old.last_transition_time if old and old.status == status else format_time(
            floor_second(self.now))
        self.conditions[type_] = Condition(type_, status, reason, message, since, self.generation)
        self._ordered = None
        if note is not None and changed:
            self.notes.append(Note(note, reason, message))

    def _ordered_conditions(self) -> list[Condition]:
        """Ready first, then TickSkipped, then the rest by type (computed once a build)."""
        if self._ordered is None:
            self._ordered = sorted(self.conditions.values(),
                                   key=lambda c: (_ORDER.get(c.type, 99), c.type))
        return self._ordered

    def view(self, active: Sequence[dict[str, Any]]) -> ScheduleStatus:
        """What :meth:`build` gives, parsed (kept equal by tests/core)."""
        return ScheduleStatus(
            phase=self.phase or None, last_run_time=self.last_run_time,
            last_schedule_time=self.last_schedule_time, next_run_time=self.next_run_time,
            last_run_name=self.last_run_name or None, total_runs=self.total_runs,
            observed_generation=self.generation, conditions=tuple(self._ordered_conditions()),
            active=tuple(active), buffered=tuple(self.buffered),
            scheduled_runs=self.scheduled_runs, last_failed_run=self.last_failed_run,
            backfill=self.backfill)

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
        if self.next_fire_time:
            status["nextFireTime"] = format_time(self.next_fire_time)
        if self.last_run_name:
            status["lastRunName"] = self.last_run_name
        status["totalRuns"] = self.total_runs
        if active:
            status["active"] = list(active)
        if self.buffered:
            status["buffered"] = [format_time(t) for t in self.buffered]
        if self.scheduled_runs is not None:
            status["scheduledRuns"] = self.scheduled_runs
            if self.max_runs is not None:
                status["remainingRuns"] = max(self.max_runs - self.scheduled_runs, 0)
        if self.last_failed_run:
            status["lastFailedRun"] = self.last_failed_run
        if self.backfill:
            status["backfill"] = self.backfill
        if self.conditions:
            status["conditions"] = [c.to_dict() for c in self._ordered_conditions()]
        return status


# Phases in which a schedule waits for nothing but a person (no timer to arm).
_AT_REST = frozenset({"Suspended", "Completed", "Error"})


def standing(status: Mapping[str, Any], generation: int, now: datetime
             ) -> tuple[bool, datetime | None]:
    """Whether a stored status stands as the last decision left it, and when it wakes.

    True, with its next fire time (None: it waits for no tick), when the status was
    written for this generation of the spec and says what comes next: an Active
    schedule's next tick still ahead, nothing buffered, no backfill under way; or a
    schedule at rest (suspended, completed, in error). A restart arms such a
    schedule's timer from its status at once and decides it in the background
    (nothing it would write is due before that tick); anything else is decided
    before the scheduler is ready."""
    if status.get("observedGeneration") != generation:
        return False, None
    phase = status.get("phase")
    if phase in _AT_REST:
        return True, None
    if phase != "Active" or status.get("buffered"):
        return False, None
    backfill = status.get("backfill")
    if isinstance(backfill, Mapping) and backfill.get("state") == "Running":
        return False, None
    wake = parse_time(status.get("nextFireTime") or status.get("nextRunTime"))
    if wake is None or wake <= now:
        return False, None
    return True, wake
