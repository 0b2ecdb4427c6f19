"""Richer schedules decided by the core on virtual time: jitter, a time window, maxRuns,
several specs with exclusions, buffered overlap, pause notes and pauseOnFailure; and
Sympozium's own schedules deciding exactly as they did before these fields existed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from sympozium_schedule.core import backfill
from sympozium_schedule.core.decide import (
    PAUSED_BY,
    Decision,
    Outcome,
    SkipReason,
)
from sympozium_schedule.core.manual import TriggerRefused
from sympozium_schedule.core.model import ANNOTATION_BACKFILL, format_time
from sympozium_schedule.core.naming import run_name
from sympozium_schedule.core.policy import BUFFER_ALL_LIMIT
from tests.core import sympozium_compat
from tests.core.world import REMOVE, T0, H, World, condition, fired

M = timedelta(minutes=1)


def running(world: World, now: datetime) -> str:
    """Step at ``now``; the decision must fire; its run stays unfinished. Returns its name."""
    d = world.step(now)
    assert d.outcome is Outcome.FIRED, (d.outcome, world.status)
    assert d.create is not None
    return str(d.create["metadata"]["name"])


# --- Sympozium's schedules keep their meaning ----------------------------------------------


def test_sympozium_schedules_decide_exactly_as_before() -> None:
    """Every decision of a simulated fortnight (fires, skips, a suspend, an edit, a gap)
    for each Sympozium sample under each of its policies, against the recording made
    before the richer fields existed (tests/core/sympozium_compat.py)."""
    before = json.loads(sympozium_compat.DATA.read_text())
    now = sympozium_compat.record()
    assert set(now) == set(before)
    for case, records in before.items():
        assert len(now[case]) == len(records), case
        for old, new in zip(records, now[case], strict=True):
            assert new == old, f"{case}: at {old[0]} the decision differs"


# --- jitter -------------------------------------------------------------------------------


def test_jitter_delays_the_fire_but_the_run_keeps_its_tick() -> None:
    world = World.new(created=T0 - 10 * M, firstTick="afterInterval", jitter="30s")
    d = world.step(T0 - 10 * M)
    planned = d.wake_at
    assert planned is not None
    assert T0 <= planned < T0 + timedelta(seconds=30)
    assert world.status["nextRunTime"] == format_time(T0)
    assert world.status["nextFireTime"] == format_time(planned)
    if planned > T0:
        assert world.step(T0).outcome is Outcome.IDLE  # the tick came, its delay has not passed
    d = world.step(planned)
    assert (d.outcome, d.tick, d.planned) == (Outcome.FIRED, T0, planned)
    assert d.create is not None
    assert d.create["metadata"]["name"] == run_name("hb", T0)
    assert d.create["metadata"]["annotations"]["sympozium.ai/scheduled-time"] == format_time(T0)
    assert world.status["lastRunTime"] == format_time(T0)
    assert d.wake_at is not None
    assert T0 + H <= d.wake_at < T0 + H + timedelta(seconds=30)


def test_jitter_is_the_same_after_a_restart_and_on_another_replica() -> None:
    a = World.new(created=T0 - 10 * M, firstTick="afterInterval", jitter="5m")
    b = World.new(created=T0 - 10 * M, firstTick="afterInterval", jitter="5m")
    assert a.step(T0 - 10 * M).wake_at == b.step(T0 - 9 * M).wake_at


def test_no_jitter_writes_no_fire_time() -> None:
    world = World.new()
    world.step(T0)
    assert "nextFireTime" not in world.status


def test_a_late_jittered_tick_counts_its_deadline_from_the_planned_fire() -> None:
    world = World.new(created=T0 - 10 * M, firstTick="afterInterval", jitter="40s",
                      startingDeadlineSeconds=5)
    planned = world.step(T0 - 10 * M).wake_at
    assert planned is not None
    assert world.step(planned + timedelta(seconds=4)).outcome is Outcome.FIRED


# --- a time window and a run limit ----------------------------------------------------------


@pytest.mark.parametrize(("spec", "first"), [
    pytest.param({}, T0 + 2 * H + 30 * M, id="immediate-runs-at-start"),
    pytest.param({"firstTick": "afterInterval"}, T0 + 3 * H, id="after-interval-first-tick"),
])
def test_start_time_holds_fires_back(spec: dict[str, Any], first: datetime) -> None:
    world = World.new(startTime=format_time(T0 + 2 * H + 30 * M), **spec)
    d = world.step(T0)
    assert (d.outcome, d.wake_at) == (Outcome.IDLE, first)
    assert world.status["nextRunTime"] == format_time(first)
    assert world.step(first).outcome is Outcome.FIRED


def test_end_time_completes_the_schedule_after_its_last_tick() -> None:
    world = World.new(endTime=format_time(T0 + 2 * H))
    fired(world, T0)
    fired(world, T0 + H)
    d = world.step(T0 + 2 * H)
    assert (d.outcome, d.tick, d.wake_at) == (Outcome.FIRED, T0 + 2 * H, None)
    assert world.status["phase"] == "Completed"
    assert "nextRunTime" not in world.status
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "EndTimeReached")
    assert ("Normal", "EndTimeReached") in [(n.type, n.reason) for n in d.notes]
    d = world.step(T0 + 5 * H)
    assert (d.outcome, d.create) == (Outcome.COMPLETED, None)
    assert len(world.runs) == 3  # nothing deleted


def test_an_end_time_already_passed_fires_nothing() -> None:
    world = World.new(created=T0, endTime=format_time(T0 - H))
    d = world.step(T0)
    assert (d.outcome, d.create) == (Outcome.COMPLETED, None)
    assert world.status["phase"] == "Completed"


def test_max_runs_counts_down_then_completes_and_deletes_nothing() -> None:
    world = World.new(maxRuns=3)
    for k, remaining in enumerate((2, 1, 0)):
        fired(world, T0 + k * H)
        assert world.status["remainingRuns"] == remaining
        assert world.status["scheduledRuns"] == 3 - remaining
    assert world.status["phase"] == "Completed"
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "MaxRunsReached")
    for k in range(3, 6):
        d = world.step(T0 + k * H)
        assert (d.outcome, d.create, d.wake_at) == (Outcome.COMPLETED, None, None)
    assert len(world.runs) == 3


def test_manual_runs_do_not_count_towards_max_runs() -> None:
    world = World.new(maxRuns=2)
    fired(world, T0)
    world.trigger(T0 + 10 * M)
    assert world.status["remainingRuns"] == 1
    world.set_phase(world.status["lastRunName"], "Succeeded")
    fired(world, T0 + H)
    assert world.status["phase"] == "Completed"


def test_raising_max_runs_resumes_a_completed_schedule() -> None:
    world = World.new(maxRuns=1)
    fired(world, T0)
    assert world.status["phase"] == "Completed"
    world.edit(maxRuns=3)
    d = world.step(T0 + 1.5 * H)
    assert d.outcome is Outcome.IDLE  # no replay of the 11:00 tick slept through
    assert world.status["phase"] == "Active"
    assert world.status["remainingRuns"] == 2
    fired(world, T0 + 2 * H)


def test_removing_max_runs_removes_the_count() -> None:
    world = World.new(maxRuns=5)
    fired(world, T0)
    world.edit(maxRuns=REMOVE)
    world.step(T0 + 0.5 * H)
    assert "scheduledRuns" not in world.status
    assert "remainingRuns" not in world.status


# --- several specs and exclusions ---------------------------------------------------------


def test_several_specs_fire_as_one_stream() -> None:
    world = World.new(schedule="0 10 * * *", schedules=[{"schedule": "30 10 * * *"},
                                                        {"schedule": "0 10 * * 1"}])
    fired(world, T0)  # both 10:00 specs coincide on Monday: one run
    d = world.step(T0 + 30 * M)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 30 * M)
    assert d.wake_at == T0 + 24 * H
    assert len(world.runs) == 2


def test_an_excluded_tick_is_recorded_as_skipped() -> None:
    world = World.new(exclude=[{"schedule": "0 11 * * *"}])
    fired(world, T0)
    d = world.step(T0 + H)
    assert (d.outcome, d.skip_reason, d.tick, d.create) == (
        Outcome.SKIPPED, SkipReason.EXCLUDED, T0 + H, None)
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    assert (skipped["status"], skipped["reason"]) == ("True", "Excluded")
    assert "spec.exclude (0 11 * * *)" in skipped["message"]
    assert [(n.type, n.reason) for n in d.notes] == [("Normal", "TickSkipped")]
    assert world.status["lastScheduleTime"] == format_time(T0 + H)
    fired(world, T0 + 2 * H)


def test_a_holiday_range_skips_each_of_its_ticks() -> None:
    world = World.new(schedule="0 9 * * *", created=T0 - 2 * H, firstTick="afterInterval",
                      exclude=[{"start": "2026-03-03", "end": "2026-03-04"}])
    outcomes = []
    for day in range(0, 4):
        d = world.step(T0 - H + day * 24 * H)
        outcomes.append((d.outcome, d.skip_reason))
        if d.create is not None:
            world.set_phase(d.create["metadata"]["name"], "Succeeded")
    assert outcomes == [(Outcome.FIRED, None), (Outcome.SKIPPED, SkipReason.EXCLUDED),
                        (Outcome.SKIPPED, SkipReason.EXCLUDED), (Outcome.FIRED, None)]


# --- buffered overlap ---------------------------------------------------------------------


def test_buffer_one_starts_the_waiting_tick_when_the_run_finishes() -> None:
    world = World.new(concurrencyPolicy="BufferOne")
    first = running(world, T0)
    d = world.step(T0 + H)
    assert (d.outcome, d.tick, d.create) == (Outcome.BUFFERED, T0 + H, None)
    assert world.status["buffered"] == [format_time(T0 + H)]
    assert [(n.reason) for n in d.notes] == ["TickBuffered"]
    d = world.step(T0 + 2 * H)  # one waits already: this one is skipped
    assert (d.outcome, d.skip_reason) == (Outcome.SKIPPED, SkipReason.BUFFER_FULL)
    assert world.status["buffered"] == [format_time(T0 + H)]
    world.set_phase(first, "Succeeded")
    d = world.step(T0 + 2 * H + 20 * M)  # the run finished: the informer wakes the schedule
    assert (d.outcome, d.tick, d.planned) == (Outcome.FIRED, T0 + H, T0 + 2 * H + 20 * M)
    assert d.create is not None
    assert d.create["metadata"]["name"] == run_name("hb", T0 + H)
    assert d.create["metadata"]["annotations"]["sympozium.ai/scheduled-time"] == format_time(T0 + H)
    assert "buffered" not in world.status
    assert world.status["lastScheduleTime"] == format_time(T0 + 2 * H)  # the cursor stays
    assert d.wake_at == T0 + 3 * H


def test_buffer_all_keeps_every_tick_in_order_up_to_its_limit() -> None:
    world = World.new(concurrencyPolicy="BufferAll", schedule="* * * * *", created=T0)
    current = running(world, T0)
    for k in range(1, BUFFER_ALL_LIMIT + 1):
        assert world.step(T0 + k * M).outcome is Outcome.BUFFERED
    d = world.step(T0 + (BUFFER_ALL_LIMIT + 1) * M)
    assert (d.outcome, d.skip_reason) == (Outcome.SKIPPED, SkipReason.BUFFER_FULL)
    assert [n.type for n in d.notes] == ["Warning"]
    started = []
    now = T0 + (BUFFER_ALL_LIMIT + 1) * M + timedelta(seconds=30)
    for _ in range(3):
        world.set_phase(current, "Succeeded")
        d = world.step(now)
        assert d.outcome is Outcome.FIRED
        assert d.tick is not None
        started.append(d.tick)
        current = str(d.create["metadata"]["name"]) if d.create else ""
    assert started == [T0 + M, T0 + 2 * M, T0 + 3 * M]
    assert len(world.status["buffered"]) == BUFFER_ALL_LIMIT - 3


def test_buffered_ticks_survive_a_restart() -> None:
    world = World.new(concurrencyPolicy="BufferOne")
    first = running(world, T0)
    world.step(T0 + H)
    restarted = World(world.obj, runs=world.runs)  # only what the store holds
    restarted.set_phase(first, "Failed")
    d = restarted.step(T0 + H + 5 * M)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + H)


def test_a_buffered_tick_too_late_for_the_deadline_is_skipped() -> None:
    world = World.new(concurrencyPolicy="BufferAll", startingDeadlineSeconds=600)
    first = running(world, T0)
    world.step(T0 + H)
    world.set_phase(first, "Succeeded")
    d = world.step(T0 + H + 20 * M)
    assert (d.outcome, d.skip_reason, d.tick, d.create) == (
        Outcome.SKIPPED, SkipReason.DEADLINE, T0 + H, None)
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    assert skipped["reason"] == "MissedStartingDeadline"
    assert "buffered" not in world.status


@pytest.mark.parametrize("change", [
    pytest.param({"task": "Something else."}, id="an-edit"),
    pytest.param({"suspend": True}, id="a-suspend"),
])
def test_an_edit_or_a_suspend_drops_the_waiting_ticks(change: dict[str, Any]) -> None:
    world = World.new(concurrencyPolicy="BufferOne")
    first = running(world, T0)
    world.step(T0 + H)
    world.edit(**change)
    world.set_phase(first, "Succeeded")
    d = world.step(T0 + H + 5 * M)
    assert d.create is None
    assert "buffered" not in world.status


def test_a_manual_trigger_is_not_buffered() -> None:
    world = World.new(concurrencyPolicy="BufferOne")
    running(world, T0)
    with pytest.raises(TriggerRefused, match="does not buffer manual runs"):
        world.trigger(T0 + 10 * M)


# --- pause notes and pauseOnFailure -------------------------------------------------------


def test_a_suspend_note_says_who_and_why() -> None:
    world = World.new()
    fired(world, T0)
    world.edit(suspend=True, suspendedBy="alice@laptop", suspendReason="database migration")
    d = world.step(T0 + 0.5 * H)
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert ready["message"] == "suspended by alice@laptop: database migration"
    assert [(n.reason, n.message) for n in d.notes] == [("Suspended", ready["message"])]


def test_pause_on_failure_suspends_naming_the_failed_run() -> None:
    world = World.new(pauseOnFailure=True)
    name = running(world, T0)
    world.runs[name]["status"] = {"phase": "Failed", "error": "the model timed out"}
    d = world.step(T0 + 20 * M)
    assert d.outcome is Outcome.PAUSED
    assert d.suspend is not None
    assert d.suspend.by == PAUSED_BY
    assert d.suspend.reason == f"AgentRun {name} failed: the model timed out"
    assert [(n.type, n.reason) for n in d.notes] == [("Warning", "PausedOnFailure")]
    assert d.create is None
    # The runtime writes the suspension into the spec; then the schedule is Suspended.
    world.edit(suspend=True, suspendedBy=d.suspend.by, suspendReason=d.suspend.reason)
    assert world.step(T0 + H).outcome is Outcome.SUSPENDED
    assert world.status["lastFailedRun"] == name
    # Resumed, the same failure does not pause it again; a new one does.
    world.edit(suspend=False, suspendedBy=REMOVE, suspendReason=REMOVE)
    assert world.step(T0 + 1.5 * H).outcome is Outcome.IDLE
    second = running(world, T0 + 2 * H)
    world.set_phase(second, "Failed")
    d = world.step(T0 + 2 * H + 5 * M)
    assert d.suspend is not None
    assert second in d.suspend.reason


def test_pause_on_failure_wins_over_a_tick_due_at_the_same_time() -> None:
    world = World.new(pauseOnFailure=True)
    name = running(world, T0)
    world.set_phase(name, "Failed")
    d = world.step(T0 + H)
    assert (d.outcome, d.create) == (Outcome.PAUSED, None)


def test_failures_from_before_turning_it_on_do_not_pause() -> None:
    world = World.new()
    name = running(world, T0)
    world.set_phase(name, "Failed")
    world.step(T0 + 10 * M)
    world.edit(pauseOnFailure=True)
    d = world.step(T0 + 20 * M)
    assert d.outcome is Outcome.IDLE
    assert world.status["lastFailedRun"] == name


def test_a_succeeded_run_never_pauses() -> None:
    world = World.new(pauseOnFailure=True)
    fired(world, T0)
    assert world.step(T0 + H).outcome is Outcome.FIRED


# --- backfill -----------------------------------------------------------------------------


def ask_backfill(world: World, **request: Any) -> None:
    world.obj["metadata"].setdefault("annotations", {})[ANNOTATION_BACKFILL] = json.dumps(request)


def drain(world: World, now: datetime, *, finish: str | None = "Succeeded",
          limit: int = 100) -> list[Decision]:
    """Step the world at each wake-up it asks for within a minute (a backfill's pace),
    finishing each run at once unless ``finish`` is None."""
    taken = []
    for _ in range(limit):
        d = world.step(now)
        taken.append(d)
        if d.create is not None and finish is not None:
            world.set_phase(d.create["metadata"]["name"], finish)
        if d.wake_at is None or d.wake_at > now + M:
            break
        now = max(d.wake_at, now)
    return taken


def test_backfill_creates_the_runs_of_past_ticks_at_a_pace() -> None:
    world = World.new(created=T0 - 24 * H, firstTick="afterInterval")
    world.step(T0 - 24 * H)
    ask_backfill(world, **{"from": format_time(T0 - 5 * H), "to": format_time(T0 - 2 * H)})
    steps = drain(world, T0 - 30 * M)
    assert steps[0].outcome is Outcome.FIRED  # the schedule's own catch-up tick goes first
    made = [d for d in steps if d.outcome is Outcome.BACKFILLED]
    assert [d.tick for d in made] == [T0 - k * H for k in (5, 4, 3, 2)]
    for d in made:
        assert d.create is not None
        assert d.create["metadata"]["name"] == run_name("hb", d.tick)
        assert d.create["metadata"]["annotations"]["sympozium.ai/trigger"] == "backfill"
    wakes = [d.wake_at for d in made]
    assert wakes[:-1] == [d.wake_at for d in made[:-1]]
    progress = world.status["backfill"]
    assert (progress["state"], progress["created"], progress["existing"], progress["skipped"]) == (
        "Completed", 4, 0, 0)
    reasons = [n.reason for d in steps for n in d.notes]
    assert reasons.count("BackfillStarted") == 1
    assert reasons[-1] == "BackfillCompleted"
    assert world.status["totalRuns"] == 5
    # A backfill does not move the schedule's own tick history.
    assert world.status["lastRunName"] == run_name("hb", T0 - H)


def test_a_backfill_never_doubles_a_tick_that_ran() -> None:
    world = World.new()
    fired(world, T0)
    fired(world, T0 + H)
    ask_backfill(world, **{"from": format_time(T0 - H), "to": format_time(T0 + H)})
    made = [d.tick for d in drain(world, T0 + 1.5 * H) if d.outcome is Outcome.BACKFILLED]
    assert made == [T0 - H]
    assert world.status["backfill"]["existing"] == 2


def test_a_backfill_is_cut_at_now_and_skips_excluded_ticks() -> None:
    world = World.new(created=T0 - 10 * H, firstTick="afterInterval",
                      exclude=[{"schedule": "0 8 * * *"}])
    world.step(T0 - 10 * H)
    ask_backfill(world, **{"from": format_time(T0 - 3 * H), "to": format_time(T0 + 30 * H)})
    steps = drain(world, T0 - 30 * M)
    assert steps[0].tick == T0 - H  # the schedule's own catch-up run of 09:00
    made = [d.tick for d in steps if d.outcome is Outcome.BACKFILLED]
    assert made == [T0 - 3 * H]  # 08:00 excluded, 09:00 already ran; nothing after now
    progress = world.status["backfill"]
    assert progress["to"] == format_time(T0 - 30 * M)
    assert (progress["created"], progress["existing"], progress["skipped"]) == (1, 1, 1)


@pytest.mark.parametrize(("overlap", "expected"), [
    pytest.param("Allow", 3, id="allow-creates-alongside"),
    pytest.param("Forbid", 0, id="forbid-skips-while-a-run-is-unfinished"),
    pytest.param("BufferAll", 0, id="buffer-waits-for-the-run"),
])
def test_backfill_overlap(overlap: str, expected: int) -> None:
    world = World.new(created=T0, schedule="0 10 * * *")
    first = running(world, T0)
    day = 24 * H
    ask_backfill(world, **{"from": format_time(T0 - 3 * day), "to": format_time(T0 - day),
                           "overlap": overlap})
    steps = drain(world, T0 + 5 * M, finish=None)
    assert len([d for d in steps if d.outcome is Outcome.BACKFILLED]) == expected
    if overlap == "BufferAll":
        assert world.status["backfill"]["state"] == "Running"
        assert steps[-1].wake_at == T0 + day  # nothing timed: the run's end wakes it
        world.set_phase(first, "Succeeded")
        d = world.step(T0 + 10 * M)
        assert (d.outcome, d.tick) == (Outcome.BACKFILLED, T0 - 3 * day)


def test_backfill_runs_do_not_count_towards_max_runs() -> None:
    world = World.new(maxRuns=2)
    fired(world, T0)
    ask_backfill(world, **{"from": format_time(T0 - 5 * H), "to": format_time(T0 - H)})
    drain(world, T0 + 10 * M)
    assert world.status["remainingRuns"] == 1
    fired(world, T0 + H)
    assert world.status["phase"] == "Completed"


@pytest.mark.parametrize(("text", "fragment"), [
    pytest.param("next week", "not JSON", id="not-json"),
    pytest.param('{"from": "2026-03-02T10:00:00Z"}', "RFC 3339", id="no-to"),
    pytest.param('{"from": "2026-03-02T10:00:00Z", "to": "2026-03-01T10:00:00Z"}',
                 "must be after", id="reversed"),
    pytest.param('{"from": "2026-03-01T10:00:00Z", "to": "2026-03-02T10:00:00Z", "overlap": "Wait"}',
                 "overlap", id="bad-overlap"),
    pytest.param('{"from": "2026-03-01T10:00:00Z", "to": "2026-03-02T10:00:00Z", "speed": 3}',
                 "unknown field", id="unknown-field"),
])
def test_a_bad_backfill_request_says_why_and_creates_nothing(text: str, fragment: str) -> None:
    world = World.new()
    fired(world, T0)
    world.obj["metadata"]["annotations"] = {ANNOTATION_BACKFILL: text}
    d = world.step(T0 + 10 * M)
    assert (d.outcome, d.create) == (Outcome.IDLE, None)
    assert world.status["backfill"]["state"] == "Invalid"
    assert fragment in world.status["backfill"]["message"]
    assert [(n.type, n.reason) for n in d.notes] == [("Warning", "BackfillInvalid")]
    assert world.step(T0 + 20 * M).notes == ()  # said once


def test_removing_the_annotation_cancels_a_running_backfill() -> None:
    world = World.new(created=T0 - 24 * H, firstTick="afterInterval")
    world.step(T0 - 24 * H)
    ask_backfill(world, **{"from": format_time(T0 - 20 * H), "to": format_time(T0 - H),
                           "overlap": "Allow"})
    world.step(T0 - 30 * M)
    world.step(T0 - 29 * M)
    del world.obj["metadata"]["annotations"][ANNOTATION_BACKFILL]
    d = world.step(T0 - 28 * M)
    assert d.create is None
    assert world.status["backfill"]["state"] == "Cancelled"


def test_a_year_of_minutely_ticks_is_taken_in_bounded_steps() -> None:
    """Every tick of a year excluded: each step looks at no more than SCAN ticks and asks
    to be woken again, so no decision ever walks the whole range at once."""
    year = 365 * 24 * H
    world = World.new(schedule="* * * * *", created=T0 - year, firstTick="afterInterval",
                      exclude=[{"schedule": "* * * * *"}])
    world.obj["status"] = {"lastScheduleTime": format_time(T0), "observedGeneration": 1}
    ask_backfill(world, **{"from": format_time(T0 - year), "to": format_time(T0)})
    d = world.step(T0 + timedelta(seconds=1))
    assert world.status["backfill"]["skipped"] == backfill.SCAN
    assert d.wake_at == T0 + timedelta(seconds=1) + backfill.PACE
