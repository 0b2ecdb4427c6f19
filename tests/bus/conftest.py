"""One bus contract, three buses: NATS JetStream (a real ``nats-server``) with the
router's batched round trips, the same server with every call its own request (how
the adapter works against a server older than 2.12), and the in-memory bus.

The NATS server is one per module; after each test its streams and buckets are
deleted, so nothing (not even the duplicate window) carries over.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import nats.js.errors
import pytest
import pytest_asyncio

from sympozium_schedule.adapters.memory import MemoryBroker
from sympozium_schedule.adapters.nats.bus import NatsBroker, NatsBus
from sympozium_schedule.adapters.nats.server import EmbeddedNats
from sympozium_schedule.ports.bus import (
    DEDUPE_BUCKET,
    REQUEST_STREAM,
    RESULT_STREAM,
    Broker,
    BusLimits,
)

# Small bounds, so the tests reach them.
LIMITS = BusLimits(requests_per_run=3, request_max_msg_size=1024, request_max_msgs=1000,
                   duplicate_window=timedelta(minutes=5))
KINDS = ["nats-batched", "nats-plain", "memory"]


@dataclass
class World:
    kind: str
    broker: Broker

    @property
    def nats(self) -> bool:
        return self.kind.startswith("nats")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = EmbeddedNats(Path(tmp_path_factory.mktemp("nats")))
    try:
        yield await server.start()
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module", params=KINDS)
async def world(request: pytest.FixtureRequest, nats_url: str) -> AsyncIterator[World]:
    kind = request.param
    if kind == "memory":
        yield World(kind, MemoryBroker(limits=LIMITS, ack_wait=2.0))
        return
    broker = NatsBroker(nats_url, limits=LIMITS, batched=kind == "nats-batched")
    try:
        yield World(kind, broker)
    finally:
        admin = await NatsBus.connect(nats_url, name="bus-contract-cleanup")
        try:
            for stream in (REQUEST_STREAM, RESULT_STREAM, f"KV_{DEDUPE_BUCKET}", "KV_other"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await admin.js.delete_stream(stream)
        finally:
            await admin.close()
