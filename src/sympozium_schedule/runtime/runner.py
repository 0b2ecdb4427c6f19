"""The local runner: executes AgentRuns on this machine (embedded mode only).

In a cluster, Sympozium's own controller turns an AgentRun into a Job. Here
the runner plays that part so the whole flow works on one machine: for each
AgentRun with no phase it claims it (phase Pending), prepares an IPC folder in
Sympozium's layout, starts the agent command (phase Running) with a timeout,
reads ``output/result.json`` back and records Succeeded or Failed. Deleting a
run (the Replace policy does) kills its agent.

IPC layout, per run, as Sympozium's agent pod sees ``/ipc``::

    input/task.json        TaskInput: task, agentId, sessionKey, model, systemPrompt
    output/result.json     AgentResult: status, response, error, metrics
    schedules/             self-scheduling requests (the IPC bridge forwards them)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from sympozium_schedule.core.cron import parse_duration
from sympozium_schedule.core.errors import SpecError
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
from sympozium_schedule.runtime.clock import Clock, system_clock
from sympozium_schedule.runtime.informer import Informer, Key, key_of

log = structlog.get_logger("runner")

DEMO_AGENT = (sys.executable, "-m", "sympozium_schedule.agents.demo")
_MAX_RESULT = 32 * 1024
_KILL_GRACE = 3.0

# Runs the IPC bridge of one run until the event is set, then lets it send what is
# still queued and return.
BridgeFactory = Callable[[Obj, Path, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    work_dir: Path
    agent_command: tuple[str, ...] = DEMO_AGENT
    default_timeout: timedelta = timedelta(minutes=10)
    max_parallel: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Tracked:
    obj: Obj
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    cancelled: bool = False


def _timeout_of(run: Obj, default: timedelta) -> timedelta:
    text = (run.get("spec") or {}).get("timeout")
    if isinstance(text, str) and text:
        with contextlib.suppress(SpecError):
            return parse_duration(text, field="spec.timeout")
    return default


def task_input(run: Obj) -> dict[str, Any]:
    """Sympozium's TaskInput, from the AgentRun spec."""
    spec = run.get("spec") or {}
    model = spec.get("model") or {}
    out: dict[str, Any] = {
        "task": spec.get("task", ""),
        "agentId": spec.get("agentId", ""),
        "sessionKey": spec.get("sessionKey", ""),
        "model": {k: model[k] for k in ("provider", "model", "thinking") if model.get(k)},
    }
    if spec.get("systemPrompt"):
        out["systemPrompt"] = spec["systemPrompt"]
    return out


def _token_usage(metrics: object) -> dict[str, int] | None:
    if not isinstance(metrics, dict):
        return None
    fields = ("durationMs", "inputTokens", "outputTokens", "toolCalls")
    if not all(isinstance(metrics.get(f), int) for f in fields):
        return None
    usage = {f: int(metrics[f]) for f in fields}
    usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
    return usage


class LocalRunner:
    def __init__(self, store: Store, settings: RunnerSettings, *, clock: Clock = system_clock,
                 bridge: BridgeFactory | None = None, namespaces: tuple[str, ...] | None = None):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.bridge = bridge
        self.runs = Informer(store, Kind.AGENT_RUN, namespaces=namespaces, on_change=self._on_run)
        self._tracked: dict[Key, _Tracked] = {}
        self._slots = asyncio.Semaphore(settings.max_parallel)
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovered = False
        self.completed = 0

    # --- events ---------------------------------------------------------------------------

    def _on_run(self, change: EventType, obj: Obj) -> None:
        key = key_of(obj)
        tracked = self._tracked.get(key)
        if change is EventType.DELETED:
            if tracked is not None:
                tracked.cancelled = True
                self._kill(tracked)
            return
        if tracked is not None or not self._recovered:
            return
        phase = (obj.get("status") or {}).get("phase") or ""
        if phase == "":
            self._start(key, obj)

    def _start(self, key: Key, obj: Obj) -> None:
        tracked = _Tracked(obj)
        self._tracked[key] = tracked
        task = asyncio.create_task(self._execute(key, tracked), name=f"run {key[0]}/{key[1]}")
        tracked.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        informer = asyncio.create_task(self.runs.run())
        try:
            await self.runs.synced.wait()
            await self._recover()
            await informer
        finally:
            informer.cancel()
            for tracked in list(self._tracked.values()):
                tracked.cancelled = True
                self._kill(tracked)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _recover(self) -> None:
        """Runs left Running by a runner that died cannot be resumed: say so.
        Runs it had only claimed (Pending) or never seen start now."""
        for key, obj in list(self.runs.cache.items()):
            phase = (obj.get("status") or {}).get("phase") or ""
            if phase == "Running":
                await self._set_status(obj, {
                    "phase": "Failed", "completedAt": format_time(self.clock()),
                    "error": "interrupted: the runner stopped while this run was in progress"})
            elif phase in ("", "Pending"):
                self._start(key, obj)
        self._recovered = True

    # --- one run ----------------------------------------------------------------------------

    async def _set_status(self, obj: Obj, patch: dict[str, Any]) -> Obj | None:
        try:
            updated = await self.store.patch_status(Ref.of(obj), patch)
        except NotFound:
            return None
        self.runs.observe(updated)
        return updated

    async def _execute(self, key: Key, tracked: _Tracked) -> None:
        ns, name = key
        blog = log.bind(namespace=ns, run=name)
        try:
            obj = tracked.obj
            claimed = await self._claim(obj)
            if claimed is None:
                return
            async with self._slots:
                if tracked.cancelled:
                    return
                await self._run_agent(key, tracked, claimed, blog)
        except StoreError as exc:
            blog.warning("run bookkeeping failed", error=str(exc))
        except Exception:
            blog.exception("run failed unexpectedly")
        finally:
            self._tracked.pop(key, None)

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

    def _ipc(self, key: Key) -> Path:
        return self.settings.work_dir / key[0] / key[1] / "ipc"

    async def _run_agent(self, key: Key, tracked: _Tracked, obj: Obj, blog: Any) -> None:
        ipc = self._ipc(key)
        for sub in ("input", "output", "schedules"):
            (ipc / sub).mkdir(parents=True, exist_ok=True)
        (ipc / "input" / "task.json").write_text(json.dumps(task_input(obj), indent=2))
        result_file = ipc / "output" / "result.json"
        result_file.unlink(missing_ok=True)
        started = self.clock()
        running = await self._set_status(obj, {"phase": "Running", "startedAt": format_time(started)})
        if running is None or tracked.cancelled:
            return
        spec = obj.get("spec") or {}
        model = spec.get("model") or {}
        env = dict(os.environ) | self.settings.extra_env | {
            "IPC_PATH": str(ipc),
            "AGENT_RUN_ID": key[1],
            "AGENT_NAMESPACE": key[0],
            "INSTANCE_NAME": str(spec.get("instanceRef", "")),
            "TASK": str(spec.get("task", "")),
            "MODEL_PROVIDER": str(model.get("provider", "")),
            "MODEL_NAME": str(model.get("model", "")),
        }
        timeout = _timeout_of(obj, self.settings.default_timeout)
        log_file = ipc.parent / "agent.log"
        blog.info("run started", command=self.settings.agent_command[-1], timeout=str(timeout))
        bridge_task: asyncio.Task[None] | None = None
        bridge_stop = asyncio.Event()
        if self.bridge is not None:
            bridge_task = asyncio.create_task(self.bridge(running, ipc, bridge_stop))
        exit_code: int | None = None
        error = ""
        try:
            with log_file.open("ab") as out:
                process = await asyncio.create_subprocess_exec(
                    *self.settings.agent_command, env=env, cwd=ipc.parent, stdout=out,
                    stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True)
                tracked.process = process
                try:
                    exit_code = await asyncio.wait_for(process.wait(), timeout.total_seconds())
                except TimeoutError:
                    self._kill(tracked)
                    await process.wait()
                    error = f"timed out after {timeout} (spec.timeout or the runner's default)"
        except OSError as exc:
            error = f"could not start the agent command {self.settings.agent_command!r}: {exc}"
        finally:
            # The bridge sends what the agent wrote last, in the background: the
            # run's status does not wait for NATS.
            bridge_stop.set()
            if bridge_task is not None:
                self._tasks.add(bridge_task)
                bridge_task.add_done_callback(self._tasks.discard)
        if tracked.cancelled:
            blog.info("run cancelled (its AgentRun was deleted)")
            return
        status = self._outcome(result_file, exit_code, error)
        status["completedAt"] = format_time(self.clock())
        await self._set_status(running, status)
        self.completed += 1
        blog.info("run finished", phase=status["phase"], exit_code=exit_code,
                  error=status.get("error"))

    def _outcome(self, result_file: Path, exit_code: int | None, error: str) -> dict[str, Any]:
        status: dict[str, Any] = {}
        if exit_code is not None:
            status["exitCode"] = exit_code
        result: dict[str, Any] = {}
        if result_file.exists():
            try:
                loaded = json.loads(result_file.read_text(errors="replace"))
                result = loaded if isinstance(loaded, dict) else {}
                if not result:
                    error = error or "output/result.json is not a JSON object"
            except (OSError, ValueError) as exc:
                error = error or f"output/result.json is not valid JSON: {exc}"
        elif not error:
            error = "the agent wrote no output/result.json"
        response = result.get("response")
        if isinstance(response, str) and response:
            status["result"] = response[:_MAX_RESULT]
        usage = _token_usage(result.get("metrics"))
        if usage is not None:
            status["tokenUsage"] = usage
        agent_error = result.get("error")
        if not error and isinstance(agent_error, str) and agent_error:
            error = agent_error
        ok = not error and exit_code == 0 and result.get("status") in ("success", "skipped")
        if not ok and not error:
            error = f"the agent exited with code {exit_code} and status {result.get('status')!r}"
        status["phase"] = "Succeeded" if ok else "Failed"
        if error:
            status["error"] = error[:_MAX_RESULT]
        return status

    def _kill(self, tracked: _Tracked) -> None:
        process = tracked.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)

        async def finish() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), _KILL_GRACE)
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

        task = asyncio.get_running_loop().create_task(finish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
