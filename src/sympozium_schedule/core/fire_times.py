"""The fire times of a compiled schedule: the arithmetic every decision asks of it.

Kept apart from :mod:`~sympozium_schedule.core.cron`, which turns text into a
schedule once, because this part runs on every tick of every schedule: it is
written for cost (memoised across schedules that share an expression) and holds
the DST care that makes its answers exact, none of which parsing needs to know.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Protocol

from cronsim import CronSim

__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "fires_between",
    "floor_second",
    "require_aware",
    "shortest_gap",
    "upcoming",
]

_SECOND = timedelta(seconds=1)


class Schedule(Protocol):
    """A compiled schedule: answers questions about fire times."""

    @property
    def expression(self) -> str: ...

    def next_after(self, t: datetime) -> datetime | None:
        """The first fire time strictly after ``t`` (None: never again)."""
        ...

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        """The most recent fire time at or before ``t`` (None: none yet)."""
        ...


def require_aware(t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t!r}: the core works on aware datetimes only")


def floor_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A five-field expression in a zone.

    ``wall_clock`` expressions (a fixed minute and hour) follow Vixie cron's DST
    rule through cronsim's local-time walk. For the others, cronsim's answer is
    cross-checked with walks at a constant UTC offset on each side of a nearby
    transition: in zones whose clocks move by 30 or 45 minutes (Lord Howe,
    Chatham) its local walk can step over matches right after a fall-back.
    Within one offset, local time is UTC plus a constant, so those walks are exact.
    """

    expression: str
    fields: str
    zone: tzinfo
    wall_clock: bool

    def _simple(self) -> bool:
        return self.zone is UTC or self.wall_clock

    def _offset(self, t: datetime) -> timedelta:
        return t.astimezone(self.zone).utcoffset() or timedelta(0)

    def _transition(self, a: datetime, b: datetime) -> datetime:
        """The first second in (a, b] with b's offset (a and b have different offsets)."""
        target = self._offset(b)
        lo, hi = a, b
        while hi - lo > _SECOND:
            mid = floor_second(lo + (hi - lo) / 2)
            if mid <= lo:
                break
            if self._offset(mid) == target:
                hi = mid
            else:
                lo = mid
        return hi

    def _walk(self, t: datetime, tz: tzinfo, *, reverse: bool) -> datetime | None:
        try:
            return next(CronSim(self.fields, t.astimezone(tz), reverse=reverse)).astimezone(UTC)
        except (StopIteration, OverflowError, ValueError):  # the calendar's ends
            return None

    def _fixed(self, t: datetime, offset: timedelta, *, reverse: bool) -> datetime | None:
        """The next (or previous) match at a constant offset, kept only if the zone
        has that offset there (so the zone's local time matches as well)."""
        found = self._walk(t, timezone(offset), reverse=reverse)
        return found if found is not None and self._offset(found) == offset else None

    def _zone_next(self, t: datetime) -> datetime | None:
        it = CronSim(self.fields, t.astimezone(self.zone))
        try:  # OverflowError: past the year 9999, which is "never" for us
            while True:
                candidate = next(it).astimezone(UTC)
                # With a DST fix-up cronsim walks local wall time; right after a
                # fall-back it can hand back the first occurrence of a repeated
                # local time, which is already in the past. Keep walking.
                if candidate > t:
                    return candidate
        except (StopIteration, OverflowError, ValueError):
            return None

    def next_after(self, t: datetime) -> datetime | None:
        require_aware(t)
        return _next_memo(self, t.astimezone(UTC))  # one key per instant, whatever its zone

    def _next_uncached(self, t: datetime) -> datetime | None:
        first = self._zone_next(t)
        if self._simple() or first is None:
            return first
        candidates = [first, self._fixed(t, self._offset(t), reverse=False)]
        if self._offset(t) != self._offset(first):
            start = max(self._transition(t, first) - _SECOND, t)
            candidates.append(self._fixed(start, self._offset(first), reverse=False))
        return min(c for c in candidates if c is not None and c > t)

    def _latest_candidate(self, t: datetime) -> datetime | None:
        start = floor_second(t) + _SECOND
        candidate = self._walk(start, self.zone, reverse=True)
        if self._simple():
            return candidate
        found = [c for c in (candidate,) if c is not None and c <= t]
        here = self._offset(t)
        raw = self._walk(start, timezone(here), reverse=True)
        if raw is not None and self._offset(raw) == here:
            found.append(raw)
        elif raw is not None:
            # The latest match at this offset lies before a transition: look with
            # the offset in force just before the transition.
            boundary = self._transition(raw, t)
            other = self._fixed(boundary, self._offset(boundary - _SECOND), reverse=True)
            if other is not None:
                found.append(other)
        return max((c for c in found if c <= t), default=None)

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        require_aware(t)
        return _latest_memo(self, t.astimezone(UTC))

    def _latest_uncached(self, t: datetime) -> datetime | None:
        candidate = self._latest_candidate(t)
        if candidate is None:
            return None
        # Reverse iteration never lands on the jump time of a skipped local hour,
        # which forward iteration fires; walk forward from the candidate so both
        # directions agree on the same set of fire times.
        latest: datetime | None = None
        cursor = candidate - _SECOND
        while True:
            nxt = self.next_after(cursor)
            if nxt is None or nxt > t:
                return latest
            latest = nxt
            cursor = nxt


# Many schedules share an expression, and a burst asks the same question of
# all of them (the next fire after the same tick): answer it once. Pure
# functions of (schedule, instant), so memoising cannot change a result.
@lru_cache(maxsize=16384)
def _next_memo(schedule: CronSchedule, t: datetime) -> datetime | None:
    return schedule._next_uncached(t)


@lru_cache(maxsize=4096)
def _latest_memo(schedule: CronSchedule, t: datetime) -> datetime | None:
    return schedule._latest_uncached(t)


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    expression: str
    interval: timedelta
    anchor: datetime

    def next_after(self, t: datetime) -> datetime | None:
        require_aware(t)
        k = max((t - self.anchor) // self.interval + 1, 1)
        try:
            return self.anchor + k * self.interval
        except OverflowError:  # past the year 9999: never again
            return None

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        require_aware(t)
        k = (t - self.anchor) // self.interval
        return self.anchor + k * self.interval if k >= 1 else None


def upcoming(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``."""
    result: list[datetime] = []
    cursor = after
    while len(result) < count:
        nxt = schedule.next_after(cursor)
        if nxt is None:
            break
        result.append(nxt)
        cursor = nxt
    return result


def shortest_gap(schedule: Schedule, after: datetime, samples: int = 400) -> timedelta | None:
    """The smallest gap between consecutive fires among the next ``samples``.

    Used by guardrails (a minimum interval between fires). Irregular
    expressions (``0,1 9 * * *``) are caught because every gap is inspected.
    """
    if isinstance(schedule, IntervalSchedule):
        return schedule.interval
    times = upcoming(schedule, after, samples)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return min(gaps) if gaps else None


def fires_between(schedule: Schedule, start: datetime, end: datetime, *,
                  limit: int) -> tuple[list[datetime], bool]:
    """Fire times in ``(start, end]``, at most ``limit`` of them; the flag says
    whether more were left out (a timeline must stay bounded for ``* * * * *``)."""
    times: list[datetime] = []
    cursor = start
    while True:
        nxt = schedule.next_after(cursor)
        if nxt is None or nxt > end:
            return times, False
        if len(times) == limit:
            return times, True
        times.append(nxt)
        cursor = nxt

