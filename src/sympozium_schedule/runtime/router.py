"""The Schedule Router: agents' requests from NATS applied to the store.

A durable JetStream consumer with explicit acks on
``sympozium.schedule.request.<ns>.<instance>.<run>``. Who asks is read from
that subject: the bus let the message through only because the publisher's
credential allows exactly that subject (see ``adapters/nats/callout.py``). The
envelope's metadata may repeat the identity; if it says anything else, the
request is refused. Each request is checked by the pure rules in
:mod:`sympozium_schedule.core.requests`, applied as one store write, answered
on ``sympozium.schedule.result.<ns>.<run>.<request id>`` and only then acked.
A malformed message is terminated with a logged reason (never redelivered
forever); a store or bus outage naks it for a later retry.

Sympozium's own bridge publishes on ``sympozium.schedule.upsert`` with the
identity only in the message. That is believed only with
``allow_unscoped_publishers`` (a trusted network); otherwise such messages are
not even consumed.

Idempotent: the answer to each request id (scoped by the identity that sent
it) is kept in a JetStream key-value bucket that outlives any request the
stream can still hold, so a redelivered request, or one re-read by a consumer
re-created after it vanished, is answered again without being applied again.
Requests of one agent instance are applied one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from sympozium_schedule.adapters.nats.bus import (
    MSG_ID,
    ROUTER_DURABLE,
    Bus,
    BusLimits,
    BusUnavailable,
    Credential,
    Delivery,
    Disposition,
    KeyValue,
    result_subject,
)
from sympozium_schedule.adapters.nats.subjects import (
    LEGACY_SUBJECT,
    REQUEST_SUBJECTS,
    RunSubjects,
    is_request_id,
    parse_request_subject,
    token,
)
from sympozium_schedule.core.model import LABEL_INSTANCE, LABEL_SOURCE, Kind, is_dns1123_label
from sympozium_schedule.core.requests import (
    SOURCE_AGENT,
    Identity,
    Limits,
    Plan,
    RequestError,
    ScheduleRequest,
    parse_request,
    plan,
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

log = structlog.get_logger("router")


@dataclass(frozen=True, slots=True)
class RouterSettings:
    nats_url: str
    limits: Limits = field(default_factory=Limits)
    durable: str = ROUTER_DURABLE
    concurrency: int = 64
    # The router's own login (embedded: from `run`; Kubernetes: from a Secret).
    credential: Credential | None = None
    # Believe the identity written in messages on the unscoped subject
    # (Sympozium's own bridge). Only on a network where every publisher is trusted.
    allow_unscoped_publishers: bool = False
    bus_limits: BusLimits = field(default_factory=BusLimits)

    @property
    def subjects(self) -> list[str]:
        return [REQUEST_SUBJECTS, *([LEGACY_SUBJECT] if self.allow_unscoped_publishers else [])]


class Malformed(Exception):
    """A message that no retry can make sense of."""


@dataclass(frozen=True, slots=True)
class _Request:
    who: Identity
    request_id: str
    request_file: str
    data: Any
    answer_subject: str
    dedupe_key: str
    # Why the request is refused before it is even parsed (identity disagreement).
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class _Envelope:
    metadata: dict[str, Any]
    namespace: str
    instance: str
    run: str
    data: Any
    scoped: bool

    @property
    def order_key(self) -> tuple[str, str]:
        return (self.namespace, self.instance)


def _text(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value else None


def _envelope(delivery: Delivery) -> _Envelope:
    """The parts of a message that need no I/O: enough to know whose turn it is."""
    try:
        env = json.loads(delivery.data)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from exc
    if not isinstance(env, dict):
        raise Malformed("not an event envelope")
    meta = env.get("metadata")
    scope = parse_request_subject(delivery.subject)
    if scope is not None:
        # The bus vouches for the subject; the metadata may only agree with it.
        meta = meta if isinstance(meta, dict) else {}
        return _Envelope(meta, scope.namespace, _text(meta, "instanceName") or scope.instance,
                         _text(meta, "agentRunID") or scope.run, env.get("data"), True)
    if delivery.subject != LEGACY_SUBJECT:
        raise Malformed(f"not a request subject: {delivery.subject}")
    if not isinstance(meta, dict):
        raise Malformed("not an event envelope with metadata")
    run, instance = _text(meta, "agentRunID"), _text(meta, "instanceName")
    if run is None or instance is None:
        raise Malformed("metadata lacks agentRunID or instanceName: nobody to answer")
    return _Envelope(meta, _text(meta, "namespace") or "", instance, run, env.get("data"), False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Router:
    def __init__(self, store: Store, settings: RouterSettings, *, metrics: Metrics | None = None,
                 clock: Clock = system_clock):
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.handled = 0
        self.ready = asyncio.Event()
        self._bus: Bus | None = None
        self._kv: KeyValue | None = None
        self._turns: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
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
        while True:
            try:
                self._bus = await Bus.connect_retrying(
                    settings.nats_url, name="schedule-router", credential=settings.credential,
                    limits=settings.bus_limits)
                stream = await self._prepare()
                log.info("router consuming", subjects=settings.subjects, stream=stream,
                         durable=settings.durable)
                self.ready.set()
                repairs = asyncio.create_task(self._repairs())
                try:
                    await self._bus.consume(settings.subjects, settings.durable, self.handle,
                                            stream=stream, concurrency=settings.concurrency,
                                            restore=self._prepare)
                finally:
                    repairs.cancel()
            except BusUnavailable as exc:
                log.info("router waiting for NATS", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                self.ready.clear()
                if self._bus is not None:
                    await self._bus.close()
                    self._bus = None

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
            envelope = _envelope(delivery)
        except Malformed as exc:
            return self._terminate(delivery, exc)
        # The turn is taken before the first await: the deliveries of one fetch start
        # in stream order, so one instance's requests are applied in the order written.
        async with self._turn(envelope.order_key):
            try:
                request = await self._parse(envelope, delivery)
            except Malformed as exc:
                return self._terminate(delivery, exc)
            except StoreError as exc:
                return Disposition.NAK, 2.0 if exc.temporary else 0.0
            return await self._answer(request, delivery, started)

    def _terminate(self, delivery: Delivery, exc: Malformed) -> tuple[Disposition, float]:
        log.warning("malformed request terminated", reason=str(exc), seq=delivery.stream_seq,
                    subject=delivery.subject)
        self.metrics.router_requests.labels("unknown", "malformed").inc()
        return Disposition.TERM, 0.0

    @contextlib.asynccontextmanager
    async def _turn(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """A FIFO lock per instance, dropped when nobody holds or waits for it."""
        lock, users = self._turns.get(key, (asyncio.Lock(), 0))
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def _answer(self, request: _Request, delivery: Delivery,
                      started: float) -> tuple[Disposition, float]:
        assert self._kv is not None and self._bus is not None
        try:
            prior = await self._kv.get(request.dedupe_key)
            if prior is not None:
                result = json.loads(prior)  # answered before: say it again, apply nothing
            else:
                result = await self._apply(request, delivery)
                await self._kv.put(request.dedupe_key, json.dumps(result).encode())
            await self._bus.publish(request.answer_subject, json.dumps(result).encode(),
                                    msg_id=f"{request.dedupe_key}#result")
        except BusUnavailable as exc:
            log.info("bus trouble, request will be redelivered", error=str(exc))
            self._repair.set()
            return Disposition.NAK, 1.0
        except StoreError as exc:
            log.info("store trouble, request will be redelivered", error=str(exc))
            return Disposition.NAK, 2.0
        self.handled += 1
        self.metrics.router_latency.observe(time.perf_counter() - started)
        return Disposition.ACK, 0.0

    async def _parse(self, envelope: _Envelope, delivery: Delivery) -> _Request:
        if envelope.scoped:
            return self._parse_scoped(envelope, delivery)
        return await self._parse_unscoped(envelope, delivery)

    def _parse_scoped(self, envelope: _Envelope, delivery: Delivery) -> _Request:
        scope = parse_request_subject(delivery.subject)
        assert scope is not None
        if not is_dns1123_label(scope.namespace):
            raise Malformed(f"subject namespace {scope.namespace!r} is not a namespace name")
        meta = envelope.metadata
        refusal = None
        for key, claimed, vouched in (("namespace", _text(meta, "namespace"), scope.namespace),
                                      ("instanceName", envelope.instance, scope.instance),
                                      ("agentRunID", envelope.run, scope.run)):
            if claimed is not None and token(claimed) != vouched:
                refusal = (f"metadata.{key} {claimed!r} is not the identity this run's bus "
                           f"credential carries ({vouched!r}); identity comes from the bus, "
                           "not from the message")
                self.metrics.router_requests.labels("unknown", "forged").inc()
                log.warning("request with a forged identity refused", subject=delivery.subject,
                            claimed=claimed, field=key)
                break
        if refusal is not None:
            instance, run = scope.instance, scope.run
        else:
            instance, run = envelope.instance, envelope.run
        who = Identity(scope.namespace, instance, run)
        request_id = _text(meta, "requestId") or delivery.headers.get(MSG_ID) or ""
        if not is_request_id(request_id):
            request_id = f"seq-{delivery.stream_seq}" if not request_id else _digest(request_id)[:32]
        request_file = _text(meta, "requestFile") or ""
        return _Request(who, request_id, request_file, envelope.data,
                        RunSubjects(who.namespace, who.instance, who.run).answer(request_id),
                        _digest(f"{who.namespace}/{who.instance}/{who.run}/{request_id}"), refusal)

    async def _parse_unscoped(self, envelope: _Envelope, delivery: Delivery) -> _Request:
        meta, run, instance = envelope.metadata, envelope.run, envelope.instance
        namespace = envelope.namespace or await self._namespace_of(instance)
        if not is_dns1123_label(namespace):
            raise Malformed(f"metadata.namespace {namespace!r} is not a namespace name")
        # The bridge's request id names the request; the message id only names one
        # publication of it (another bridge, or a republish, may pick another).
        request_id = (meta.get("requestId") or delivery.headers.get(MSG_ID)
                      or f"{namespace}/{run}/seq-{delivery.stream_seq}")
        request_file = meta.get("requestFile")
        return _Request(Identity(namespace, instance, run), str(request_id),
                        request_file if isinstance(request_file, str) else "", envelope.data,
                        result_subject(namespace, run), _digest(f"unscoped/{request_id}"))

    async def _namespace_of(self, instance: str) -> str:
        """Sympozium's older bridge sends no namespace: find the instance's."""
        listing = await self.store.list(Kind.INSTANCE)
        found = [o["metadata"].get("namespace", "default") for o in listing.items
                 if o["metadata"].get("name") == instance]
        if len(found) != 1:
            raise Malformed(f"metadata has no namespace and instance {instance!r} is in "
                            f"{len(found)} namespaces")
        return str(found[0])

    def _result(self, request: _Request, status: str, message: str,
                schedule: Obj | None = None) -> dict[str, Any]:
        summary = None
        if schedule is not None:
            meta, spec = schedule.get("metadata") or {}, schedule.get("spec") or {}
            summary = {"name": meta.get("name"), "namespace": meta.get("namespace")} | {
                k: spec.get(k) for k in ("schedule", "task", "type", "suspend", "timeZone",
                                         "concurrencyPolicy", "includeMemory") if k in spec}
        return {"requestId": request.request_id, "requestFile": request.request_file,
                "status": status, "message": message, "schedule": summary}

    async def _apply(self, request: _Request, delivery: Delivery) -> dict[str, Any]:
        who = request.who
        if request.refusal is not None:
            return self._result(request, "rejected", request.refusal)
        try:
            parsed = parse_request(request.data, self.settings.limits)
        except RequestError as exc:
            self.metrics.router_requests.labels("invalid", "rejected").inc()
            return self._result(request, "rejected", str(exc))
        action = parsed.action
        try:
            await self.store.get(Ref(Kind.INSTANCE, who.namespace, who.instance))
        except NotFound:
            self.metrics.router_requests.labels(action, "rejected").inc()
            return self._result(request, "rejected",
                                f"SympoziumInstance {who.instance!r} does not exist in namespace "
                                f"{who.namespace!r}")
        # The caller holds this instance's turn: its cap is counted and its schedules
        # written one request at a time; other instances' requests proceed side by side.
        return await self._decide_and_apply(request, parsed, delivery)

    async def _decide_and_apply(self, request: _Request, parsed: ScheduleRequest,
                                delivery: Delivery) -> dict[str, Any]:
        who, action = request.who, parsed.action
        for _ in range(3):  # a concurrent writer (a person, the controller) means: look again
            existing = await self._existing(who, parsed.name)
            # Only a create of a new schedule needs the count, so only it lists.
            names = (await self._agent_schedules(who)
                     if action == "create" and existing is None else [])
            decided = plan(parsed, who, existing, names, self.settings.limits, self.clock())
            if (decided.op == "reject" and existing is None and action == "delete"
                    and delivery.delivered > 1):
                # Applied on an earlier delivery whose ack was lost.
                decided = Plan("noop", decided.name, f"deleted schedule {decided.name!r}")
            try:
                stored = await self._execute(decided, existing, who)
            except (Conflict, AlreadyExists):
                continue
            outcome = "rejected" if decided.op == "reject" else "accepted"
            self.metrics.router_requests.labels(action, outcome).inc()
            log.info("request handled", namespace=who.namespace, instance=who.instance,
                     action=action, outcome=outcome, schedule=decided.name, message=decided.message)
            return self._result(request, outcome, decided.message, stored)
        self.metrics.router_requests.labels(action, "conflict").inc()
        raise Conflict("the schedule kept changing while applying the request")

    async def _existing(self, who: Identity, name: str) -> Obj | None:
        try:
            return await self.store.get(Ref(Kind.SCHEDULE, who.namespace, f"{who.instance}-{name}"))
        except NotFound:
            return None

    async def _agent_schedules(self, who: Identity) -> list[str]:
        listing = await self.store.list(Kind.SCHEDULE, namespace=who.namespace, labels={
            LABEL_INSTANCE: who.instance, LABEL_SOURCE: SOURCE_AGENT})
        return [o["metadata"]["name"] for o in listing.items]

    async def _execute(self, decided: Plan, existing: Obj | None, who: Identity) -> Obj | None:
        if decided.op == "create":
            assert decided.object is not None
            return await self.store.create(decided.object)
        if decided.op == "update":
            assert decided.object is not None
            return await self.store.update(decided.object)
        if decided.op == "delete":
            assert existing is not None
            with contextlib.suppress(NotFound):
                await self.store.delete(Ref.of(existing), uid=existing["metadata"].get("uid"))
            return None
        return existing if decided.op == "noop" else None
