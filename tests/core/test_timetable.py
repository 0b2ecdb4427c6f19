"""The compiled timetable: several specs merged, bounds, exclusions and jitter, queried on
fixed instants."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import ScheduleSpec
from sympozium_schedule.core.timetable import Timetable, compile_timetable
from tests.core.helpers import at, utc

MON = utc(2026, 3, 2)  # a Monday
BASE = {"instanceRef": "alice", "schedule": "0 9 * * 1-5", "task": "t"}


def table(seed: str = "uid-1", **spec: Any) -> Timetable:
    return compile_timetable(ScheduleSpec.parse(BASE | spec), anchor=MON, seed=seed)


def ticks(t: Timetable, after: datetime, until: datetime) -> list[datetime]:
    return list(t.between(after, until))


# --- several specs ------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param({}, [utc(2026, 3, d, 9) for d in (2, 3, 4, 5, 6)], id="one-spec"),
    pytest.param({"schedules": [{"schedule": "0 12 * * 6"}]},
                 [utc(2026, 3, d, 9) for d in (2, 3, 4, 5, 6)] + [utc(2026, 3, 7, 12)],
                 id="weekdays-and-saturday-noon"),
    pytest.param({"schedules": [{"schedule": "0 9 * * *"}]},
                 [utc(2026, 3, d, 9) for d in range(2, 9)], id="coinciding-ticks-fire-once"),
    pytest.param({"schedules": [{"schedule": "0 9 * * 1", "timeZone": "America/New_York"}]},
                 [utc(2026, 3, 2, 9), utc(2026, 3, 2, 14)]
                 + [utc(2026, 3, d, 9) for d in (3, 4, 5, 6)],
                 id="an-entry-in-its-own-zone"),
    pytest.param({"timeZone": "Europe/Berlin", "schedules": [{"schedule": "30 17 * * 5"}]},
                 [utc(2026, 3, d, 8) for d in (2, 3, 4, 5, 6)] + [utc(2026, 3, 6, 16, 30)],
                 id="an-entry-takes-the-spec-zone"),
])
def test_specs_merge_into_one_stream(spec: dict[str, Any], expected: list[datetime]) -> None:
    assert ticks(table(**spec), MON, MON + timedelta(days=7)) == expected


def test_latest_at_or_before_merges_too() -> None:
    t = table(schedules=[{"schedule": "0 12 * * 6"}])
    assert t.latest_at_or_before(utc(2026, 3, 8, 8)) == utc(2026, 3, 7, 12)
    assert t.latest_at_or_before(utc(2026, 3, 6, 9)) == utc(2026, 3, 6, 9)


# --- bounds -------------------------------------------------------------------------------


def test_start_and_end_bound_the_stream() -> None:
    t = table(startTime="2026-03-03T12:00:00Z", endTime="2026-03-05T09:00:00Z")
    assert ticks(t, MON - timedelta(days=7), MON + timedelta(days=7)) == [
        utc(2026, 3, 4, 9), utc(2026, 3, 5, 9)]  # the end is included
    assert t.next_after(MON) == utc(2026, 3, 4, 9)
    assert t.next_after(utc(2026, 3, 5, 9)) is None
    assert t.latest_at_or_before(utc(2026, 3, 20)) == utc(2026, 3, 5, 9)
    assert t.latest_at_or_before(utc(2026, 3, 3, 23)) is None
    assert t.within(utc(2026, 3, 4, 9))
    assert not t.within(utc(2026, 3, 3, 9))


@pytest.mark.parametrize(("spec", "field", "fragment"), [
    pytest.param({"startTime": "2026-03-03T12:00:00Z", "endTime": "2026-03-03T12:00:00Z"},
                 "spec.endTime", "must be after startTime", id="end-not-after-start"),
    pytest.param({"startTime": "next monday"}, "spec.startTime", "RFC 3339", id="start-not-a-time"),
    pytest.param({"endTime": "2026-03-03T12:00:00"}, "spec.endTime", "with an offset",
                 id="end-without-offset"),
])
def test_bad_bounds_name_the_field(spec: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        table(**spec)
    assert err.value.field == field
    assert fragment in str(err.value)


# --- exclusions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "excluded"), [
    pytest.param({"schedule": "* * 4 3 *"}, [utc(2026, 3, 4, 9)], id="cron-a-whole-day"),
    pytest.param({"schedule": "0 9 * * 3"}, [utc(2026, 3, 4, 9)], id="cron-one-minute"),
    pytest.param({"schedule": "30 9 * * *"}, [], id="cron-another-minute"),
    pytest.param({"start": "2026-03-03", "end": "2026-03-05"},
                 [utc(2026, 3, d, 9) for d in (3, 4, 5)], id="dates-end-day-included"),
    pytest.param({"start": "2026-03-03T09:00:00Z", "end": "2026-03-05T09:00:00Z"},
                 [utc(2026, 3, 3, 9), utc(2026, 3, 4, 9)], id="times-end-excluded"),
    # 4 March in Honolulu is 10:00 UTC on the 4th to 10:00 UTC on the 5th.
    pytest.param({"start": "2026-03-04", "end": "2026-03-04", "timeZone": "Pacific/Honolulu"},
                 [utc(2026, 3, 5, 9)], id="a-day-in-the-entry-zone"),
    pytest.param({"start": "2026-03-04", "end": "2026-03-04"}, [utc(2026, 3, 4, 9)],
                 id="a-day-in-the-spec-zone"),
])
def test_exclusions(entry: dict[str, Any], excluded: list[datetime]) -> None:
    t = table(exclude=[entry])
    week = ticks(t, MON - timedelta(seconds=1), MON + timedelta(days=7))
    assert len(week) == 5  # excluded ticks stay in the stream: they are recorded as skipped
    assert [tick for tick in week if t.excluded_by(tick) is not None] == excluded


def test_an_exclusion_says_which_rule_matched() -> None:
    t = table(exclude=[{"schedule": "* * * * 6,0"}, {"start": "2026-03-04", "end": "2026-03-04"}])
    found = t.excluded_by(utc(2026, 3, 4, 9))
    assert found is not None
    assert found.text == "2026-03-04..2026-03-04"


@pytest.mark.parametrize(("entry", "field", "fragment"), [
    pytest.param({"schedule": "* * 25 12 *", "start": "2026-12-24", "end": "2026-12-26"},
                 "spec.exclude[0]", "not both", id="both-forms"),
    pytest.param({"start": "2026-12-24"}, "spec.exclude[0]", "both start and end",
                 id="start-without-end"),
    pytest.param({}, "spec.exclude[0]", "needs a schedule", id="empty"),
    pytest.param({"schedule": "@every 1h"}, "spec.exclude[0].schedule", "not @every",
                 id="every-cannot-exclude"),
    pytest.param({"schedule": "61 * * * *"}, "spec.exclude[0].schedule", "61",
                 id="bad-cron"),
    pytest.param({"start": "2026-12-26", "end": "2026-12-24"}, "spec.exclude[0].end",
                 "after start", id="reversed"),
    pytest.param({"start": "2026-02-30", "end": "2026-03-01"}, "spec.exclude[0].start",
                 "RFC 3339", id="no-such-date"),
    pytest.param({"schedule": "0 * * * *", "timeZone": "Mars/Olympus"},
                 "spec.exclude[0].timeZone", "unknown time zone", id="bad-zone"),
])
def test_bad_exclusions_name_the_entry(entry: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        table(exclude=[entry])
    assert err.value.field == field
    assert fragment in str(err.value)


def test_a_bad_entry_in_schedules_names_it() -> None:
    with pytest.raises(SpecError) as err:
        table(schedules=[{"schedule": "0 12 * * 6"}, {"schedule": "0 25 * * *"}])
    assert err.value.field == "spec.schedules[1].schedule"
    assert err.value.reason == "InvalidSchedule"


# --- jitter -------------------------------------------------------------------------------


def test_jitter_is_a_pure_function_of_schedule_and_tick() -> None:
    a, b = table(jitter="30s"), table(jitter="30s")
    tick = utc(2026, 3, 3, 9)
    assert a.delay(tick) == b.delay(tick)  # a restart, a second replica
    assert timedelta(0) <= a.delay(tick) < timedelta(seconds=30)
    assert a.fire_time(tick) == tick + a.delay(tick)
    assert table(jitter="30s", seed="uid-2").delay(tick) != a.delay(tick)
    assert len({a.delay(t) for t in ticks(a, MON, MON + timedelta(days=30))}) > 15


def test_no_jitter_means_no_delay() -> None:
    t = table()
    assert t.fire_time(utc(2026, 3, 3, 9)) == utc(2026, 3, 3, 9)


def test_jitter_spreads_a_herd_of_schedules_over_the_window() -> None:
    """10,000 schedules at the same tick with jitter 30s: about 333 a second, none crowded."""
    tick = utc(2026, 3, 3, 9)
    seconds = Counter(int(table(jitter="30s", seed=f"uid-{i}").delay(tick).total_seconds())
                      for i in range(10_000))
    assert set(seconds) == set(range(30))
    assert max(seconds.values()) < 2 * 10_000 / 30


@pytest.mark.parametrize(("spec", "fragment"), [
    pytest.param({"schedule": "*/5 * * * *", "jitter": "5m"}, "shorter than", id="as-long-as-gap"),
    pytest.param({"schedule": "0 9,10 * * *", "jitter": "61m"}, "at most 1h", id="over-an-hour"),
    pytest.param({"schedule": "@every 1m", "jitter": "2m"}, "(1m)", id="longer-than-every"),
    pytest.param({"schedule": "0 * * * *", "jitter": "90s",
                  "schedules": [{"schedule": "0,1 * * * *"}]}, "(1m)", id="gap-of-the-merge"),
])
def test_jitter_too_long(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        table(**spec)
    assert err.value.field == "spec.jitter"
    assert fragment in str(err.value)


@pytest.mark.parametrize("text", ["30", "1d", "-5s", " 5s", "5 s", ""])
def test_jitter_must_be_a_duration(text: str) -> None:
    with pytest.raises(SpecError) as err:
        ScheduleSpec.parse(BASE | {"jitter": text})
    assert err.value.field == "spec.jitter"


def test_dst_spring_forward_tick_is_jittered_like_any_other() -> None:
    t = table(schedule="30 2 * * *", timeZone="America/New_York", jitter="10m")
    tick = t.next_after(at("2026-03-08T00:00:00-05:00"))
    assert tick == at("2026-03-08T03:00:00-04:00")  # the skipped 02:30 fires at the jump
    assert tick < t.fire_time(tick) < tick + timedelta(minutes=10)
