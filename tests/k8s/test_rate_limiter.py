"""The Kubernetes store's client-side rate limiter: a token bucket whose Events yield to the
scheduler's own requests (so a burst of fires is paced by the bucket alone)."""

from __future__ import annotations

import asyncio
import time

from sympozium_schedule.adapters.kubernetes.store import RateLimiter


async def test_low_priority_requests_wait_for_every_normal_one() -> None:
    limiter = RateLimiter(qps=50, burst=1)
    await limiter.acquire()  # the bucket is empty: every request below waits for a token
    order: list[str] = []

    async def one(name: str, *, low: bool) -> None:
        await limiter.acquire(low=low)
        order.append(name)

    # Events queued first, then fires: every fire still goes first.
    tasks = [asyncio.create_task(one(f"event-{i}", low=True)) for i in range(3)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(one(f"fire-{i}", low=False)) for i in range(6)]
    await asyncio.gather(*tasks)
    fires = [i for i, name in enumerate(order) if name.startswith("fire")]
    events = [i for i, name in enumerate(order) if name.startswith("event")]
    # Only the Event already waiting for its token when the fires arrived goes before them.
    assert sum(1 for e in events if e < max(fires)) <= 1, order


async def test_the_bucket_allows_a_burst_then_qps() -> None:
    limiter = RateLimiter(qps=100, burst=10)
    began = time.monotonic()
    for _ in range(30):
        await limiter.acquire()
    took = time.monotonic() - began
    assert took >= 0.19, f"20 requests past the burst at 100/s took {took:.3f}s"


async def test_time_the_loop_takes_to_wake_a_waiter_is_credited() -> None:
    """In virtual time, every sleep oversleeps by 5 ms (a loaded machine): 200 requests past
    the burst at 50/s still take 4 s, not 200 x (20 + 5) ms = 5 s."""
    now = [0.0]

    async def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.005

    limiter = RateLimiter(qps=50, burst=100, clock=lambda: now[0], sleep=late_sleep)
    for _ in range(300):
        await limiter.acquire()
    assert 4.0 <= now[0] <= 4.0 + 0.005 * 2, now[0]
