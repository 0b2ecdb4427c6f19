"""The router's durable pull consumer: explicit acks, deliveries handled side by side,
the next pull request already out while a batch is handled, and the consumer made
again when it (or its stream, after a server restart with an empty store) disappears.

Pull requests are sent here and their deliveries taken by one subscription's callback
(as nats.go's ``Consume`` does), one request out at a time: nats-py's ``fetch`` waits
for each message with a timer of its own, a fifth of the router's time under load.
A request ends when it is filled, or with the server's status (404/408: expired or
nothing waiting; 409: the consumer is gone, among others; 503: nobody serves it), or
with the connection; one the server never ends is given up after its expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
import orjson
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
                 restore: Callable[[], Awaitable[str]] | None = None,
                 reconnect_hooks: list[Callable[[], None]] | None = None):
        self._nc = nc
        self._js = js
        self._limits = limits
        self._stream = stream
        self._durable = durable
        self._subjects = list(subjects)
        self._restore = restore
        self._reconnect_hooks = reconnect_hooks if reconnect_hooks is not None else []

    async def _bind(self) -> None:
        """Create the durable if it is missing (or point it at the subjects)."""
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
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot bind consumer {durable}: {why(exc)}") from exc

    async def run(self, handler: Handler, *, batch: int, concurrency: int) -> None:
        await self._bind()
        loop = asyncio.get_running_loop()
        pulls = _Pulls(handler)
        inbox = self._nc.new_inbox()
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._durable}"
        try:
            sub = await self._nc.subscribe(f"{inbox}.*", cb=pulls.on_msg)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot receive for {self._durable}: {why(exc)}") from exc
        # Ask again once half a batch of room is free: the next deliveries are already
        # on their way while the last ones are being handled.
        room = max(1, min(batch, concurrency) // 2)
        number, issued = 0, 0.0
        self._reconnect_hooks.append(pulls.reconnected)
        try:
            while True:
                if pulls.heal:
                    pulls.heal = False
                    await self._heal()
                    continue
                if pulls.relink:
                    pulls.relink = False
                    pulls.outstanding = 0  # the request went with the old connection
                if pulls.outstanding == 0 and self._room(pulls, concurrency, room):
                    number += 1
                    size = max(1, min(batch, concurrency - len(pulls.inflight)))
                    pulls.ask(f"{inbox}.{number}", size)
                    issued = loop.time()
                    try:
                        await self._nc.publish(next_subject, orjson.dumps(
                            {"batch": size, "expires": int(EXPIRES * 1e9)}), reply=pulls.reply)
                    except (nats.errors.Error, TimeoutError) as exc:
                        log.info("pull request failed, retrying", error=why(exc))
                        pulls.outstanding = 0
                        await asyncio.sleep(0.5)
                    continue  # look again: the request may have ended meanwhile
                # Cleared, then the state checked again with no await between: a wake
                # that came while the request was being sent is not lost.
                pulls.wake.clear()
                if pulls.heal or pulls.relink or (
                        pulls.outstanding == 0 and self._room(pulls, concurrency, room)):
                    continue
                timeout = None
                if pulls.outstanding:
                    timeout = max(0.0, issued + EXPIRES + GRACE - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        await pulls.wake.wait()
                except TimeoutError:
                    pulls.outstanding = 0  # never ended by the server: ask again
        finally:
            with contextlib.suppress(ValueError):
                self._reconnect_hooks.remove(pulls.reconnected)
            for task in pulls.inflight:
                task.cancel()
            await asyncio.gather(*pulls.inflight, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    @staticmethod
    def _room(pulls: _Pulls, concurrency: int, room: int) -> bool:
        return concurrency - len(pulls.inflight) >= room or not pulls.inflight

    async def _heal(self) -> None:
        if not self._nc.is_connected:
            await asyncio.sleep(0.5)  # reconnecting: the consumer may be fine
            return
        log.warning("the router's consumer is gone; re-creating it", stream=self._stream,
                    durable=self._durable)
        while True:
            try:
                if self._restore is not None:
                    await self._restore()
                await self._bind()
                return
            except BusUnavailable as exc:
                log.info("cannot re-create the consumer yet", error=str(exc))
                await asyncio.sleep(1.0)


# How long one pull request waits for messages (an idle router asks this often), and
# how much longer one the server never ended is waited for.
EXPIRES = 5.0
GRACE = 2.0


class _Pulls:
    """The one pull request out, and the deliveries in hand."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.inflight: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.outstanding = 0  # messages the request out may still bring
        self.reply = ""
        self.heal = False
        self.relink = False

    def reconnected(self) -> None:
        self.relink = True
        self.wake.set()

    def ask(self, reply: str, size: int) -> None:
        self.reply, self.outstanding = reply, size

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        self.wake.set()

    async def on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            # Started in stream order: each takes its turn (see the router) before its
            # first await, so one agent's requests keep the order written.
            task = asyncio.ensure_future(_handle(msg, self.handler))
            self.inflight.add(task)
            task.add_done_callback(self._done)
            self.outstanding = max(0, self.outstanding - 1)
            if self.outstanding == 0:
                self.wake.set()
            return
        if msg.subject != self.reply or status == "100":
            return  # an earlier request's late word, or a heartbeat
        if status == "503" or (status == "409" and "deleted" in
                               str(headers.get("Description", "")).lower()):
            self.heal = True  # nobody serves the consumer: deleted, or the server lost it
        elif status not in ("404", "408"):
            log.info("pull request ended", status=status,
                     reason=headers.get("Description", ""))
        self.outstanding = 0
        self.wake.set()


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
