"""The bus heals and stays bounded (issue 9): the router re-creates a consumer that
vanished without applying anything twice, and a request over the stream's limits is
refused to the agent, in words it can act on, instead of growing the data directory."""

from __future__ import annotations

import nats.js.errors
import pytest

from sympozium_schedule.adapters.nats.bus import ROUTER_DURABLE, BusLimits
from sympozium_schedule.adapters.nats.subjects import REQUEST_STREAM, RESULT_STREAM
from tests.selfsched.conftest import Agent, System, assert_answer, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOURLY = {"schedule": "@hourly", "task": "check the cluster"}


async def test_a_deleted_consumer_is_recreated_and_nothing_is_applied_twice(
        system: System, alice: Agent) -> None:
    assert_answer(await alice.ask(name="one", action="create", **HOURLY), "accepted")
    assert_answer(await alice.ask(name="one", action="delete"), "accepted", "deleted")
    revision = system.store.revision()
    bus = await system.bus()

    await bus.js.delete_consumer(REQUEST_STREAM, ROUTER_DURABLE)
    answer = await alice.ask(name="two", action="create", **HOURLY)

    assert_answer(answer, "accepted", "created schedule 'alice-two'")
    assert await system.schedule_names() == ["alice-two"], "the old create came back"
    assert system.store.revision() == revision + 1
    assert (await system.consumer()).name == ROUTER_DURABLE
    system.check_router()


async def test_a_deleted_request_stream_is_recreated(system: System, alice: Agent) -> None:
    bus = await system.bus()
    await bus.js.delete_stream(REQUEST_STREAM)

    answer = await alice.ask(name="after", action="create", **HOURLY)

    assert_answer(answer, "accepted", "created")
    system.check_router()


@pytest.mark.parametrize("victim", [pytest.param("KV_sympozium-schedule-requests", id="dedupe-bucket"),
                                    pytest.param(RESULT_STREAM, id="answers-stream")])
async def test_a_deleted_bucket_or_answer_stream_is_recreated(
        system: System, alice: Agent, victim: str) -> None:
    assert_answer(await alice.ask(name="before", action="create", **HOURLY), "accepted")
    bus = await system.bus()
    await bus.js.delete_stream(victim)

    answer = await alice.ask(name="after", action="create", **HOURLY)

    # Applied once; if the record of it could not be written the first time, the
    # redelivery finds the schedule as asked ("nothing changed") and says so.
    assert_answer(answer, "accepted", "'alice-after'")
    assert await system.schedule_names() == ["alice-after", "alice-before"]
    async def restored() -> bool:
        try:
            return (await bus.js.stream_info(victim)).config.name == victim
        except nats.js.errors.NotFoundError:
            return False

    await eventually(restored, what=f"{victim} made again")
    system.check_router()


async def test_the_dedupe_record_must_outlive_the_requests() -> None:
    limits = BusLimits()
    assert limits.dedupe_ttl > limits.request_max_age
    with pytest.raises(ValueError, match="must outlive"):
        BusLimits(request_max_age=limits.dedupe_ttl)


async def test_the_shipped_stream_is_bounded(system: System) -> None:
    bus = await system.bus()
    config = (await bus.js.stream_info(REQUEST_STREAM)).config
    shipped = BusLimits()

    assert config.retention == "workqueue"
    assert config.max_bytes == shipped.request_max_bytes > 0
    assert config.max_msgs == shipped.request_max_msgs > 0
    assert config.max_age == shipped.request_max_age.total_seconds() > 0
    assert config.max_msg_size == shipped.request_max_msg_size > 0
    assert config.max_msgs_per_subject == shipped.requests_per_run > 0
    assert config.discard == "new"
    assert config.discard_new_per_subject


PER_RUN_3 = pytest.mark.parametrize("router_settings", [
    pytest.param({"bus_limits": BusLimits(requests_per_run=3)}, id="3-per-run")])


@PER_RUN_3
async def test_a_full_queue_is_answered_as_a_rejection(system: System, alice: Agent, bob: Agent) -> None:
    """No router consumes (it is down); alice may have 3 requests waiting. The 4th is
    refused by JetStream, and her bridge tells her so. Bob's queue is his own."""
    await system.stop_routers()
    waiting = [alice.submit({"name": f"job-{n}", "action": "create", **HOURLY}) for n in range(3)]
    await eventually(lambda: alice.bridge.published == 3, what="3 requests stored")
    before = await system.snapshot()

    refused = await alice.answer(alice.submit({"name": "job-3", "action": "create", **HOURLY}))
    bobs = bob.submit({"name": "job", "action": "create", **HOURLY})

    assert_answer(refused, "rejected", "the request queue is full", "Try again later")
    assert await system.snapshot() == before
    await system.start_router(bus_limits=BusLimits(requests_per_run=3))
    assert [(await alice.answer(r))["status"] for r in waiting] == ["accepted"] * 3
    assert_answer(await bob.answer(bobs), "accepted")


@pytest.mark.parametrize("router_settings", [
    pytest.param({"bus_limits": BusLimits(request_max_msg_size=2048)}, id="2KiB-messages")])
async def test_a_message_over_the_size_limit_is_answered_as_a_rejection(
        system: System, alice: Agent) -> None:
    before = await system.snapshot()

    answer = await alice.ask(name="big", action="create", schedule="@hourly", task="x" * 3000)

    assert_answer(answer, "rejected", "too large for the bus")
    assert await system.snapshot() == before
    assert_answer(await alice.ask(name="small", action="create", **HOURLY), "accepted")
