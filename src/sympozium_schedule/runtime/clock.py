"""The clocks the runtime reads (tests inject their own).

``Clock`` is the wall clock decisions are made by; ``MonotonicClock`` paces
rate limits (Events), where a step of the wall clock must not count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
MonotonicClock = Callable[[], float]


def system_clock() -> datetime:
    return datetime.now(UTC)


def monotonic() -> float:
    return time.monotonic()
