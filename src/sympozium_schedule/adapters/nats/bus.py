"""The one module that talks NATS: JetStream publish, a durable pull consumer,
an ordered result subscription and a key-value bucket, behind a small API.

Subjects follow Sympozium's event bus (``sympozium.<topic>``): requests go to
``sympozium.schedule.upsert`` in Sympozium's event envelope, so its own IPC
bridge and this project's are interchangeable. If the server already has a
stream capturing a subject (Sympozium's own ``sympozium`` stream captures
``sympozium.>``), that stream is used; otherwise this module creates its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

log = structlog.get_logger("nats")

UPSERT_TOPIC = "schedule.upsert"
UPSERT_SUBJECT = f"sympozium.{UPSERT_TOPIC}"
RESULT_PREFIX = "sympozium.schedule.result"
REQUEST_STREAM = "SYMPOZIUM_SCHEDULE_REQUESTS"
RESULT_STREAM = "SYMPOZIUM_SCHEDULE_RESULTS"
DEDUPE_BUCKET = "sympozium-schedule-requests"
ROUTER_DURABLE = "sympozium-schedule-router"
MSG_ID = "Nats-Msg-Id"


class BusUnavailable(Exception):
    """NATS cannot be reached or did not acknowledge: retry later."""


def _token(text: str) -> str:
    """A subject token: no '.', '*', '>' or whitespace (Kubernetes names never have '_')."""
    return "".join("_" if ch in ".*> \t\r\n" else ch for ch in text) or "_"


def result_subject(namespace: str, run: str) -> str:
    return f"{RESULT_PREFIX}.{_token(namespace)}.{_token(run)}"


def envelope(data: Any, metadata: dict[str, str]) -> bytes:
    """Sympozium's eventbus.Event: {topic, timestamp, metadata, data}."""
    return json.dumps({
        "topic": UPSERT_TOPIC,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "metadata": metadata,
        "data": data,
    }).encode()


class Disposition(Enum):
    ACK = "ack"    # handled (applied or answered)
    NAK = "nak"    # temporary trouble: deliver again later
    TERM = "term"  # malformed: never deliver again


@dataclass(frozen=True, slots=True)
class Delivery:
    data: bytes
    headers: dict[str, str]
    subject: str
    delivered: int
    stream_seq: int


Handler = Callable[[Delivery], Awaitable[tuple[Disposition, float]]]


class Bus:
    """A NATS connection that keeps reconnecting, with the few JetStream calls we use."""

    def __init__(self, nc: Client, js: JetStreamContext):
        self.nc = nc
        self.js = js
        self._streams: dict[str, str] = {}

    @classmethod
    async def connect(cls, url: str, *, name: str, timeout: float = 2.0) -> Bus:
        async def quiet(exc: Exception) -> None:
            log.debug("nats connection error", error=str(exc) or type(exc).__name__)

        try:
            nc = await nats.connect(
                servers=[url], name=name, connect_timeout=timeout, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet,
                # nats-py waits 30 s by default for a drain; a pull subscription's
                # late status messages can hold it that long, and with it a shutdown.
                drain_timeout=2,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot connect to NATS at {url}: {exc or type(exc).__name__}") from exc
        return cls(nc, nc.jetstream(timeout=timeout))

    @classmethod
    async def connect_retrying(cls, url: str, *, name: str, max_delay: float = 5.0) -> Bus:
        delay = 0.1
        while True:
            try:
                return await cls.connect(url, name=name)
            except BusUnavailable as exc:
                log.info("NATS not reachable, retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()

    # --- streams ----------------------------------------------------------------------------

    async def stream_for(self, subject: str, own: str, *, max_age: float) -> str:
        """The stream that captures ``subject``, creating ``own`` if there is none."""
        if subject in self._streams:
            return self._streams[subject]
        try:
            try:
                name = await self.js.find_stream_name_by_subject(subject)
            except nats.js.errors.NotFoundError:
                wildcard = subject.rsplit(".", 2)[0] + ".>" if subject.startswith(RESULT_PREFIX) else subject
                await self.js.add_stream(api.StreamConfig(
                    name=own, subjects=[wildcard], retention=api.RetentionPolicy.LIMITS,
                    storage=api.StorageType.FILE, max_age=max_age, duplicate_window=600.0))
                name = own
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"JetStream unavailable: {exc or type(exc).__name__}") from exc
        self._streams[subject] = name
        return name

    async def ensure_request_stream(self) -> str:
        return await self.stream_for(UPSERT_SUBJECT, REQUEST_STREAM, max_age=7 * 86400.0)

    async def ensure_result_stream(self) -> str:
        return await self.stream_for(f"{RESULT_PREFIX}.x.y", RESULT_STREAM, max_age=86400.0)

    # --- publish ----------------------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, *, msg_id: str,
                      timeout: float = 2.0) -> bool:
        """Publish and wait for JetStream's ack. True if new, False if JetStream had
        already stored a message with this id (a retried publish)."""
        try:
            ack = await self.js.publish(subject, payload, timeout=timeout, headers={MSG_ID: msg_id})
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"publish to {subject} failed: {exc or type(exc).__name__}") from exc
        return not bool(ack.duplicate)

    # --- consume ----------------------------------------------------------------------------

    async def consume(self, subject: str, durable: str, handler: Handler, *,
                      stream: str, batch: int = 64, concurrency: int = 64) -> None:
        """Pull ``subject`` through a durable consumer with explicit acks, forever.

        The handler's verdict becomes ack / nak(delay) / term. Deliveries of one
        fetch run concurrently; ordering per key is the handler's business.
        """
        config = api.ConsumerConfig(
            durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0,
            max_ack_pending=4096, deliver_policy=api.DeliverPolicy.ALL, filter_subject=subject)
        sub = await self.js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
        limit = asyncio.Semaphore(concurrency)

        async def one(msg: Msg) -> None:
            async with limit:
                meta = msg.metadata
                delivery = Delivery(
                    data=msg.data, headers=dict(msg.headers or {}), subject=msg.subject,
                    delivered=meta.num_delivered or 1, stream_seq=meta.sequence.stream or 0)
                try:
                    verdict, delay = await handler(delivery)
                except asyncio.CancelledError:
                    # Stopping mid-message: hand it back now rather than after ack_wait.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(msg.nak())
                    raise
                except Exception:
                    log.exception("request handler failed; will redeliver", seq=delivery.stream_seq)
                    verdict, delay = Disposition.NAK, 1.0
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    if verdict is Disposition.ACK:
                        await msg.ack()
                    elif verdict is Disposition.TERM:
                        await msg.term()
                    else:
                        await msg.nak(delay=delay)

        try:
            while True:
                try:
                    msgs = await sub.fetch(batch, timeout=1.0)
                except TimeoutError:
                    continue
                except nats.errors.Error as exc:
                    log.info("fetch failed, retrying", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                await asyncio.gather(*(one(m) for m in msgs))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def follow(self, subject: str, callback: Callable[[bytes], Awaitable[None]]) -> Any:
        """Every message on ``subject`` from the start of its stream (an ordered consumer)."""
        async def on_msg(msg: Msg) -> None:
            await callback(msg.data)

        try:
            # A short heartbeat: after a server restart the ordered consumer notices
            # within a second and resubscribes (the 5 s default left answers ~20 s late).
            return await self.js.subscribe(subject, cb=on_msg, ordered_consumer=True,
                                           deliver_policy=api.DeliverPolicy.ALL,
                                           idle_heartbeat=0.5)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot subscribe to {subject}: {exc or type(exc).__name__}") from exc

    # --- key-value --------------------------------------------------------------------------

    async def bucket(self, name: str = DEDUPE_BUCKET, *, ttl: float = 86400.0) -> KeyValue:
        try:
            try:
                kv = await self.js.key_value(name)
            except nats.js.errors.BucketNotFoundError:
                kv = await self.js.create_key_value(bucket=name, ttl=ttl, history=1)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"key-value bucket {name} unavailable: {exc}") from exc
        return KeyValue(kv)


class KeyValue:
    def __init__(self, kv: Any):
        self._kv = kv

    async def get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"key-value read failed: {exc or type(exc).__name__}") from exc
        value: bytes | None = entry.value
        return value

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"key-value write failed: {exc or type(exc).__name__}") from exc
