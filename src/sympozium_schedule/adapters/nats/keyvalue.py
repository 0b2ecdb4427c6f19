"""The router's record of answered requests: a JetStream key-value bucket whose entries
outlive any request the request stream can still hold (``BusLimits.dedupe_ttl``).

Reads and writes made in the same turn of the event loop share a round trip
(:mod:`.batching`) where the server can: reads need direct gets (2.11), writes
atomic batches (2.12); the bucket's stream is configured for both. On an older
server each is its own request, through nats-py's key-value API.
"""

from __future__ import annotations

from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.client import JetStreamContext

from sympozium_schedule.adapters.nats.batching import AtomicPublisher, LastValues
from sympozium_schedule.adapters.nats.streams import server_at_least, why
from sympozium_schedule.ports.bus import BusLimits, BusUnavailable


class NatsKeyValue:
    def __init__(self, kv: Any, *, reads: LastValues | None, writes: AtomicPublisher | None,
                 prefix: str):
        self._kv = kv
        self._reads = reads
        self._writes = writes
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        if self._reads is not None:
            return await self._reads.get(self._prefix + key)
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"key-value read failed: {why(exc)}") from exc
        value: bytes | None = entry.value
        return value

    async def put(self, key: str, value: bytes) -> None:
        if self._writes is not None:
            await self._writes.publish(self._prefix + key, value)
            return
        try:
            await self._kv.put(key, value)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"key-value write failed: {why(exc)}") from exc

    async def close(self) -> None:
        if self._reads is not None:
            await self._reads.close()


async def open_bucket(nc: Client, js: JetStreamContext, name: str, limits: BusLimits, *,
                      batched: bool = True, timeout: float = 2.0) -> NatsKeyValue:
    """The bucket, created if missing; one from an older version is brought to the TTL
    the limits ask for (and to batched reads and writes, where the server has them)."""
    ttl = limits.dedupe_ttl.total_seconds()
    direct = batched and server_at_least(nc, 2, 11)
    atomic = batched and server_at_least(nc, 2, 12)
    stream = f"KV_{name}"
    try:
        try:
            kv = await js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(config=api.KeyValueConfig(
                bucket=name, ttl=ttl, history=1, max_bytes=limits.dedupe_max_bytes))
        config = (await js.stream_info(stream)).config
        wanted = {"max_age": max(config.max_age or 0, ttl)}
        if (config.max_age or 0) < ttl:
            # A bucket from an older version forgets sooner than the stream keeps.
            wanted["max_bytes"] = limits.dedupe_max_bytes
        if direct and not config.allow_direct:
            wanted["allow_direct"] = True
        if atomic and not config.allow_atomic:
            wanted["allow_atomic"] = True
        if any(getattr(config, k) != v for k, v in wanted.items()):
            for key, value in wanted.items():
                setattr(config, key, value)
            await js.update_stream(config)
            config = (await js.stream_info(stream)).config
    except (nats.errors.Error, TimeoutError) as exc:
        raise BusUnavailable(f"key-value bucket {name} unavailable: {why(exc)}") from exc
    reads = LastValues(nc, stream, timeout=timeout) if direct and config.allow_direct else None
    writes = AtomicPublisher(nc, timeout=timeout) if atomic and config.allow_atomic else None
    return NatsKeyValue(kv, reads=reads, writes=writes, prefix=f"$KV.{name}.")
