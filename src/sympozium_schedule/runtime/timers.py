"""Every schedule's next wake-up in one heap, armed as a single timer.

Nothing is polled per schedule: the one timer sleeps until the earliest
wake-up (at most ``max_sleep``, so a clock step, NTP or a suspended laptop,
cannot leave it armed for the wrong instant), then hands every key that is
due to ``on_due``. Both the clock and the way a delay is slept are injected:
the runtime uses the wall clock and the event loop, controller tests a
virtual clock that they advance themselves.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sympozium_schedule.runtime.clock import Clock
from sympozium_schedule.runtime.informer import Key


class Handle(Protocol):
    def cancel(self) -> None: ...


# Sleeps ``delay`` seconds, then calls back (asyncio's ``loop.call_later``).
CallLater = Callable[[float, Callable[[], None]], Handle]


def loop_call_later(delay: float, callback: Callable[[], None]) -> Handle:
    return asyncio.get_running_loop().call_later(delay, callback)


class Timers:
    def __init__(self, clock: Clock, on_due: Callable[[list[Key]], None], *,
                 call_later: CallLater = loop_call_later, max_sleep: float = 60.0):
        self._clock = clock
        self._on_due = on_due
        self._call_later = call_later
        self._max_sleep = max_sleep
        self._heap: list[tuple[float, Key]] = []
        self._wake_at: dict[Key, float] = {}
        self._handle: Handle | None = None
        self._armed_for = float("inf")  # the instant the timer is set for
        self._running = False

    def arm(self, key: Key, when: datetime | None) -> None:
        """Wake ``key`` at ``when`` (None: never), replacing its earlier wake-up."""
        if when is None:
            self._wake_at.pop(key, None)
            return
        stamp = when.timestamp()
        if self._wake_at.get(key) == stamp:
            return
        self._wake_at[key] = stamp
        heapq.heappush(self._heap, (stamp, key))
        if self._running and stamp < self._armed_for:
            self._rearm()

    def disarm(self, key: Key) -> None:
        self._wake_at.pop(key, None)  # its heap entry is dropped when it surfaces

    def armed(self, key: Key) -> bool:
        return key in self._wake_at

    def __len__(self) -> int:
        return len(self._wake_at)

    def next_wake(self) -> datetime | None:
        """The earliest wake-up armed."""
        if not self._wake_at:
            return None
        return datetime.fromtimestamp(min(self._wake_at.values()), self._clock().tzinfo)

    def start(self) -> None:
        self._running = True
        self._rearm()

    def stop(self) -> None:
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _rearm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if len(self._heap) > 2 * len(self._wake_at) + 1024:  # drop superseded entries
            self._heap = [(t, k) for k, t in self._wake_at.items()]
            heapq.heapify(self._heap)
        heap, wake_at = self._heap, self._wake_at
        while heap and wake_at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        now = self._clock().timestamp()
        delay = min(max(heap[0][0] - now, 0.0), self._max_sleep) if heap else self._max_sleep
        self._armed_for = now + delay
        self._handle = self._call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = float("inf")
        now = self._clock().timestamp()
        heap, wake_at = self._heap, self._wake_at
        due: list[Key] = []
        while heap and heap[0][0] <= now:
            stamp, key = heapq.heappop(heap)
            if wake_at.get(key) == stamp:
                del wake_at[key]
                due.append(key)
        if due:
            self._on_due(due)
        if self._running:
            self._rearm()
