"""The Schedule Router: agents' requests from the bus applied to the store.

A durable consumer with explicit acks on
``sympozium.schedule.request.<ns>.<instance>.<run>``. Who asks is read from that
subject (:mod:`.messages`): the bus let the message through only because the
publisher's credential allows exactly that subject. Each request is checked by
the pure rules in :mod:`sympozium_schedule.core.requests`, applied as one store
write, answered on ``sympozium.schedule.result.<ns>.<run>.<request id>`` and only
then acked. A malformed message is terminated with a logged reason (never
redelivered forever); a store or bus outage naks it for a later retry.

Idempotent: the answer to each request id (scoped by the identity that sent it)
is kept in the bus's key-value bucket, which outlives any request the stream can
still hold, so a redelivered request, or one re-read by a consumer re-created
after it vanished, is answered again without being applied again. The record is
written before the answer is published, and both before the ack.

Requests of one agent instance are applied one at a time, in order; other
instances' requests proceed side by side. The instance's existence and its agent
schedules come from :class:`~.directory.AgentDirectory` (memory, not a query).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from sympozium_schedule.adapters.nats.bus import NatsBroker
from sympozium_schedule.core.requests import (
    Limits,
    Plan,
    RequestError,
    ScheduleRequest,
    parse_request,
    plan,
)
from sympozium_schedule.ports.bus import (
    LEGACY_SUBJECT,
    REQUEST_SUBJECTS,
    RESULT_STREAM,
    ROUTER_DURABLE,
    Broker,
    BusConnection,
    BusLimits,
    BusUnavailable,
    Credential,
    Delivery,
    Disposition,
    KeyValue,
)
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    NotFound,
    Obj,
    Ref,
    Store,
    StoreError,
)
from sympozium_schedule.runtime.clock import Clock, system_clock
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.router.directory import AgentDirectory
from sympozium_schedule.runtime.router.messages import (
    Envelope,
    Malformed,
    Request,
    answer,
    encode,
    envelope_of,
    scoped_request,
    unscoped_request,
)
from sympozium_schedule.runtime.router.turns import Turn

log = structlog.get_logger("router")


@dataclass(frozen=True, slots=True)
class RouterSettings:
    nats_url: str
    limits: Limits = field(default_factory=Limits)
    durable: str = ROUTER_DURABLE
    # Deliveries in hand at once (one instance's wait their turn; the others proceed),
    # and how many one pull request asks for. Measured in bench/selfsched.py: 64 in hand
    # left the event loop idle a third of the time, waiting on round trips.
    concurrency: int = 256
    batch: int = 64
    # The router's own login (embedded: from `run`; Kubernetes: from a Secret).
    credential: Credential | None = None
    # Believe the identity written in messages on the unscoped subject
    # (Sympozium's own bridge). Only on a network where every publisher is trusted.
    allow_unscoped_publishers: bool = False
    bus_limits: BusLimits = field(default_factory=BusLimits)

    @property
    def subjects(self) -> list[str]:
        return [REQUEST_SUBJECTS, *([LEGACY_SUBJECT] if self.allow_unscoped_publishers else [])]


class Router:
    def __init__(self, store: Store, settings: RouterSettings, *, metrics: Metrics | None = None,
                 clock: Clock = system_clock, broker: Broker | None = None,
                 directory: AgentDirectory | None = None):
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.clock = clock
        # A broker given carries its own limits; the default is the server at nats_url.
        self.broker: Broker = broker or NatsBroker(settings.nats_url, limits=settings.bus_limits)
        self.directory = directory or AgentDirectory(store)
        self.handled = 0
        self.ready = asyncio.Event()
        self._bus: BusConnection | None = None
        self._kv: KeyValue | None = None
        self._turns: dict[tuple[str, str], list[Any]] = {}
        # Requests whose record was read before their turn came (deliveries in hand), and
        # the records this router stored for them since.
        self._early: dict[str, int] = {}
        self._since: dict[str, bytes] = {}
        self._counters: dict[tuple[str, str], Any] = {}
        self._repair = asyncio.Event()

    async def _prepare(self) -> str:
        """Streams and the dedupe bucket, as configured (again after a server lost them)."""
        assert self._bus is not None
        stream = await self._bus.ensure_request_stream(legacy=self.settings.allow_unscoped_publishers)
        await self._bus.ensure_result_stream()
        self._kv = await self._bus.bucket()
        return stream

    async def run(self) -> None:
        settings = self.settings
        directory = asyncio.create_task(self.directory.run(), name="router-directory")
        try:
            while True:
                try:
                    self._bus = await self.broker.connect_retrying(
                        name="schedule-router", credential=settings.credential)
                    stream = await self._prepare()
                    log.info("router consuming", subjects=settings.subjects, stream=stream,
                             durable=settings.durable)
                    self.ready.set()
                    repairs = asyncio.create_task(self._repairs())
                    try:
                        await self._bus.consume(settings.subjects, settings.durable, self.handle,
                                                stream=stream, batch=settings.batch,
                                                concurrency=settings.concurrency,
                                                restore=self._prepare)
                    finally:
                        repairs.cancel()
                except BusUnavailable as exc:
                    log.info("router waiting for the bus", error=str(exc))
                    await asyncio.sleep(1.0)
                finally:
                    self.ready.clear()
                    if self._bus is not None:
                        await self._bus.close()
                        self._bus = None
        finally:
            directory.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await directory

    async def _repairs(self) -> None:
        """After bus trouble while answering (the bucket or the answers' stream deleted,
        say), make them again: at most once a second, while requests keep failing."""
        while True:
            await self._repair.wait()
            self._repair.clear()
            if self._bus is not None:
                self._bus.forget_streams()
                try:
                    await self._prepare()
                except BusUnavailable as exc:
                    log.info("cannot restore the router's streams yet", error=str(exc))
            await asyncio.sleep(1.0)

    # --- one message --------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> tuple[Disposition, float]:
        started = time.perf_counter()
        try:
            envelope = envelope_of(delivery)
        except Malformed as exc:
            return self._terminate(delivery, exc)
        request: Request | None = None
        early: asyncio.Future[bytes | None] | None = None
        if envelope.scoped:
            # Read without I/O, so its record is asked for now, while earlier requests
            # of the instance may still hold the turn (see _record).
            try:
                request = self._scoped(envelope, delivery)
            except Malformed as exc:
                return self._terminate(delivery, exc)
            early = self._early_record(request.dedupe_key)
        # The turn is taken before the first await: deliveries start in stream order,
        # so one instance's requests are applied in the order written. It is held
        # until the request's record is stored: a later request is applied only once
        # this one can never be applied again. A scoped answer (a subject of its own)
        # is published after the turn is passed on.
        try:
            async with self._turn(envelope.order_key):
                if request is None:
                    try:
                        request = await self._request(envelope, delivery)
                    except Malformed as exc:
                        return self._terminate(delivery, exc)
                    except StoreError as exc:
                        return Disposition.NAK, 2.0 if exc.temporary else 0.0
                try:
                    payload = await self._record(request, delivery, early,
                                                 own_subject=envelope.scoped)
                except BusUnavailable as exc:
                    return self._bus_trouble(exc)
                except StoreError as exc:
                    log.info("store trouble, request will be redelivered", error=str(exc))
                    return Disposition.NAK, 2.0
                if not envelope.scoped:  # one answer subject per run: answers keep their order
                    return await self._publish(request, payload, started)
        finally:
            if early is not None:
                self._early_done(request.dedupe_key if request is not None else "", early)
        return await self._publish(request, payload, started)

    def _early_record(self, key: str) -> asyncio.Future[bytes | None]:
        assert self._kv is not None
        self._early[key] = self._early.get(key, 0) + 1
        early = asyncio.ensure_future(self._kv.get(key))
        # Its trouble is met where it is awaited; a handler stopped before that never asks.
        early.add_done_callback(lambda f: f.cancelled() or f.exception())
        return early

    def _early_done(self, key: str, early: asyncio.Future[bytes | None]) -> None:
        if not early.done():
            early.cancel()
        left = self._early.get(key, 0) - 1
        if left > 0:
            self._early[key] = left
        else:
            self._early.pop(key, None)
            self._since.pop(key, None)

    def _bus_trouble(self, exc: BusUnavailable) -> tuple[Disposition, float]:
        log.info("bus trouble, request will be redelivered", error=str(exc))
        self._repair.set()
        return Disposition.NAK, 1.0

    def _terminate(self, delivery: Delivery, exc: Malformed) -> tuple[Disposition, float]:
        log.warning("malformed request terminated", reason=str(exc), seq=delivery.stream_seq,
                    subject=delivery.subject)
        self._count("unknown", "malformed").inc()
        return Disposition.TERM, 0.0

    def _count(self, action: str, outcome: str) -> Any:
        """The request counter's child for (action, outcome), looked up once."""
        child = self._counters.get((action, outcome))
        if child is None:
            child = self._counters[(action, outcome)] = self.metrics.router_requests.labels(
                action, outcome)
        return child

    def _turn(self, key: tuple[str, str]) -> Turn:
        return Turn(self._turns, key)

    async def _request(self, envelope: Envelope, delivery: Delivery) -> Request:
        if not envelope.scoped:
            namespace = envelope.namespace or await self._namespace_of(envelope.instance)
            return unscoped_request(envelope, delivery, namespace)
        return self._scoped(envelope, delivery)

    def _scoped(self, envelope: Envelope, delivery: Delivery) -> Request:
        request, forgery = scoped_request(envelope, delivery)
        if forgery is not None:
            self._count("unknown", "forged").inc()
            log.warning("request with a forged identity refused", subject=delivery.subject,
                        claimed=forgery.claimed, field=forgery.field)
        return request

    async def _namespace_of(self, instance: str) -> str:
        """Sympozium's older bridge sends no namespace: find the instance's."""
        found = await self.directory.instance_namespaces(instance)
        if len(found) != 1:
            raise Malformed(f"metadata has no namespace and instance {instance!r} is in "
                            f"{len(found)} namespaces")
        return found[0]

    async def _record(self, request: Request, delivery: Delivery,
                      early: asyncio.Future[bytes | None] | None = None, *,
                      own_subject: bool = False) -> bytes:
        """The answer: the one recorded for this request, or the outcome of applying
        it now, recorded before it is said. ``early``: the record as read before the
        turn came; what this router recorded since then (another delivery of the same
        request, a copy published again) is in ``_since``. ``own_subject``: the answer
        subject is this request's alone (a scoped request), so an answer found there is
        its answer."""
        assert self._kv is not None
        key = request.dedupe_key
        payload = await early if early is not None else await self._kv.get(key)
        if payload is None:
            payload = self._since.get(key)
        if payload is None and own_subject and delivery.delivered > 1:
            # Delivered before, yet no record: a server killed right after acknowledging
            # the record may have lost it with its last unflushed writes, while the answer
            # published after it survived. That answer (its subject is this request's
            # own) is the record: say it again rather than apply the request twice.
            assert self._bus is not None
            payload = await self._bus.direct_get(RESULT_STREAM, request.answer_subject)
            if payload is not None:
                await self._kv.put(key, payload)
        if payload is not None:
            return payload  # answered before: say it again, word for word, apply nothing
        result = await self._apply(request, delivery)
        payload = encode(result)
        await self._kv.put(key, payload)
        if key in self._early:
            self._since[key] = payload
        return payload

    async def _publish(self, request: Request, payload: bytes,
                       started: float) -> tuple[Disposition, float]:
        assert self._bus is not None
        try:
            await self._bus.publish(request.answer_subject, payload)
        except BusUnavailable as exc:
            return self._bus_trouble(exc)
        self.handled += 1
        self.metrics.router_latency.observe(time.perf_counter() - started)
        return Disposition.ACK, 0.0

    async def _apply(self, request: Request, delivery: Delivery) -> dict[str, Any]:
        who = request.who
        if request.refusal is not None:
            return answer(request, "rejected", request.refusal)
        try:
            parsed = parse_request(request.data, self.settings.limits)
        except RequestError as exc:
            self._count("invalid", "rejected").inc()
            return answer(request, "rejected", str(exc))
        if not await self.directory.instance_exists(who.namespace, who.instance):
            self._count(parsed.action, "rejected").inc()
            return answer(request, "rejected",
                                f"SympoziumInstance {who.instance!r} does not exist in namespace "
                                f"{who.namespace!r}")
        # The caller holds this instance's turn: its cap is counted and its schedules
        # written one request at a time; other instances' requests proceed side by side.
        return await self._decide_and_apply(request, parsed, delivery)

    async def _decide_and_apply(self, request: Request, parsed: ScheduleRequest,
                                delivery: Delivery) -> dict[str, Any]:
        who, action = request.who, parsed.action
        name = f"{who.instance}-{parsed.name}"
        for attempt in range(3):  # a concurrent writer (a person, the controller) means: look again
            # First from memory; after a conflict, from the store.
            existing = (await self.directory.schedule(who.namespace, name, creating=action == "create")
                        if attempt == 0 else await self.directory.stored_schedule(who.namespace, name))
            # Only a create of a new schedule needs the count.
            names = (await self.directory.agent_schedules(who.namespace, who.instance)
                     if action == "create" and existing is None else [])
            decided = plan(parsed, who, existing, names, self.settings.limits, self.clock())
            if (decided.op == "reject" and existing is None and action == "delete"
                    and delivery.delivered > 1):
                # Applied on an earlier delivery whose ack was lost.
                decided = Plan("noop", decided.name, f"deleted schedule {decided.name!r}")
            try:
                stored = await self._execute(decided, existing)
            except (Conflict, AlreadyExists):
                continue
            except NotFound:
                if decided.op != "update":
                    raise
                continue  # updated a schedule deleted meanwhile: decide again
            outcome = "rejected" if decided.op == "reject" else "accepted"
            self._count(action, outcome).inc()
            log.info("request handled", namespace=who.namespace, instance=who.instance,
                     action=action, outcome=outcome, schedule=decided.name, message=decided.message)
            return answer(request, outcome, decided.message, stored)
        self._count(action, "conflict").inc()
        raise Conflict("the schedule kept changing while applying the request")

    async def _execute(self, decided: Plan, existing: Obj | None) -> Obj | None:
        if decided.op == "create":
            assert decided.object is not None
            created = await self.store.create(decided.object)
            self.directory.written(created)
            return created
        if decided.op == "update":
            assert decided.object is not None
            updated = await self.store.update(decided.object)
            self.directory.written(updated)
            return updated
        if decided.op == "delete":
            assert existing is not None
            with contextlib.suppress(NotFound):
                await self.store.delete(Ref.of(existing), uid=existing["metadata"].get("uid"))
            self.directory.deleted(existing)
            return None
        return existing if decided.op == "noop" else None
