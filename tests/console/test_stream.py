"""The live stream: fed by the controller's informers (its own writes included), one
queue per client, a client that falls behind is dropped without slowing anything."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import EventType
from sympozium_schedule.runtime.informer import Informer
from tests.console.conftest import Api, eventually, instance, schedule


class Listener:
    """Reads the SSE stream in the background, as a browser would."""

    def __init__(self, api: Api, query: str = "") -> None:
        self.api = api
        self.query = query
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.task: asyncio.Task[None] | None = None
        self.status = 0
        self.ended = False

    async def __aenter__(self) -> Listener:
        self.task = asyncio.create_task(self._read())
        await eventually(lambda: any(kind == "hello" for kind, _ in self.events), what="hello")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()

    async def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.api.token}"}
        async with self.api.session.get(f"{self.api.url}/api/v1/stream{self.query}",
                                        headers=headers) as response:
            self.status = response.status
            assert response.headers["Content-Type"] == "text/event-stream"
            kind = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line[6:])))
        self.ended = True

    def seen(self, kind: str, change: str, name: str) -> bool:
        return any(k == kind and d.get("type") == change and d["object"]["metadata"]["name"] == name
                   for k, d in self.events)


async def test_changes_arrive_on_the_stream_including_the_controllers_own_writes(make_api: Any) -> None:
    api: Api = await make_api(controller=True)
    await api.seed(instance())
    async with Listener(api) as live:
        reply = await api.post("/api/v1/schedules", {"name": "live", "agentRef": "alice",
                                                     "schedule": "@every 1h", "task": "t"})
        assert reply.status == 201
        await eventually(lambda: live.seen("schedule", "ADDED", "live"), what="the schedule ADDED")
        # firstTick immediate: the controller fires at once, creating a run and writing the
        # schedule's status (its own writes, which its informers apply without a watch echo).
        await eventually(lambda: any(k == "run" and d["object"]["metadata"]["labels"]
                                     ["sympozium.ai/schedule"] == "live" for k, d in live.events),
                         what="the fired run")
        await eventually(lambda: any(k == "schedule" and (d["object"].get("status") or {}).get(
            "totalRuns") == 1 for k, d in live.events), what="the status after the fire")
        await api.delete("/api/v1/schedules/live")
        await eventually(lambda: live.seen("schedule", "DELETED", "live"), what="the DELETED")


async def test_the_stream_of_one_namespace_shows_only_it(make_api: Any) -> None:
    api: Api = await make_api(controller=True)
    async with Listener(api, "?namespace=team-a") as live:
        await api.seed(schedule("elsewhere"), schedule("here", namespace="team-a"))
        await eventually(lambda: live.seen("schedule", "ADDED", "here"), what="team-a's schedule")
        await asyncio.sleep(0.3)  # give the other one time to (wrongly) arrive
        assert not live.seen("schedule", "ADDED", "elsewhere")


async def test_a_client_that_stops_reading_is_dropped_and_nothing_waits(make_api: Any) -> None:
    api: Api = await make_api(controller=True, queue_size=8)
    hub = api.console.hub
    # A client that connects and never reads: its queue fills, it is dropped.
    async with aiohttp.ClientSession() as lazy:
        response = await lazy.get(f"{api.url}/api/v1/stream",
                                  headers={"Authorization": f"Bearer {api.token}"})
        await eventually(lambda: len(hub.clients) == 1, what="the client to connect")
        client = next(iter(hub.clients))
        started = asyncio.get_running_loop().time()
        # Large objects, so the socket's buffers fill and the server's writes to the lazy
        # client block (a small stream would just sit in the kernel's buffers); then its
        # queue fills.
        big = "x" * 256 * 1024
        for i in range(60):
            await api.store.create(schedule(f"s{i}", suspend=True) | {
                "spec": {"instanceRef": "alice", "schedule": "@daily", "task": big, "suspend": True}})
        await eventually(lambda: client.dropped, what="the slow client to be dropped")
        assert hub.stats.dropped_clients == 1
        assert asyncio.get_running_loop().time() - started < 20
        await eventually(lambda: client not in hub.clients, what="its stream to end")
        response.close()
    # The store and controller carried on: every schedule is there.
    assert len((await api.get("/api/v1/schedules")).body) == 60


async def test_nothing_is_serialised_while_nobody_listens(api: Api) -> None:
    informer = Informer(api.store, Kind.SCHEDULE)
    api.console.hub.watch([informer])
    informer.observe(schedule("quiet") | {"metadata": {"name": "quiet", "namespace": "default",
                                                       "resourceVersion": "1"}}, notify=False)
    assert api.console.hub.stats.delivered == 0


def test_own_write_handlers_hear_what_observe_and_forget_apply_silently() -> None:
    heard: list[tuple[EventType, str]] = []
    plain: list[EventType] = []
    informer = Informer(store=None, kind=Kind.SCHEDULE)  # type: ignore[arg-type]
    informer.add_handler(lambda change, obj: plain.append(change))
    informer.add_handler(lambda change, obj: heard.append((change, obj["metadata"]["name"])), own_writes=True)
    obj = {"metadata": {"name": "a", "namespace": "default", "resourceVersion": "1"}}
    informer.observe(obj, notify=False)
    informer.observe(obj | {"metadata": obj["metadata"] | {"resourceVersion": "2"}}, notify=False)
    informer.forget("default", "a", notify=False)
    assert heard == [(EventType.ADDED, "a"), (EventType.MODIFIED, "a"), (EventType.DELETED, "a")]
    assert plain == []
    informer.observe(obj)  # a notifying write reaches every handler once
    assert heard[-1] == (EventType.ADDED, "a")
    assert len(heard) == 4
    assert plain == [EventType.ADDED]


async def test_stopping_the_console_ends_open_streams(make_api: Any) -> None:
    api: Api = await make_api()
    async with Listener(api) as live:
        api.console.hub.close()
        await eventually(lambda: live.ended, what="the stream to end")
    assert live.status == 200
