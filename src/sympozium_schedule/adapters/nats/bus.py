"""The one module that talks NATS: JetStream publish, a durable pull consumer that
heals, plain subscriptions, direct gets and a key-value bucket, behind a small API.

Requests go to ``sympozium.schedule.request.<ns>.<instance>.<run>`` (see
:mod:`.subjects`) in Sympozium's event envelope. If the server already has a
stream capturing a subject (Sympozium's own ``sympozium`` stream captures
``sympozium.>``), that stream is used as it is; otherwise this module creates
its own, bounded as :class:`BusLimits` says. Only the router manages streams:
an agent run's bridge has no JetStream API at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.client import JetStreamContext

from sympozium_schedule.adapters.nats.subjects import (
    LEGACY_SUBJECT,
    LEGACY_TOPIC,
    REQUEST_STREAM,
    REQUEST_SUBJECTS,
    RESULT_PREFIX,
    RESULT_STREAM,
    RESULT_SUBJECTS,
    token,
)

log = structlog.get_logger("nats")

# Kept for callers written against the unscoped subject (Sympozium's own bridge).
UPSERT_TOPIC = LEGACY_TOPIC
UPSERT_SUBJECT = LEGACY_SUBJECT
DEDUPE_BUCKET = "sympozium-schedule-requests"
ROUTER_DURABLE = "sympozium-schedule-router"
MSG_ID = "Nats-Msg-Id"
# JetStream's error codes for a publish over a stream's limits.
_OVER_LIMIT = {10077: "the request queue is full", 10047: "the request queue is full",
               10054: "the request is too large for the bus", 10078: "the request queue is full"}


class BusUnavailable(Exception):
    """NATS cannot be reached or did not acknowledge: retry later."""


class PublishRefused(Exception):
    """JetStream refused to store the message (over a limit): retrying will not help soon."""


@dataclass(frozen=True, slots=True)
class BusLimits:
    """What the bus keeps, and for how long. Requests: a work queue (an applied
    request is deleted when acked), new ones refused when full, at most
    ``requests_per_run`` waiting per run. Answers: the newest kept, the oldest
    discarded. The router's record of applied requests outlives any request
    the stream can still hold, so nothing is applied twice."""

    request_max_age: timedelta = timedelta(days=1)
    request_max_bytes: int = 256 << 20
    request_max_msgs: int = 100_000
    request_max_msg_size: int = 160 << 10  # a 64 KiB request file, JSON-escaped, in its envelope
    requests_per_run: int = 100
    duplicate_window: timedelta = timedelta(minutes=10)
    result_max_age: timedelta = timedelta(days=1)
    result_max_bytes: int = 64 << 20
    result_max_msgs: int = 100_000
    dedupe_ttl: timedelta = timedelta(days=2)
    dedupe_max_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.dedupe_ttl <= self.request_max_age:
            raise ValueError("the dedupe record must outlive the requests it guards: "
                             f"dedupe_ttl {self.dedupe_ttl} <= request_max_age {self.request_max_age}")


@dataclass(frozen=True, slots=True)
class Credential:
    """How a connection proves who it is: an nkey seed (the scheduler's own parts in
    embedded mode), a user and password (a server you configured), or a token (an
    agent run's bridge)."""

    nkey_seed: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.nkey_seed is not None:
            options["nkeys_seed_str"] = self.nkey_seed
        if self.user is not None:
            options |= {"user": self.user, "password": self.password}
        if self.token is not None:
            options["token"] = self.token
        return options


def result_subject(namespace: str, run: str) -> str:
    """The subject answers to unscoped (Sympozium-bridge) requests of a run go to."""
    return f"{RESULT_PREFIX}.{token(namespace)}.{token(run)}"


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


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Bus:
    """A NATS connection that keeps reconnecting, with the few JetStream calls we use."""

    def __init__(self, nc: Client, js: JetStreamContext, *, limits: BusLimits | None = None):
        self.nc = nc
        self.js = js
        self.limits = limits or BusLimits()
        self._streams: dict[str, str] = {}

    @classmethod
    async def connect(cls, url: str, *, name: str, timeout: float = 2.0,
                      credential: Credential | None = None,
                      inbox_prefix: str | None = None, limits: BusLimits | None = None,
                      on_disconnect: Callable[[], Awaitable[None]] | None = None,
                      on_reconnect: Callable[[], Awaitable[None]] | None = None,
                      on_closed: Callable[[], Awaitable[None]] | None = None) -> Bus:
        async def quiet(exc: Exception) -> None:
            log.debug("nats connection error", error=_why(exc))

        options: dict[str, Any] = credential.options() if credential is not None else {}
        if inbox_prefix is not None:
            options["inbox_prefix"] = inbox_prefix
        if on_disconnect is not None:
            options["disconnected_cb"] = on_disconnect
        if on_reconnect is not None:
            options["reconnected_cb"] = on_reconnect
        if on_closed is not None:
            options["closed_cb"] = on_closed
        try:
            nc = await nats.connect(
                servers=[url], name=name, connect_timeout=timeout, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet,
                # nats-py waits 30 s by default for a drain; a pull subscription's
                # late status messages can hold it that long, and with it a shutdown.
                drain_timeout=2, **options,
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot connect to NATS at {url}: {_why(exc)}") from exc
        return cls(nc, nc.jetstream(timeout=timeout), limits=limits)

    @classmethod
    async def connect_retrying(cls, url: str, *, name: str, max_delay: float = 5.0,
                               **options: Any) -> Bus:
        delay = 0.1
        while True:
            try:
                return await cls.connect(url, name=name, **options)
            except BusUnavailable as exc:
                log.info("NATS not reachable, retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)

    @property
    def usable(self) -> bool:
        """False once nats-py gave up on the connection (e.g. its credential expired)."""
        return not (self.nc.is_closed or self.nc.is_draining)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()

    # --- streams (the router's business) ----------------------------------------------------

    async def _stream(self, probe: str, config: api.StreamConfig) -> str:
        """The stream capturing ``probe``: a foreign one as it is, ours created or
        brought to ``config`` (so an upgrade applies new bounds)."""
        if probe in self._streams:
            return self._streams[probe]
        assert config.name is not None
        try:
            try:
                name = await self.js.find_stream_name_by_subject(probe)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(config)
                name = config.name
            else:
                if name == config.name:
                    await self._reconcile(config)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"JetStream unavailable: {_why(exc)}") from exc
        self._streams[probe] = name
        return name

    async def _reconcile(self, config: api.StreamConfig) -> None:
        assert config.name is not None
        current = (await self.js.stream_info(config.name)).config
        if current.retention != config.retention:
            # Retention cannot change in place. The old stream is from an older
            # version (limits retention): what it holds was applied or is stale.
            log.warning("recreating a stream with another retention", stream=config.name,
                        old=str(current.retention), new=str(config.retention))
            await self.js.delete_stream(config.name)
            await self.js.add_stream(config)
            return
        keys = ("subjects", "max_age", "max_bytes", "max_msgs", "max_msg_size", "discard",
                "discard_new_per_subject", "max_msgs_per_subject", "allow_direct", "duplicate_window")
        if any(getattr(current, k) != getattr(config, k) for k in keys):
            await self.js.update_stream(config)

    def request_stream_config(self, *, legacy: bool = False) -> api.StreamConfig:
        lim = self.limits
        return api.StreamConfig(
            name=REQUEST_STREAM, subjects=[REQUEST_SUBJECTS, *([LEGACY_SUBJECT] if legacy else [])],
            retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
            max_age=lim.request_max_age.total_seconds(), max_bytes=lim.request_max_bytes,
            max_msgs=lim.request_max_msgs, max_msg_size=lim.request_max_msg_size,
            max_msgs_per_subject=lim.requests_per_run, discard=api.DiscardPolicy.NEW,
            discard_new_per_subject=True, duplicate_window=lim.duplicate_window.total_seconds())

    def result_stream_config(self) -> api.StreamConfig:
        lim = self.limits
        return api.StreamConfig(
            name=RESULT_STREAM, subjects=[RESULT_SUBJECTS], retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE, max_age=lim.result_max_age.total_seconds(),
            max_bytes=lim.result_max_bytes, max_msgs=lim.result_max_msgs,
            max_msgs_per_subject=1, discard=api.DiscardPolicy.OLD, allow_direct=True,
            duplicate_window=lim.duplicate_window.total_seconds())

    async def ensure_request_stream(self, *, legacy: bool = False) -> str:
        return await self._stream(f"{REQUEST_SUBJECTS[:-1]}x.y.z",
                                  self.request_stream_config(legacy=legacy))

    async def ensure_result_stream(self) -> str:
        return await self._stream(f"{RESULT_PREFIX}.x.y.z", self.result_stream_config())

    def forget_streams(self) -> None:
        self._streams.clear()

    # --- publish ----------------------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, *, msg_id: str,
                      timeout: float = 2.0) -> bool:
        """Publish and wait for JetStream's ack. True if new, False if JetStream had
        already stored a message with this id (a retried publish)."""
        try:
            ack = await self.js.publish(subject, payload, timeout=timeout, headers={MSG_ID: msg_id})
        except nats.js.errors.APIError as exc:
            reason = _OVER_LIMIT.get(exc.err_code or 0)
            if reason is not None:
                raise PublishRefused(f"{reason} ({exc.description})") from exc
            raise BusUnavailable(f"publish to {subject} failed: {_why(exc)}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"publish to {subject} failed: {_why(exc)}") from exc
        return not bool(ack.duplicate)

    async def publish_plain(self, subject: str, payload: bytes) -> None:
        """Core NATS, no stream involved (answers to an unscoped publisher)."""
        try:
            await self.nc.publish(subject, payload)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"publish to {subject} failed: {_why(exc)}") from exc

    # --- receive ----------------------------------------------------------------------------

    async def subscribe(self, subject: str, callback: Callable[[bytes, str], Awaitable[None]]
                        ) -> Subscription:
        async def on_msg(msg: Msg) -> None:
            await callback(msg.data, msg.subject)

        try:
            sub = await self.nc.subscribe(subject, cb=on_msg)
            await self.nc.flush(timeout=2)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot subscribe to {subject}: {_why(exc)}") from exc
        return sub

    async def direct_get(self, stream: str, subject: str) -> bytes | None:
        """The last message on ``subject``, through the direct-get subject that names it
        (so a permission can allow exactly that), without the JetStream API."""
        try:
            msg = await self.js.get_msg(stream, subject=subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot read {subject}: {_why(exc)}") from exc
        data: bytes | None = msg.data
        return data

    async def follow(self, subject: str, callback: Callable[[bytes], Awaitable[None]]) -> Any:
        """Every message on ``subject`` from the start of its stream (an ordered consumer;
        needs the JetStream API, so for trusted connections only)."""
        async def on_msg(msg: Msg) -> None:
            await callback(msg.data)

        try:
            return await self.js.subscribe(subject, cb=on_msg, ordered_consumer=True,
                                           deliver_policy=api.DeliverPolicy.ALL,
                                           idle_heartbeat=0.5)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot subscribe to {subject}: {_why(exc)}") from exc

    # --- consume ----------------------------------------------------------------------------

    def _consumer_config(self, durable: str, subjects: Sequence[str], stream_max_age: float
                         ) -> api.ConsumerConfig:
        config = api.ConsumerConfig(
            durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0,
            max_ack_pending=4096, deliver_policy=api.DeliverPolicy.ALL)
        if len(subjects) == 1:
            config.filter_subject = subjects[0]
        else:
            config.filter_subjects = list(subjects)
        ttl = self.limits.dedupe_ttl.total_seconds()
        if stream_max_age == 0 or stream_max_age >= ttl:
            # A foreign stream keeps messages longer than we remember applying them:
            # a re-created consumer must not start before what the record covers.
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.now(UTC) - self.limits.dedupe_ttl + timedelta(hours=1)
        return config

    async def _bind(self, stream: str, durable: str, subjects: Sequence[str]) -> Any:
        """Create the durable if it is missing (or point it at ``subjects``), then subscribe."""
        try:
            try:
                info = await self.js.consumer_info(stream, durable)
                filters = info.config.filter_subjects or (
                    [info.config.filter_subject] if info.config.filter_subject else [])
                if sorted(filters) != sorted(subjects):
                    info.config.filter_subject = None
                    info.config.filter_subjects = list(subjects)
                    if len(subjects) == 1:
                        info.config.filter_subject, info.config.filter_subjects = subjects[0], None
                    await self.js.add_consumer(stream, info.config)
            except nats.js.errors.NotFoundError:
                max_age = (await self.js.stream_info(stream)).config.max_age or 0
                await self.js.add_consumer(stream, self._consumer_config(durable, subjects, max_age))
                log.info("durable consumer created", stream=stream, durable=durable)
            return await self.js.pull_subscribe_bind(durable=durable, stream=stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot bind consumer {durable}: {_why(exc)}") from exc

    async def consume(self, subjects: Sequence[str], durable: str, handler: Handler, *,
                      stream: str, batch: int = 64, concurrency: int = 64,
                      restore: Callable[[], Awaitable[str]] | None = None) -> None:
        """Pull ``subjects`` through a durable consumer with explicit acks, forever.

        The handler's verdict becomes ack / nak(delay) / term. Deliveries of one
        fetch run concurrently; ordering per key is the handler's business. When
        the consumer (or its stream, after a server restart with an empty store)
        disappears, ``restore`` re-creates the stream and the consumer is made again.
        """
        sub = await self._bind(stream, durable, subjects)
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
                except (nats.js.errors.ServiceUnavailableError, nats.js.errors.NotFoundError):
                    # Nobody serves this consumer: deleted, or the server lost its store.
                    sub = await self._heal(sub, stream, durable, subjects, restore)
                    continue
                except nats.errors.Error as exc:
                    log.info("fetch failed, retrying", error=_why(exc))
                    await asyncio.sleep(0.5)
                    continue
                await asyncio.gather(*(one(m) for m in msgs))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _heal(self, sub: Any, stream: str, durable: str, subjects: Sequence[str],
                    restore: Callable[[], Awaitable[str]] | None) -> Any:
        if not self.nc.is_connected:
            await asyncio.sleep(0.5)  # reconnecting: the consumer may be fine
            return sub
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        log.warning("the router's consumer is gone; re-creating it", stream=stream, durable=durable)
        while True:
            try:
                if restore is not None:
                    self.forget_streams()
                    await restore()
                return await self._bind(stream, durable, subjects)
            except BusUnavailable as exc:
                log.info("cannot re-create the consumer yet", error=str(exc))
                await asyncio.sleep(1.0)

    # --- key-value --------------------------------------------------------------------------

    async def bucket(self, name: str = DEDUPE_BUCKET) -> KeyValue:
        ttl = self.limits.dedupe_ttl.total_seconds()
        try:
            try:
                kv = await self.js.key_value(name)
                info = await self.js.stream_info(f"KV_{name}")
                if (info.config.max_age or 0) < ttl:
                    # A bucket from an older version forgets sooner than the stream keeps.
                    info.config.max_age = ttl
                    info.config.max_bytes = self.limits.dedupe_max_bytes
                    await self.js.update_stream(info.config)
            except nats.js.errors.BucketNotFoundError:
                kv = await self.js.create_key_value(config=api.KeyValueConfig(
                    bucket=name, ttl=ttl, history=1, max_bytes=self.limits.dedupe_max_bytes))
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"key-value bucket {name} unavailable: {_why(exc)}") from exc
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
            raise BusUnavailable(f"key-value read failed: {_why(exc)}") from exc
        value: bytes | None = entry.value
        return value

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"key-value write failed: {_why(exc)}") from exc
