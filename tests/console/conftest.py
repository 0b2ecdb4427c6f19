"""A real console over a real SQLite store, reached over loopback HTTP.

Every response an API test receives is checked against the OpenAPI document the
console serves (openapi-core), so the document and the handlers cannot drift apart.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.runtime.api import Console, ConsoleSettings
from sympozium_schedule.runtime.api.auth import TokenAccess, write_token
from sympozium_schedule.runtime.api.openapi import document
from sympozium_schedule.runtime.controller import Controller
from sympozium_schedule.runtime.paths import store_path
from tests import support

eventually = functools.partial(support.eventually, timeout=30)
SPEC = OpenAPI.from_dict(document())


def instance(name: str = "alice", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumInstance",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"agents": {"default": {"model": "gpt-4o"}}}}


def schedule(name: str, expression: str = "0 9 * * *", *, namespace: str = "default",
             instance_ref: str = "alice", labels: dict[str, str] | None = None, **spec: Any
             ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule", "metadata": meta,
            "spec": {"instanceRef": instance_ref, "schedule": expression, "task": "Check in."} | spec}


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any
    text: str


@dataclass
class Api:
    """The console's HTTP API as a client sees it; ``token`` is sent unless told otherwise."""

    url: str
    token: str
    session: aiohttp.ClientSession
    store: SQLiteStore
    console: Console
    data_dir: Path
    checked: list[str] = field(default_factory=list)

    async def call(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                   auth: bool | str = True, headers: dict[str, str] | None = None,
                   validate: bool = True) -> Reply:
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self.token if auth is True else auth}"
        if json is not None:
            data = orjson.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, data=data, headers=sent) as response:
            raw = await response.read()
            kind = response.headers.get("Content-Type", "").split(";")[0]
            text = raw.decode("utf-8", "replace")
            body = orjson.loads(raw) if kind == "application/json" and raw else text
            if validate:
                self._validate(method, path, response.status, raw, kind, dict(response.headers))
            return Reply(response.status, body, response.headers, text)

    def _validate(self, method: str, path: str, status: int, raw: bytes, kind: str,
                  headers: dict[str, str]) -> None:
        parts = urlsplit(path)
        args = dict(p.split("=", 1) if "=" in p else (p, "") for p in parts.query.split("&") if p)
        request = MockRequest(self.url, method.lower(), parts.path, args=args)
        SPEC.validate_response(request, MockResponse(raw, status_code=status, headers=headers,
                                                     content_type=kind or "application/json"))
        self.checked.append(f"{method} {parts.path} {status}")

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)

    async def seed(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            await self.store.create(obj)


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[tuple[Console, aiohttp.ClientSession, SQLiteStore, asyncio.Task[None] | None]] = []

    async def make(*, controller: bool = False, read_only: bool = False, host: str = "127.0.0.1",
                   reads_need_token: bool = False, queue_size: int = 1000, name: str = "data") -> Api:
        data_dir = tmp_path / name
        data_dir.mkdir(exist_ok=True)
        store = SQLiteStore(store_path(data_dir))
        token = write_token(data_dir)
        task = None
        informers = []
        if controller:
            ctl = Controller(store)
            informers = [ctl.schedules, ctl.runs, ctl.instances]
            task = asyncio.create_task(ctl.run())
        console = Console(store, ConsoleSettings(host=host, port=0, port_fallback=False,
                                                 read_only=read_only, queue_size=queue_size),
                          TokenAccess(token, reads_need_token=reads_need_token),
                          data_dir=data_dir, informers=informers)
        url = await console.start()
        session = aiohttp.ClientSession()
        made.append((console, session, store, task))
        return Api(url, token, session, store, console, data_dir)

    yield make
    for console, session, store, task in made:
        await session.close()
        await console.stop()
        if task is not None:
            task.cancel()
            with __import__("contextlib").suppress(asyncio.CancelledError):
                await task
        await store.close()


@pytest.fixture
async def api(make_api: Any) -> Api:
    made: Api = await make_api()
    await made.seed(instance())
    return made
