"""The local runner: executes AgentRuns on this machine (embedded mode only).

In a cluster, Sympozium's own controller turns an AgentRun into a Job. Here
the runner plays that part so the whole flow works on one machine: each
AgentRun with no phase waits for one of ``max_parallel`` slots; then the runner
claims it (phase Pending, conditional on the version it saw, so two runners
never both start it), prepares the run's folder, starts the instance's agent
(phase Running) with a time limit, and records Succeeded or Failed with the
answer or the error. What an agent gets and gives back is ``runtime.agent``
(docs/agents.md is the contract).

Waiting runs cost a queue entry, not a task or a write each: a burst of
10,000 runs is 10,000 keys in a queue and ``max_parallel`` claims at a time.

Which agent: the operator names agents on ``run`` (``--agent NAME=COMMAND``,
plus the built-ins ``demo`` and ``llm``) and an instance picks one with the
annotation ``sympozium.ai/agent``; an instance can never supply a command.

Folders, per run (``runtime.paths``)::

    <data-dir>/runs/<ns>/<run>/agent.log   what the agent printed (size-bounded)
                              /ipc/        input/, output/, schedules/
                              /work/       the working folder and HOME
                              /tmp/        TMPDIR

A run's folder goes when its AgentRun is deleted (history limits, Replace,
``delete``); folders of runs deleted while the runner was down are swept when
it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Coroutine
from typing import Any

import structlog

from sympozium_schedule.core.decide import Note
from sympozium_schedule.core.model import Kind, format_time
from sympozium_schedule.ports.store import (
    Conflict,
    EventType,
    NotFound,
    Obj,
    Ref,
    Store,
    StoreError,
)
from sympozium_schedule.runtime import paths
from sympozium_schedule.runtime.agent import (
    ANNOTATION_AGENT,
    BUILTIN_AGENTS,
    DEMO_AGENT,
    DOCUMENTED_ENV,
    LLM_AGENT,
    AgentNotFound,
    Output,
    agent_environment,
    choose_agent,
    outcome,
    prepare_folders,
    remove_folder,
    secret_env,
    secret_for,
    task_input,
    timeout_of,
)
from sympozium_schedule.runtime.agent_process import Tracked, kill, supervise
from sympozium_schedule.runtime.clock import Clock, system_clock
from sympozium_schedule.runtime.events import build_event
from sympozium_schedule.runtime.informer import Informer, Key, key_of
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.runner_settings import BridgeFactory, RunnerSettings

__all__ = ["ANNOTATION_AGENT", "BUILTIN_AGENTS", "DEMO_AGENT", "DOCUMENTED_ENV", "LLM_AGENT",
           "LocalRunner", "agent_environment", "outcome", "secret_env", "task_input"]

log = structlog.get_logger("runner")


class LocalRunner:
    def __init__(self, store: Store, settings: RunnerSettings, *, clock: Clock = system_clock,
                 bridge: BridgeFactory | None = None, namespaces: tuple[str, ...] | None = None,
                 metrics: Metrics | None = None, runs: Informer | None = None):
        """``runs``: an informer of every AgentRun that someone else runs (the
        controller's, in ``run``), so the runs are cached and read back once; without
        it the runner has its own."""
        self.store = store
        self.settings = settings
        self.clock = clock
        self.bridge = bridge
        self.metrics = metrics
        self.namespaces = namespaces
        self._own_informer = runs is None
        if runs is None:
            self.runs = Informer(store, Kind.AGENT_RUN, namespaces=namespaces, on_change=self._on_run)
        else:
            self.runs = runs
            runs.add_handler(self._on_run, own_writes=True)  # the controller's creates too
        self._tracked: dict[Key, Tracked] = {}
        self._waiting: deque[Key] = deque()  # runs waiting for a slot, in the order seen
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovered = False
        self._host = socket.gethostname()
        self.completed = 0
        self.swept = 0

    # --- events ---------------------------------------------------------------------------

    def _on_run(self, change: EventType, obj: Obj) -> None:
        key = key_of(obj)
        if self.namespaces is not None and key[0] not in self.namespaces:
            return
        tracked = self._tracked.get(key)
        if change is EventType.DELETED:
            if tracked is not None:
                tracked.deleted = True
                self._kill(tracked)  # its worker removes the folder once the agent is gone
            elif self._recovered:
                self._background(self._remove_folder(key))
            return
        if tracked is not None or not self._recovered:
            return
        phase = (obj.get("status") or {}).get("phase") or ""
        if phase == "":
            self._start(key, obj)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start(self, key: Key, obj: Obj) -> None:
        """Queue a run for the next free slot."""
        self._tracked[key] = Tracked(obj)
        self._waiting.append(key)
        self._wake.set()

    async def run(self) -> None:
        informer = asyncio.create_task(self.runs.run()) if self._own_informer else None
        workers = [asyncio.create_task(self._worker(), name=f"runner slot {i}")
                   for i in range(self.settings.max_parallel)]
        try:
            await self.runs.synced.wait()
            await self._recover()
            await asyncio.gather(*workers, *([informer] if informer is not None else []))
        finally:
            for task in (*workers, *([informer] if informer is not None else [])):
                task.cancel()
            for tracked in list(self._tracked.values()):
                tracked.stopping = True
                self._kill(tracked)
            await asyncio.gather(*workers, return_exceptions=True)
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _worker(self) -> None:
        """One slot: takes the oldest waiting run, runs it, and the next."""
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            key = self._waiting.popleft()
            tracked = self._tracked.get(key)
            if tracked is None:
                continue
            try:
                await asyncio.shield(self._execute(key, tracked))
            except asyncio.CancelledError:
                tracked.stopping = True
                self._kill(tracked)
                raise

    async def _recover(self) -> None:
        """Runs left Running by a runner that died cannot be resumed: say so.
        Runs it had only claimed (Pending) or never seen start now. Folders whose
        AgentRun is gone (deleted while no runner ran) are removed first, before any
        await, so no run can start (and make its folder) while the sweep looks."""
        self._sweep(set(self._scoped(self.runs.cache)))
        for key, obj in list(self._scoped(self.runs.cache).items()):
            phase = (obj.get("status") or {}).get("phase") or ""
            if phase == "Running":
                await self._set_status(obj, {
                    "phase": "Failed", "completedAt": format_time(self.clock()),
                    "error": "interrupted: the runner stopped while this run was in progress"})
            elif phase in ("", "Pending") and key not in self._tracked:
                self._start(key, obj)
        self._recovered = True
        # Runs added while the loop above awaited were ignored by _on_run: start them.
        for key, obj in list(self._scoped(self.runs.cache).items()):
            if key not in self._tracked and not (obj.get("status") or {}).get("phase"):
                self._start(key, obj)

    def _scoped(self, cache: dict[Key, Obj]) -> dict[Key, Obj]:
        if self.namespaces is None:
            return cache
        return {k: v for k, v in cache.items() if k[0] in self.namespaces}

    def _sweep(self, known: set[Key]) -> None:
        root = paths.runs_dir(self.settings.data_dir)
        if not root.is_dir():
            return
        for ns_dir in root.iterdir():
            if not ns_dir.is_dir() or ns_dir.is_symlink():
                continue
            if self.namespaces is not None and ns_dir.name not in self.namespaces:
                continue
            for run_dir in ns_dir.iterdir():
                if (ns_dir.name, run_dir.name) not in known:
                    remove_folder(run_dir)
                    self.swept += 1

    async def _remove_folder(self, key: Key) -> None:
        await asyncio.to_thread(remove_folder, paths.run_dir(self.settings.data_dir, *key))

    # --- one run ----------------------------------------------------------------------------

    async def _set_status(self, obj: Obj, patch: dict[str, Any]) -> Obj | None:
        try:
            updated = await self.store.patch_status(Ref.of(obj), patch)
        except NotFound:
            return None
        self.runs.observe(updated)
        return updated

    async def _execute(self, key: Key, tracked: Tracked) -> None:
        ns, name = key
        blog = log.bind(namespace=ns, run=name)
        try:
            if tracked.cancelled:
                return
            claimed = await self._claim(tracked.obj)
            if claimed is None or tracked.cancelled:
                return
            await self._run_agent(key, tracked, claimed, blog)
        except StoreError as exc:
            blog.warning("run bookkeeping failed", error=str(exc))
        except Exception:
            blog.exception("run failed unexpectedly")
        finally:
            self._tracked.pop(key, None)
            if tracked.deleted:
                await self._remove_folder(key)

    async def _claim(self, obj: Obj) -> Obj | None:
        """Pending, conditional on the version we saw: two runners never both start it."""
        if ((obj.get("status") or {}).get("phase") or "") == "Pending":
            return obj
        try:
            updated = await self.store.patch_status(
                Ref.of(obj), {"phase": "Pending"},
                resource_version=(obj.get("metadata") or {}).get("resourceVersion"))
        except (Conflict, NotFound):
            return None
        self.runs.observe(updated)
        return updated

    async def _run_agent(self, key: Key, tracked: Tracked, obj: Obj, blog: Any) -> None:
        data = self.settings.data_dir
        ipc = await asyncio.to_thread(prepare_folders, self.settings.data_dir, key, obj)
        started = self.clock()
        running = await self._set_status(obj, {"phase": "Running", "startedAt": format_time(started)})
        if running is None or tracked.cancelled:
            return
        timeout = timeout_of(obj, self.settings.default_timeout)
        notes: list[str] = []
        error = ""
        exit_code: int | None = None
        log_file = paths.run_log(data, *key)
        output = Output(log_file.open("ab"), self.settings.log_limit)
        bridge_task: asyncio.Task[None] | None = None
        bridge_stop = asyncio.Event()
        try:
            try:
                agent, command = await choose_agent(self.store, obj, self.settings.agents,
                                                    self.settings.default_agent)
            except AgentNotFound as exc:
                error = str(exc)
                raise
            env = agent_environment(
                obj, data_dir=data, agent=agent, timeout=timeout, operator=self.settings.env,
                secret=await secret_for(self.store, obj, notes), inherited=os.environ)
            argv = command
            if self.settings.sandbox is not None:
                argv = self.settings.sandbox.wrap(command, self.settings.sandbox.policy(
                    read_write=(ipc, paths.run_work(data, *key), paths.run_tmp(data, *key)),
                    command=command, path_env=env["PATH"]))
            sandboxed = "landlock" if self.settings.sandbox is not None else "none"
            for line in [f"agent {agent}: {' '.join(command)} (sandbox: {sandboxed}, "
                         f"time limit {timeout})", *notes]:
                output.note(f"[sympozium-schedule] {line}\n")
            blog.info("run started", agent=agent, timeout=str(timeout))
            if self.bridge is not None:
                bridge_task = asyncio.create_task(self.bridge(running, ipc, bridge_stop))
            exit_code, error = await supervise(tracked, argv, env, paths.run_work(data, *key), timeout,
                                               output, self._background)
        except AgentNotFound:
            pass
        except OSError as exc:
            error = f"could not start the agent: {exc}"
        finally:
            output.close()
            # The bridge sends what the agent wrote last, in the background: the
            # run's status does not wait for NATS.
            bridge_stop.set()
            if bridge_task is not None:
                self._tasks.add(bridge_task)
                bridge_task.add_done_callback(self._tasks.discard)
        if tracked.deleted:
            blog.info("run cancelled: its AgentRun was deleted")
            return
        if tracked.stopping:
            status: dict[str, Any] = {
                "phase": "Failed", "error": "interrupted: the scheduler stopped while this run was "
                                            "in progress"}
            blog.info("run interrupted: the scheduler is stopping")
        else:
            status = outcome(ipc / "output" / "result.json", exit_code, error,
                             output.stdout.decode(errors="replace"),
                             output.stderr.decode(errors="replace"))
        status["completedAt"] = format_time(self.clock())
        await self._set_status(running, status)
        self.completed += 1
        if self.metrics is not None:
            self.metrics.agent_runs.labels(status["phase"]).inc()
        if status["phase"] == "Failed" and not tracked.stopping:
            await self._record_failure(running, str(status.get("error", "")))
        blog.info("run finished", phase=status["phase"], exit_code=exit_code,
                  error=status.get("error"))

    async def _record_failure(self, run: Obj, error: str) -> None:
        """A failed run is a Warning Event on the AgentRun (describe shows it with the
        schedule's); best effort, as every Event."""
        note = Note("Warning", "RunFailed", error or "the run failed")
        with contextlib.suppress(StoreError):
            await self.store.create(build_event(run, note, format_time(self.clock()), self._host))

    def _kill(self, tracked: Tracked) -> None:
        kill(tracked, self._background)
