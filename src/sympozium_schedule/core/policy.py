"""What the policies make of one due tick: excluded, too late, skipped, buffered or fired.

Apart from :mod:`~sympozium_schedule.core.decide` because a manual trigger
(:mod:`~sympozium_schedule.core.manual`) puts its run to the same concurrency
policy, and must get the same answer from the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sympozium_schedule.core.model import BUFFERING_POLICIES, RunView, ScheduleSpec, format_time
from sympozium_schedule.core.timetable import Timetable

__all__ = ["BUFFER_ALL_LIMIT", "SkipReason", "TickPlan", "plan_tick"]

# The most ticks BufferAll keeps waiting; later ones are skipped (BufferFull).
BUFFER_ALL_LIMIT = 100


class SkipReason(StrEnum):
    FORBID = "ConcurrencyPolicyForbid"
    DEADLINE = "MissedStartingDeadline"
    EXCLUDED = "Excluded"
    BUFFER_FULL = "BufferFull"


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What the policies make of a due tick."""

    action: Literal["fire", "skip", "buffer"]
    delete: tuple[str, ...] = ()
    skip: SkipReason | None = None
    message: str = ""


_FIRE = TickPlan("fire")  # the common answer, shared


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
