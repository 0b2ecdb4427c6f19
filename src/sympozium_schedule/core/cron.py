"""Schedule expressions compiled once, then queried for fire times.

Three forms are accepted:

* five-field cron (``*/5 * * * *``), evaluated in an IANA time zone. An
  expression with a fixed minute and hour (``30 2 * * *``) follows Vixie
  cron's DST rule: a local time skipped by spring-forward fires once at the
  jump, a local time repeated by fall-back fires once (the first time). An
  expression with a wildcard minute or hour fires at every real instant whose
  local time matches, so it fires in both passes of a repeated hour, as in
  every cron;
* the macros ``@hourly @daily @midnight @weekly @monthly @yearly @annually``;
* ``@every <duration>`` (``@every 30m``, ``@every 1h30m``, ``@every 10s``):
  ticks at ``anchor + k * interval`` (k >= 1), so they never drift however
  late a fire lands. The anchor is the schedule's creation time.

The cron arithmetic is cronsim's (see bench/cron_libraries.py for why cronsim
and not croniter). Fire times are whole seconds in UTC.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from sympozium_schedule.core.errors import SpecError

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_DURATION_PART = re.compile(r"([0-9]{1,12})(h|m|s)")  # ASCII digits, as Go's ParseDuration
MAX_INTERVAL_SECONDS = 366 * 86400
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


def _require_aware(t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t!r}: the core works on aware datetimes only")


def floor_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def load_zone(name: str, *, field: str = "spec.timeZone") -> tzinfo:
    """An IANA zone by name; ``UTC`` is special-cased as the fast path."""
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    # Host-dependent names (the machine's local zone, posix/ and right/ variants)
    # would make the same spec fire differently on different machines.
    if (not name or name.startswith(("/", ".", "posix/", "right/")) or ".." in name
            or name != name.strip() or name in ("localtime", "posixrules", "Factory")):
        raise SpecError(field, name, "not an IANA time zone name", reason="InvalidTimeZone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise SpecError(
            field, name, "unknown time zone (use an IANA name like Europe/Warsaw)",
            reason="InvalidTimeZone",
        ) from exc


def parse_duration(
    text: str, *, field: str = "spec.schedule", shown: str | None = None
) -> timedelta:
    """Go-style durations made of hours, minutes and seconds: ``1h30m``, ``10s``.

    ``shown`` is the value to name in an error (the whole ``@every ...``).
    """
    value_shown = text if shown is None else shown
    compact = text.strip()
    pos = 0
    total = 0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        value, unit = int(match.group(1)), match.group(2)
        total += value * {"h": 3600, "m": 60, "s": 1}[unit]
        pos = match.end()
    if not compact or pos != len(compact):
        raise SpecError(
            field, value_shown, "not a duration (use e.g. 30s, 5m, 1h30m)",
            reason="InvalidSchedule",
        )
    if total < 1:
        raise SpecError(
            field, value_shown, "the interval must be at least 1s", reason="InvalidSchedule"
        )
    if total > MAX_INTERVAL_SECONDS:
        raise SpecError(
            field, value_shown, "the interval must be at most 8784h (366 days); use a cron "
            "expression for rarer schedules", reason="InvalidSchedule",
        )
    return timedelta(seconds=total)


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
        _require_aware(t)
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
        _require_aware(t)
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
        _require_aware(t)
        k = max((t - self.anchor) // self.interval + 1, 1)
        try:
            return self.anchor + k * self.interval
        except OverflowError:  # past the year 9999: never again
            return None

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        _require_aware(t)
        k = (t - self.anchor) // self.interval
        return self.anchor + k * self.interval if k >= 1 else None


def compile_schedule(
    expression: str,
    *,
    time_zone: str = "UTC",
    anchor: datetime,
    field: str = "spec.schedule",
) -> Schedule:
    """Validate ``expression`` once; raise :class:`SpecError` naming the field on failure.

    ``anchor`` (aware) is where ``@every`` intervals are counted from.
    """
    _require_aware(anchor)
    text = expression.strip()
    if not text:
        raise SpecError(field, expression, "empty schedule", reason="InvalidSchedule")
    zone = load_zone(time_zone)  # for @every too: a bad field is an error wherever it is
    lowered = text.lower()
    if not lowered.startswith("@every"):
        return _compile_cron(text, zone, expression, field)
    rest = text[len("@every"):]
    if not rest[:1].isspace():
        raise SpecError(
            field, expression, "write @every <duration>, e.g. @every 30m",
            reason="InvalidSchedule",
        )
    interval = parse_duration(rest.strip(), field=field, shown=expression)
    return IntervalSchedule(text, interval, floor_second(anchor.astimezone(UTC)))


@lru_cache(maxsize=2048)
def _compile_cron(text: str, zone: tzinfo, expression: str, field: str) -> CronSchedule:
    """Parse and check a five-field expression or macro (cached: parsing is the slow part)."""
    lowered = text.lower()
    if lowered.startswith("@"):
        fields = MACROS.get(lowered)
        if fields is None:
            known = ", ".join(sorted(MACROS)) + ", @every <duration>"
            raise SpecError(
                field, expression, f"unknown macro (known: {known})", reason="InvalidSchedule"
            )
    else:
        fields = " ".join(text.split())
        count = len(fields.split(" "))
        if count != 5:
            raise SpecError(
                field, expression,
                f"a cron expression has 5 fields (minute hour day-of-month month "
                f"day-of-week), this one has {count}",
                reason="InvalidSchedule",
            )
    try:
        probe = CronSim(fields, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError, IndexError, KeyError) as exc:
        raise SpecError(
            field, expression, f"not a valid cron expression ({exc or 'parse error'})",
            reason="InvalidSchedule",
        ) from exc
    try:
        next(probe)
    except StopIteration as exc:
        raise SpecError(field, expression, "never fires", reason="InvalidSchedule") from exc
    minute, hour = fields.split(" ")[:2]
    # cronsim's own criterion for walking local wall time (Vixie cron's DST rule).
    wall_clock = not minute.startswith("*") and not hour.startswith("*")
    return CronSchedule(text, fields, zone, wall_clock)


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


# --- daylight-saving changes, for people -------------------------------------------------------

# No zone changes its offset twice within this span, so stepping by it finds every change.
_TRANSITION_STEP = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class ZoneTransition:
    at: datetime  # the first instant (UTC) with the new offset
    before: timedelta
    after: timedelta


def zone_transitions(zone: tzinfo, start: datetime, end: datetime) -> list[ZoneTransition]:
    """The UTC-offset changes of ``zone`` in ``(start, end]``, each to the second."""
    _require_aware(start)
    found: list[ZoneTransition] = []
    if zone is UTC:
        return found

    def offset(t: datetime) -> timedelta:
        return t.astimezone(zone).utcoffset() or timedelta(0)

    lo = floor_second(start.astimezone(UTC))
    lo_offset = offset(lo)
    while lo < end:
        hi = min(lo + _TRANSITION_STEP, end)
        hi_offset = offset(hi)
        if hi_offset != lo_offset:
            a, b = lo, hi
            while b - a > _SECOND:
                mid = floor_second(a + (b - a) / 2)
                if offset(mid) == lo_offset:
                    a = mid
                else:
                    b = mid
            found.append(ZoneTransition(b, lo_offset, hi_offset))
        lo, lo_offset = hi, hi_offset
    return found


@dataclass(frozen=True, slots=True)
class DstNote:
    """What a daylight-saving change does to a cron schedule, said for a person.

    ``kind`` is ``gap`` (spring forward: a span of local times does not exist)
    or ``repeat`` (fall back: a span of local times happens twice). ``matches``
    are the schedule's local times inside that span; ``fires`` what the
    scheduler really does there (UTC), read from the same engine that fires.
    """

    kind: str
    transition: datetime
    date: str
    local_from: str
    local_to: str
    matches: tuple[str, ...]
    fires: tuple[datetime, ...]
    message: str


_MAX_MATCHES = 240  # a wildcard minute in a 2-hour span; more is not worth listing


def _wall(t: datetime) -> str:
    return t.strftime("%H:%M") if t.second == 0 else t.strftime("%H:%M:%S")


def _listed(times: Sequence[str], total: int) -> str:
    shown = ", ".join(times[:3])
    return shown + (f" and {total - 3} more" if total > 3 else "")


def dst_notes(schedule: Schedule, start: datetime, end: datetime, *,
              zone_name: str = "") -> list[DstNote]:
    """Notes for the daylight-saving changes in ``(start, end]`` that touch ``schedule``:
    its local fire times that fall in a skipped span (spring forward) or a repeated
    one (fall back), and what the scheduler does about them. Empty for ``@every``
    (real intervals, no wall clock) and for zones without changes."""
    if not isinstance(schedule, CronSchedule):
        return []
    notes: list[DstNote] = []
    zone = schedule.zone
    label = zone_name or str(zone)
    for tr in zone_transitions(zone, start, end):
        delta = tr.after - tr.before
        wall_at = (tr.at + tr.before).replace(tzinfo=None)  # the clock just before the change
        gap = delta > timedelta(0)
        lo, hi = (wall_at, wall_at + delta) if gap else (wall_at + delta, wall_at)
        matches: list[datetime] = []
        walk = CronSim(schedule.fields, lo - _SECOND)
        try:
            while len(matches) < _MAX_MATCHES:
                found = next(walk)
                if found >= hi:
                    break
                matches.append(found)
        except (StopIteration, OverflowError, ValueError):
            pass
        if not matches:
            continue
        span = abs(delta)
        # The real instants the span covers: the jump itself for a gap, both passes
        # for a repeat.
        fires, _ = fires_between(schedule, tr.at - span - _SECOND, tr.at + span - _SECOND,
                                 limit=2 * _MAX_MATCHES)
        if gap:  # a wildcard expression's skipped times simply do not happen
            fires = [f for f in fires if f == tr.at] if schedule.wall_clock else []
        shown = [_wall(m) for m in matches]
        date = wall_at.date().isoformat()
        frm, to = _wall(wall_at), _wall(wall_at + delta)
        times = _listed(shown, len(shown))
        if gap:
            what = (f"{date} in {label}: clocks jump from {frm} to {to}, so {times} "
                    f"{'does' if len(shown) == 1 else 'do'} not exist; ")
            what += (f"this schedule fires once at {to} instead" if fires and schedule.wall_clock
                     else "those fires do not happen")
        else:
            what = (f"{date} in {label}: clocks go back from {frm} to {to}, so {times} "
                    f"{'happens' if len(shown) == 1 else 'happen'} twice; ")
            what += ("this schedule fires in both passes" if len(fires) > len(shown)
                     else "this schedule fires once (the first time)")
        notes.append(DstNote("gap" if gap else "repeat", tr.at, date, frm, to, tuple(shown),
                             tuple(fires), what))
    return notes


@dataclass(frozen=True, slots=True)
class Preview:
    times: tuple[datetime, ...]
    notes: tuple[DstNote, ...]


PREVIEW_HORIZON = timedelta(days=366)


def preview(expression: str, *, time_zone: str, after: datetime, count: int,
            anchor: datetime | None = None, field: str = "spec.schedule",
            horizon: timedelta = PREVIEW_HORIZON) -> Preview:
    """What a cron editor shows while a person types: the next ``count`` fire times
    after ``after`` and the daylight-saving notes for the coming ``horizon``.
    Raises :class:`SpecError` with the message ``apply`` would give."""
    zone = load_zone(time_zone)
    compiled = compile_schedule(expression, time_zone=time_zone,
                                anchor=anchor if anchor is not None else after, field=field)
    del zone  # loaded first so a bad zone is named even for @every
    times = tuple(upcoming(compiled, after, count))
    return Preview(times, tuple(dst_notes(compiled, after, after + horizon, zone_name=time_zone)))
