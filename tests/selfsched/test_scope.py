"""Scope and ownership: an agent changes only the schedules it created, under names
it may use. Every refusal leaves the whole store as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sympozium_schedule.agents.schedule_task import result_path
from tests.selfsched.conftest import Agent, System, assert_answer

# The router's and the bridge's logic: on the in-memory bus (see conftest).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.memory_bus]

HOURLY: dict[str, Any] = {"schedule": "@hourly", "task": "check the cluster"}

ALL_ACTIONS = [
    pytest.param({"action": "update", "task": "taken over"}, id="update"),
    pytest.param({"action": "suspend"}, id="suspend"),
    pytest.param({"action": "resume"}, id="resume"),
    pytest.param({"action": "delete"}, id="delete"),
    pytest.param({"action": "create", **HOURLY}, id="create"),
]


@pytest.mark.parametrize("request_body", ALL_ACTIONS)
async def test_a_schedule_a_person_created_is_out_of_reach(
        system: System, alice: Agent, request_body: dict[str, Any]) -> None:
    await system.create_by_hand("alice-nightly", instance="alice")
    before = await system.snapshot()

    answer = await alice.ask(name="nightly", **request_body)

    assert_answer(answer, "rejected", "'alice-nightly' exists but was not created by this agent",
                  "Use another name")
    assert await system.snapshot() == before


@pytest.mark.parametrize("request_body", ALL_ACTIONS)
async def test_another_agent_cannot_reach_the_first_agents_schedule(
        system: System, alice: Agent, bob: Agent, request_body: dict[str, Any]) -> None:
    await alice.ask(name="report", action="create", **HOURLY)
    before = await system.snapshot()

    answer = await bob.ask(name="report", **request_body)

    alices = before[("SympoziumSchedule", "default", "alice-report")]
    assert await system.schedule("alice-report") == alices
    if request_body["action"] == "create":
        # Bob gets a schedule of his own, under his own prefix.
        assert_answer(answer, "accepted", "created schedule 'bob-report'")
        assert await system.schedule_names() == ["alice-report", "bob-report"]
    else:
        assert_answer(answer, "rejected", "no schedule named 'report' exists for this agent",
                      "'bob-report'")
        assert await system.snapshot() == before


async def test_another_run_of_the_same_instance_is_the_same_agent(
        system: System, alice: Agent, bob: Agent) -> None:
    """Ownership is by instance, not by run: tomorrow's run of alice manages what
    today's created. Each answer goes to the run that asked, and to no other."""
    later = await system.add_agent("alice", run="alice-run-2")
    created = alice.submit({"name": "report", "action": "create", **HOURLY})
    assert_answer(await alice.answer(created), "accepted", "created")

    suspended = later.submit({"name": "report", "action": "suspend"})
    assert_answer(await later.answer(suspended), "accepted", "'alice-report'", "(suspended)")

    stored = await system.schedule("alice-report")
    assert stored is not None
    assert stored["spec"]["suspend"] is True
    assert sorted(p.name for p in alice.folder.glob("*.result.json")) == [result_path(created).name]
    assert sorted(p.name for p in later.folder.glob("*.result.json")) == [result_path(suspended).name]
    assert list(bob.folder.glob("*.result.json")) == []


@pytest.mark.parametrize("request_body", ALL_ACTIONS)
async def test_an_instance_whose_prefix_collides_cannot_take_over(
        system: System, alice: Agent, request_body: dict[str, Any]) -> None:
    """Instance ``alice-ops`` asking for ``daily`` addresses ``alice-ops-daily``: the
    name alice's ``ops-daily`` is stored under. The labels, not the name, decide."""
    await system.add_instance("alice-ops")
    ops = await system.add_agent("alice-ops")
    await alice.ask(name="ops-daily", action="create", **HOURLY)
    before = await system.snapshot()

    answer = await ops.ask(name="daily", **request_body)

    assert_answer(answer, "rejected", "'alice-ops-daily' exists but was not created by this agent")
    assert await system.snapshot() == before


@pytest.mark.parametrize("name", [
    pytest.param("team/health", id="slash"),
    pytest.param("..", id="dot-dot"),
    pytest.param("../bob-report", id="path-traversal"),
    pytest.param("a.b", id="dot"),
    pytest.param("Health", id="uppercase"),
    pytest.param("cluster health", id="space"),
    pytest.param("-health", id="leading-dash"),
    pytest.param("health-", id="trailing-dash"),
    pytest.param("h" * 64, id="64-chars"),
    pytest.param("", id="empty"),
])
async def test_names_that_are_not_dns_labels_are_rejected(
        system: System, alice: Agent, bob: Agent, name: str) -> None:
    await bob.ask(name="report", action="create", **HOURLY)
    before = await system.snapshot()

    request = alice.drop("bad-name.json", json.dumps({"name": name, "action": "create", **HOURLY}))
    answer = await alice.answer(request)

    assert_answer(answer, "rejected", "request.name")
    assert await system.snapshot() == before


async def test_a_name_too_long_with_the_instance_prefix_is_rejected(system: System, alice: Agent) -> None:
    before = await system.snapshot()
    name = "h" * 60  # a valid label, but "alice-" + name is 66 characters

    answer = await alice.ask(name=name, action="create", **HOURLY)

    assert_answer(answer, "rejected", "is 66 characters; the limit is 63", "Use a shorter name")
    assert await system.snapshot() == before


@pytest.mark.parametrize("name", [
    pytest.param("team/health", id="slash"),
    pytest.param("Health", id="uppercase"),
    pytest.param("h" * 64, id="64-chars"),
])
async def test_the_tool_refuses_bad_names_without_writing_a_request(alice: Agent, name: str) -> None:
    answer = await alice.ask(name=name, action="create", **HOURLY)

    assert answer["status"] == "rejected"
    assert "name" in answer["message"]
    assert sorted(p.name for p in alice.folder.iterdir()) == [".outbox", ".sent"]
    assert list((alice.folder / ".outbox").iterdir()) == list((alice.folder / ".sent").iterdir()) == []


@pytest.mark.parametrize("field", [
    pytest.param({"instanceRef": "bob"}, id="instanceRef"),
    pytest.param({"namespace": "kube-system"}, id="namespace"),
    pytest.param({"labels": {"sympozium.ai/instance": "bob"}}, id="labels"),
    pytest.param({"metadata": {"name": "bob-report"}}, id="metadata"),
])
async def test_the_body_cannot_claim_another_identity(
        system: System, alice: Agent, bob: Agent, field: dict[str, Any]) -> None:
    """Who is asking comes from the bridge; identity fields in the body are refused."""
    await bob.ask(name="report", action="create", **HOURLY)
    before = await system.snapshot()

    request = alice.drop("spoof.json", json.dumps({"name": "report", "action": "update",
                                                   "task": "hijacked", **field}))
    answer = await alice.answer(request)

    assert_answer(answer, "rejected", next(iter(field)))
    assert await system.snapshot() == before


async def test_an_agent_whose_instance_does_not_exist_is_rejected(system: System) -> None:
    ghost = await system.add_agent("ghost")
    before = await system.snapshot()

    answer = await ghost.ask(name="health", action="create", **HOURLY)

    assert_answer(answer, "rejected", "SympoziumInstance 'ghost' does not exist in namespace 'default'")
    assert await system.snapshot() == before


@pytest.mark.parametrize("request_file", [
    pytest.param("../../../escape.json", id="dot-dot"),
    pytest.param("/tmp/escape.json", id="absolute"),
    pytest.param("nested/escape.json", id="nested"),
])
async def test_an_answer_never_lands_outside_the_agents_folder(
        system: System, alice: Agent, request_file: str) -> None:
    """The answer names its request file; whatever a message on the bus claims, the
    bridge writes the answer next to the agent's requests and nowhere else."""
    before = set(system.root.rglob("*.result.json"))

    await system.publish_request(alice, {"name": "x", "action": "create", **HOURLY},
                                 request_file=request_file)
    answer = await alice.answer(alice.folder / "escape.json")

    assert_answer(answer, "accepted", "created schedule 'alice-x'")
    assert set(system.root.rglob("*.result.json")) - before == {alice.folder / "escape.result.json"}
    assert not ((alice.folder / request_file).parent / "escape.result.json").exists()
