"""The NATS adapter's batched round trips (adapters/nats/batching.py), on the real
server: calls made together go out as one request, a refused batch still gives
each caller its own verdict, and deleted entries read as absent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.js import api

from sympozium_schedule.adapters.nats.batching import AtomicPublisher, LastValues
from sympozium_schedule.adapters.nats.bus import NatsBus
from sympozium_schedule.ports.bus import PublishRefused

pytestmark = pytest.mark.asyncio(loop_scope="module")

STREAM = "BATCHING"


@pytest_asyncio.fixture(loop_scope="module")
async def bus(nats_url: str) -> AsyncIterator[NatsBus]:
    connection = await NatsBus.connect(nats_url, name="batching")
    await connection.js.add_stream(api.StreamConfig(
        name=STREAM, subjects=["batching.>"], allow_atomic=True, allow_direct=True,
        max_msg_size=100, max_msgs_per_subject=1, discard=api.DiscardPolicy.OLD))
    try:
        yield connection
    finally:
        await connection.js.delete_stream(STREAM)
        await connection.close()


async def test_publishes_made_together_are_one_batch(bus: NatsBus) -> None:
    publisher = AtomicPublisher(bus.nc)
    await asyncio.gather(*(publisher.publish(f"batching.{i}", b"v") for i in range(10)))
    assert publisher.batches == 1
    assert (await bus.js.stream_info(STREAM)).state.messages == 10


async def test_a_refused_batch_gives_each_publish_its_own_verdict(bus: NatsBus) -> None:
    publisher = AtomicPublisher(bus.nc)
    outcomes = await asyncio.gather(
        publisher.publish("batching.a", b"fits"),
        publisher.publish("batching.b", b"x" * 500),
        publisher.publish("batching.c", b"fits too"),
        return_exceptions=True)
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], PublishRefused)
    assert publisher.batches == 0, "the batch was refused whole, then sent one by one"
    assert (await bus.js.get_msg(STREAM, subject="batching.c", direct=True)).data == b"fits too"


async def test_reads_made_together_are_one_request(bus: NatsBus) -> None:
    for i in range(5):
        await bus.publish(f"batching.r{i}", f"value {i}".encode())
    reads = LastValues(bus.nc, STREAM)
    try:
        values = await asyncio.gather(*(reads.get(f"batching.r{i}") for i in range(7)))
    finally:
        await reads.close()
    assert values == [f"value {i}".encode() for i in range(5)] + [None, None]
    assert reads.batches == 1


async def test_a_deleted_key_reads_as_absent(bus: NatsBus) -> None:
    bucket = await bus.bucket("batching-kv")
    try:
        await bucket.put("gone", b"soon")
        kv = await bus.js.key_value("batching-kv")
        await kv.delete("gone")
        assert await bucket.get("gone") is None
    finally:
        await bus.js.delete_key_value("batching-kv")
