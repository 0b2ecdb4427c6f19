"""The Schedule Router: agents' requests from NATS applied to the store.

A durable JetStream consumer with explicit acks. Each request is checked by
the pure rules in :mod:`sympozium_schedule.core.requests`, applied as one
store write, answered on ``sympozium.schedule.result.<ns>.<run>`` and only
then acked. A malformed message is terminated with a logged reason (never
redelivered forever); a store or bus outage naks it for a later retry.

Idempotent: the answer to each request id is kept in a JetStream key-value
bucket, so a redelivered request is answered again without being applied
again. Requests of one agent instance are applied one at a time, in order.
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
    UPSERT_SUBJECT,
    Bus,
    BusUnavailable,
    Delivery,
    Disposition,
    KeyValue,
    result_subject,
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


class Malformed(Exception):
    """A message that no retry can make sense of."""


@dataclass(frozen=True, slots=True)
class _Request:
    who: Identity
    request_id: str
    request_file: str
    data: Any


@dataclass(frozen=True, slots=True)
class _Envelope:
    metadata: dict[str, Any]
    run: str
    instance: str
    data: Any

    @property
    def order_key(self) -> tuple[str, str]:
        namespace = self.metadata.get("namespace")
        return (namespace if isinstance(namespace, str) else "", self.instance)


def _envelope(delivery: Delivery) -> _Envelope:
    """The parts of a message that need no I/O: enough to know whose turn it is."""
    try:
        env = json.loads(delivery.data)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from exc
    if not isinstance(env, dict) or not isinstance(env.get("metadata"), dict):
        raise Malformed("not an event envelope with metadata")
    meta = env["metadata"]
    run, instance = meta.get("agentRunID"), meta.get("instanceName")
    if not isinstance(run, str) or not run or not isinstance(instance, str) or not instance:
        raise Malformed("metadata lacks agentRunID or instanceName: nobody to answer")
    return _Envelope(meta, run, instance, env.get("data"))


def _dedupe_key(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()


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

    async def run(self) -> None:
        while True:
            try:
                self._bus = await Bus.connect_retrying(self.settings.nats_url, name="schedule-router")
                stream = await self._bus.ensure_request_stream()
                await self._bus.ensure_result_stream()
                self._kv = await self._bus.bucket()
                log.info("router consuming", subject=UPSERT_SUBJECT, stream=stream,
                         durable=self.settings.durable)
                self.ready.set()
                await self._bus.consume(UPSERT_SUBJECT, self.settings.durable, self.handle,
                                        stream=stream, concurrency=self.settings.concurrency)
            except BusUnavailable as exc:
                log.info("router waiting for NATS", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                self.ready.clear()
                if self._bus is not None:
                    await self._bus.close()
                    self._bus = None

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
        log.warning("malformed request terminated", reason=str(exc), seq=delivery.stream_seq)
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
        key = _dedupe_key(request.request_id)
        try:
            prior = await self._kv.get(key)
            if prior is not None:
                result = json.loads(prior)  # answered before: say it again, apply nothing
            else:
                result = await self._apply(request, delivery)
                await self._kv.put(key, json.dumps(result).encode())
            await self._bus.publish(result_subject(request.who.namespace, request.who.run),
                                    json.dumps(result).encode(),
                                    msg_id=f"{request.request_id}#result")
        except BusUnavailable as exc:
            log.info("bus trouble, request will be redelivered", error=str(exc))
            return Disposition.NAK, 1.0
        except StoreError as exc:
            log.info("store trouble, request will be redelivered", error=str(exc))
            return Disposition.NAK, 2.0
        self.handled += 1
        self.metrics.router_latency.observe(time.perf_counter() - started)
        return Disposition.ACK, 0.0

    async def _parse(self, envelope: _Envelope, delivery: Delivery) -> _Request:
        meta, run, instance = envelope.metadata, envelope.run, envelope.instance
        namespace = meta.get("namespace")
        if not isinstance(namespace, str) or not namespace:
            namespace = await self._namespace_of(instance)
        if not is_dns1123_label(namespace):
            raise Malformed(f"metadata.namespace {namespace!r} is not a namespace name")
        # The bridge's request id names the request; the message id only names one
        # publication of it (another bridge, or a republish, may pick another).
        request_id = (meta.get("requestId") or delivery.headers.get(MSG_ID)
                      or f"{namespace}/{run}/seq-{delivery.stream_seq}")
        request_file = meta.get("requestFile")
        return _Request(Identity(namespace, instance, run), str(request_id),
                        request_file if isinstance(request_file, str) else "", envelope.data)

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
