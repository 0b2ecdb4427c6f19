"""The router's answer says what will happen (issue 9): a new agent schedule fires at
once (firstTick: immediate, the default), then on its schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sympozium_schedule.core.requests import Identity, Limits, parse_request, plan

NOW = datetime(2026, 3, 2, 10, 0, 7, tzinfo=UTC)
WHO = Identity("default", "alice", "alice-run-1")


def existing(schedule: str) -> dict[str, object]:
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
            "metadata": {"name": "alice-check", "namespace": "default",
                         "labels": {"sympozium.ai/instance": "alice", "sympozium.ai/source": "agent"}},
            "spec": {"instanceRef": "alice", "schedule": schedule, "task": "t", "type": "heartbeat"}}


@pytest.mark.parametrize(("schedule", "then"), [
    pytest.param("@every 10m", "2026-03-02T10:10:07Z", id="every"),
    pytest.param("@hourly", "2026-03-02T11:00:00Z", id="cron"),
])
def test_a_create_says_it_runs_now_then_on_schedule(schedule: str, then: str) -> None:
    request = parse_request({"name": "check", "action": "create", "schedule": schedule, "task": "t"},
                            Limits())

    decided = plan(request, WHO, None, [], Limits(), NOW)

    assert decided.op == "create"
    assert decided.message == (f"created schedule 'alice-check': schedule {schedule!r}, "
                               f"first run now (firstTick: immediate), then next at {then}")


def test_an_update_names_only_the_next_run() -> None:
    request = parse_request({"name": "check", "action": "update", "schedule": "@every 10m"}, Limits())

    decided = plan(request, WHO, existing("@hourly"), [], Limits(), NOW)

    assert decided.op == "update"
    assert "first run now" not in decided.message
    assert decided.message.endswith("next run at 2026-03-02T10:10:07Z")
