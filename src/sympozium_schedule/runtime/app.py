"""Assembling the embedded scheduler: store, controller, runner, until a signal.

``sympozium-schedule run`` is a thin flag parser over :func:`run_embedded`.
One process per data directory: the lock file makes a second ``run`` on the
same directory refuse to start instead of double-firing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import structlog

from sympozium_schedule.adapters.nats.server import EmbeddedNats
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.ports.store import Obj
from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
from sympozium_schedule.runtime.controller import Controller, ControllerSettings
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.paths import runs_dir, store_path
from sympozium_schedule.runtime.router import Router, RouterSettings
from sympozium_schedule.runtime.runner import DEMO_AGENT, BridgeFactory, LocalRunner, RunnerSettings

log = structlog.get_logger("app")

def tune_gc() -> None:
    """The controller keeps every schedule, run and instance in memory: a heap of
    millions of long-lived objects that CPython's default collector re-scans on
    every full collection (measured: 1.0 s of a 10,000-schedule burst). Collect
    young objects less often, and once the caches are filled, freeze them out of
    the collector (as long-running CPython services do)."""
    gc.set_threshold(50_000, 20, 100)


def freeze_heap() -> None:
    gc.collect()
    gc.freeze()


class DataDirBusy(Exception):
    pass


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[IO[str]]:
    """Hold ``<data-dir>/run.lock`` for the life of the process (released by the
    kernel even on SIGKILL, so a crash never leaves a stale lock)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "run.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataDirBusy(
            f"{data_dir} is in use by `sympozium-schedule run` (pid {holder}); stop it first "
            "or pass another --data-dir") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield handle
    finally:
        handle.close()


@dataclass(slots=True)
class EmbeddedSettings:
    data_dir: Path
    runner: bool = True
    agent_command: tuple[str, ...] = DEMO_AGENT
    max_parallel: int = 4
    run_timeout: timedelta = timedelta(minutes=10)
    metrics_port: int | None = None
    # Self-scheduling: None starts a NATS server of our own (loopback, random port).
    nats_url: str | None = None
    router: bool = True
    limits: Limits = field(default_factory=Limits)
    # Extra long-running parts (the NATS server, router), each given the store.
    extras: list[Callable[[SQLiteStore, Metrics], Coroutine[Any, Any, None]]] = field(default_factory=list)
    on_ready: Callable[[SQLiteStore], Awaitable[None]] | None = None


async def run_embedded(settings: EmbeddedSettings) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly (agents killed, store closed)."""
    tune_gc()
    with exclusive(settings.data_dir):
        nats_server: EmbeddedNats | None = None
        nats_url = settings.nats_url
        if nats_url is None and (settings.router or settings.runner):
            nats_server = EmbeddedNats(settings.data_dir)
            nats_url = await nats_server.start()
        store = SQLiteStore(store_path(settings.data_dir))
        metrics = Metrics()
        controller = Controller(store, settings=ControllerSettings(), metrics=metrics)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(controller.run(), name="controller")]
                if settings.router and nats_url is not None:
                    router = Router(store, RouterSettings(nats_url=nats_url, limits=settings.limits),
                                    metrics=metrics)
                    tasks.append(group.create_task(router.run(), name="router"))
                if settings.runner and nats_url is not None:
                    runner = LocalRunner(store, RunnerSettings(
                        work_dir=runs_dir(settings.data_dir),
                        agent_command=settings.agent_command,
                        max_parallel=settings.max_parallel,
                        default_timeout=settings.run_timeout,
                        extra_env={"EVENT_BUS_URL": nats_url},
                    ), bridge=bridge_for(nats_url, settings.limits))
                    tasks.append(group.create_task(runner.run(), name="runner"))
                for extra in settings.extras:
                    tasks.append(group.create_task(extra(store, metrics)))
                if settings.metrics_port is not None:
                    from sympozium_schedule.runtime.http import serve_http

                    tasks.append(group.create_task(serve_http(
                        metrics, port=settings.metrics_port,
                        ready=lambda: controller.ready.is_set())))
                ready = asyncio.ensure_future(controller.ready.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if controller.ready.is_set():
                    # Said when it is true (every timer armed, /readyz 200), before the
                    # heap is frozen: that collection is housekeeping, not start-up.
                    log.info("scheduler running", data_dir=str(settings.data_dir),
                             schedules=len(controller.schedules.cache))
                    freeze_heap()
                    if settings.on_ready is not None:
                        await settings.on_ready(store)
                await stopping
                log.info("shutting down")
                for task in tasks:
                    task.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await controller.events.drain(1.0)
            await store.close()
            if nats_server is not None:
                await nats_server.stop()


def bridge_for(nats_url: str, limits: Limits) -> BridgeFactory:
    """The runner starts one IPC bridge per run, in-process, as Sympozium starts a sidecar."""

    async def start(run: Obj, ipc: Path, stop: asyncio.Event) -> None:
        meta, spec = run.get("metadata") or {}, run.get("spec") or {}
        await Bridge(BridgeSettings(
            ipc_path=ipc, agent_run_id=str(meta.get("name")), instance=str(spec.get("instanceRef")),
            namespace=str(meta.get("namespace") or "default"), nats_url=nats_url,
            max_request_bytes=limits.max_request_bytes)).run(stop)

    return start



# --- Kubernetes mode ---------------------------------------------------------------------------


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
    lease_namespace: str = field(default_factory=default_lease_namespace)
    identity: str = field(default_factory=default_identity)
    http_port: int | None = 8080
    nats_url: str | None = None  # the router runs when set
    limits: Limits = field(default_factory=Limits)
    controller: bool = True
    memory_labels: dict[str, str | None] = field(
        default_factory=lambda: {"sympozium.ai/component": "memory"})


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
    from sympozium_schedule.adapters.kubernetes.store import KubernetesStore
    from sympozium_schedule.runtime.http import serve_http

    store = KubernetesStore.connect(settings.kubeconfig, context=settings.context,
                                    qps=settings.qps, burst=settings.burst,
                                    component="controller" if settings.controller else "router")
    metrics = Metrics()
    elector = None
    if settings.leader_election and settings.controller:
        elector = LeaseElector(store, name=settings.lease_name, namespace=settings.lease_namespace,
                               identity=settings.identity)
    controller = Controller(store, settings=ControllerSettings(
        namespaces=settings.namespaces, memory_labels=settings.memory_labels),
        metrics=metrics, leader=elector) if settings.controller else None
    router = (Router(store, RouterSettings(nats_url=settings.nats_url, limits=settings.limits),
                     metrics=metrics) if settings.nats_url else None)

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
             leader_election=elector is not None, router=router is not None)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = []
            if controller is not None:
                tasks.append(group.create_task(controller.run(), name="controller"))
            if elector is not None:
                tasks.append(group.create_task(elector.run(), name="leader-election"))
            if router is not None:
                tasks.append(group.create_task(router.run(), name="router"))
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
        if controller is not None:
            await controller.events.drain(1.0)
        await store.close()
