"""The cron editor's helpers: fire times in a window, zone changes and the notes a
person reads about daylight saving, all anchored on fixed instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sympozium_schedule.core.cron import compile_schedule, load_zone
from sympozium_schedule.core.cron_preview import dst_notes, preview, zone_transitions
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.fire_times import fires_between

JAN = datetime(2026, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=366)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expression", "hours", "limit", "count", "truncated"), [
    pytest.param("0 * * * *", 24, 100, 24, False, id="hourly-for-a-day"),
    pytest.param("* * * * *", 24, 500, 500, True, id="every-minute-is-cut-at-the-limit"),
    pytest.param("0 0 1 1 *", 24, 10, 0, False, id="nothing-in-the-window"),
    pytest.param("@every 90m", 6, 10, 4, False, id="interval"),
])
def test_fires_between(expression: str, hours: int, limit: int, count: int, truncated: bool) -> None:
    compiled = compile_schedule(expression, time_zone="UTC", anchor=JAN)
    times, cut = fires_between(compiled, JAN, JAN + timedelta(hours=hours), limit=limit)
    assert (len(times), cut) == (count, truncated)
    assert all(JAN < t <= JAN + timedelta(hours=hours) for t in times)
    assert times == sorted(times)


def test_fires_between_includes_the_end_and_excludes_the_start() -> None:
    compiled = compile_schedule("0 * * * *", time_zone="UTC", anchor=JAN)
    times, _ = fires_between(compiled, JAN, JAN + timedelta(hours=2), limit=10)
    assert times == [utc("2026-01-01T01:00:00"), utc("2026-01-01T02:00:00")]


@pytest.mark.parametrize(("zone", "expected"), [
    pytest.param("America/New_York", [("2026-03-08T07:00:00", -5, -4), ("2026-11-01T06:00:00", -4, -5)],
                 id="new-york"),
    pytest.param("Europe/Warsaw", [("2026-03-29T01:00:00", 1, 2), ("2026-10-25T01:00:00", 2, 1)],
                 id="warsaw"),
    pytest.param("Asia/Tokyo", [], id="no-dst"),
    pytest.param("UTC", [], id="utc"),
])
def test_zone_transitions(zone: str, expected: list[tuple[str, int, int]]) -> None:
    found = zone_transitions(load_zone(zone), JAN, JAN + YEAR)
    assert [(t.at, t.before, t.after) for t in found] == [
        (utc(at), timedelta(hours=b), timedelta(hours=a)) for at, b, a in expected]


def test_zone_transitions_half_hour_zone() -> None:
    found = zone_transitions(load_zone("Australia/Lord_Howe"), JAN, JAN + YEAR)
    assert [t.after - t.before for t in found] == [timedelta(minutes=-30), timedelta(minutes=30)]


@pytest.mark.parametrize(("expression", "zone", "kinds", "matches", "fires", "says"), [
    pytest.param("30 2 * * *", "America/New_York", ["gap"], [("02:30",)],
                 [("2026-03-08T07:00:00",)], ["02:30 does not exist", "fires once at 03:00 instead"],
                 id="skipped-wall-time-fires-at-the-jump"),
    pytest.param("30 1 * * *", "America/New_York", ["repeat"], [("01:30",)],
                 [("2026-11-01T05:30:00",)], ["01:30 happens twice", "fires once (the first time)"],
                 id="repeated-wall-time-fires-once"),
    pytest.param("30 * * * *", "America/New_York", ["gap", "repeat"], [("02:30",), ("01:30",)],
                 [(), ("2026-11-01T05:30:00", "2026-11-01T06:30:00")],
                 ["those fires do not happen", "fires in both passes"],
                 id="wildcard-hour-skips-and-fires-twice"),
    pytest.param("0 2 * * *", "Europe/Warsaw", ["gap", "repeat"], [("02:00",), ("02:00",)],
                 [("2026-03-29T01:00:00",), ("2026-10-25T00:00:00",)],
                 ["jump from 02:00 to 03:00", "go back from 03:00 to 02:00"],
                 id="warsaw-2am-both-changes"),
    pytest.param("15 2 * * *", "Australia/Lord_Howe", ["gap"], [("02:15",)],
                 [("2026-10-03T15:30:00",)], ["jump from 02:00 to 02:30"],
                 id="half-hour-change"),
    pytest.param("0 9 * * *", "America/New_York", [], [], [], [], id="untouched-by-the-change"),
    pytest.param("0 2 * * *", "UTC", [], [], [], [], id="utc-has-no-changes"),
    pytest.param("@every 1h", "America/New_York", [], [], [], [], id="intervals-ignore-wall-clocks"),
])
def test_dst_notes(expression: str, zone: str, kinds: list[str], matches: list[tuple[str, ...]],
                   fires: list[tuple[str, ...]], says: list[str]) -> None:
    compiled = compile_schedule(expression, time_zone=zone, anchor=JAN)
    notes = dst_notes(compiled, JAN, JAN + YEAR, zone_name=zone)
    assert [n.kind for n in notes] == kinds
    assert [n.matches for n in notes] == matches
    assert [n.fires for n in notes] == [tuple(utc(f) for f in group) for group in fires]
    said = " | ".join(n.message for n in notes)
    for text in says:
        assert text in said
    assert all(zone in n.message for n in notes)


def test_dst_note_fires_agree_with_the_engine() -> None:
    """The note's fires are exactly what next_after yields around the change."""
    compiled = compile_schedule("*/20 1 * * *", time_zone="America/New_York", anchor=JAN)
    (note,) = dst_notes(compiled, utc("2026-10-01T00:00:00"), utc("2026-12-01T00:00:00"))
    walked, cursor = [], utc("2026-11-01T04:59:59")
    while (nxt := compiled.next_after(cursor)) is not None and nxt < utc("2026-11-01T07:00:00"):
        walked.append(nxt)
        cursor = nxt
    assert list(note.fires) == walked
    assert len(walked) == 6  # three local times, both passes


def test_preview_lists_times_and_notes() -> None:
    result = preview("30 2 * * *", time_zone="America/New_York", after=JAN, count=3)
    assert result.times == (utc("2026-01-01T07:30:00"), utc("2026-01-02T07:30:00"),
                            utc("2026-01-03T07:30:00"))
    assert [n.kind for n in result.notes] == ["gap"]


@pytest.mark.parametrize(("expression", "zone", "message"), [
    pytest.param("61 * * * *", "UTC", "spec.schedule: '61 * * * *': not a valid cron expression",
                 id="bad-minute"),
    pytest.param("* * *", "UTC", "this one has 3", id="too-few-fields"),
    pytest.param("0 9 * * *", "Mars/Olympus", "spec.timeZone: 'Mars/Olympus': unknown time zone",
                 id="bad-zone"),
    pytest.param("@every 1h", "Nowhere/None", "spec.timeZone", id="bad-zone-for-every"),
])
def test_preview_errors_are_the_apply_messages(expression: str, zone: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        preview(expression, time_zone=zone, after=JAN, count=3)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
