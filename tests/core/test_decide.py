"""The fire decision on virtual time (tests/core/world.py: a schedule changed the way the
runtime changes it). Nothing sleeps; ``now`` is an argument."""

from __future__ import annotations

import copy
import random
from datetime import datetime, timedelta
from typing import Any

import pytest

from sympozium_schedule.core.cron import compile_schedule
from sympozium_schedule.core.decide import (
    Decision,
    Note,
    Outcome,
    SkipReason,
    reconcile,
)
from sympozium_schedule.core.fire_times import upcoming
from sympozium_schedule.core.manual import TriggerRefused, tick_failed
from sympozium_schedule.core.model import (
    UNFINISHED_PHASES,
    RunView,
    ScheduleView,
    format_time,
)
from sympozium_schedule.core.naming import run_name
from tests.core.helpers import NAMESPACE, instance, load_sample, schedule, schedule_status_errors, utc
from tests.core.world import REMOVE, T0, H, World, condition, fired, ref

# --- the first tick ---------------------------------------------------------------------

C = T0 + timedelta(minutes=7, seconds=30)  # created between ticks


@pytest.mark.parametrize(
    ("spec", "created", "now", "tick", "next_run"),
    [
        pytest.param({}, C, C, C, T0 + H, id="immediate-fires-at-creation"),
        pytest.param({}, C, C + timedelta(seconds=3), C, T0 + H,
                     id="immediate-seen-a-moment-later-still-the-creation-tick"),
        pytest.param({}, C, T0 + 2.5 * H, T0 + 2 * H, T0 + 3 * H,
                     id="immediate-seen-hours-later-fires-the-latest-tick-once"),
        pytest.param({}, T0, T0, T0, T0 + H, id="immediate-created-on-a-tick"),
        pytest.param({"schedule": "@every 30m"}, C, C, C, C + timedelta(minutes=30),
                     id="immediate-every"),
        pytest.param({"firstTick": "afterInterval"}, C, C, None, T0 + H,
                     id="after-interval-waits"),
        pytest.param({"firstTick": "afterInterval"}, C, T0 + H, T0 + H, T0 + 2 * H,
                     id="after-interval-first-tick"),
        pytest.param({"firstTick": "afterInterval"}, T0, T0, None, T0 + H,
                     id="after-interval-created-on-a-tick-waits-for-the-next"),
        pytest.param({"firstTick": "afterInterval", "schedule": "@every 30m"}, C, C, None,
                     C + timedelta(minutes=30), id="after-interval-every"),
        pytest.param({"firstTick": "afterInterval"}, C, T0 + 2.5 * H, T0 + 2 * H, T0 + 3 * H,
                     id="after-interval-seen-late-fires-the-latest-tick-once"),
    ],
)
def test_first_tick(spec: dict[str, Any], created: datetime, now: datetime,
                    tick: datetime | None, next_run: datetime) -> None:
    world = World.new(created=created, **spec)
    d = world.step(now)
    assert d.wake_at == next_run
    assert world.status["nextRunTime"] == format_time(next_run)
    assert world.status["phase"] == "Active"
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    if tick is None:
        assert (d.outcome, d.create, d.tick) == (Outcome.IDLE, None, None)
        assert "lastScheduleTime" not in world.status
        assert world.status["totalRuns"] == 0
        return
    name = run_name("hb", tick)
    assert (d.outcome, d.tick) == (Outcome.FIRED, tick)
    assert d.create is not None
    assert d.create["metadata"]["name"] == name
    assert d.create["metadata"]["annotations"]["sympozium.ai/scheduled-time"] == format_time(tick)
    assert world.status["lastScheduleTime"] == format_time(tick)
    assert world.status["lastRunTime"] == format_time(tick)
    assert world.status["lastRunName"] == name
    assert world.status["totalRuns"] == 1
    assert world.status["active"] == [ref(name)]
    assert [n.reason for n in d.notes] == ["RunCreated"]


def test_immediate_first_tick_wakes_at_creation_when_our_clock_is_behind() -> None:
    # The API server stamps creationTimestamp; a controller whose clock is a few
    # seconds behind sees a creation "in the future". The immediate run is due at
    # creation, so that is when to look again, not one interval later.
    created = T0 + timedelta(seconds=5)
    world = World.new(created=created, schedule="@every 1h")
    d = world.step(T0)
    assert d.outcome is Outcome.IDLE
    assert d.wake_at == created
    assert world.status["nextRunTime"] == format_time(created)
    d = world.step(created)
    assert (d.outcome, d.tick) == (Outcome.FIRED, created)


# --- nothing due writes nothing ---------------------------------------------------------


def _after_a_fire() -> tuple[World, datetime, datetime]:
    world = World.new()
    world.step(T0)
    return world, T0, T0 + H


def _after_the_run_finished() -> tuple[World, datetime, datetime]:
    world, _, _ = _after_a_fire()
    world.set_phase(run_name("hb", T0), "Succeeded")
    world.step(T0 + timedelta(minutes=20))  # the run's status change is worth one write
    return world, T0 + timedelta(minutes=20), T0 + H


def _before_the_first_tick() -> tuple[World, datetime, datetime]:
    world = World.new(created=C, firstTick="afterInterval")
    world.step(C)
    return world, C, T0 + H


def _every_interval() -> tuple[World, datetime, datetime]:
    world = World.new(created=C, schedule="@every 45m")
    world.step(C)
    return world, C, C + timedelta(minutes=45)


def _after_a_forbid_skip() -> tuple[World, datetime, datetime]:
    world, _, _ = _after_a_fire()
    world.set_phase(run_name("hb", T0), "Running")
    assert world.step(T0 + H).outcome is Outcome.SKIPPED
    return world, T0 + H, T0 + 2 * H


def _after_a_deadline_skip() -> tuple[World, datetime, datetime]:
    world = World.new(startingDeadlineSeconds=60)
    fired(world, T0)
    assert world.step(T0 + 5.5 * H).outcome is Outcome.SKIPPED
    return world, T0 + 5.5 * H, T0 + 6 * H


def _suspended() -> tuple[World, datetime, datetime]:
    world, _, _ = _after_a_fire()
    world.edit(suspend=True)
    world.step(T0 + timedelta(minutes=30))
    return world, T0 + timedelta(minutes=30), T0 + 48 * H


def _resumed() -> tuple[World, datetime, datetime]:
    world, _, _ = _suspended()
    world.edit(suspend=False)
    resumed = T0 + 5 * H + timedelta(minutes=12, microseconds=345_678)  # a sub-second cursor
    world.step(resumed)
    return world, resumed, T0 + 6 * H


def _edited() -> tuple[World, datetime, datetime]:
    world, _, _ = _after_a_fire()
    world.edit(schedule="*/10 * * * *")
    world.step(T0 + timedelta(minutes=22))
    return world, T0 + timedelta(minutes=22), T0 + timedelta(minutes=30)


def _invalid_cron() -> tuple[World, datetime, datetime]:
    world, _, _ = _after_a_fire()
    world.edit(schedule="0 25 * * *")
    world.step(T0 + timedelta(minutes=5))
    return world, T0 + timedelta(minutes=5), T0 + 48 * H


def _invalid_spec_type() -> tuple[World, datetime, datetime]:
    world = World.new(suspend="no")
    world.step(T0)
    return world, T0, T0 + 48 * H


def _instance_missing() -> tuple[World, datetime, datetime]:
    world, _, _ = _after_a_fire()
    world.instance = None
    world.step(T0 + timedelta(minutes=5))
    return world, T0 + timedelta(minutes=5), T0 + 48 * H


def _history_pruned() -> tuple[World, datetime, datetime]:
    world = World.new()
    for k in range(1, 6):
        world.add_run(f"old-{k}", phase="Succeeded", tick=T0 - k * H)
    world.step(T0)  # fires and prunes the oldest two
    return world, T0, T0 + H


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(_after_a_fire, id="after-a-fire"),
        pytest.param(_after_the_run_finished, id="after-the-run-finished"),
        pytest.param(_before_the_first_tick, id="before-the-first-tick"),
        pytest.param(_every_interval, id="every-interval"),
        pytest.param(_after_a_forbid_skip, id="after-a-forbid-skip"),
        pytest.param(_after_a_deadline_skip, id="after-a-deadline-skip"),
        pytest.param(_suspended, id="suspended"),
        pytest.param(_resumed, id="resumed"),
        pytest.param(_edited, id="edited"),
        pytest.param(_invalid_cron, id="invalid-cron"),
        pytest.param(_invalid_spec_type, id="invalid-spec-type"),
        pytest.param(_instance_missing, id="instance-missing"),
        pytest.param(_history_pruned, id="history-pruned"),
    ],
)
def test_nothing_due_writes_nothing(scenario: Any) -> None:
    world, settled, next_change = scenario()
    stored = copy.deepcopy(world.status)
    span = next_change - settled
    for fraction in (0.0, 0.001, 0.25, 0.5, 0.999):
        now = settled + span * fraction
        for _ in range(2):  # and again, with the status the first one returned
            d = world.step(now)
            assert d.outcome in (Outcome.IDLE, Outcome.SUSPENDED, Outcome.ERROR)
            assert d.status == stored
            assert (d.create, d.delete, d.notes) == (None, (), ())
    last = world.step(next_change - timedelta(seconds=1))
    assert last.status == stored


# --- missed ticks and the starting deadline ---------------------------------------------


@pytest.mark.parametrize(
    ("spec", "down_until", "tick", "next_run"),
    [
        pytest.param({}, T0 + 7.7 * H, T0 + 7 * H, T0 + 8 * H, id="hourly"),
        pytest.param({"schedule": "*/10 * * * *"}, T0 + 30 * H + timedelta(minutes=3),
                     T0 + 30 * H, T0 + 30 * H + timedelta(minutes=10), id="every-ten-minutes"),
        pytest.param({"schedule": "@every 25m"}, T0 + 3 * H, T0 + 2 * H + timedelta(minutes=55),
                     T0 + 3 * H + timedelta(minutes=20), id="every-interval"),
        pytest.param({"schedule": "0 9 * * *", "timeZone": "Europe/Warsaw"},
                     utc(2026, 3, 31, 12), utc(2026, 3, 31, 7), utc(2026, 4, 1, 7),
                     id="daily-across-dst"),
    ],
)
def test_controller_down_across_many_ticks_runs_once_for_the_latest(
    spec: dict[str, Any], down_until: datetime, tick: datetime, next_run: datetime,
) -> None:
    world = World.new(**spec)
    fired(world, T0)
    d = world.step(down_until)
    assert (d.outcome, d.tick) == (Outcome.FIRED, tick)
    assert len(world.runs) == 2
    assert world.status["lastScheduleTime"] == format_time(tick)
    assert world.status["nextRunTime"] == format_time(next_run)
    assert world.status["totalRuns"] == 2
    for later in (down_until + timedelta(seconds=1), next_run - timedelta(seconds=1)):
        assert world.step(later).outcome is Outcome.IDLE
    assert len(world.runs) == 2


@pytest.mark.parametrize(
    ("deadline", "now", "outcome"),
    [
        pytest.param(None, T0 + 7 * H + timedelta(minutes=42), Outcome.FIRED, id="no-deadline"),
        pytest.param(300, T0 + 7 * H + timedelta(minutes=4, seconds=59), Outcome.FIRED,
                     id="within"),
        pytest.param(300, T0 + 7 * H + timedelta(minutes=5), Outcome.FIRED, id="exactly-at"),
        pytest.param(300, T0 + 7 * H + timedelta(minutes=5, seconds=1), Outcome.SKIPPED,
                     id="a-second-past"),
        pytest.param(3600, T0 + 7 * H + timedelta(minutes=42), Outcome.FIRED, id="generous"),
    ],
)
def test_starting_deadline(deadline: int | None, now: datetime, outcome: Outcome) -> None:
    world = World.new(**({} if deadline is None else {"startingDeadlineSeconds": deadline}))
    fired(world, T0)
    d = world.step(now)
    assert d.outcome is outcome
    assert world.status["lastScheduleTime"] == format_time(T0 + 7 * H)  # handled either way
    assert world.status["nextRunTime"] == format_time(T0 + 8 * H)
    if outcome is Outcome.FIRED:
        assert d.skip_reason is None
        return
    assert (d.create, d.tick) == (None, T0 + 7 * H)
    assert d.skip_reason is SkipReason.DEADLINE
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    assert (skipped["status"], skipped["reason"]) == ("True", "MissedStartingDeadline")
    assert "2026-03-02T17:00:00Z" in skipped["message"]
    assert "startingDeadlineSeconds=300" in skipped["message"]
    assert d.notes == (Note("Warning", "TickSkipped", skipped["message"]),)
    assert world.status["lastRunName"] == run_name("hb", T0)  # the last run that really ran
    # The skipped tick is not run later; the next one runs on time.
    assert world.step(now + timedelta(minutes=10)).outcome is Outcome.IDLE
    d = world.step(T0 + 8 * H)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 8 * H)
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    assert (skipped["status"], skipped["reason"]) == ("False", "RunCreated")


# --- concurrency policy -----------------------------------------------------------------


@pytest.mark.parametrize(
    "phase",
    [pytest.param(None, id="no-status-yet"),
     *[pytest.param(p, id=p or "empty-phase") for p in sorted(UNFINISHED_PHASES)]],
)
def test_forbid_skips_while_a_run_is_unfinished(phase: str | None) -> None:
    world = World.new()
    world.add_run("hb-1772445600", phase=phase, tick=T0)
    world.obj["status"] = {"lastScheduleTime": format_time(T0), "observedGeneration": 1,
                           "phase": "Active", "lastRunName": "hb-1772445600", "totalRuns": 1}
    d = world.step(T0 + H)
    assert (d.outcome, d.skip_reason, d.create, d.tick) == (
        Outcome.SKIPPED, SkipReason.FORBID, None, T0 + H)
    assert world.status["lastScheduleTime"] == format_time(T0 + H)
    assert world.status["lastRunName"] == "hb-1772445600"
    assert world.status["totalRuns"] == 1
    assert world.status["active"] == [ref("hb-1772445600")]
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    assert (skipped["status"], skipped["reason"]) == ("True", "ConcurrencyPolicyForbid")
    assert "hb-1772445600" in skipped["message"]
    assert "Forbid" in skipped["message"]
    assert d.notes == (Note("Normal", "TickSkipped", skipped["message"]),)


def test_forbid_records_each_skip_and_recovers_without_running_the_skipped_tick() -> None:
    world = World.new()
    world.step(T0)
    first = run_name("hb", T0)
    world.set_phase(first, "Running")
    for k in (1, 2):
        d = world.step(T0 + k * H)
        assert d.outcome is Outcome.SKIPPED
        assert [n.reason for n in d.notes] == ["TickSkipped"]  # a note per skipped tick
    world.set_phase(first, "Succeeded")
    assert world.step(T0 + 2.5 * H).outcome is Outcome.IDLE  # the 12:00 tick stays skipped
    d = world.step(T0 + 3 * H)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 3 * H)
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    assert (skipped["status"], skipped["reason"]) == ("False", "RunCreated")
    assert len(world.runs) == 2


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
def test_forbid_fires_once_the_run_is_finished(phase: str) -> None:
    world = World.new()
    world.step(T0)
    world.set_phase(run_name("hb", T0), phase)
    d = world.step(T0 + H)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + H)
    assert world.status["active"] == [ref(run_name("hb", T0 + H))]


def test_allow_fires_alongside_unfinished_runs() -> None:
    world = World.new(concurrencyPolicy="Allow")
    world.step(T0)
    world.set_phase(run_name("hb", T0), "Running")
    d = world.step(T0 + H)
    assert (d.outcome, d.delete) == (Outcome.FIRED, ())
    assert world.status["active"] == [ref(run_name("hb", T0)), ref(run_name("hb", T0 + H))]


def test_replace_deletes_the_unfinished_runs_and_fires() -> None:
    world = World.new(concurrencyPolicy="Replace")
    world.add_run("hb-a", phase="Running", tick=T0 - H)
    world.add_run("hb-b", phase="Pending", tick=T0)
    world.add_run("hb-done", phase="Succeeded", tick=T0 - 2 * H)
    world.obj["status"] = {"lastScheduleTime": format_time(T0), "observedGeneration": 1}
    d = world.step(T0 + H)
    assert d.outcome is Outcome.FIRED
    assert d.delete == ("hb-a", "hb-b")
    assert world.status["active"] == [ref(run_name("hb", T0 + H))]
    assert [n.reason for n in d.notes] == ["RunReplaced", "RunCreated"]
    assert "hb-a, hb-b" in d.notes[0].message
    assert set(world.runs) == {"hb-done", run_name("hb", T0 + H)}


# --- suspend, resume, edit --------------------------------------------------------------


def test_suspend_stops_fires_and_resume_never_replays_what_it_slept_through() -> None:
    world = World.new()
    fired(world, T0)
    world.edit(suspend=True)
    d = world.step(T0 + timedelta(minutes=30))
    assert (d.outcome, d.create, d.wake_at) == (Outcome.SUSPENDED, None, None)
    assert world.status["phase"] == "Suspended"
    assert "nextRunTime" not in world.status
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    assert [(n.type, n.reason) for n in d.notes] == [("Normal", "Suspended")]
    for k in range(1, 6):  # ticks come and go
        assert world.step(T0 + k * H).outcome is Outcome.SUSPENDED

    world.edit(suspend=False)
    resumed = T0 + 5 * H + timedelta(minutes=30)
    d = world.step(resumed)
    assert (d.outcome, d.create) == (Outcome.IDLE, None)
    assert world.status["phase"] == "Active"
    assert world.status["nextRunTime"] == format_time(T0 + 6 * H)
    assert d.wake_at == T0 + 6 * H
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    assert ready["lastTransitionTime"] == format_time(resumed)
    assert [(n.type, n.reason) for n in d.notes] == [("Normal", "Scheduled")]
    d = world.step(T0 + 6 * H)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 6 * H)
    assert sorted(world.runs) == [run_name("hb", T0), run_name("hb", T0 + 6 * H)]


def test_resume_without_a_generation_bump_does_not_replay_either() -> None:
    # Status says Suspended but the spec no longer does, and observedGeneration matches:
    # e.g. the status write of the resume was lost and another writer restored it.
    world = World.new()
    world.obj["status"] = {"phase": "Suspended", "lastScheduleTime": format_time(T0),
                           "observedGeneration": 1}
    d = world.step(T0 + 5.5 * H)
    assert (d.outcome, d.create) == (Outcome.IDLE, None)


def test_created_suspended_then_resumed_waits_for_the_next_tick() -> None:
    world = World.new(suspend=True)
    assert world.step(T0).outcome is Outcome.SUSPENDED
    world.edit(suspend=False)
    assert world.step(T0 + 2.5 * H).outcome is Outcome.IDLE
    assert world.step(T0 + 3 * H).outcome is Outcome.FIRED


def test_an_edit_takes_effect_at_once_and_does_not_replay_old_ticks() -> None:
    world = World.new()
    fired(world, T0)
    # The controller was down across the 11:00 and 12:00 ticks, and meanwhile the
    # schedule was edited: none of the old ticks is replayed, the new one governs.
    world.edit(schedule="*/5 * * * *")
    edited_at = T0 + 2 * H + timedelta(minutes=32)
    d = world.step(edited_at)
    assert (d.outcome, d.create) == (Outcome.IDLE, None)
    assert world.status["observedGeneration"] == 2
    assert world.status["nextRunTime"] == format_time(T0 + 2 * H + timedelta(minutes=35))
    d = world.step(T0 + 2 * H + timedelta(minutes=35))
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 2 * H + timedelta(minutes=35))


def test_a_time_zone_edit_moves_the_next_run() -> None:
    world = World.new(schedule="0 18 * * *")
    fired(world, T0)
    assert world.status["nextRunTime"] == "2026-03-02T18:00:00Z"
    world.edit(timeZone="Asia/Tokyo")
    d = world.step(T0 + H)
    assert d.outcome is Outcome.IDLE
    assert world.status["nextRunTime"] == "2026-03-03T09:00:00Z"  # 18:00 in Tokyo


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "name", "field", "reason", "fragment"),
    [
        pytest.param({"schedule": "61 * * * *"}, "hb", "spec.schedule", "InvalidSchedule",
                     "'61 * * * *'", id="bad-cron"),
        pytest.param({"schedule": "@fortnightly"}, "hb", "spec.schedule", "InvalidSchedule",
                     "unknown macro", id="bad-macro"),
        pytest.param({"timeZone": "Mars/Olympus"}, "hb", "spec.timeZone", "InvalidTimeZone",
                     "'Mars/Olympus'", id="bad-time-zone"),
        pytest.param({"suspend": "yes"}, "hb", "spec.suspend", "InvalidSpec", "'yes'",
                     id="suspend-not-a-boolean"),
        pytest.param({"concurrencyPolicy": "Sometimes"}, "hb", "spec.concurrencyPolicy",
                     "InvalidSpec", "must be one of", id="unknown-policy"),
        pytest.param({"concurencyPolicy": "Allow"}, "hb", "spec.concurencyPolicy",
                     "InvalidSpec", "unknown field", id="misspelt-field"),
        pytest.param({"task": REMOVE}, "hb", "spec.task", "InvalidSpec", "is required",
                     id="missing-task"),
        pytest.param({"startingDeadlineSeconds": 0}, "hb", "spec.startingDeadlineSeconds",
                     "InvalidSpec", "", id="zero-deadline"),
        pytest.param({"type": "daily"}, "hb", "spec.type", "InvalidSpec", "must be one of",
                     id="unknown-type"),
        pytest.param({"firstTick": "now"}, "hb", "spec.firstTick", "InvalidSpec",
                     "must be one of", id="unknown-first-tick"),
        pytest.param({"successfulRunsHistoryLimit": -1}, "hb",
                     "spec.successfulRunsHistoryLimit", "InvalidSpec", "", id="negative-limit"),
        pytest.param({"instanceRef": "Alice"}, "hb", "spec.instanceRef", "InvalidSpec",
                     "'Alice'", id="instance-ref-not-a-name"),
        pytest.param({}, "h" * 64, "metadata.name", "InvalidSpec", "63 characters",
                     id="schedule-name-too-long-for-a-label"),
        pytest.param({"schedule": "@every 5m", "timeZone": "Mars/Olympus"}, "hb",
                     "spec.timeZone", "InvalidTimeZone", "'Mars/Olympus'",
                     id="every-with-bad-time-zone"),
        pytest.param({"schedule": "@every 999999999999h"}, "hb", "spec.schedule",
                     "InvalidSchedule", "", id="every-interval-too-large"),
    ],
)
def test_invalid_spec_is_an_error_phase_naming_the_problem(
    spec: dict[str, Any], name: str, field: str, reason: str, fragment: str,
) -> None:
    world = World(schedule(created=T0, name=name))
    world.edit(**spec)
    world.obj["metadata"]["generation"] = 1
    d = world.step(T0 + timedelta(minutes=1))
    assert (d.outcome, d.create, d.wake_at) == (Outcome.ERROR, None, None)
    assert world.status["phase"] == "Error"
    assert "nextRunTime" not in world.status
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert ready["message"].startswith(f"{field}: ")
    assert fragment in ready["message"]
    assert d.notes == (Note("Warning", reason, ready["message"]),)


def test_spec_that_is_not_a_mapping() -> None:
    world = World.new()
    world.obj["spec"] = "every hour please"
    d = world.step(T0)
    assert d.outcome is Outcome.ERROR
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert ready["message"].startswith("spec: 'every hour please': must be a mapping")


def test_an_error_keeps_the_history_and_a_fix_recovers_without_replay() -> None:
    world = World.new()
    fired(world, T0)
    world.edit(schedule="0 25 * * *")
    assert world.step(T0 + 0.5 * H).outcome is Outcome.ERROR
    assert world.status["lastRunName"] == run_name("hb", T0)
    assert world.status["totalRuns"] == 1
    assert world.status["lastScheduleTime"] == format_time(T0)
    world.edit(schedule="0 * * * *")
    fixed_at = T0 + 3.5 * H
    d = world.step(fixed_at)
    assert (d.outcome, d.create) == (Outcome.IDLE, None)  # 11:00-13:00 are not replayed
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    assert ready["lastTransitionTime"] == format_time(fixed_at)
    assert world.status["nextRunTime"] == format_time(T0 + 4 * H)


def test_missing_instance_is_an_error_until_it_exists() -> None:
    world = World.new(created=C)
    world.instance = None
    d = world.step(C)
    assert (d.outcome, d.create) == (Outcome.ERROR, None)
    assert world.status["phase"] == "Error"
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "InstanceNotFound")
    assert ready["message"].startswith("spec.instanceRef: 'alice': ")
    assert f"namespace {NAMESPACE!r}" in ready["message"]
    assert [(n.type, n.reason) for n in d.notes] == [("Warning", "InstanceNotFound")]
    assert world.step(C + H).notes == ()  # said once, not on every reconcile

    world.instance = instance()
    d = world.step(C + 2 * H)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 2 * H)  # the first tick, once
    assert world.status["phase"] == "Active"
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")


def test_instance_vanishing_for_a_while_catches_up_once() -> None:
    world = World.new()
    fired(world, T0)
    world.instance = None
    for k in (1, 2, 3):
        assert world.step(T0 + k * H).outcome is Outcome.ERROR
    world.instance = instance()
    d = world.step(T0 + 3 * H + timedelta(minutes=10))
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 3 * H)
    assert len(world.runs) == 2


def test_instance_without_a_model_is_an_error() -> None:
    world = World.new()
    world.instance = instance(model=None)
    d = world.step(T0)
    assert d.outcome is Outcome.ERROR
    ready = condition(world.status, "Ready")
    assert ready is not None
    assert ready["reason"] == "InstanceInvalid"
    assert "spec.agents.default.model" in ready["message"]


@pytest.mark.parametrize(
    "filename", ["sympoziumschedule_sample.yaml", "sympoziumschedule-example.yaml"])
def test_sympozium_sample_schedules_are_accepted_as_they_are(filename: str) -> None:
    obj = load_sample(filename)
    obj["metadata"].update(uid="u-1", generation=1, creationTimestamp=format_time(T0))
    world = World(obj, instance=instance(obj["spec"]["instanceRef"]))
    d = world.step(T0)
    assert d.outcome is Outcome.FIRED, world.status


# --- history and ownership --------------------------------------------------------------


def _history_world(**spec: Any) -> World:
    world = World.new(**spec)
    for k in range(1, 6):
        world.add_run(f"ok-{k}", phase="Succeeded", tick=T0 - k * H)
    for k in range(1, 4):
        world.add_run(f"failed-{k}", phase="Failed", tick=T0 - k * H - timedelta(minutes=30))
    world.add_run("cancelled", phase="Cancelled", tick=T0 - 10 * H)
    world.add_run("running", phase="Running", tick=T0 - 20 * H)
    world.obj["status"] = {"lastScheduleTime": format_time(T0), "observedGeneration": 1}
    return world


@pytest.mark.parametrize(
    ("spec", "pruned"),
    [
        pytest.param({}, {"ok-4", "ok-5", "failed-2", "failed-3", "cancelled"},
                     id="defaults-keep-3-succeeded-1-failed"),
        pytest.param({"successfulRunsHistoryLimit": 0, "failedRunsHistoryLimit": 0},
                     {"ok-1", "ok-2", "ok-3", "ok-4", "ok-5", "failed-1", "failed-2",
                      "failed-3", "cancelled"}, id="keep-none"),
        pytest.param({"successfulRunsHistoryLimit": 10, "failedRunsHistoryLimit": 10}, set(),
                     id="keep-all"),
    ],
)
def test_history_limits_prune_the_oldest_finished_runs(spec: dict[str, Any],
                                                       pruned: set[str]) -> None:
    world = _history_world(**spec)
    d = world.step(T0 + timedelta(minutes=10))
    assert d.outcome is Outcome.IDLE
    assert set(d.delete) == pruned
    assert len(d.delete) == len(pruned)
    assert "running" in world.runs


def test_pruning_happens_alongside_a_fire() -> None:
    world = _history_world(concurrencyPolicy="Allow")
    d = world.step(T0 + H)
    assert d.outcome is Outcome.FIRED
    assert set(d.delete) == {"ok-4", "ok-5", "failed-2", "failed-3", "cancelled"}


def test_runs_of_another_schedule_incarnation_are_ignored() -> None:
    world = World.new()
    world.add_run("hb-1772445600", phase="Running", tick=T0, owner_uid="previous-uid")
    for k in range(1, 6):
        world.add_run(f"old-{k}", phase="Succeeded", tick=T0 - k * H, owner_uid="previous-uid")
    world.obj["status"] = {"lastScheduleTime": format_time(T0), "observedGeneration": 1}
    d = world.step(T0 + H)
    assert d.outcome is Outcome.FIRED  # not blocked by Forbid
    assert d.delete == ()  # not pruned
    assert world.status["active"] == [ref(run_name("hb", T0 + H))]


# --- manual trigger ---------------------------------------------------------------------


def test_trigger_creates_a_manual_run_and_leaves_the_cursor() -> None:
    world = World.new()
    fired(world, T0)
    before = copy.deepcopy(world.status)
    now = T0 + timedelta(minutes=17, seconds=3, microseconds=250_000)
    d = world.trigger(now)
    tick = T0 + timedelta(minutes=17, seconds=3)
    assert (d.outcome, d.tick, d.delete, d.wake_at) == (Outcome.FIRED, tick, (), None)
    assert d.create is not None
    name = d.create["metadata"]["name"]
    assert name == run_name("hb", tick, manual=True)
    assert d.create["metadata"]["annotations"]["sympozium.ai/trigger"] == "manual"
    assert [n.reason for n in d.notes] == ["RunTriggered"]
    assert world.status["lastScheduleTime"] == before["lastScheduleTime"]
    assert world.status["nextRunTime"] == before["nextRunTime"]
    assert world.status["lastRunName"] == name
    assert world.status["lastRunTime"] == format_time(tick)
    assert world.status["totalRuns"] == 2
    assert world.status["active"] == [ref(name)]
    assert schedule_status_errors(world.status) == []
    # Neither consumed nor replayed a tick: the next one fires on time, once.
    world.set_phase(name, "Succeeded")
    assert world.step(now + timedelta(minutes=1)).outcome is Outcome.IDLE
    d = world.step(T0 + H)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + H)


def test_trigger_refused_by_forbid_while_a_run_is_active() -> None:
    world = World.new()
    world.step(T0)
    with pytest.raises(TriggerRefused, match=r"AgentRun hb-1772445600 is still Pending") as exc:
        world.trigger(T0 + timedelta(minutes=5))
    assert "skipped the" not in str(exc.value)
    assert "Forbid" in str(exc.value)


@pytest.mark.parametrize(
    ("policy", "delete", "active"),
    [
        pytest.param("Allow", (), ["hb-1772445600", "hb-m1772445900"], id="allow"),
        pytest.param("Replace", ("hb-1772445600",), ["hb-m1772445900"], id="replace"),
    ],
)
def test_trigger_with_an_active_run(policy: str, delete: tuple[str, ...],
                                    active: list[str]) -> None:
    world = World.new(concurrencyPolicy=policy)
    world.step(T0)
    d = world.trigger(T0 + timedelta(minutes=5))
    assert d.delete == delete
    assert world.status["active"] == [ref(n) for n in active]


def test_trigger_ignores_the_starting_deadline() -> None:
    world = World.new(startingDeadlineSeconds=1)
    d = world.trigger(T0 + timedelta(minutes=5, microseconds=999_999))
    assert d.outcome is Outcome.FIRED


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        pytest.param(lambda w: w.edit(suspend="yes"), "the schedule is invalid: spec.suspend",
                     id="invalid-spec"),
        pytest.param(lambda w: setattr(w, "instance", None), "'alice' not found",
                     id="missing-instance"),
        pytest.param(lambda w: setattr(w, "instance", instance(model=None)),
                     "no spec.agents.default.model", id="instance-without-model"),
    ],
)
def test_trigger_refused(setup: Any, match: str) -> None:
    world = World.new()
    setup(world)
    with pytest.raises(TriggerRefused, match=match):
        world.trigger(T0)


def test_trigger_does_not_swallow_an_unreconciled_edit() -> None:
    # The spec is edited and a manual run triggered before the controller reconciles
    # the edit. The trigger must not mark the edit as seen: if it does, the next
    # reconcile misses the edit and runs a tick from before it.
    world = World.new(concurrencyPolicy="Allow")
    fired(world, T0)
    world.edit(schedule="*/5 * * * *")
    world.trigger(T0 + timedelta(minutes=32))
    d = world.step(T0 + timedelta(minutes=33))
    assert (d.outcome, d.create) == (Outcome.IDLE, None)  # the 10:30 tick predates the edit


# --- a fire cut short, a tick that cannot be created -----------------------------------


def test_a_run_created_without_its_status_write_is_recorded_not_doubled() -> None:
    world = World.new()
    fired(world, T0)
    stored = copy.deepcopy(world.status)
    d = world.decide(T0 + H)
    assert d.create is not None
    name = d.create["metadata"]["name"]
    world.runs[name] = copy.deepcopy(d.create)  # created; then the process died
    assert world.status == stored
    d = world.step(T0 + H + timedelta(seconds=2))
    assert (d.outcome, d.tick, d.create, d.delete) == (Outcome.RECORDED, T0 + H, None, ())
    assert world.status["lastScheduleTime"] == format_time(T0 + H)
    assert world.status["lastRunName"] == name
    assert world.status["lastRunTime"] == format_time(T0 + H)
    assert world.status["totalRuns"] == 2
    assert world.status["active"] == [ref(name)]
    assert d.wake_at == T0 + 2 * H
    assert world.step(T0 + 1.5 * H).outcome is Outcome.IDLE
    assert len(world.runs) == 2


def _run_created_status_not_written() -> tuple[World, str]:
    """A world whose T0 + H fire created its run and then lost its status write."""
    world = World.new()
    fired(world, T0)
    d = world.decide(T0 + H)
    assert d.create is not None
    name = d.create["metadata"]["name"]
    world.runs[name] = copy.deepcopy(d.create)
    return world, name


@pytest.mark.parametrize("pause", [
    pytest.param({"suspend": True}, id="suspended"),
    pytest.param({"suspend": True, "suspendedBy": "ops", "suspendReason": "maintenance"},
                 id="suspended-with-a-note"),
])
def test_a_run_whose_status_write_lost_to_a_suspend_is_recorded_while_suspended(
        pause: dict[str, Any]) -> None:
    # A fire creates its run; its status write then loses to a suspend that landed meanwhile
    # (a conflict), or the process dies. The suspended schedule must still count that run:
    # on a real API server its status otherwise named the previous run until a resume.
    world, name = _run_created_status_not_written()
    world.edit(**pause)
    d = world.step(T0 + H + timedelta(seconds=1))
    assert (d.outcome, d.tick, d.create) == (Outcome.RECORDED, T0 + H, None)
    assert world.status["phase"] == "Suspended"
    assert world.status["lastRunName"] == name
    assert world.status["lastScheduleTime"] == format_time(T0 + H)
    assert world.status["totalRuns"] == 2
    assert world.step(T0 + 3 * H).outcome is Outcome.SUSPENDED  # recorded once, nothing fired
    assert world.status["totalRuns"] == 2
    assert len(world.runs) == 2
    world.edit(suspend=False)
    d = world.step(T0 + 3 * H + timedelta(seconds=1))  # resumed: from now on, nothing replayed
    assert (d.outcome, d.create) == (Outcome.IDLE, None)
    assert world.status["totalRuns"] == 2


def test_a_run_whose_status_write_lost_to_a_breaking_edit_is_recorded_with_the_error() -> None:
    world, name = _run_created_status_not_written()
    world.edit(schedule="61 * * * *")  # an edit that breaks the expression landed meanwhile
    d = world.step(T0 + H + timedelta(seconds=1))
    assert (d.outcome, d.create) == (Outcome.ERROR, None)
    assert world.status["phase"] == "Error"
    assert world.status["lastRunName"] == name
    assert world.status["totalRuns"] == 2


def test_recorded_clears_a_previous_skip() -> None:
    world = World.new()
    world.step(T0)
    world.set_phase(run_name("hb", T0), "Running")
    assert world.step(T0 + H).outcome is Outcome.SKIPPED
    world.set_phase(run_name("hb", T0), "Succeeded")
    world.add_run(run_name("hb", T0 + 2 * H), phase="Running", tick=T0 + 2 * H)
    d = world.step(T0 + 2 * H + timedelta(seconds=1))
    assert d.outcome is Outcome.RECORDED
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    assert (skipped["status"], skipped["reason"]) == ("False", "RunCreated")


def test_a_run_of_the_same_name_owned_by_someone_else_is_not_recorded() -> None:
    world = World.new()
    fired(world, T0)
    world.add_run(run_name("hb", T0 + H), phase="Succeeded", tick=T0 + H, owner_uid="other")
    d = world.decide(T0 + H)
    assert d.outcome is Outcome.FIRED  # the create will fail; tick_failed says why


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        pytest.param("RunNameTaken", "an AgentRun named hb-1772449200 already exists and "
                     "belongs to 1234; delete or rename it", id="name-taken"),
        pytest.param("RunRejected", "the store refused the run: too large", id="rejected"),
    ],
)
def test_tick_failed_consumes_the_tick_and_says_why(reason: str, message: str) -> None:
    world = World.new()
    fired(world, T0)
    stored = copy.deepcopy(world.status)
    decision = world.decide(T0 + H)
    assert decision.outcome is Outcome.FIRED
    d = tick_failed(world.view(), decision, reason, message, T0 + H)
    world.apply(d)
    assert (d.outcome, d.create, d.tick, d.delete) == (Outcome.SKIPPED, None, T0 + H, ())
    assert d.wake_at == T0 + 2 * H
    assert world.status["lastScheduleTime"] == format_time(T0 + H)
    for key in ("lastRunName", "lastRunTime", "totalRuns"):
        assert world.status[key] == stored[key]
    assert "active" not in world.status
    skipped = condition(world.status, "TickSkipped")
    assert skipped is not None
    text = f"skipped the 2026-03-02T11:00:00Z tick: {message}"
    assert (skipped["status"], skipped["reason"], skipped["message"]) == ("True", reason, text)
    assert d.notes == (Note("Warning", reason, text),)
    assert schedule_status_errors(world.status) == []
    # Not retried, under this name or another; the next tick fires normally.
    assert world.step(T0 + 1.5 * H).outcome is Outcome.IDLE
    d = world.step(T0 + 2 * H)
    assert (d.outcome, d.tick) == (Outcome.FIRED, T0 + 2 * H)


def test_tick_failed_needs_a_decision_that_creates() -> None:
    world = World.new()
    fired(world, T0)
    idle = world.decide(T0 + timedelta(minutes=5))
    with pytest.raises(ValueError, match="creates a run"):
        tick_failed(world.view(), idle, "RunRejected", "x", T0)


# --- a simulated week -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "time_zone", "policy", "duration", "start"),
    [
        pytest.param("0 * * * *", "UTC", "Forbid", timedelta(minutes=20), utc(2026, 3, 2),
                     id="hourly-forbid"),
        pytest.param("*/20 9-17 * * 1-5", "Europe/Warsaw", "Allow", timedelta(minutes=45),
                     utc(2026, 3, 25), id="office-hours-warsaw-overlapping-across-dst"),
        pytest.param("30 2 * * *", "America/New_York", "Forbid", timedelta(minutes=10),
                     utc(2026, 3, 4), id="ny-0230-across-spring-forward"),
        pytest.param("0 * * * *", "America/New_York", "Forbid", timedelta(minutes=50),
                     utc(2026, 10, 29), id="ny-hourly-across-fall-back"),
        pytest.param("@every 7m", "UTC", "Replace", timedelta(minutes=10), utc(2026, 3, 2),
                     id="every-7m-replacing"),
    ],
)
@pytest.mark.parametrize("first_tick", ["immediate", "afterInterval"])
def test_simulated_week_one_run_per_tick_created_at_the_tick(
    expression: str, time_zone: str, policy: str, duration: timedelta, start: datetime,
    first_tick: str,
) -> None:
    created = start + timedelta(minutes=3, seconds=17)
    end = created + timedelta(days=7)
    world = World.new(created=created, schedule=expression, timeZone=time_zone,
                      concurrencyPolicy=policy, firstTick=first_tick)
    rng = random.Random(f"{expression}/{first_tick}")
    finishes: dict[str, datetime] = {}
    created_runs: list[tuple[datetime, datetime, str]] = []  # (now, tick, name)
    crashes = recorded = 0
    now, quiet = created, False
    while now < end:
        before = copy.deepcopy(world.status)
        d = world.decide(now)
        assert d.outcome in (Outcome.FIRED, Outcome.IDLE, Outcome.RECORDED), (now, d)
        if quiet and d.outcome is Outcome.IDLE:
            assert d.status == before  # nothing changed, nothing written
        recorded += d.outcome is Outcome.RECORDED
        crash = d.create is not None and now < end - H and rng.random() < 0.1
        if crash:  # the run is created, then the process dies before the status write
            assert d.create is not None
            world.runs[d.create["metadata"]["name"]] = copy.deepcopy(d.create)
            crashes += 1
        else:
            world.apply(d)
        if d.create is not None:
            assert d.tick is not None
            name = d.create["metadata"]["name"]
            annotations = d.create["metadata"]["annotations"]
            assert annotations["sympozium.ai/scheduled-time"] == format_time(d.tick)
            created_runs.append((now, d.tick, name))
            finishes[name] = now + duration
        # Look again at the wake-up, when a run finishes, at a random moment, or
        # (after a crash) when the restarted process relists.
        pending = [t for n, t in finishes.items() if n in world.runs]
        assert d.wake_at is not None
        later = now + timedelta(seconds=rng.randint(1, 60 if crash else 40 * 60))
        now = later if crash else min([d.wake_at, later, *pending])
        quiet = not crash
        for name, finish in list(finishes.items()):
            if name not in world.runs:  # replaced
                del finishes[name]
            elif finish <= now:
                world.set_phase(name, rng.choice(["Succeeded", "Succeeded", "Failed"]))
                del finishes[name]
                quiet = False

    compiled = compile_schedule(expression, time_zone=time_zone, anchor=created)
    expected = [t for t in upcoming(compiled, created, 2000) if t < end]
    if first_tick == "immediate":
        expected.insert(0, created)
    assert [tick for _, tick, _ in created_runs] == expected
    assert all(now == tick for now, tick, _ in created_runs)
    names = [name for _, _, name in created_runs]
    assert len(set(names)) == len(names)
    assert crashes > 0
    assert recorded == crashes
    assert world.status["totalRuns"] == len(expected)
    world.step(now)  # one more look prunes what finished last
    kept = [RunView.of(r) for r in world.runs.values()]
    assert len([r for r in kept if r.succeeded]) <= 3
    assert len([r for r in kept if r.finished and not r.succeeded]) <= 1


def test_the_status_view_of_every_decision_is_its_status_parsed() -> None:
    """Decision.status_view lets the controller skip parsing the status it just wrote;
    it must be exactly what parsing that status gives."""
    from sympozium_schedule.core.model import ScheduleStatus

    def decide(at_: datetime, *, runs: list[RunView] | None = None,
               inst: dict[str, Any] | None = None, **spec: Any) -> Decision:
        return reconcile(ScheduleView.of(schedule(created=T0, **spec)), runs or [],
                         instance() if inst is None else inst, None, at_)

    fired = decide(T0 + timedelta(seconds=1), schedule="*/5 * * * *")
    assert fired.create is not None
    cases = [
        fired,
        decide(T0 + timedelta(seconds=1), suspend=True),
        decide(T0 + timedelta(seconds=1), schedule="nope"),
        reconcile(ScheduleView.of(schedule(created=T0)), [], None, None, T0),
        # a skip under Forbid, with a TickSkipped condition besides Ready
        decide(T0 + timedelta(minutes=5), schedule="*/5 * * * *", status=fired.status,
               runs=[RunView.of(fired.create)]),
    ]
    for decision in cases:
        assert decision.status_view == ScheduleStatus.from_dict(decision.status), decision
