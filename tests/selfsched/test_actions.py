"""Each action of the schedule_task tool, through the whole path: the tool writes the
request, the bridge publishes it, the router applies it, the answer comes back as
``<request>.result.json``."""

from __future__ import annotations

from typing import Any

import pytest

from sympozium_schedule.agents.schedule_task import result_path
from sympozium_schedule.core.model import API_VERSION, LABEL_INSTANCE, LABEL_SOURCE
from sympozium_schedule.core.requests import ANNOTATION_REQUESTED_BY
from tests.selfsched.conftest import (
    NAMESPACE,
    RESULT_KEYS,
    Agent,
    System,
    assert_answer,
    eventually,
)

# The router's and the bridge's logic: on the in-memory bus (see conftest).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.memory_bus]

HOURLY: dict[str, Any] = {"schedule": "@hourly", "task": "check the cluster and report anything unusual"}


async def test_create_stores_an_agent_schedule_with_defaults(system: System, alice: Agent) -> None:
    answer = await alice.ask(name="health", action="create", **HOURLY)

    assert_answer(answer, "accepted", "created schedule 'alice-health'",
                  "first run now (firstTick: immediate), then next at")
    stored = await system.schedule("alice-health")
    assert stored is not None
    assert stored["apiVersion"] == API_VERSION
    assert stored["kind"] == "SympoziumSchedule"
    assert stored["metadata"]["labels"] == {LABEL_INSTANCE: "alice", LABEL_SOURCE: "agent"}
    assert stored["metadata"]["annotations"] == {ANNOTATION_REQUESTED_BY: alice.run}
    assert stored["spec"] == {"instanceRef": "alice", "type": "heartbeat", "concurrencyPolicy": "Forbid",
                              "includeMemory": True, **HOURLY}
    assert answer["schedule"] == {"name": "alice-health", "namespace": NAMESPACE, "type": "heartbeat",
                                  "concurrencyPolicy": "Forbid", "includeMemory": True, **HOURLY}


async def test_result_file_sits_next_to_the_archived_request(alice: Agent) -> None:
    request = alice.submit({"name": "health", "action": "create", **HOURLY})

    answer = await alice.answer(request)

    assert set(answer) == RESULT_KEYS
    assert answer["requestFile"] == request.name
    assert result_path(request).exists()
    assert not request.exists(), "a published request moves to .sent/"
    # Archived under the request id the bridge gave it (a reused name is a new request).
    assert (alice.folder / ".sent" / f"{answer['requestId']}~{request.name}").exists()


@pytest.mark.parametrize(("given", "stored"), [
    pytest.param({"type": "scheduled"}, {"type": "scheduled"}, id="type"),
    pytest.param({"concurrencyPolicy": "Allow"}, {"concurrencyPolicy": "Allow"}, id="concurrencyPolicy"),
    pytest.param({"includeMemory": False}, {"includeMemory": False}, id="includeMemory"),
    pytest.param({"timeZone": "Europe/Berlin"}, {"timeZone": "Europe/Berlin"}, id="timeZone"),
])
async def test_create_keeps_the_optional_fields_given(
        system: System, alice: Agent, given: dict[str, Any], stored: dict[str, Any]) -> None:
    answer = await alice.ask(name="health", action="create", **HOURLY, **given)

    assert_answer(answer, "accepted", "created")
    obj = await system.schedule("alice-health")
    assert obj is not None
    assert obj["spec"].items() >= stored.items()


@pytest.mark.parametrize("change", [
    pytest.param({"schedule": "*/30 * * * *"}, id="schedule"),
    pytest.param({"task": "look at the error budget too"}, id="task"),
    pytest.param({"type": "sweep"}, id="type"),
    pytest.param({"timeZone": "America/New_York"}, id="timeZone"),
    pytest.param({"concurrencyPolicy": "Replace"}, id="concurrencyPolicy"),
    pytest.param({"includeMemory": False}, id="includeMemory"),
    pytest.param({"schedule": "0 9 * * 1-5", "task": "weekday digest", "type": "scheduled"},
                 id="several"),
])
async def test_update_changes_only_the_fields_given(
        system: System, alice: Agent, change: dict[str, Any]) -> None:
    await alice.ask(name="health", action="create", **HOURLY)
    before = await system.schedule("alice-health")
    assert before is not None

    answer = await alice.ask(name="health", action="update", **change)

    assert_answer(answer, "accepted", "updated schedule 'alice-health'")
    after = await system.schedule("alice-health")
    assert after is not None
    assert after["spec"] == before["spec"] | change
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert answer["schedule"].items() >= change.items()


@pytest.mark.parametrize("same", [
    pytest.param({"task": HOURLY["task"]}, id="same-task"),
    pytest.param({"schedule": "@hourly", "type": "heartbeat"}, id="same-schedule-and-default-type"),
    pytest.param({"includeMemory": True, "concurrencyPolicy": "Forbid"}, id="same-defaults"),
])
async def test_update_with_unchanged_fields_writes_nothing(
        system: System, alice: Agent, same: dict[str, Any]) -> None:
    await alice.ask(name="health", action="create", **HOURLY)
    before, revision = await system.snapshot(), system.store.revision()

    answer = await alice.ask(name="health", action="update", **same)

    assert_answer(answer, "accepted", "already has these settings", "nothing changed")
    assert system.store.revision() == revision
    assert await system.snapshot() == before  # the resourceVersion did not move either


@pytest.mark.parametrize(("setup", "action", "suspend", "words"), [
    pytest.param([], "suspend", True, ("suspended schedule 'alice-health'", "(suspended)"), id="suspend"),
    pytest.param(["suspend"], "resume", False, ("resumed schedule 'alice-health'", "next run at"),
                 id="resume"),
    pytest.param(["suspend", "resume"], "suspend", True, ("suspended schedule 'alice-health'",),
                 id="suspend-after-resume"),
])
async def test_suspend_and_resume(system: System, alice: Agent, setup: list[str], action: str,
                                  suspend: bool, words: tuple[str, ...]) -> None:
    await alice.ask(name="health", action="create", **HOURLY)
    created = await system.schedule("alice-health")
    assert created is not None
    for step in setup:
        await alice.ask(name="health", action=step)

    answer = await alice.ask(name="health", action=action)

    assert_answer(answer, "accepted", *words)
    assert answer["schedule"]["suspend"] is suspend
    stored = await system.schedule("alice-health")
    assert stored is not None
    assert stored["spec"] == created["spec"] | {"suspend": suspend}


@pytest.mark.parametrize(("action", "state"), [
    pytest.param("suspend", "already suspended", id="suspend-twice"),
    pytest.param("resume", "already active", id="resume-active"),
])
async def test_suspend_or_resume_in_that_state_already_writes_nothing(
        system: System, alice: Agent, action: str, state: str) -> None:
    await alice.ask(name="health", action="create", **HOURLY)
    if action == "suspend":
        await alice.ask(name="health", action="suspend")
    before, revision = await system.snapshot(), system.store.revision()

    answer = await alice.ask(name="health", action=action)

    assert_answer(answer, "accepted", state, "nothing changed")
    assert system.store.revision() == revision
    assert await system.snapshot() == before


async def test_delete_removes_the_schedule(system: System, alice: Agent) -> None:
    await alice.ask(name="health", action="create", **HOURLY)

    answer = await alice.ask(name="health", action="delete")

    assert_answer(answer, "accepted", "deleted schedule 'alice-health'")
    assert answer["schedule"] is None
    assert await system.schedule("alice-health") is None


@pytest.mark.parametrize("request_body", [
    pytest.param({"action": "update", "task": "anything"}, id="update"),
    pytest.param({"action": "suspend"}, id="suspend"),
    pytest.param({"action": "resume"}, id="resume"),
    pytest.param({"action": "delete"}, id="delete"),
])
async def test_actions_on_a_missing_schedule_are_rejected(
        system: System, alice: Agent, request_body: dict[str, Any]) -> None:
    await alice.ask(name="other", action="create", **HOURLY)
    before = await system.snapshot()

    answer = await alice.ask(name="ghost", **request_body)

    assert_answer(answer, "rejected", "no schedule named 'ghost' exists", "alice-ghost", "create it first")
    assert answer["schedule"] is None
    assert await system.snapshot() == before


async def test_create_of_an_existing_schedule_updates_it(system: System, alice: Agent) -> None:
    await alice.ask(name="health", action="create", **HOURLY)
    before = await system.schedule("alice-health")
    assert before is not None

    answer = await alice.ask(name="health", action="create", schedule="@daily", task="daily check")

    assert_answer(answer, "accepted", "updated (it already existed) schedule 'alice-health'")
    after = await system.schedule("alice-health")
    assert after is not None
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"] == before["spec"] | {"schedule": "@daily", "task": "daily check"}
    assert await system.schedule_names() == ["alice-health"]


async def test_create_of_an_identical_schedule_writes_nothing(system: System, alice: Agent) -> None:
    await alice.ask(name="health", action="create", **HOURLY)
    before, revision = await system.snapshot(), system.store.revision()

    answer = await alice.ask(name="health", action="create", **HOURLY)

    assert_answer(answer, "accepted", "nothing changed")
    assert system.store.revision() == revision
    assert await system.snapshot() == before


async def test_a_lifecycle_in_one_burst_is_applied_in_order(system: System, alice: Agent) -> None:
    """Requests of one instance are applied one at a time, in the order written, even
    when the router finds them all at once (it fetches them in one batch)."""
    await system.stop_routers()
    bodies = [
        {"name": "a", "action": "create", **HOURLY},
        {"name": "a", "action": "update", "task": "second version"},
        {"name": "a", "action": "suspend"},
        {"name": "b", "action": "create", **HOURLY},
        {"name": "b", "action": "delete"},
        {"name": "c", "action": "create", **HOURLY},
        {"name": "c", "action": "create", "schedule": "@daily", "task": "third"},
    ]
    requests = [alice.submit(body) for body in bodies]
    await eventually(lambda: alice.bridge.published == len(bodies), what="every request published")
    await system.start_router()

    answers = [await alice.answer(r) for r in requests]

    assert [a["status"] for a in answers] == ["accepted"] * len(bodies), answers
    a = await system.schedule("alice-a")
    c = await system.schedule("alice-c")
    assert a is not None
    assert c is not None
    assert (a["spec"]["task"], a["spec"]["suspend"]) == ("second version", True)
    assert (c["spec"]["schedule"], c["spec"]["task"]) == ("@daily", "third")
    assert await system.schedule_names() == ["alice-a", "alice-c"]
