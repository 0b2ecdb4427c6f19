"""Assembling the embedded scheduler: store, controller, runner, until a signal.

``sympozium-schedule run`` is a thin flag parser over :func:`run_embedded`.
One process per data directory: the lock file makes a second ``run`` on the
same directory refuse to start instead of double-firing. Kubernetes mode is put
together in :mod:`~sympozium_schedule.runtime.kubernetes_mode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.runtime.controller import Controller, ControllerSettings
from sympozium_schedule.runtime.heap import freeze_heap, pause_gc, tune_gc
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.paths import store_path
from sympozium_schedule.runtime.sandbox import Sandbox, SandboxError, landlock_abi

if TYPE_CHECKING:
    from sympozium_schedule.adapters.nats.server import EmbeddedNats
    from sympozium_schedule.ports.bus import Credential
    from sympozium_schedule.runtime.api import Console, ConsoleSettings

# What start-up leaves for later is imported when used: the bus side, the console, the
# metrics server (nats-py and aiohttp are a third of a start's imports).
_LATER = {"bridge_for", "serve_callout", "serve_kubernetes_callout"}


def __getattr__(name: str) -> Any:
    if name in _LATER:
        from sympozium_schedule.runtime import messaging

        return getattr(messaging, name)
    raise AttributeError(name)


log = structlog.get_logger("app")


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
    pause_gc()  # until the caches are filled and frozen (freeze_heap, once ready)
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

