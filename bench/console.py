"""The console's costs: what a page's requests take with 1,000 schedules, what the cron
editor's preview takes per keystroke, what the live stream adds to each change the
controller makes, and how long a change takes to reach a browser.

``python -m bench console`` (``./dev bench console``). No targets: the issue sets none for
the console; these are the figures to watch.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import Create, EventType, Ref
from sympozium_schedule.runtime.api import Console, ConsoleSettings
from sympozium_schedule.runtime.api.auth import TokenAccess
from sympozium_schedule.runtime.controller import Controller
from sympozium_schedule.runtime.paths import store_path

SCHEDULES = 1000
EXPRESSIONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "15 9 * * 1-5", "@every 45m", "0 */4 * * *"]


def _schedule(i: int) -> dict[str, Any]:
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
            "metadata": {"name": f"s{i:04d}", "namespace": "default"},
            "spec": {"instanceRef": "alice", "schedule": EXPRESSIONS[i % len(EXPRESSIONS)],
                     "task": "Check the cluster and report.", "suspend": True,
                     "timeZone": ["UTC", "Europe/Warsaw", "America/New_York"][i % 3]}}


async def _timed(session: aiohttp.ClientSession, url: str, repeats: int) -> tuple[float, int]:
    took = []
    size = 0
    for _ in range(repeats):
        started = time.perf_counter()
        async with session.get(url) as response:
            body = await response.read()
            assert response.status == 200, body[:200]
            size = len(body)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), size


async def _measure(root: Path) -> list[tuple[str, str]]:
    store = SQLiteStore(store_path(root))
    await store.create({"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumInstance",
                        "metadata": {"name": "alice", "namespace": "default"},
                        "spec": {"agents": {"default": {"model": "m"}}}})
    await store.write_groups([[Create(_schedule(i))] for i in range(SCHEDULES)])
    controller = Controller(store)
    task = asyncio.create_task(controller.run())
    await controller.ready.wait()
    console = Console(store, ConsoleSettings(port=0, port_fallback=False),
                      TokenAccess("t" * 32, reads_need_token=False),
                      informers=[controller.schedules, controller.runs, controller.instances])
    url = await console.start()
    rows: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as session:
        for label, path, repeats in (
                (f"GET /schedules ({SCHEDULES})", "/api/v1/schedules", 20),
                (f"GET /timeline 24 h ({SCHEDULES})", "/api/v1/timeline?hours=24", 5),
                (f"GET /timeline 7 days ({SCHEDULES})", "/api/v1/timeline?hours=168", 3),
                ("GET /preview (a keystroke)",
                 "/api/v1/preview?schedule=30+2+*+*+*&timeZone=America%2FNew_York&count=6", 50),
                ("GET /schedules/{name}/next", "/api/v1/schedules/s0002/next?count=5", 50)):
            median, size = await _timed(session, url + path, repeats)
            rows.append((label, f"{median:.1f} ms median, {size / 1024:.0f} KiB"))

        # What a change costs the controller's loop with 10 pages open (the handler's work).
        readers = [asyncio.create_task(_drain(session, url)) for _ in range(10)]
        for _ in range(1000):  # the pages connect
            if len(console.hub.clients) >= 10:
                break
            await asyncio.sleep(0.01)
        handler = controller.schedules._own_write_handlers[-1]
        obj = await store.get(Ref(Kind.SCHEDULE, "default", "s0001"))
        count = 2000
        started = time.perf_counter()
        for _ in range(count):
            handler(EventType.MODIFIED, obj)
        per = (time.perf_counter() - started) / count * 1e6
        rows.append(("stream: a change, 10 pages listening", f"{per:.0f} µs in the controller's loop"))
        await asyncio.sleep(1)

        # A change written to the store until a page has it.
        waits = []
        for i in range(30):
            name = f"late{i}"
            seen = asyncio.Event()
            watcher = asyncio.create_task(_until(session, url, name, seen))
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            await store.create(_schedule(5000 + i) | {"metadata": {"name": name, "namespace": "default"}})
            await seen.wait()
            waits.append((time.perf_counter() - started) * 1000)
            watcher.cancel()
        rows.append(("stream: store write -> page", f"{statistics.median(waits):.1f} ms median, "
                     f"{max(waits):.1f} ms max (30 writes)"))
        for reader in readers:
            reader.cancel()
    await console.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.close()
    return rows


async def _drain(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url + "/api/v1/stream") as response:
        async for _ in response.content.iter_any():
            pass


async def _until(session: aiohttp.ClientSession, url: str, name: str, seen: asyncio.Event) -> None:
    async with session.get(url + "/api/v1/stream") as response:
        async for line in response.content:
            if b'"name":"' + name.encode() + b'"' in line:
                seen.set()
                return


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        rows = asyncio.run(_measure(Path(root)))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
