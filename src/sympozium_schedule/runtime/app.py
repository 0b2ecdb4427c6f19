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
from typing import IO, TYPE_CHECKING, Any

import structlog

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.runtime.controller import Controller, ControllerSettings
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.paths import store_path
from sympozium_schedule.runtime.sandbox import Sandbox, SandboxError, landlock_abi

if TYPE_CHECKING:
    from sympozium_schedule.adapters.kubernetes.sharding import ShardElector
    from sympozium_schedule.adapters.nats.server import EmbeddedNats
    from sympozium_schedule.ports.bus import Credential
    from sympozium_schedule.runtime.api import Console, ConsoleSettings
    from sympozium_schedule.runtime.bus_identity import CalloutConfig

# What start-up leaves for later is imported when used: the bus side, the console, the
# metrics server (nats-py and aiohttp are a third of a start's imports).
_LATER = {"bridge_for", "serve_callout", "serve_kubernetes_callout"}


def __getattr__(name: str) -> Any:
    if name in _LATER:
        from sympozium_schedule.runtime import messaging

        return getattr(messaging, name)
    raise AttributeError(name)


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


def _builtin_agents() -> dict[str, tuple[str, ...]]:
    from sympozium_schedule.runtime.agent import BUILTIN_AGENTS

    return BUILTIN_AGENTS


class DataDirBusy(Exception):
    pass


class AgentSandboxUnavailable(Exception):
    """--sandbox required on a kernel without Landlock (or a policy that cannot be built)."""


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
    # Agents by name (the built-ins demo and llm, and --agent NAME=COMMAND); an
    # instance picks one with the sympozium.ai/agent annotation, else the default.
    agents: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(_builtin_agents()))
    default_agent: str = "demo"
    agent_env: dict[str, str] = field(default_factory=dict)
    # required: refuse to start without Landlock; best-effort: warn and run agents
    # unsandboxed where it is missing; off: never sandbox (warned).
    sandbox: str = "required"
    agent_allow: tuple[Path, ...] = ()
    agent_allow_write: tuple[Path, ...] = ()
    max_parallel: int = 4
    run_timeout: timedelta = timedelta(minutes=10)
    metrics_port: int | None = None
    # Self-scheduling: None starts a NATS server of our own (loopback, random port,
    # every connection authenticated). A URL given here is used as it is.
    nats_url: str | None = None
    router: bool = True
    router_credential: Credential | None = None  # its login on a server given by nats_url
    allow_unscoped_publishers: bool = False
    limits: Limits = field(default_factory=Limits)
    # Extra long-running parts (the NATS server, router), each given the store.
    extras: list[Callable[[SQLiteStore, Metrics], Coroutine[Any, Any, None]]] = field(default_factory=list)
    on_ready: Callable[[SQLiteStore], Awaitable[None]] | None = None
    console: ConsoleSettings | None = None  # the web console and REST API (runtime.api)


def agent_sandbox(settings: EmbeddedSettings) -> Sandbox | None:
    """The agents' sandbox as the flags ask, said once in the log; an
    :class:`AgentSandboxUnavailable` when it is required and cannot be had."""
    if settings.sandbox == "off":
        log.warning("agents run unsandboxed (--sandbox off): each can read and write whatever "
                    "this process can, the store included")
        return None
    abi = landlock_abi()
    if abi == 0:
        if settings.sandbox == "required":
            raise AgentSandboxUnavailable(
                "this kernel has no Landlock, so agents cannot be sandboxed; pass --sandbox "
                "best-effort to run them unsandboxed (docs/agents.md says what that means)")
        log.warning("this kernel has no Landlock: agents run unsandboxed (--sandbox best-effort)")
        return None
    try:
        sandbox = Sandbox(settings.data_dir, allow_read=settings.agent_allow,
                          allow_write=settings.agent_allow_write)
    except SandboxError as exc:
        raise AgentSandboxUnavailable(str(exc)) from exc
    log.info("agents are sandboxed", landlock_abi=abi)
    return sandbox


async def run_embedded(settings: EmbeddedSettings) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly (agents killed, store closed).

    The controller starts first: ready (every timer armed, ``scheduler running``)
    comes before the bus side, the console and the metrics server, none of which a
    fire on time needs; they start right after."""
    tune_gc()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)  # the store, the bus's credentials: the owner's only
    with exclusive(settings.data_dir):
        sandbox = agent_sandbox(settings) if settings.runner else None
        if settings.nats_url is not None:
            log.warning("using a NATS server this process did not start: agents' bridges connect "
                        "without a credential of their own", url=settings.nats_url)
        # The writer in a process of its own: a burst's SQL runs beside the controller
        # instead of taking turns with it for the GIL (adapters/sqlite/child.py).
        store = SQLiteStore(store_path(settings.data_dir), writer="process")
        metrics = Metrics()
        # Every run, not only schedules': the runner shares this informer.
        controller = Controller(store, settings=ControllerSettings(run_labels=None), metrics=metrics)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console: Console | None = None
        nats_server: EmbeddedNats | None = None
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(controller.run(), name="controller")]

                def start(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
                    task = group.create_task(work, name=name)
                    tasks.append(task)
                    return task

                ready = asyncio.ensure_future(controller.ready.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if controller.ready.is_set():
                    log.info("scheduler running", data_dir=str(settings.data_dir),
                             schedules=len(controller.schedules.cache))
                    start(_when_decided(controller), "first-pass")
                    console, nats_server = await _start_the_rest(settings, store, controller,
                                                                 metrics, sandbox, start)
                    freeze_heap()  # what start-up made lives on: out of the collector's way
                    if settings.on_ready is not None:
                        await settings.on_ready(store)
                await stopping
                log.info("shutting down")
                for task in tasks:
                    task.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if console is not None:
                await console.stop()
            await controller.events.drain(1.0)
            await store.close()
            if nats_server is not None:
                await nats_server.stop()


async def _start_the_rest(settings: EmbeddedSettings, store: SQLiteStore, controller: Controller,
                          metrics: Metrics, sandbox: Sandbox | None,
                          start: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
                          ) -> tuple[Console | None, EmbeddedNats | None]:
    """The console, the metrics server and the bus side, once the timers are armed."""
    console: Console | None = None
    if settings.console is not None:  # a port in use stops `run` here, as it did before
        from sympozium_schedule.runtime.api.wiring import start_embedded

        console = await start_embedded(settings.console, store, controller, settings.data_dir)
    if settings.metrics_port is not None:
        from sympozium_schedule.runtime.http import serve_http

        start(serve_http(metrics, port=settings.metrics_port,
                         ready=lambda: controller.ready.is_set()), "metrics")
    from sympozium_schedule.runtime.messaging import start_bus_side
    from sympozium_schedule.runtime.runner_settings import RunnerSettings

    runner = RunnerSettings(
        data_dir=settings.data_dir, agents=settings.agents, default_agent=settings.default_agent,
        max_parallel=settings.max_parallel, default_timeout=settings.run_timeout,
        env=settings.agent_env, sandbox=sandbox) if settings.runner else None
    nats_server = await start_bus_side(
        data_dir=settings.data_dir, store=store, metrics=metrics, runs=controller.runs,
        instances=controller.instances, schedules=controller.schedules,
        nats_url=settings.nats_url, router=settings.router, runner=runner, limits=settings.limits,
        allow_unscoped_publishers=settings.allow_unscoped_publishers,
        router_credential=settings.router_credential, start=start)
    for extra in settings.extras:
        start(extra(store, metrics), "extra")
    return console, nats_server


async def _when_decided(controller: Controller) -> None:
    """Say when every schedule has been decided since the start (after a restart, the
    ones armed from their stored status are decided in the background)."""
    await controller.decided_all.wait()
    log.info("first pass done", schedules=len(controller.schedules.cache))
    freeze_heap()


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
