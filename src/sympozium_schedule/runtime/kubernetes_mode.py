"""Assembling the scheduler in Kubernetes mode: the controller, its Lease (or shards), the
router and the HTTP endpoints against a cluster's API, until a signal.

``sympozium-schedule run --kubernetes`` (and ``router --kubernetes``) are thin flag
parsers over :func:`run_kubernetes`. Apart from :mod:`~sympozium_schedule.runtime.app`
(the embedded scheduler) because the two share no start-up: no data directory, lock,
SQLite store or agent runner here, and no Lease, shards or in-cluster defaults there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from sympozium_schedule.core.requests import Limits
from sympozium_schedule.runtime.controller import Controller, ControllerSettings
from sympozium_schedule.runtime.heap import freeze_heap, tune_gc
from sympozium_schedule.runtime.metrics import Metrics

if TYPE_CHECKING:
    from sympozium_schedule.adapters.kubernetes.sharding import ShardElector
    from sympozium_schedule.ports.bus import Credential
    from sympozium_schedule.runtime.api import Console, ConsoleSettings
    from sympozium_schedule.runtime.bus_identity import CalloutConfig

__all__ = [
    "INSTALL_NAMESPACE",
    "IN_CLUSTER_NAMESPACE_FILE",
    "KubernetesSettings",
    "default_identity",
    "default_lease_namespace",
    "run_kubernetes",
    "watch_shards",
]

log = structlog.get_logger("app")


# Where a pod finds its own namespace (the ServiceAccount volume every pod mounts).
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The install's namespace (manifests.generate.NAMESPACE), where its Role grants the Lease.
INSTALL_NAMESPACE = "sympozium-schedule"


def default_lease_namespace() -> str:
    """$POD_NAMESPACE, else the pod's own namespace, else the install's: the one namespace
    where the shipped Role lets the shipped ServiceAccount hold the Lease, so the README's
    workstation command works as that ServiceAccount."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
        if namespace:
            return namespace
    return INSTALL_NAMESPACE


def default_identity() -> str:
    """The pod (or host) name plus a random suffix, as client-go's: unique per process, so
    two processes on one workstation never both believe they hold the Lease."""
    import uuid

    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


@dataclass(slots=True)
class KubernetesSettings:
    kubeconfig: Path | None = None
    context: str | None = None
    namespaces: tuple[str, ...] | None = None  # None: all namespaces
    qps: float = 50.0
    burst: int = 100
    leader_election: bool = True
    lease_name: str = "sympozium-schedule"
    # 1: one leader fires everything (its Lease: lease_name). More: the schedules are hashed
    # into this many shards, each held by one replica through the Lease
    # <lease_name>-shard-<i> (adapters/kubernetes/sharding.py). Every replica must agree.
    shards: int = 1
    lease_namespace: str = field(default_factory=default_lease_namespace)
    identity: str = field(default_factory=default_identity)
    http_port: int | None = 8080
    nats_url: str | None = None  # the router runs when set
    limits: Limits = field(default_factory=Limits)
    # The router's own login on the bus, the auth callout it serves (bridges' run
    # credentials), and whether it believes identities named in unscoped messages.
    router_credential: Credential | None = None
    callout: CalloutConfig | None = None
    allow_unscoped_publishers: bool = False
    controller: bool = True
    memory_labels: dict[str, str | None] = field(
        default_factory=lambda: {"sympozium.ai/component": "memory"})
    console: ConsoleSettings | None = None  # the web console and REST API (runtime.api)


def watch_shards(elector: ShardElector, controller: Controller, metrics: Metrics) -> None:
    """A shard taken over is marked dirty as a whole (a tick missed while nobody held it is
    caught up once: the status's cursor says which); ``/metrics`` shows the shards held."""
    from prometheus_client import Gauge

    def gained(shards: set[int]) -> None:
        for key in list(controller.schedules.cache):
            if elector.shard(key) in shards:
                controller.mark(key)

    elector.on_gain = gained
    registry = metrics.registry
    Gauge("sympozium_schedule_shards_held", "Shards this replica holds and acts on",
          registry=registry).set_function(lambda: len(elector.held()))
    Gauge("sympozium_schedule_shards", "Shards the schedules are hashed into (--shards)",
          registry=registry).set_function(lambda: elector.shards)
    Gauge("sympozium_schedule_shard_replicas", "Live replicas seen in the member Leases",
          registry=registry).set_function(lambda: elector.members)
    Gauge("sympozium_schedule_shards_taken", "Shards taken over since start (each is caught up)",
          registry=registry).set_function(lambda: elector.taken)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_kubernetes(settings: KubernetesSettings) -> None:
    """The controller (and router, given a NATS URL) against the Kubernetes API."""
    tune_gc()
    from sympozium_schedule.adapters.kubernetes.leader import LeaseElector
    from sympozium_schedule.adapters.kubernetes.sharding import ShardElector
    from sympozium_schedule.adapters.kubernetes.store import KubernetesStore
    from sympozium_schedule.runtime.http import serve_http
    from sympozium_schedule.runtime.messaging import serve_kubernetes_callout
    from sympozium_schedule.runtime.router import Router, RouterSettings

    store = KubernetesStore.connect(settings.kubeconfig, context=settings.context,
                                    qps=settings.qps, burst=settings.burst,
                                    component="controller" if settings.controller else "router")
    metrics = Metrics()
    elector: LeaseElector | ShardElector | None = None
    if settings.leader_election and settings.controller:
        if settings.shards > 1:
            elector = ShardElector(store, shards=settings.shards, base=settings.lease_name,
                                   namespace=settings.lease_namespace, identity=settings.identity,
                                   foreign=(settings.lease_name,))
        else:
            elector = LeaseElector(store, name=settings.lease_name,
                                   namespace=settings.lease_namespace, identity=settings.identity)
    controller = Controller(store, settings=ControllerSettings(
        namespaces=settings.namespaces, memory_labels=settings.memory_labels),
        metrics=metrics, leader=elector) if settings.controller else None
    if isinstance(elector, ShardElector) and controller is not None:
        watch_shards(elector, controller, metrics)
    router = (Router(store, RouterSettings(
        nats_url=settings.nats_url, limits=settings.limits, credential=settings.router_credential,
        allow_unscoped_publishers=settings.allow_unscoped_publishers), metrics=metrics)
        if settings.nats_url else None)

    def ready() -> bool:
        # Synced caches, and a standby counts as ready while it can reach the API:
        # tying readiness to holding the lease would leave standbys forever unready
        # and stall rolling updates; /leaderz tells the leader apart. The router is
        # not part of it: NATS being away must not take the scheduler out of service
        # (the router logs and retries on its own).
        ok = True
        if controller is not None:
            ok = controller.synced.is_set()
        elif router is not None:
            ok = router.ready.is_set()
        if elector is not None:
            ok = ok and (elector.is_leading or elector.healthy)
        return ok

    def leading() -> bool:
        return elector is None or elector.is_leading

    log.info("starting in Kubernetes mode", namespaces=settings.namespaces or "all",
             leader_election=elector is not None, router=router is not None,
             shards=settings.shards if elector is not None else None)
    console: Console | None = None
    try:
        if settings.console is not None:
            from sympozium_schedule.runtime.api.wiring import start_kubernetes

            console = await start_kubernetes(settings.console, store, controller)
        async with asyncio.TaskGroup() as group:
            tasks = []
            if controller is not None:
                tasks.append(group.create_task(controller.run(), name="controller"))
            if elector is not None:
                tasks.append(group.create_task(elector.run(), name="leader-election"))
            if router is not None:
                tasks.append(group.create_task(router.run(), name="router"))
            if settings.callout is not None and settings.nats_url is not None:
                tasks.append(group.create_task(serve_kubernetes_callout(
                    settings.nats_url, settings.callout, store), name="bus-callout"))
            if settings.http_port is not None:
                tasks.append(group.create_task(serve_http(
                    metrics, port=settings.http_port, ready=ready, leading=leading)))
            stopping = asyncio.create_task(_until_signal())
            if controller is not None:
                synced = asyncio.create_task(controller.synced.wait())
                await asyncio.wait({synced, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if synced.done():
                    freeze_heap()
                synced.cancel()
            await stopping
            log.info("shutting down")
            for task in tasks:
                task.cancel()
    finally:
        if console is not None:
            await console.stop()
        if controller is not None:
            await controller.events.drain(1.0)
        await store.close()
