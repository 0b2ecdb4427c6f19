"""The router's durable pull consumer: explicit acks, deliveries handled side by side,
the next fetch already waiting while a batch is handled, and the consumer made again
when it (or its stream, after a server restart with an empty store) disappears."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from sympozium_schedule.adapters.nats.streams import why
from sympozium_schedule.ports.bus import BusLimits, BusUnavailable, Delivery, Disposition, Handler

log = structlog.get_logger("nats")


def consumer_config(durable: str, subjects: Sequence[str], stream_max_age: float,
                    limits: BusLimits) -> api.ConsumerConfig:
    config = api.ConsumerConfig(
        durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0,
        max_ack_pending=4096, deliver_policy=api.DeliverPolicy.ALL)
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    else:
        config.filter_subjects = list(subjects)
    ttl = limits.dedupe_ttl.total_seconds()
    if stream_max_age == 0 or stream_max_age >= ttl:
        # A foreign stream keeps messages longer than we remember applying them:
        # a re-created consumer must not start before what the record covers.
        config.deliver_policy = api.DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.now(UTC) - limits.dedupe_ttl + timedelta(hours=1)
    return config


class DurableConsumer:
    def __init__(self, nc: Client, js: JetStreamContext, limits: BusLimits, *, stream: str,
                 durable: str, subjects: Sequence[str],
                 restore: Callable[[], Awaitable[str]] | None = None):
        self._nc = nc
        self._js = js
        self._limits = limits
        self._stream = stream
        self._durable = durable
        self._subjects = list(subjects)
        self._restore = restore

    async def _bind(self) -> Any:
        """Create the durable if it is missing (or point it at the subjects), then subscribe."""
        stream, durable, subjects = self._stream, self._durable, self._subjects
        try:
            try:
                info = await self._js.consumer_info(stream, durable)
                filters = info.config.filter_subjects or (
                    [info.config.filter_subject] if info.config.filter_subject else [])
                if sorted(filters) != sorted(subjects):
                    info.config.filter_subject = None
                    info.config.filter_subjects = list(subjects)
                    if len(subjects) == 1:
                        info.config.filter_subject, info.config.filter_subjects = subjects[0], None
                    await self._js.add_consumer(stream, info.config)
            except nats.js.errors.NotFoundError:
                max_age = (await self._js.stream_info(stream)).config.max_age or 0
                await self._js.add_consumer(stream, consumer_config(durable, subjects, max_age,
                                                                    self._limits))
                log.info("durable consumer created", stream=stream, durable=durable)
            return await self._js.pull_subscribe_bind(durable=durable, stream=stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot bind consumer {durable}: {why(exc)}") from exc

    async def run(self, handler: Handler, *, batch: int, concurrency: int) -> None:
        sub = await self._bind()
        inflight: set[asyncio.Task[None]] = set()
        # Fetch again once half a batch of room is free: the next deliveries are already
        # on their way while the last ones are being handled.
        room = max(1, min(batch, concurrency) // 2)
        try:
            while True:
                while inflight and concurrency - len(inflight) < room:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                try:
                    msgs = await sub.fetch(min(batch, concurrency - len(inflight)), timeout=1.0)
                except TimeoutError:
                    continue
                except (nats.js.errors.ServiceUnavailableError, nats.js.errors.NotFoundError):
                    # Nobody serves this consumer: deleted, or the server lost its store.
                    sub = await self._heal(sub)
                    continue
                except nats.errors.Error as exc:
                    log.info("fetch failed, retrying", error=why(exc))
                    await asyncio.sleep(0.5)
                    continue
                # Started in stream order: each takes its turn (see the router) before
                # its first await, so one agent's requests keep the order written.
                for msg in msgs:
                    task = asyncio.ensure_future(_handle(msg, handler))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _heal(self, sub: Any) -> Any:
        if not self._nc.is_connected:
            await asyncio.sleep(0.5)  # reconnecting: the consumer may be fine
            return sub
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        log.warning("the router's consumer is gone; re-creating it", stream=self._stream,
                    durable=self._durable)
        while True:
            try:
                if self._restore is not None:
                    await self._restore()
                return await self._bind()
            except BusUnavailable as exc:
                log.info("cannot re-create the consumer yet", error=str(exc))
                await asyncio.sleep(1.0)


async def _handle(msg: Msg, handler: Handler) -> None:
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
