"""Which tick is due at ``now`` and which comes next: the tick arithmetic of a decision.

Kept apart from :mod:`~sympozium_schedule.core.decide` because it is written for
cost rather than for policy: it runs for every schedule on every fire and start,
and its answers are memoised across schedules (``_SHARED``), a cache the policy
need not know about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sympozium_schedule.core.fire_times import floor_second
from sympozium_schedule.core.model import EPOCH, ScheduleSpec, ScheduleView
from sympozium_schedule.core.timetable import Timetable

__all__ = ["Ticks", "due_ticks"]

_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Ticks:
    due: datetime | None  # the tick to handle now
    due_at: datetime | None  # when it was planned to fire
    next: datetime | None  # the next tick after it (status.nextRunTime)
    next_at: datetime | None  # when that one is planned to fire (the wake-up)


def due_ticks(schedule: ScheduleView, spec: ScheduleSpec, table: Timetable,
              cursor: datetime | None, now: datetime) -> Ticks:
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
                return Ticks(None, None, initial, initial)
            else:
                cursor = initial - _MICRO  # the creation tick itself counts
        else:
            cursor = creation
    ticks = _forward(table, cursor, now)
    if initial is not None and ticks.due is None:
        return Ticks(initial, initial, ticks.next, ticks.next_at)
    return ticks


# What a timetable says after a cursor at ``now``, shared by every schedule with the
# same timetable (they are interned: timetable._intern) and cursor: a burst of
# 10,000 schedules on one expression asks it once. Held for one ``now`` at a time,
# so it keeps the answers of one pass and no more.
_SHARED: dict[tuple[int, datetime], tuple[Timetable, Ticks]] = {}
_SHARED_AT: list[datetime | None] = [None]


def _forward(table: Timetable, cursor: datetime, now: datetime) -> Ticks:
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


def _forward_of(table: Timetable, cursor: datetime, now: datetime) -> Ticks:
    fire = table.fire_time
    upcoming = table.next_after(cursor)
    if upcoming is None or fire(upcoming) > now:
        upcoming_at = fire(upcoming) if upcoming is not None else None
        return Ticks(None, None, upcoming, upcoming_at)
    following = table.next_after(upcoming)
    if following is None or fire(following) > now:
        return Ticks(upcoming, fire(upcoming), following,
                     fire(following) if following is not None else None)
    latest = table.latest_at_or_before(now)
    if latest is not None and fire(latest) > now:  # its jitter has not elapsed yet
        latest = table.latest_at_or_before(latest - _MICRO)
    assert latest is not None  # ``following`` is at or before now
    after = table.next_after(latest)
    return Ticks(latest, fire(latest), after, fire(after) if after is not None else None)
