"""The bus port (:mod:`sympozium_schedule.ports.bus`) on NATS: a connection that keeps
reconnecting, JetStream publishes, plain subscriptions, direct gets, request/reply,
and the router's streams (:mod:`.streams`), durable consumer (:mod:`.consumer`) and
key-value bucket (:mod:`.keyvalue`).

Requests go to ``sympozium.schedule.request.<ns>.<instance>.<run>`` in Sympozium's
event envelope. Only the router manages streams: an agent run's bridge has no
JetStream API at all (it publishes, subscribes to its answers and reads one answer
by a direct get on a subject its permissions name).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from sympozium_schedule.adapters.nats.batching import AtomicPublisher, Refused, parse_ack
from sympozium_schedule.adapters.nats.consumer import DurableConsumer
from sympozium_schedule.adapters.nats.keyvalue import NatsKeyValue, open_bucket
from sympozium_schedule.adapters.nats.streams import Streams, why
from sympozium_schedule.ports.bus import (
    DEDUPE_BUCKET,
    LEGACY_SUBJECT,
    LEGACY_TOPIC,
    MSG_ID,
    ROUTER_DURABLE,
    BusLimits,
    BusUnavailable,
    Callback,
    Credential,
    CredentialSource,
    Delivery,
    Disposition,
    Handler,
    PublishRefused,
    Responder,
    envelope,
    result_subject,
)

__all__ = [
    "DEDUPE_BUCKET", "MSG_ID", "ROUTER_DURABLE", "UPSERT_SUBJECT", "UPSERT_TOPIC", "Bus",
    "BusLimits", "BusUnavailable", "Credential", "Delivery", "Disposition", "NatsBroker",
    "NatsBus", "PublishRefused", "credential_options", "envelope", "result_subject",
]

log = structlog.get_logger("nats")

# Kept for callers written against the unscoped subject (Sympozium's own bridge).
UPSERT_TOPIC = LEGACY_TOPIC
UPSERT_SUBJECT = LEGACY_SUBJECT


def credential_options(credential: Credential) -> dict[str, Any]:
    """nats-py's connect options for a credential."""
    options: dict[str, Any] = {}
    if credential.nkey_seed is not None:
        options["nkeys_seed_str"] = credential.nkey_seed
    if credential.user is not None:
        options |= {"user": credential.user, "password": credential.password}
    if credential.token is not None:
        options["token"] = credential.token
    return options


def _reader(credential: CredentialSource | None) -> Callable[[], Credential | None]:
    if callable(credential):
        return credential

    def fixed() -> Credential | None:
        return credential

    return fixed


class _Sub:
    def __init__(self, sub: Any):
        self._sub = sub

    async def unsubscribe(self) -> None:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._sub.unsubscribe()


class NatsBus:
    """One NATS connection (see the module)."""

    def __init__(self, nc: Client, js: JetStreamContext, *, limits: BusLimits | None = None,
                 batched: bool = True):
        self.nc = nc
        self.js = js
        self.limits = limits or BusLimits()
        self._batched = batched
        self._streams = Streams(nc, js, self.limits)
        self._answers: AtomicPublisher | None = None
        self._buckets: list[NatsKeyValue] = []
        self._reconnect_hooks: list[Callable[[], None]] = []

    @classmethod
    async def connect(cls, url: str, *, name: str, timeout: float = 2.0,
                      credential: CredentialSource | None = None,
                      inbox_prefix: str | None = None, limits: BusLimits | None = None,
                      on_reconnect: Callable[[], Awaitable[None]] | None = None,
                      on_closed: Callable[[], Awaitable[None]] | None = None,
                      batched: bool = True) -> NatsBus:
        refused: list[str] = []  # the refusal last said, so a retry loop says it once

        async def quiet(exc: Exception) -> None:
            # A refused login retries forever like a lost connection; the person who
            # gave the credential must see why nothing happens, once, not every 0.5 s.
            text = why(exc)
            if "authorization" in text.lower() or "authentication" in text.lower():
                if text not in refused:
                    refused[:] = [text]
                    log.warning("NATS refused the login; retrying", name=name, url=url,
                                error=text)
                return
            log.debug("nats connection error", error=text)

        read = _reader(credential)
        first = read()
        options: dict[str, Any] = credential_options(first) if first is not None else {}
        nc_holder: list[Client] = []

        async def refresh() -> None:
            # nats-py sends its connect options again on every reconnect attempt: a
            # credential read from a file (a rotating token) is read afresh here.
            fresh = read()
            if nc_holder and fresh is not None:
                nc_holder[0].options.update(credential_options(fresh))

        if inbox_prefix is not None:
            options["inbox_prefix"] = inbox_prefix
        if callable(credential):
            options["disconnected_cb"] = refresh
        # The consumer's: its pull request went with the old connection.
        hooks: list[Callable[[], None]] = []

        async def on_reconnected() -> None:
            refused.clear()
            for hook in list(hooks):
                hook()
            if on_reconnect is not None:
                await on_reconnect()

        options["reconnected_cb"] = on_reconnected
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
            raise BusUnavailable(f"cannot connect to NATS at {url}: {why(exc)}") from exc
        nc_holder.append(nc)
        bus = cls(nc, nc.jetstream(timeout=timeout), limits=limits, batched=batched)
        bus._reconnect_hooks = hooks
        return bus

    @property
    def usable(self) -> bool:
        return not (self.nc.is_closed or self.nc.is_draining)

    async def close(self) -> None:
        for bucket in self._buckets:
            await bucket.close()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()

    # --- publish ----------------------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None,
                      timeout: float = 2.0) -> bool:
        known = self._streams.known(subject)
        if msg_id is None and self._batched and known is not None and known.atomic:
            # An answer (no message id: a repeat replaces itself, one kept per subject).
            if self._answers is None:
                self._answers = AtomicPublisher(self.nc, timeout=timeout)
            await self._answers.publish(subject, payload)
            return True
        try:
            reply = await self.nc.request(subject, payload, timeout=timeout,
                                          headers={MSG_ID: msg_id} if msg_id else None)
            return parse_ack(reply.data)
        except Refused as exc:
            raise exc.as_bus_error(subject) from exc
        except nats.errors.NoRespondersError as exc:
            raise BusUnavailable(f"publish to {subject} failed: no stream captures it") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"publish to {subject} failed: {why(exc)}") from exc

    async def publish_plain(self, subject: str, payload: bytes) -> None:
        try:
            await self.nc.publish(subject, payload)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"publish to {subject} failed: {why(exc)}") from exc

    # --- receive ----------------------------------------------------------------------------

    async def subscribe(self, subject: str, callback: Callback) -> _Sub:
        async def on_msg(msg: Msg) -> None:
            await callback(msg.data, msg.subject)

        try:
            sub = await self.nc.subscribe(subject, cb=on_msg)
            await self.nc.flush(timeout=2)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot subscribe to {subject}: {why(exc)}") from exc
        return _Sub(sub)

    async def direct_get(self, stream: str, subject: str) -> bytes | None:
        """Through the direct-get subject that names ``subject`` (so a permission can
        allow exactly that), without the JetStream API."""
        try:
            msg = await self.js.get_msg(stream, subject=subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot read {subject}: {why(exc)}") from exc
        data: bytes | None = msg.data
        return data

    async def follow(self, subject: str, callback: Callable[[bytes], Awaitable[None]]) -> _Sub:
        """An ordered consumer (needs the JetStream API: trusted connections only)."""
        async def on_msg(msg: Msg) -> None:
            await callback(msg.data)

        try:
            sub = await self.js.subscribe(subject, cb=on_msg, ordered_consumer=True,
                                          deliver_policy=api.DeliverPolicy.ALL,
                                          idle_heartbeat=0.5)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot subscribe to {subject}: {why(exc)}") from exc
        return _Sub(sub)

    # --- request / reply --------------------------------------------------------------------

    async def serve(self, subject: str, responder: Responder) -> _Sub:
        async def on_msg(msg: Msg) -> None:
            reply = await responder(msg.data, dict(msg.headers or {}))
            if reply is not None and msg.reply:
                with contextlib.suppress(nats.errors.Error):
                    await msg.respond(reply)

        try:
            sub = await self.nc.subscribe(subject, cb=on_msg)
            await self.nc.flush(timeout=2)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"cannot serve {subject}: {why(exc)}") from exc
        return _Sub(sub)

    async def request(self, subject: str, payload: bytes, *, timeout: float = 2.0) -> bytes:
        try:
            reply = await self.nc.request(subject, payload, timeout=timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"request on {subject} failed: {why(exc)}") from exc
        data: bytes = reply.data
        return data

    # --- the router's streams, consumer and bucket ------------------------------------------

    async def ensure_request_stream(self, *, legacy: bool = False) -> str:
        return await self._streams.requests(legacy=legacy)

    async def ensure_result_stream(self) -> str:
        return await self._streams.results()

    def forget_streams(self) -> None:
        self._streams.forget()

    async def bucket(self, name: str = DEDUPE_BUCKET) -> NatsKeyValue:
        bucket = await open_bucket(self.nc, self.js, name, self.limits, batched=self._batched)
        self._buckets.append(bucket)
        return bucket

    async def consume(self, subjects: Sequence[str], durable: str, handler: Handler, *,
                      stream: str, batch: int = 64, concurrency: int = 64,
                      restore: Callable[[], Awaitable[str]] | None = None) -> None:
        async def restore_streams() -> str:
            self.forget_streams()
            assert restore is not None
            return await restore()

        consumer = DurableConsumer(self.nc, self.js, self.limits, stream=stream, durable=durable,
                                   subjects=subjects,
                                   restore=restore_streams if restore is not None else None,
                                   reconnect_hooks=self._reconnect_hooks)
        await consumer.run(handler, batch=batch, concurrency=concurrency)


# The name callers written before the bus port know it by.
Bus = NatsBus


class NatsBroker:
    """Connections to one NATS server."""

    def __init__(self, url: str, *, limits: BusLimits | None = None, timeout: float = 2.0,
                 batched: bool = True):
        self.url = url
        self.limits = limits
        self.timeout = timeout
        self.batched = batched

    async def connect(self, *, name: str, credential: CredentialSource | None = None,
                      inbox_prefix: str | None = None,
                      on_reconnect: Callable[[], Awaitable[None]] | None = None,
                      on_closed: Callable[[], Awaitable[None]] | None = None) -> NatsBus:
        return await NatsBus.connect(self.url, name=name, timeout=self.timeout,
                                     credential=credential, inbox_prefix=inbox_prefix,
                                     limits=self.limits, on_reconnect=on_reconnect,
                                     on_closed=on_closed, batched=self.batched)

    async def connect_retrying(self, *, name: str, credential: CredentialSource | None = None,
                               inbox_prefix: str | None = None,
                               on_reconnect: Callable[[], Awaitable[None]] | None = None,
                               on_closed: Callable[[], Awaitable[None]] | None = None,
                               max_delay: float = 5.0) -> NatsBus:
        delay = 0.1
        while True:
            try:
                return await self.connect(name=name, credential=credential,
                                          inbox_prefix=inbox_prefix, on_reconnect=on_reconnect,
                                          on_closed=on_closed)
            except BusUnavailable as exc:
                log.info("NATS not reachable, retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
