"""Kubernetes Events for what a person should see, written off the fire path.

Events are best effort, as client-go's recorder makes them: a queue drained
by a background task, a token bucket per object and one for the process (a
burst of 10,000 fires must not become 10,000 more API writes), and an error
writing one never fails a fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

import structlog

from sympozium_schedule.core.decide import Note
from sympozium_schedule.core.model import Kind, format_time
from sympozium_schedule.ports.store import Obj, Store, StoreError
from sympozium_schedule.runtime.clock import Clock, MonotonicClock, monotonic, system_clock
from sympozium_schedule.runtime.metrics import Metrics

log = structlog.get_logger("events")
COMPONENT = "sympozium-schedule"


@dataclass(slots=True)
class _Bucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def build_event(involved: Obj, note: Note, now_text: str, instance: str) -> Obj:
    meta = involved.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": Kind.EVENT.value,
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": note.reason,
        "message": note.message[:1024],
        "type": note.type,
        "count": 1,
        "firstTimestamp": now_text,
        "lastTimestamp": now_text,
        "source": {"component": COMPONENT},
        "reportingComponent": f"sympozium.ai/{COMPONENT}",
        "reportingInstance": instance,
    }


class EventRecorder:
    def __init__(self, store: Store, *, metrics: Metrics, clock: Clock = system_clock,
                 monotonic_clock: MonotonicClock = monotonic, per_object_burst: int = 10,
                 per_object_rate: float = 1 / 60,
                 global_burst: int = 100, global_rate: float = 10.0, queue_size: int = 1000):
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic_clock
        self._queue: asyncio.Queue[Obj] = asyncio.Queue(maxsize=queue_size)
        self._per_object: dict[str, _Bucket] = {}
        self._burst, self._rate = per_object_burst, per_object_rate
        self._global = _Bucket(global_burst, global_rate)
        self._instance = socket.gethostname()
        self.written = 0

    def record(self, involved: Obj, note: Note) -> None:
        now = self._monotonic()
        uid = str((involved.get("metadata") or {}).get("uid"))
        bucket = self._per_object.get(uid)
        if bucket is None:
            bucket = self._per_object[uid] = _Bucket(self._burst, self._rate)
        if not (bucket.take(now) and self._global.take(now)):
            self._metrics.events_dropped.inc()
            return
        event = build_event(involved, note, format_time(self._clock()), self._instance)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._metrics.events_dropped.inc()

    def forget(self, uid: str) -> None:
        self._per_object.pop(uid, None)

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._store.create(event)
                self.written += 1
            except StoreError as exc:
                self._metrics.events_dropped.inc()
                log.debug("event not written", error=str(exc), reason=event.get("reason"))
            finally:
                self._queue.task_done()

    async def drain(self, timeout: float = 2.0) -> None:
        """Write what is queued (on shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
