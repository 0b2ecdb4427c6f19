"""The bus port in memory: streams, a durable work-queue consumer, plain
subscriptions, direct gets, a key-value bucket and request/reply, inside one
process, with no server.

It keeps what the router's logic relies on, and the contract suite
(tests/bus/test_contract.py) holds it to NATS's behaviour there: a publish is
stored in the stream capturing its subject or refused (a limit: per subject, in
all, per message) or recognised as a duplicate within the window; a delivery is
acked (gone), nacked (delivered again after its delay, counted) or terminated;
several consumers of one durable share its messages; an answer stream keeps the
last message per subject. It knows nothing of credentials or permissions (every
connection may do everything), of a server going away, or of entries expiring:
what depends on those is tested against the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence

from sympozium_schedule.adapters.memory.streams import Consumer, Message, Stream
from sympozium_schedule.ports.bus import (
    DEDUPE_BUCKET,
    LEGACY_SUBJECT,
    MSG_ID,
    REQUEST_STREAM,
    REQUEST_SUBJECTS,
    RESULT_STREAM,
    RESULT_SUBJECTS,
    BusLimits,
    BusUnavailable,
    Callback,
    CredentialSource,
    Delivery,
    Disposition,
    Handler,
    Responder,
    subject_matches,
)

Clock = Callable[[], float]


class _MemoryKeyValue:
    def __init__(self, entries: dict[str, bytes]):
        self._entries = entries

    async def get(self, key: str) -> bytes | None:
        return self._entries.get(key)

    async def put(self, key: str, value: bytes) -> None:
        self._entries[key] = value


class _Subscription:
    def __init__(self, remove: Callable[[], None]):
        self._remove = remove

    async def unsubscribe(self) -> None:
        self._remove()


class MemoryBroker:
    """The bus's state, shared by every connection made from it."""

    def __init__(self, *, limits: BusLimits | None = None, ack_wait: float = 30.0,
                 clock: Clock = time.monotonic):
        self.limits = limits or BusLimits()
        self.ack_wait = ack_wait
        self.clock = clock
        self.streams: dict[str, Stream] = {}
        self.consumers: dict[tuple[str, str], Consumer] = {}
        self.buckets: dict[str, dict[str, bytes]] = {}
        self._subscribers: dict[int, tuple[str, Callable[[bytes, str], None]]] = {}
        self._responders: dict[int, tuple[str, Responder]] = {}
        self._ids = itertools.count()
        self.connections: list[MemoryBus] = []

    async def connect(self, *, name: str, credential: CredentialSource | None = None,
                      inbox_prefix: str | None = None,
                      on_reconnect: Callable[[], Awaitable[None]] | None = None,
                      on_closed: Callable[[], Awaitable[None]] | None = None) -> MemoryBus:
        bus = MemoryBus(self, name)
        self.connections.append(bus)
        return bus

    async def connect_retrying(self, *, name: str, credential: CredentialSource | None = None,
                               inbox_prefix: str | None = None,
                               on_reconnect: Callable[[], Awaitable[None]] | None = None,
                               on_closed: Callable[[], Awaitable[None]] | None = None,
                               max_delay: float = 5.0) -> MemoryBus:
        return await self.connect(name=name)

    # --- what connections share ---------------------------------------------------------------

    def capturing(self, subject: str) -> Stream | None:
        return next((s for s in self.streams.values() if s.captures(subject)), None)

    def deliver(self, subject: str, data: bytes) -> None:
        """To every plain subscriber of ``subject`` (each gets its messages in order)."""
        for pattern, sink in list(self._subscribers.values()):
            if subject_matches(pattern, subject):
                sink(data, subject)

    def store(self, subject: str, data: bytes, headers: dict[str, str]) -> bool:
        stream = self.capturing(subject)
        if stream is None:
            raise BusUnavailable(f"publish to {subject} failed: no stream captures it")
        msg = stream.store(subject, data, headers, self.clock())
        if msg is not None:
            for (name, _), consumer in self.consumers.items():
                if name == stream.name:
                    consumer.offer(msg)
        return msg is not None

    def subscribe(self, pattern: str, sink: Callable[[bytes, str], None]) -> Callable[[], None]:
        key = next(self._ids)
        self._subscribers[key] = (pattern, sink)

        def remove() -> None:
            self._subscribers.pop(key, None)

        return remove

    def serve(self, subject: str, responder: Responder) -> Callable[[], None]:
        key = next(self._ids)
        self._responders[key] = (subject, responder)

        def remove() -> None:
            self._responders.pop(key, None)

        return remove

    def responder(self, subject: str) -> Responder | None:
        return next((r for pattern, r in self._responders.values()
                     if subject_matches(pattern, subject)), None)

    def ensure_stream(self, name: str, subjects: list[str], *, work_queue: bool) -> str:
        taken = next((s for s in self.streams.values()
                      if s.name != name and any(s.captures(p.replace(">", "x.y.z")) for p in subjects)),
                     None)
        if taken is not None:
            return taken.name  # a foreign stream captures them: used as it is
        lim = self.limits
        stream = self.streams.get(name)
        if stream is None:
            if work_queue:
                stream = Stream(name, subjects, True, lim.request_max_msgs, lim.requests_per_run,
                                 True, lim.request_max_msg_size,
                                 lim.duplicate_window.total_seconds())
            else:
                stream = Stream(name, subjects, False, lim.result_max_msgs, 1, False, -1,
                                 lim.duplicate_window.total_seconds())
            self.streams[name] = stream
        stream.subjects = subjects
        return name

    def pending(self, stream: str, durable: str) -> tuple[int, int]:
        """For tests: the durable's (waiting, unacknowledged) deliveries."""
        consumer = self.consumers.get((stream, durable))
        return consumer.pending if consumer is not None else (0, 0)


class MemoryBus:
    """One connection to a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, name: str):
        self.broker = broker
        self.name = name
        self._closed = False
        self._removals: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def usable(self) -> bool:
        return not self._closed

    def _check(self) -> None:
        if self._closed:
            raise BusUnavailable(f"connection {self.name} is closed")

    async def close(self) -> None:
        self._closed = True
        for remove in self._removals:
            remove()
        self._removals.clear()
        for task in list(self._tasks):
            task.cancel()

    # --- publish and receive ------------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None,
                      timeout: float = 2.0) -> bool:
        self._check()
        headers = {MSG_ID: msg_id} if msg_id else {}
        self.broker.deliver(subject, payload)
        new = self.broker.store(subject, payload, headers)
        await asyncio.sleep(0)  # a publish is a round trip: let others run, as with a server
        return new

    async def publish_plain(self, subject: str, payload: bytes) -> None:
        self._check()
        self.broker.deliver(subject, payload)

    def _pump(self, callback: Callable[[bytes, str], Awaitable[None]],
              backlog: Sequence[tuple[bytes, str]] = ()) -> Callable[[bytes, str], None]:
        """A sink that hands messages to ``callback`` one at a time, in order (as a
        server's connection does), on a task of this connection's."""
        queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
        for item in backlog:
            queue.put_nowait(item)

        async def pump() -> None:
            while True:
                data, subject = await queue.get()
                with contextlib.suppress(Exception):
                    await callback(data, subject)

        task = asyncio.create_task(pump())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        def stop() -> None:
            task.cancel()

        self._removals.append(stop)
        return lambda data, subject: queue.put_nowait((data, subject))

    def _listen(self, pattern: str, sink: Callable[[bytes, str], None]) -> _Subscription:
        remove = self.broker.subscribe(pattern, sink)
        self._removals.append(remove)
        return _Subscription(remove)

    async def subscribe(self, subject: str, callback: Callback) -> _Subscription:
        self._check()
        return self._listen(subject, self._pump(callback))

    async def direct_get(self, stream: str, subject: str) -> bytes | None:
        self._check()
        found = self.broker.streams.get(stream)
        if found is None:
            raise BusUnavailable(f"cannot read {subject}: no stream {stream}")
        msg = found.last(subject)
        return msg.data if msg is not None else None

    async def follow(self, subject: str, callback: Callable[[bytes], Awaitable[None]]
                     ) -> _Subscription:
        self._check()
        stream = self.broker.capturing(subject)
        if stream is None:
            raise BusUnavailable(f"cannot subscribe to {subject}: no stream captures it")
        backlog = [(m.data, m.subject) for m in stream.messages.values()
                   if subject_matches(subject, m.subject)]

        async def each(data: bytes, _: str) -> None:
            await callback(data)

        return self._listen(subject, self._pump(each, backlog))

    # --- request / reply ----------------------------------------------------------------------

    async def serve(self, subject: str, responder: Responder) -> _Subscription:
        self._check()
        remove = self.broker.serve(subject, responder)
        self._removals.append(remove)
        return _Subscription(remove)

    async def request(self, subject: str, payload: bytes, *, timeout: float = 2.0) -> bytes:
        self._check()
        responder = self.broker.responder(subject)
        if responder is None:
            raise BusUnavailable(f"request on {subject} failed: no responders")
        try:
            reply = await asyncio.wait_for(responder(payload, {}), timeout)
        except TimeoutError as exc:
            raise BusUnavailable(f"request on {subject} failed: timeout") from exc
        if reply is None:
            raise BusUnavailable(f"request on {subject} failed: no reply")
        return reply

    # --- the router's streams, consumer and bucket --------------------------------------------

    async def ensure_request_stream(self, *, legacy: bool = False) -> str:
        self._check()
        return self.broker.ensure_stream(
            REQUEST_STREAM, [REQUEST_SUBJECTS, *([LEGACY_SUBJECT] if legacy else [])],
            work_queue=True)

    async def ensure_result_stream(self) -> str:
        self._check()
        return self.broker.ensure_stream(RESULT_STREAM, [RESULT_SUBJECTS], work_queue=False)

    def forget_streams(self) -> None:
        pass  # nothing is looked up, so nothing to forget

    async def bucket(self, name: str = DEDUPE_BUCKET) -> _MemoryKeyValue:
        self._check()
        return _MemoryKeyValue(self.broker.buckets.setdefault(name, {}))

    async def consume(self, subjects: Sequence[str], durable: str, handler: Handler, *,
                      stream: str, batch: int = 64, concurrency: int = 64,
                      restore: Callable[[], Awaitable[str]] | None = None) -> None:
        self._check()
        source = self.broker.streams.get(stream)
        if source is None:
            raise BusUnavailable(f"cannot bind consumer {durable}: no stream {stream}")
        consumer = self.broker.consumers.get((stream, durable))
        if consumer is None:
            consumer = Consumer(source, subjects, self.broker.ack_wait)
            self.broker.consumers[(stream, durable)] = consumer
        consumer.filters = list(subjects)
        inflight: set[asyncio.Task[None]] = set()
        room = max(1, min(batch, concurrency) // 2)
        try:
            while True:
                self._check()
                while inflight and concurrency - len(inflight) < room:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                taken = consumer.take(min(batch, concurrency - len(inflight)))
                if not taken:
                    await consumer.wake.wait()
                    continue
                for msg, count in taken:
                    task = asyncio.ensure_future(_handle(consumer, msg, count, handler))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)


async def _handle(consumer: Consumer, msg: Message, count: int, handler: Handler) -> None:
    delivery = Delivery(data=msg.data, headers=dict(msg.headers), subject=msg.subject,
                        delivered=count, stream_seq=msg.seq)
    try:
        verdict, delay = await handler(delivery)
    except asyncio.CancelledError:
        consumer.settle(msg.seq, Disposition.NAK, 0.0)
        raise
    except Exception:
        verdict, delay = Disposition.NAK, 1.0
    consumer.settle(msg.seq, verdict, delay)

