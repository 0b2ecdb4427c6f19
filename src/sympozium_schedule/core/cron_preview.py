"""What a cron editor shows a person: the next fire times and the daylight-saving notes.

Apart from :mod:`~sympozium_schedule.core.fire_times` because it explains rather
than decides: it runs when a person types or reads a schedule, never on a tick,
and its output is words for people, read from the same engine that fires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from cronsim import CronSim

from sympozium_schedule.core.cron import compile_schedule, load_zone
from sympozium_schedule.core.fire_times import (
    CronSchedule,
    Schedule,
    fires_between,
    floor_second,
    require_aware,
    upcoming,
)

__all__ = [
    "PREVIEW_HORIZON",
    "DstNote",
    "Preview",
    "ZoneTransition",
    "dst_notes",
    "preview",
    "zone_transitions",
]

_SECOND = timedelta(seconds=1)

# No zone changes its offset twice within this span, so stepping by it finds every change.
_TRANSITION_STEP = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class ZoneTransition:
    at: datetime  # the first instant (UTC) with the new offset
    before: timedelta
    after: timedelta


def zone_transitions(zone: tzinfo, start: datetime, end: datetime) -> list[ZoneTransition]:
    """The UTC-offset changes of ``zone`` in ``(start, end]``, each to the second."""
    require_aware(start)
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
