"""A schedule's whole timetable, compiled once from its spec and then queried.

A :class:`Timetable` merges every expression a schedule fires on (``schedule``
plus ``schedules``, each in its own zone) into one stream of ticks without
doubles, bounds it by ``startTime``/``endTime``, knows which ticks ``exclude``
removes (they stay in the stream: the controller records them as skipped), and
gives each tick its planned fire time (the tick plus a ``jitter`` delay).

Jitter is a pure function of the schedule's identity and the tick, so a
restarted controller, or a second replica, plans the very same instant. It is
kept shorter than the shortest gap between two ticks, so fires never overtake
each other.
"""

from __future__ import annotations

import hashlib
import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache

from sympozium_schedule.core.cron import compile_schedule, load_zone, parse_duration
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.fire_times import Schedule, shortest_gap
from sympozium_schedule.core.model import ExcludeEntry, ScheduleSpec, parse_time

_MICRO = timedelta(microseconds=1)
_MINUTE = timedelta(minutes=1)
# Jitter is for spreading a herd of fires, not for postponing work by days.
MAX_JITTER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Exclusion:
    """One ``spec.exclude`` entry: a cron expression (every tick in a minute it matches)
    or a range of instants ``[start, end)``."""

    text: str
    cron: Schedule | None = None
    start: datetime | None = None
    end: datetime | None = None

    def matches(self, tick: datetime) -> bool:
        if self.cron is not None:
            minute = tick.replace(second=0, microsecond=0)
            return self.cron.next_after(minute - _MICRO) == minute
        assert self.start is not None and self.end is not None
        return self.start <= tick < self.end


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Timetable:
    specs: tuple[Schedule, ...]
    exclusions: tuple[Exclusion, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    jitter: timedelta = timedelta(0)
    seed: str = ""

    # --- the tick stream ------------------------------------------------------------------

    def next_after(self, t: datetime) -> datetime | None:
        """The first tick strictly after ``t``: the earliest among the specs (coinciding
        ticks are one tick), within ``[start, end]``."""
        if self.start is not None and t < self.start:
            t = self.start - _MICRO
        found = [n for n in (s.next_after(t) for s in self.specs) if n is not None]
        if not found:
            return None
        tick = min(found)
        return None if self.end is not None and tick > self.end else tick

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        if self.end is not None and t > self.end:
            t = self.end
        found = [n for n in (s.latest_at_or_before(t) for s in self.specs) if n is not None]
        if not found:
            return None
        tick = max(found)
        return None if self.start is not None and tick < self.start else tick

    def between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every tick in ``(after, until]``, in order (backfills walk it)."""
        cursor = after
        while True:
            tick = self.next_after(cursor)
            if tick is None or tick > until:
                return
            yield tick
            cursor = tick

    def within(self, tick: datetime) -> bool:
        """Whether ``tick`` lies inside the ``[startTime, endTime]`` window."""
        return ((self.start is None or tick >= self.start)
                and (self.end is None or tick <= self.end))

    # --- what happens to a tick -----------------------------------------------------------

    def excluded_by(self, tick: datetime) -> Exclusion | None:
        for exclusion in self.exclusions:
            if exclusion.matches(tick):
                return exclusion
        return None

    def delay(self, tick: datetime) -> timedelta:
        """The jitter of ``tick``: a fraction of ``jitter`` drawn from a hash of the
        schedule's identity and the tick, in whole milliseconds."""
        if not self.jitter:
            return timedelta(0)
        digest = hashlib.sha256(f"{self.seed}|{int(tick.timestamp())}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2.0**64
        return timedelta(milliseconds=int(fraction * self.jitter.total_seconds() * 1000))

    def fire_time(self, tick: datetime) -> datetime:
        """When ``tick`` is planned to fire."""
        return tick + self.delay(tick)


# --- compiling ------------------------------------------------------------------------------


def _instant(text: str, field: str) -> datetime:
    parsed = parse_time(text)
    if parsed is None:
        raise SpecError(field, text, "not an RFC 3339 time with an offset (e.g. "
                                     "2026-12-24T00:00:00Z)")
    return parsed


def _bound(text: str, field: str, zone: tzinfo, *, end: bool) -> datetime:
    """A date (whole days in ``zone``: an end date is included) or an instant."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return _instant(text, field)
    if len(text) != 10:  # date.fromisoformat also takes "20261224" and week dates
        raise SpecError(field, text, "write a date as YYYY-MM-DD or a time as RFC 3339")
    if end:
        day += timedelta(days=1)
    return datetime.combine(day, time(0), zone).astimezone(UTC)


def _exclusion(entry: ExcludeEntry, index: int, default_zone: str, anchor: datetime) -> Exclusion:
    field = f"spec.exclude[{index}]"
    zone_name = entry.time_zone or default_zone
    zone = load_zone(zone_name, field=f"{field}.timeZone")
    if entry.schedule is not None:
        if entry.start is not None or entry.end is not None:
            raise SpecError(field, entry.schedule,
                            "an exclusion is either a schedule or a start/end range, not both")
        if entry.schedule.strip().lower().startswith("@every"):
            raise SpecError(f"{field}.schedule", entry.schedule,
                            "exclude with a cron expression or a date range, not @every")
        cron = compile_schedule(entry.schedule, time_zone=zone_name, anchor=anchor,
                                field=f"{field}.schedule")
        return Exclusion(text=entry.schedule, cron=cron)
    if entry.start is None or entry.end is None:
        raise SpecError(field, None, "an exclusion needs a schedule, or both start and end")
    start = _bound(entry.start, f"{field}.start", zone, end=False)
    end = _bound(entry.end, f"{field}.end", zone, end=True)
    if end <= start:
        raise SpecError(f"{field}.end", entry.end, f"must be after start ({entry.start})")
    return Exclusion(text=f"{entry.start}..{entry.end}", start=start, end=end)


def compile_timetable(spec: ScheduleSpec, *, anchor: datetime, seed: str) -> Timetable:
    """Check and compile every timing field of ``spec``; :class:`SpecError` names the
    first field at fault. ``anchor`` is the schedule's creation (``@every`` counts from
    it); ``seed`` its identity (the jitter of each tick derives from it)."""
    specs = [compile_schedule(spec.schedule, time_zone=spec.time_zone, anchor=anchor)]
    for i, entry in enumerate(spec.schedules):
        specs.append(compile_schedule(entry.schedule, time_zone=entry.time_zone or spec.time_zone,
                                      anchor=anchor, field=f"spec.schedules[{i}].schedule"))
    exclusions = tuple(_exclusion(e, i, spec.time_zone, anchor) for i, e in enumerate(spec.exclude))
    start = _instant(spec.start_time, "spec.startTime") if spec.start_time else None
    end = _instant(spec.end_time, "spec.endTime") if spec.end_time else None
    if start is not None and end is not None and end <= start:
        raise SpecError("spec.endTime", spec.end_time, f"must be after startTime ({spec.start_time})")
    jitter = timedelta(0)
    # Without jitter the seed is never read: leave it out, so that schedules on the same
    # expressions share one timetable (and what is memoised about it, see _intern).
    table = Timetable(tuple(specs), exclusions, start, end, jitter, "")
    if spec.jitter is not None:
        jitter = parse_duration(spec.jitter, field="spec.jitter")
        if jitter > MAX_JITTER:
            raise SpecError("spec.jitter", spec.jitter, "must be at most 1h")
        gap = _shortest_gap(tuple(specs))
        if gap is not None and jitter >= gap:
            raise SpecError("spec.jitter", spec.jitter,
                            f"must be shorter than the shortest time between two ticks "
                            f"({_span(gap)}), or fires would overtake each other")
        table = Timetable(tuple(specs), exclusions, start, end, jitter, seed)
    return _intern(table)


_INTERNED: weakref.WeakValueDictionary[tuple[object, ...], Timetable] = weakref.WeakValueDictionary()


def _intern(table: Timetable) -> Timetable:
    """One object per distinct timetable while any schedule uses it: 10,000 schedules
    on ``* * * * *`` share one, so a decision can memoise what the timetable says
    about a tick by identity (ticks.py) instead of once per schedule."""
    key = (table.specs, table.exclusions, table.start, table.end, table.jitter, table.seed)
    found = _INTERNED.get(key)
    if found is not None:
        return found
    _INTERNED[key] = table
    return table


# A reference instant for the gaps of cron expressions: a property of the expressions,
# not of the schedule, so 10,000 schedules on one expression cost one computation.
_GAP_FROM = datetime(2026, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=1024)
def _shortest_gap(specs: tuple[Schedule, ...]) -> timedelta | None:
    if len(specs) == 1:
        return shortest_gap(specs[0], _GAP_FROM)
    merged = Timetable(specs)
    ticks = list(itertools.islice(merged.between(_GAP_FROM, datetime.max.replace(tzinfo=UTC)), 400))
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    return min(gaps) if gaps else None


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

