"""Guardrails (the router's Limits): violations are rejected with a message the model
can act on, never clamped, and nothing is stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sympozium_schedule.core.requests import Limits
from tests.selfsched.conftest import Agent, System, assert_answer

# The router's and the bridge's logic: on the in-memory bus (see conftest).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.memory_bus]

TASK = "check the cluster"
CAP_OF_2 = pytest.mark.parametrize("limits", [pytest.param(Limits(max_schedules_per_instance=2),
                                                           id="cap-2")])


@CAP_OF_2
async def test_the_per_instance_cap_rejects_one_more(system: System, alice: Agent) -> None:
    for name in ("one", "two"):
        assert_answer(await alice.ask(name=name, action="create", schedule="@hourly", task=TASK),
                      "accepted")
    before = await system.snapshot()

    answer = await alice.ask(name="three", action="create", schedule="@hourly", task=TASK)

    assert_answer(answer, "rejected", "already has 2 schedules", "the limit is 2", "Delete one first")
    assert await system.snapshot() == before


@pytest.mark.parametrize("limits", [pytest.param(Limits(max_schedules_per_instance=5), id="cap-5")])
async def test_a_burst_of_creates_never_passes_the_cap(system: System, alice: Agent) -> None:
    """Twelve creates written at once, handled as fast as the router can: the first five
    (in the order written) are accepted, the rest refused, nothing more is stored."""
    files = [alice.submit({"name": f"burst-{n}", "action": "create", "schedule": "@hourly",
                           "task": TASK}) for n in range(12)]
    answers = [await alice.answer(f) for f in files]

    assert [a["status"] for a in answers] == ["accepted"] * 5 + ["rejected"] * 7
    assert await system.schedule_names() == [f"alice-burst-{n}" for n in range(5)]


@CAP_OF_2
async def test_at_the_cap_existing_schedules_still_change_and_a_delete_frees_a_place(
        system: System, alice: Agent) -> None:
    for name in ("one", "two"):
        await alice.ask(name=name, action="create", schedule="@hourly", task=TASK)

    assert_answer(await alice.ask(name="two", action="update", task="new"), "accepted", "updated")
    assert_answer(await alice.ask(name="two", action="create", schedule="@daily", task=TASK),
                  "accepted", "it already existed")
    assert_answer(await alice.ask(name="one", action="delete"), "accepted", "deleted")
    assert_answer(await alice.ask(name="three", action="create", schedule="@hourly", task=TASK),
                  "accepted", "created")
    assert await system.schedule_names() == ["alice-three", "alice-two"]


@CAP_OF_2
async def test_the_cap_counts_per_instance_and_only_agent_schedules(
        system: System, alice: Agent, bob: Agent) -> None:
    await system.create_by_hand("alice-nightly")
    await system.create_by_hand("alice-weekly", schedule="0 3 * * 0")
    for name in ("one", "two"):
        await bob.ask(name=name, action="create", schedule="@hourly", task=TASK)

    for name in ("one", "two"):
        assert_answer(await alice.ask(name=name, action="create", schedule="@hourly", task=TASK),
                      "accepted", "created")


@pytest.mark.parametrize("expression", [
    pytest.param("*/1 * * * *", id="every-minute"),
    pytest.param("* * * * *", id="every-minute-plain"),
    pytest.param("*/4 * * * *", id="every-4-minutes"),
    pytest.param("0,1 9 * * *", id="irregular-1-minute-gap"),
    pytest.param("@every 10s", id="every-10s"),
    pytest.param("@every 4m59s", id="just-under-the-floor"),
])
async def test_schedules_faster_than_the_floor_are_rejected(
        system: System, alice: Agent, expression: str) -> None:
    before = await system.snapshot()

    answer = await alice.ask(name="fast", action="create", schedule=expression, task=TASK)

    assert_answer(answer, "rejected", repr(expression), "at most once every 5m",
                  "Choose a slower schedule")
    assert await system.snapshot() == before


@pytest.mark.parametrize("expression", [
    pytest.param("*/5 * * * *", id="every-5-minutes"),
    pytest.param("@every 5m", id="every-5m"),
    pytest.param("@hourly", id="hourly"),
])
async def test_schedules_at_the_floor_are_accepted(system: System, alice: Agent, expression: str) -> None:
    answer = await alice.ask(name="ok", action="create", schedule=expression, task=TASK)

    assert_answer(answer, "accepted", "created")


@pytest.mark.parametrize("limits", [pytest.param(Limits(min_interval=timedelta(hours=1)), id="floor-1h")])
async def test_the_floor_comes_from_the_limits_and_guards_updates(system: System, alice: Agent) -> None:
    await alice.ask(name="slow", action="create", schedule="@daily", task=TASK)
    before = await system.snapshot()

    answer = await alice.ask(name="slow", action="update", schedule="*/30 * * * *")

    assert_answer(answer, "rejected", "fires every 30m", "at most once every 1h")
    assert await system.snapshot() == before


@pytest.mark.parametrize("limits", [pytest.param(Limits(max_task_bytes=64), id="task-64-bytes")])
@pytest.mark.parametrize(("action", "task", "size"), [
    pytest.param("create", "x" * 65, 65, id="create-ascii"),
    pytest.param("create", "é" * 33, 66, id="create-counts-bytes-not-characters"),
    pytest.param("update", "y" * 100, 100, id="update"),
])
async def test_a_task_over_the_size_limit_is_rejected(
        system: System, alice: Agent, action: str, task: str, size: int) -> None:
    await alice.ask(name="existing", action="create", schedule="@hourly", task="short")
    before = await system.snapshot()

    name = "existing" if action == "update" else "big"
    fields: dict[str, Any] = {"schedule": "@hourly"} if action == "create" else {}
    answer = await alice.ask(name=name, action=action, task=task, **fields)

    assert_answer(answer, "rejected", f"request.task is {size} bytes; the limit is 64 bytes",
                  "Shorten the task")
    assert await system.snapshot() == before


@pytest.mark.parametrize("limits", [pytest.param(Limits(max_task_bytes=64), id="task-64-bytes")])
async def test_a_task_at_the_size_limit_is_accepted(system: System, alice: Agent) -> None:
    answer = await alice.ask(name="full", action="create", schedule="@hourly", task="x" * 64)

    assert_answer(answer, "accepted", "created")
