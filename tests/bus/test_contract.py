"""The bus port's contract (ports/bus.py), held against every bus (see conftest): what
the router's logic and the bridge rely on behaves the same on the in-memory bus as on
a real NATS server, so tests of that logic may use either.

"Nothing else was delivered" is shown without waiting for silence: a marker is
published after, and once the marker has arrived nothing published before it can
still come (one stream, delivered in order)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from sympozium_schedule.ports.bus import (
    RESULT_STREAM,
    ROUTER_DURABLE,
    BusConnection,
    BusUnavailable,
    Delivery,
    Disposition,
    PublishRefused,
    RunSubjects,
    envelope,
)
from tests import support
from tests.bus.conftest import World

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT = 20.0
eventually = functools.partial(support.eventually, timeout=TIMEOUT)
ALICE = RunSubjects("default", "alice", "alice-run-1")
BOB = RunSubjects("default", "bob", "bob-run-1")

Verdict = Callable[[Delivery], tuple[Disposition, float]]


def ack(_: Delivery) -> tuple[Disposition, float]:
    return Disposition.ACK, 0.0


class Consumer:
    """The router's side: a durable consumer recording each delivery."""

    def __init__(self, bus: BusConnection, stream: str, verdict: Verdict = ack, *,
                 durable: str = ROUTER_DURABLE, concurrency: int = 64):
        self.bus = bus
        self.stream = stream
        self.verdict = verdict
        self.durable = durable
        self.concurrency = concurrency
        self.seen: list[Delivery] = []
        self.task: asyncio.Task[None] | None = None

    async def handle(self, delivery: Delivery) -> tuple[Disposition, float]:
        self.seen.append(delivery)
        return self.verdict(delivery)

    def start(self) -> Consumer:
        self.task = asyncio.create_task(self.bus.consume(
            ["sympozium.schedule.request.>"], self.durable, self.handle, stream=self.stream,
            concurrency=self.concurrency))
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def bodies(self) -> list[str]:
        return [d.data.decode() for d in self.seen]

    async def until(self, body: str) -> list[str]:
        await eventually(lambda: body in self.bodies(), what=f"{body!r} delivered")
        return self.bodies()


@pytest_asyncio.fixture(loop_scope="module")
async def bus(world: World) -> AsyncIterator[BusConnection]:
    connection = await world.broker.connect(name="contract")
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture(loop_scope="module")
async def requests(bus: BusConnection) -> str:
    return await bus.ensure_request_stream()


# --- publishing ------------------------------------------------------------------------------


async def test_a_publish_is_stored_and_delivered_with_its_subject_and_id(
        bus: BusConnection, requests: str) -> None:
    assert await bus.publish(ALICE.request, b"one", msg_id="req-1")
    consumer = Consumer(bus, requests).start()
    try:
        await consumer.until("one")
        (delivery,) = consumer.seen
        assert delivery.subject == ALICE.request
        assert delivery.headers.get("Nats-Msg-Id") == "req-1"
        assert delivery.delivered == 1
        assert delivery.stream_seq >= 1
    finally:
        await consumer.stop()


async def test_a_repeated_message_id_is_recognised_and_stored_once(
        bus: BusConnection, requests: str) -> None:
    assert await bus.publish(ALICE.request, b"first", msg_id="same")
    assert not await bus.publish(ALICE.request, b"copy", msg_id="same")
    await bus.publish(ALICE.request, b"marker", msg_id="marker")
    consumer = Consumer(bus, requests).start()
    try:
        assert await consumer.until("marker") == ["first", "marker"]
    finally:
        await consumer.stop()


async def test_a_subject_over_its_limit_is_refused(bus: BusConnection, requests: str) -> None:
    for i in range(3):  # LIMITS.requests_per_run
        assert await bus.publish(ALICE.request, f"{i}".encode(), msg_id=f"a-{i}")
    with pytest.raises(PublishRefused, match="full"):
        await bus.publish(ALICE.request, b"one too many", msg_id="a-3")
    assert await bus.publish(BOB.request, b"another run's subject", msg_id="b-0")


async def test_a_message_over_the_size_limit_is_refused(bus: BusConnection, requests: str) -> None:
    with pytest.raises(PublishRefused, match="too large"):
        await bus.publish(ALICE.request, b"x" * 2048, msg_id="big")


async def test_a_publish_no_stream_captures_is_unavailable(bus: BusConnection) -> None:
    with pytest.raises(BusUnavailable):
        await bus.publish("nobody.stores.this", b"lost", msg_id="x")


# --- consuming -------------------------------------------------------------------------------


async def test_an_acked_delivery_is_gone(bus: BusConnection, requests: str) -> None:
    await bus.publish(ALICE.request, b"applied", msg_id="one")
    consumer = Consumer(bus, requests).start()
    await consumer.until("applied")
    await consumer.stop()

    await bus.publish(ALICE.request, b"marker", msg_id="marker")
    again = Consumer(bus, requests).start()
    try:
        assert await again.until("marker") == ["marker"]
    finally:
        await again.stop()


async def test_a_nacked_delivery_comes_again_counted(bus: BusConnection, requests: str) -> None:
    def nak_first(delivery: Delivery) -> tuple[Disposition, float]:
        return (Disposition.NAK, 0.05) if delivery.delivered == 1 else (Disposition.ACK, 0.0)

    await bus.publish(ALICE.request, b"retry me", msg_id="one")
    consumer = Consumer(bus, requests, nak_first).start()
    try:
        await eventually(lambda: len(consumer.seen) == 2, what="the redelivery")
        assert [d.delivered for d in consumer.seen] == [1, 2]
        assert consumer.seen[0].stream_seq == consumer.seen[1].stream_seq
    finally:
        await consumer.stop()


async def test_a_terminated_delivery_never_comes_again(bus: BusConnection, requests: str) -> None:
    def term_poison(delivery: Delivery) -> tuple[Disposition, float]:
        return (Disposition.TERM, 0.0) if delivery.data == b"poison" else (Disposition.ACK, 0.0)

    await bus.publish(ALICE.request, b"poison", msg_id="one")
    consumer = Consumer(bus, requests, term_poison).start()
    await consumer.until("poison")
    await consumer.stop()

    await bus.publish(ALICE.request, b"marker", msg_id="marker")
    again = Consumer(bus, requests).start()
    try:
        assert await again.until("marker") == ["marker"]
    finally:
        await again.stop()


async def test_a_handler_that_raises_is_delivered_again(bus: BusConnection, requests: str) -> None:
    def explode_once(delivery: Delivery) -> tuple[Disposition, float]:
        if delivery.delivered == 1:
            raise RuntimeError("a bug in the handler")
        return Disposition.ACK, 0.0

    await bus.publish(ALICE.request, b"fragile", msg_id="one")
    consumer = Consumer(bus, requests, explode_once).start()
    try:
        await eventually(lambda: [d.delivered for d in consumer.seen] == [1, 2],
                         what="the redelivery after the handler failed")
    finally:
        await consumer.stop()


async def test_deliveries_start_in_stream_order_and_run_side_by_side(
        bus: BusConnection, requests: str) -> None:
    """The router takes each instance's turn before its first await: it needs the
    deliveries started in stream order, and several handled at once."""
    started: list[str] = []
    release = asyncio.Event()

    async def handler(delivery: Delivery) -> tuple[Disposition, float]:
        started.append(delivery.data.decode())
        await release.wait()
        return Disposition.ACK, 0.0

    for i in range(3):
        await bus.publish(ALICE.request, f"a{i}".encode(), msg_id=f"a{i}")
        await bus.publish(BOB.request, f"b{i}".encode(), msg_id=f"b{i}")
    task = asyncio.create_task(bus.consume(["sympozium.schedule.request.>"], ROUTER_DURABLE,
                                           handler, stream=requests))
    try:
        await eventually(lambda: len(started) == 6, what="all six handled at once")
        assert started == ["a0", "b0", "a1", "b1", "a2", "b2"]
    finally:
        release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_consumers_of_one_durable_share_its_messages(
        bus: BusConnection, requests: str) -> None:
    first = Consumer(bus, requests, concurrency=2).start()
    second = Consumer(bus, requests, concurrency=2).start()
    try:
        sent = {f"m{i}" for i in range(12)}
        for i, body in enumerate(sorted(sent)):
            run = ALICE if i % 2 else BOB
            await bus.publish(run.request.replace("run-1", f"run-{i}"), body.encode(),
                              msg_id=body)
        await eventually(lambda: set(first.bodies()) | set(second.bodies()) == sent,
                         what="every message delivered")
        assert not set(first.bodies()) & set(second.bodies()), "a message went to both"
    finally:
        await first.stop()
        await second.stop()


# --- answers ---------------------------------------------------------------------------------


async def test_answers_are_read_back_by_subject_the_last_one_kept(bus: BusConnection) -> None:
    stream = await bus.ensure_result_stream()
    assert stream == RESULT_STREAM
    assert await bus.direct_get(stream, ALICE.answer("req-1")) is None
    await bus.publish(ALICE.answer("req-1"), b"first answer")
    await bus.publish(ALICE.answer("req-1"), b"the same answer, published again")
    await bus.publish(ALICE.answer("req-2"), b"another request's")

    assert await bus.direct_get(stream, ALICE.answer("req-1")) == b"the same answer, published again"
    assert await bus.direct_get(stream, ALICE.answer("req-2")) == b"another request's"


async def test_many_answers_at_once_each_land_on_its_own_subject(bus: BusConnection) -> None:
    """What the router's handlers do together (on NATS: one batch, one acknowledgement)."""
    stream = await bus.ensure_result_stream()
    await asyncio.gather(*(bus.publish(ALICE.answer(f"r{i}"), f"answer {i}".encode())
                           for i in range(150)))
    for i in range(150):
        assert await bus.direct_get(stream, ALICE.answer(f"r{i}")) == f"answer {i}".encode()


async def test_a_subscription_sees_what_is_published_on_its_subjects(bus: BusConnection) -> None:
    await bus.ensure_result_stream()
    got: list[tuple[str, bytes]] = []

    async def collect(data: bytes, subject: str) -> None:
        got.append((subject, data))

    sub = await bus.subscribe(f"{ALICE.answers}.>", collect)
    try:
        await bus.publish(ALICE.answer("stored"), b"1")
        await bus.publish_plain(ALICE.answer("plain"), b"2")
        await bus.publish(BOB.answer("not-mine"), b"3")
        await bus.publish_plain(ALICE.answer("last"), b"4")
        await eventually(lambda: len(got) == 3, what="alice's three answers")
        assert got == [(ALICE.answer("stored"), b"1"), (ALICE.answer("plain"), b"2"),
                       (ALICE.answer("last"), b"4")]
    finally:
        await sub.unsubscribe()


async def test_following_a_stream_gives_what_it_holds_then_what_comes(bus: BusConnection) -> None:
    await bus.ensure_result_stream()
    await bus.publish(ALICE.answer("old"), b"before")
    got: list[bytes] = []

    async def collect(data: bytes) -> None:
        got.append(data)

    sub = await bus.follow(f"{ALICE.answers}.>", collect)
    try:
        await bus.publish(ALICE.answer("new"), b"after")
        await eventually(lambda: got == [b"before", b"after"], what="both, in order")
    finally:
        await sub.unsubscribe()


# --- the record of answered requests ---------------------------------------------------------


async def test_the_bucket_remembers_what_was_put(bus: BusConnection) -> None:
    bucket = await bus.bucket()
    assert await bucket.get("unknown") is None
    await bucket.put("req", b"answer")
    assert await bucket.get("req") == b"answer"
    await bucket.put("req", b"answer, rewritten")
    assert await bucket.get("req") == b"answer, rewritten"


async def test_many_gets_and_puts_at_once_see_each_key_alone(bus: BusConnection) -> None:
    """What the router's handlers do together (on NATS: batched reads and writes)."""
    bucket = await bus.bucket()
    keys = [f"k{i}" for i in range(150)]
    assert await asyncio.gather(*(bucket.get(k) for k in keys)) == [None] * 150
    await asyncio.gather(*(bucket.put(k, k.encode() * 2) for k in keys[::2]))
    values = await asyncio.gather(*(bucket.get(k) for k in keys))
    assert values == [k.encode() * 2 if i % 2 == 0 else None for i, k in enumerate(keys)]


async def test_buckets_of_other_names_are_apart(bus: BusConnection) -> None:
    mine, other = await bus.bucket(), await bus.bucket("other")
    await mine.put("k", b"mine")
    assert await other.get("k") is None


# --- request and reply -----------------------------------------------------------------------


async def test_a_request_is_answered_by_who_serves_its_subject(bus: BusConnection) -> None:
    seen: list[bytes] = []

    async def respond(data: bytes, headers: Any) -> bytes | None:
        seen.append(data)
        return json.dumps({"echo": data.decode()}).encode()

    sub = await bus.serve("contract.service", respond)
    try:
        reply = await bus.request("contract.service", b"ping", timeout=5.0)
        assert json.loads(reply) == {"echo": "ping"}
        assert seen == [b"ping"]
    finally:
        await sub.unsubscribe()


async def test_a_request_nobody_serves_is_unavailable(bus: BusConnection) -> None:
    with pytest.raises(BusUnavailable):
        await bus.request("contract.nobody", b"ping", timeout=1.0)


# --- the connection --------------------------------------------------------------------------


async def test_a_closed_connection_is_not_usable(world: World) -> None:
    connection = await world.broker.connect(name="short-lived")
    assert connection.usable
    await connection.close()
    assert not connection.usable


async def test_the_envelope_is_sympoziums_event(bus: BusConnection) -> None:
    body = json.loads(envelope({"name": "x"}, {"agentRunID": "r"}))
    assert set(body) == {"topic", "timestamp", "metadata", "data"}
    assert body["topic"] == "schedule.upsert"
    assert body["timestamp"].endswith("Z")
