"""One live stream of schedule, run and instance changes, fanned out to every client.

The controller's informers already see every change; the :class:`Hub` is one more
handler on them (``add_handler(own_writes=True)``: a fire's status is the
controller's own write). A change is serialised once and offered to each
connected client's bounded queue with ``put_nowait``: the controller's loop never
waits on a browser. A client whose queue is full (it stopped reading, or a burst
outran it) is dropped; its page reconnects and reloads what it shows, which is
cheaper and more honest than holding an unbounded backlog for it.

Wire format: Server-Sent Events. ``event:`` is the kind (``schedule``, ``run``,
``instance``), ``data:`` is ``{"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}}``.
A comment line every ``heartbeat`` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
import structlog
from aiohttp import web

from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import EventType, Obj
from sympozium_schedule.runtime.informer import Handler, Informer

log = structlog.get_logger("console")

EVENT_NAMES = {Kind.SCHEDULE: "schedule", Kind.AGENT_RUN: "run", Kind.INSTANCE: "instance"}
_CLOSE = b""  # the sentinel that ends a client's stream


@dataclass(eq=False, slots=True)
class Client:
    namespace: str | None  # None: every namespace
    queue: asyncio.Queue[bytes]
    dropped: bool = False
    sent: int = 0
    transport: asyncio.BaseTransport | None = None


@dataclass(slots=True)
class HubStats:
    delivered: int = 0
    dropped_clients: int = 0
    connected: int = 0


@dataclass(slots=True)
class Hub:
    queue_size: int = 1000
    heartbeat: float = 15.0
    clients: set[Client] = field(default_factory=set)
    stats: HubStats = field(default_factory=HubStats)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _closing: bool = False

    def watch(self, informers: Iterable[Informer]) -> None:
        for informer in informers:
            if informer.kind in EVENT_NAMES:
                informer.add_handler(self._handler(informer.kind), own_writes=True)

    def _handler(self, kind: Kind) -> Handler:
        name = EVENT_NAMES[kind]

        def on_change(change: EventType, obj: Obj) -> None:
            if not self.clients:
                return  # the common case: nobody is looking, nothing is serialised
            namespace = str((obj.get("metadata") or {}).get("namespace") or "default")
            payload = orjson.dumps({"type": change.value, "object": obj})
            frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (next(self._ids), name.encode(), payload)
            self.publish(frame, namespace)

        return on_change

    def publish(self, frame: bytes, namespace: str) -> None:
        for client in list(self.clients):
            if client.dropped or (client.namespace is not None and client.namespace != namespace):
                continue
            try:
                client.queue.put_nowait(frame)
                self.stats.delivered += 1
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: Client) -> None:
        client.dropped = True
        self.stats.dropped_clients += 1
        log.info("live stream client dropped: it fell behind", queued=client.queue.qsize())
        # Its task may be stuck writing to a socket nobody reads: cut the connection (the
        # page reconnects and reloads), and wake the task if it is waiting on the queue.
        if client.transport is not None:
            client.transport.abort()  # type: ignore[attr-defined]
        with contextlib.suppress(asyncio.QueueEmpty):
            client.queue.get_nowait()
        client.queue.put_nowait(_CLOSE)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self._closing = True
        for client in list(self.clients):
            with contextlib.suppress(asyncio.QueueEmpty):
                client.queue.get_nowait()
            client.queue.put_nowait(_CLOSE)

    async def serve(self, request: web.Request, namespace: str | None, hello: dict[str, object]
                    ) -> web.StreamResponse:
        """Stream to one client until it goes away, falls behind, or the server stops."""
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        if self._closing:
            return response
        client = Client(namespace, asyncio.Queue(maxsize=self.queue_size), transport=request.transport)
        self.clients.add(client)
        self.stats.connected += 1
        try:
            await response.write(b"retry: 2000\nevent: hello\ndata: " + orjson.dumps(hello) + b"\n\n")
            while True:
                try:
                    frame = await asyncio.wait_for(client.queue.get(), self.heartbeat)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if frame == _CLOSE:
                    break
                # Whatever else is queued goes out in the same write.
                frames = [frame]
                while not client.queue.empty() and len(frames) < 256:
                    more = client.queue.get_nowait()
                    if more == _CLOSE:
                        client.queue.put_nowait(_CLOSE)
                        break
                    frames.append(more)
                await response.write(b"".join(frames))
                client.sent += len(frames)
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self.clients.discard(client)
        return response
