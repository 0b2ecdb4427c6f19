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

This module is the one door from text to a schedule, so every caller gets the
same checks and the same messages. What a compiled schedule answers lives in
:mod:`~sympozium_schedule.core.fire_times`; what an editor shows a person, in
:mod:`~sympozium_schedule.core.cron_preview`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.fire_times import (
    CronSchedule,
    IntervalSchedule,
    Schedule,
    floor_second,
    require_aware,
)

__all__ = ["MACROS", "MAX_INTERVAL_SECONDS", "compile_schedule", "load_zone", "parse_duration"]

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
    require_aware(anchor)
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

