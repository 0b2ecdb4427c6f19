"""One request id, one application: a request delivered again is answered again but
never applied again, even when the store has moved on in between."""

from __future__ import annotations

import asyncio
import json

import pytest

from sympozium_schedule.ports.bus import envelope
from tests.selfsched.conftest import TIMEOUT, Agent, System, assert_answer

# The router's and the bridge's logic: on the in-memory bus (see conftest).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.memory_bus]

CREATE = {"name": "health", "action": "create", "schedule": "@hourly", "task": "check the cluster"}
DELETE = {"name": "health", "action": "delete"}


def create_envelope(alice: Agent) -> bytes:
    """The create of ``schedule-1.json`` exactly as alice's bridge builds it."""
    return envelope(CREATE, alice.metadata("schedule-1.json", "req-1"))


async def create_then_delete(system: System, alice: Agent) -> None:
    """Create ``alice-health`` by a raw envelope (request ``schedule-1``), then delete it."""
    assert await system.publish_request(alice, CREATE, request_file="schedule-1.json",
                                        request_id="req-1")
    assert_answer(await alice.answer(alice.folder / "schedule-1.json"), "accepted", "created")
    assert await system.publish_request(alice, DELETE, request_file="schedule-2.json",
                                        request_id="req-2")
    assert_answer(await alice.answer(alice.folder / "schedule-2.json"), "accepted", "deleted")
    assert await system.schedule("alice-health") is None


async def test_the_same_message_id_is_stored_once(system: System, alice: Agent) -> None:
    """A bridge retrying a publish whose ack it lost: JetStream drops the copy."""
    await create_then_delete(system, alice)
    revision = system.store.revision()

    stored = await system.publish_request(alice, CREATE, request_file="schedule-1.json",
                                          request_id="req-1")

    assert not stored, "JetStream did not recognise the duplicate"
    await system.drained()
    assert await system.schedule("alice-health") is None
    assert system.store.revision() == revision


@pytest.mark.parametrize("msg_id", [
    pytest.param(None, id="no-Nats-Msg-Id"),
    pytest.param("another-transport-id", id="different-Nats-Msg-Id"),
])
async def test_a_request_id_seen_before_is_answered_not_applied(
        system: System, alice: Agent, msg_id: str | None) -> None:
    """The create delivered again after the schedule was deleted must not re-create it.
    JetStream's duplicate window does not catch this copy (it has no message id, or
    another one, as a bridge that numbers its publishes would send); the router's
    key-value bucket of answered metadata.requestIds must."""
    await create_then_delete(system, alice)
    revision = system.store.revision()

    assert await system.publish_raw(alice, create_envelope(alice), msg_id=msg_id)
    await system.drained()

    assert system.router is not None
    assert system.router.handled == 3, "the copy was answered"
    assert await system.schedule("alice-health") is None, "the old create was applied again"
    assert system.store.revision() == revision


async def test_the_repeated_answer_is_the_first_one(system: System, alice: Agent) -> None:
    """Answered again from the bucket, word for word, although a fresh create of the
    now existing schedule would say 'nothing changed'."""
    assert await system.publish_request(alice, CREATE, request_file="schedule-1.json",
                                        request_id="req-1")
    first = await alice.answer(alice.folder / "schedule-1.json")
    assert_answer(first, "accepted", "created")
    revision = system.store.revision()
    bus = await system.port_bus()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(data: bytes, subject: str) -> None:
        answers.put_nowait(data)

    await bus.subscribe(alice.subjects.answer("req-1"), collect)
    await system.publish_raw(alice, create_envelope(alice))

    again = json.loads(await asyncio.wait_for(answers.get(), TIMEOUT))
    assert again == first
    assert system.store.revision() == revision


async def test_two_copies_in_hand_at_once_are_applied_once(system: System, alice: Agent) -> None:
    """Both copies are fetched together and read the record before either's turn comes
    (an earlier request of alice holds it): the second finds what the first stored."""
    bus = await system.port_bus()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(data: bytes, subject: str) -> None:
        answers.put_nowait(data)

    await bus.subscribe(alice.subjects.answer("req-1"), collect)
    revision = system.store.revision()
    earlier = {"name": "first", "action": "create", "schedule": "@hourly", "task": "first"}
    await asyncio.gather(
        system.publish_request(alice, earlier, request_file="schedule-0.json", request_id="req-0"),
        system.publish_raw(alice, create_envelope(alice), msg_id="copy-1"),
        system.publish_raw(alice, create_envelope(alice), msg_id="copy-2"))

    first = json.loads(await asyncio.wait_for(answers.get(), TIMEOUT))
    second = json.loads(await asyncio.wait_for(answers.get(), TIMEOUT))
    assert_answer(first, "accepted", "created")
    assert second == first, "the copy was applied again instead of answered from the record"
    await system.drained()
    assert system.store.revision() == revision + 2
