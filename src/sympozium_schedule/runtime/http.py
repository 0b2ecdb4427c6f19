"""``/metrics``, ``/healthz``, ``/readyz`` and ``/leaderz`` on one small aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sympozium_schedule.runtime.metrics import Metrics


def make_app(metrics: Metrics, *, ready: Callable[[], bool],
             healthy: Callable[[], bool] = lambda: True,
             leading: Callable[[], bool] = lambda: True) -> web.Application:
    async def metrics_handler(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(text="ok\n" if ok else "unhealthy\n", status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.Response(text="ready\n" if ok else "not ready\n", status=200 if ok else 503)

    async def leaderz(_: web.Request) -> web.Response:
        ok = leading()
        return web.Response(text="leading\n" if ok else "standby\n", status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/leaderz", leaderz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve_http(metrics: Metrics, *, port: int, host: str = "0.0.0.0",
                     ready: Callable[[], bool], healthy: Callable[[], bool] = lambda: True,
                     leading: Callable[[], bool] = lambda: True) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(make_app(metrics, ready=ready, healthy=healthy, leading=leading),
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
