"""The embedded scheduler's bus side: its NATS server, the auth callout, the router and
the local runner with one IPC bridge per run.

Started by ``run`` once the controller has armed its timers (``runtime.app``):
none of it is needed to fire on time, and its imports (nats-py, aiohttp) and the
server's start are a good part of a start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sympozium_schedule.adapters.nats.bus import NatsBroker
from sympozium_schedule.adapters.nats.callout import Callout, Disconnector, RunTokens
from sympozium_schedule.adapters.nats.jwt import Signer
from sympozium_schedule.adapters.nats.server import BusAuth, EmbeddedNats
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.ports.bus import RESULT_STREAM, Credential, RunSubjects
from sympozium_schedule.ports.store import Obj, Store
from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
from sympozium_schedule.runtime.bus_identity import CalloutConfig, ServiceAccountTokens, lightkube_review
from sympozium_schedule.runtime.informer import Informer
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.router import AgentDirectory, Router, RouterSettings
from sympozium_schedule.runtime.runner import LocalRunner
from sympozium_schedule.runtime.runner_settings import BridgeFactory, RunnerSettings
from sympozium_schedule.runtime.sandbox import Sandbox

Start = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


async def start_bus_side(*, data_dir: Path, store: Store, metrics: Metrics, runs: Informer,
                         instances: Informer, schedules: Informer,
                         nats_url: str | None, router: bool, runner: RunnerSettings | None,
                         limits: Limits, allow_unscoped_publishers: bool,
                         router_credential: Credential | None, start: Start) -> EmbeddedNats | None:
    """Start what the settings ask for, each as a task through ``start``; the NATS server
    this process started (to stop at the end), if any. The informers are the controller's:
    the router and the runner read its caches (no second copy, no second watch)."""
    nats_server: EmbeddedNats | None = None
    auth: BusAuth | None = None
    tokens: RunTokens | None = None
    if nats_url is None and (router or runner is not None):
        auth = BusAuth.generate()
        nats_server = EmbeddedNats(data_dir, auth=auth)
        nats_url = await nats_server.start()
        tokens = RunTokens(result_stream=RESULT_STREAM)
    if nats_url is None:
        return nats_server
    if auth is not None and tokens is not None:
        start(serve_callout(nats_url, auth, tokens), "bus-callout")
    if router:
        start(Router(store, RouterSettings(
            nats_url=nats_url, limits=limits,
            credential=Credential(nkey_seed=auth.router_seed) if auth else router_credential,
            allow_unscoped_publishers=allow_unscoped_publishers,
        ), metrics=metrics, directory=AgentDirectory(
            store, instances=instances, schedules=schedules)).run(), "router")
    if runner is not None:
        start(LocalRunner(store, runner, bridge=bridge_for(nats_url, limits, tokens),
                          metrics=metrics, runs=runs).run(), "runner")
    return nats_server


def bridge_for(nats_url: str, limits: Limits, tokens: RunTokens | None = None) -> BridgeFactory:
    """The runner starts one IPC bridge per run, in-process, as Sympozium starts a sidecar.
    With ``tokens`` each bridge gets a credential of its own run, revoked when it stops:
    the agent process never holds the bus URL or any credential."""

    async def start(run: Obj, ipc: Path, stop: asyncio.Event) -> None:
        meta, spec = run.get("metadata") or {}, run.get("spec") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace") or "default")
        instance = str(spec.get("instanceRef"))
        token = tokens.mint(RunSubjects(namespace, instance, name)) if tokens is not None else None
        try:
            await Bridge(BridgeSettings(
                ipc_path=ipc, agent_run_id=name, instance=instance, namespace=namespace,
                nats_url=nats_url, max_request_bytes=limits.max_request_bytes,
                token=token)).run(stop)
        finally:
            if tokens is not None and token is not None:
                await tokens.revoke(token)

    return start


async def serve_callout(nats_url: str, auth: BusAuth, tokens: RunTokens) -> None:
    """Decide every connection to the embedded server that is not one of ours."""
    callout = Callout(Signer.from_seed(auth.issuer_seed), auth.account, tokens.authorize)
    broker = NatsBroker(nats_url)
    disconnector = Disconnector(broker, Credential(nkey_seed=auth.system_seed))
    tokens.callout, tokens.disconnector = callout, disconnector
    try:
        await callout.serve(broker, Credential(nkey_seed=auth.callout_seed))
    finally:
        await disconnector.close()


async def serve_kubernetes_callout(nats_url: str, config: CalloutConfig, store: Any) -> None:
    """Bridges in agent pods present their ServiceAccount token; TokenReview says which pod."""
    reviewer = ServiceAccountTokens(store, lightkube_review(store.client, config.audience),
                                    ttl=config.ttl)
    callout = Callout(Signer.from_seed(config.issuer_seed), config.account, reviewer.authorize)
    await callout.serve(NatsBroker(nats_url), config.login)


__all__ = ["Sandbox", "bridge_for", "serve_callout", "serve_kubernetes_callout", "start_bus_side"]
