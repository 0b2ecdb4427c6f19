"""The local runner: executes AgentRuns on this machine (embedded mode only).

In a cluster, Sympozium's own controller turns an AgentRun into a Job. Here
the runner plays that part so the whole flow works on one machine: for each
AgentRun with no phase it claims it (phase Pending), prepares the run's folder,
starts the instance's agent (phase Running) with a time limit, and records
Succeeded or Failed with the answer or the error. The contract an agent
command follows is docs/agents.md; in short:

- input: ``$IPC_PATH/input/task.json`` (Sympozium's TaskInput) and a few
  documented environment variables; nothing else of the scheduler's
  environment (no bus URL, no credentials) reaches the agent;
- output: ``$IPC_PATH/output/result.json`` (Sympozium's AgentResult), or for a
  simple script its exit status and stdout: exit 0 is Succeeded with the end of
  stdout as the result;
- self-scheduling: ``$IPC_PATH/schedules/`` (the IPC bridge forwards requests).

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
import base64
import binascii
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import structlog

from sympozium_schedule.core.cron import parse_duration
from sympozium_schedule.core.decide import Note
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
from sympozium_schedule.runtime import paths
from sympozium_schedule.runtime.clock import Clock, system_clock
from sympozium_schedule.runtime.events import build_event
from sympozium_schedule.runtime.informer import Informer, Key, key_of
from sympozium_schedule.runtime.metrics import Metrics
from sympozium_schedule.runtime.sandbox import Sandbox

log = structlog.get_logger("runner")

DEMO_AGENT = (sys.executable, "-m", "sympozium_schedule.agents.demo")
LLM_AGENT = (sys.executable, "-m", "sympozium_schedule.agents.llm")
BUILTIN_AGENTS: dict[str, tuple[str, ...]] = {"demo": DEMO_AGENT, "llm": LLM_AGENT}
ANNOTATION_AGENT = "sympozium.ai/agent"

MAX_RESULT = 32 * 1024  # status.result / status.error, as the CLI and the console show them
LOG_LIMIT = 1 << 20  # bytes of agent output kept in agent.log
_KILL_GRACE = 3.0
_DRAIN_GRACE = 5.0

# The scheduler's environment an agent inherits: locale and search path, nothing else.
INHERITED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ")
INHERITED_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# What the runner sets for every agent (docs/agents.md); nothing may override these.
DOCUMENTED_ENV = ("IPC_PATH", "AGENT_RUN_ID", "AGENT_NAMESPACE", "INSTANCE_NAME", "AGENT_NAME",
                  "TASK", "MODEL_PROVIDER", "MODEL_NAME", "MODEL_BASE_URL", "AGENT_TIMEOUT_SECONDS",
                  "HOME", "TMPDIR")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Variables a Secret may not set: they would change what runs, not what it knows.
_SECRET_FORBIDDEN = re.compile(r"(PATH|LD_.*|PYTHON.*|DYLD_.*|BASH_ENV|ENV|IFS|SHELLOPTS)")

# Runs the IPC bridge of one run until the event is set, then lets it send what is
# still queued and return.
BridgeFactory = Callable[[Obj, Path, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    data_dir: Path
    # Agents by name; an instance picks one with the sympozium.ai/agent annotation.
    agents: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(BUILTIN_AGENTS))
    default_agent: str = "demo"
    default_timeout: timedelta = timedelta(minutes=10)
    max_parallel: int = 4
    # Variables the operator passes to every agent (--agent-env), values resolved.
    env: Mapping[str, str] = field(default_factory=dict)
    sandbox: Sandbox | None = None
    log_limit: int = LOG_LIMIT


@dataclass(slots=True)
class _Tracked:
    obj: Obj
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    deleted: bool = False  # its AgentRun is gone: no status to write, the folder goes
    stopping: bool = False  # the runner is shutting down: the run is interrupted

    @property
    def cancelled(self) -> bool:
        return self.deleted or self.stopping


class AgentNotFound(Exception):
    pass


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
        "model": {k: model[k] for k in ("provider", "model", "thinking", "baseURL") if model.get(k)},
    }
    if spec.get("systemPrompt"):
        out["systemPrompt"] = spec["systemPrompt"]
    return out


def secret_env(secret: Obj) -> tuple[dict[str, str], list[str]]:
    """A Secret's keys as environment variables, as Sympozium's ``envFrom`` gives an
    agent its auth Secret: ``data`` (base64) and ``stringData``. Returns the
    variables and a note for each key that was left out."""
    out: dict[str, str] = {}
    notes: list[str] = []
    data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
    plain = secret.get("stringData") if isinstance(secret.get("stringData"), dict) else {}
    items: list[tuple[str, object, bool]] = [(k, v, True) for k, v in (data or {}).items()]
    items += [(k, v, False) for k, v in (plain or {}).items()]
    for key, value, encoded in items:
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key) or not isinstance(value, str):
            notes.append(f"key {key!r} is not a valid variable name or value, left out")
            continue
        if key in DOCUMENTED_ENV or _SECRET_FORBIDDEN.fullmatch(key):
            notes.append(f"key {key!r} would override what the runner sets, left out")
            continue
        if encoded:
            try:
                value = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                notes.append(f"key {key!r} is not base64 text, left out")
                continue
        if "\0" in value:
            notes.append(f"key {key!r} holds a NUL byte, left out")
            continue
        out[key] = value
    return out, notes


def agent_environment(run: Obj, *, data_dir: Path, agent: str, timeout: timedelta,
                      operator: Mapping[str, str], secret: Mapping[str, str],
                      inherited: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of one agent: an allow-list, never the scheduler's own
    environment (which may hold the bus URL, tokens, cloud credentials).

    Lowest to highest: the locale and PATH of the scheduler, the operator's
    ``--agent-env`` variables, the instance's Secret, then the documented variables."""
    ns, name = key_of(run)
    spec = run.get("spec") or {}
    model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
    env = {k: v for k, v in inherited.items()
           if k in INHERITED_ENV or k.startswith(INHERITED_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    env |= dict(operator)
    env |= dict(secret)
    env |= {
        "HOME": str(paths.run_work(data_dir, ns, name)),
        "TMPDIR": str(paths.run_tmp(data_dir, ns, name)),
        "IPC_PATH": str(paths.run_ipc(data_dir, ns, name)),
        "AGENT_RUN_ID": name,
        "AGENT_NAMESPACE": ns,
        "AGENT_NAME": agent,
        "INSTANCE_NAME": str(spec.get("instanceRef", "")),
        "TASK": str(spec.get("task", "")),
        "MODEL_PROVIDER": str((model or {}).get("provider", "")),
        "MODEL_NAME": str((model or {}).get("model", "")),
        "MODEL_BASE_URL": str((model or {}).get("baseURL", "")),
        "AGENT_TIMEOUT_SECONDS": str(int(timeout.total_seconds())),
    }
    return env


def _token_usage(metrics: object) -> dict[str, int] | None:
    if not isinstance(metrics, dict):
        return None
    fields = ("durationMs", "inputTokens", "outputTokens", "toolCalls")
    if not all(isinstance(metrics.get(f), int) for f in fields):
        return None
    usage = {f: int(metrics[f]) for f in fields}
    usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
    return usage


def _last_line(text: str) -> str:
    return next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")


def outcome(result_file: Path, exit_code: int | None, error: str, stdout: str,
            stderr: str = "") -> dict[str, Any]:
    """The run's final status from what the agent left: ``result.json`` when it wrote
    one, else its exit status and stdout (exit 0: Succeeded, stdout is the result;
    otherwise the error names the exit code and the last line of stderr, else of stdout)."""
    status: dict[str, Any] = {}
    if exit_code is not None:
        status["exitCode"] = exit_code
    result: dict[str, Any] = {}
    has_result = False
    try:
        text = result_file.read_text(errors="replace")
        has_result = True
    except OSError:
        text = ""
    if has_result:
        try:
            loaded = json.loads(text)
            result = loaded if isinstance(loaded, dict) else {}
            if not result:
                error = error or "output/result.json is not a JSON object"
        except ValueError as exc:
            error = error or f"output/result.json is not valid JSON: {exc}"
    response = result.get("response")
    if isinstance(response, str) and response:
        status["result"] = response[-MAX_RESULT:]
    elif not has_result and stdout.strip():
        status["result"] = stdout.strip()[-MAX_RESULT:]
    usage = _token_usage(result.get("metrics"))
    if usage is not None:
        status["tokenUsage"] = usage
    agent_error = result.get("error")
    if not error and isinstance(agent_error, str) and agent_error:
        error = agent_error
    if has_result:
        ok = not error and exit_code == 0 and result.get("status") in ("success", "skipped")
    else:
        ok = not error and exit_code == 0
    if not ok and not error:
        if exit_code is not None and exit_code < 0:
            with contextlib.suppress(ValueError):
                error = f"the agent was killed by {signal.Signals(-exit_code).name}"
        if not error and has_result:
            error = f"the agent exited with code {exit_code} and status {result.get('status')!r}"
        elif not error:
            error = f"the agent exited with code {exit_code}"
            said = _last_line(stderr) or _last_line(stdout)
            if said:
                error += f": {said[:500]}"
    status["phase"] = "Succeeded" if ok else "Failed"
    if error:
        status["error"] = error[:MAX_RESULT]
    return status


class _Output:
    """The agent's stdout and stderr: into agent.log up to a limit (what follows is
    counted, not kept), and the last bytes of each kept in memory for the status."""

    def __init__(self, log_file: IO[bytes], limit: int):
        self.file = log_file
        self.limit = limit
        self.written = 0
        self.dropped = 0
        self.stdout = bytearray()
        self.stderr = bytearray()

    def take(self, data: bytes, *, is_stdout: bool) -> None:
        room = max(self.limit - self.written, 0)
        if room:
            self.file.write(data[:room])
            self.file.flush()
            self.written += min(room, len(data))
        self.dropped += max(len(data) - room, 0)
        buffer = self.stdout if is_stdout else self.stderr
        buffer += data
        if len(buffer) > 2 * MAX_RESULT:
            del buffer[:-MAX_RESULT]

    def note(self, text: str) -> None:
        """A line of the runner's own in the log (not the agent's output)."""
        data = text.encode()
        self.file.write(data)
        self.file.flush()
        self.written += len(data)

    async def pump(self, stream: asyncio.StreamReader | None, *, is_stdout: bool) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            self.take(chunk, is_stdout=is_stdout)

    def close(self) -> None:
        if self.dropped:
            self.file.write(f"\n[sympozium-schedule: {self.dropped} more bytes of output dropped; "
                            f"agent.log keeps the first {self.limit}]\n".encode())
        self.file.close()


class LocalRunner:
    def __init__(self, store: Store, settings: RunnerSettings, *, clock: Clock = system_clock,
                 bridge: BridgeFactory | None = None, namespaces: tuple[str, ...] | None = None,
                 metrics: Metrics | None = None):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.bridge = bridge
        self.metrics = metrics
        self.namespaces = namespaces
        self.runs = Informer(store, Kind.AGENT_RUN, namespaces=namespaces, on_change=self._on_run)
        self._tracked: dict[Key, _Tracked] = {}
        self._slots = asyncio.Semaphore(settings.max_parallel)
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovered = False
        self._host = socket.gethostname()
        self.completed = 0
        self.swept = 0

    # --- events ---------------------------------------------------------------------------

    def _on_run(self, change: EventType, obj: Obj) -> None:
        key = key_of(obj)
        tracked = self._tracked.get(key)
        if change is EventType.DELETED:
            if tracked is not None:
                tracked.deleted = True
                self._kill(tracked)  # its task removes the folder once the agent is gone
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
                tracked.stopping = True
                self._kill(tracked)
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _recover(self) -> None:
        """Runs left Running by a runner that died cannot be resumed: say so.
        Runs it had only claimed (Pending) or never seen start now. Folders whose
        AgentRun is gone (deleted while no runner ran) are removed first, before any
        await, so no run can start (and make its folder) while the sweep looks."""
        self._sweep(set(self.runs.cache))
        for key, obj in list(self.runs.cache.items()):
            phase = (obj.get("status") or {}).get("phase") or ""
            if phase == "Running":
                await self._set_status(obj, {
                    "phase": "Failed", "completedAt": format_time(self.clock()),
                    "error": "interrupted: the runner stopped while this run was in progress"})
            elif phase in ("", "Pending") and key not in self._tracked:
                self._start(key, obj)
        self._recovered = True
        # Runs added while the loop above awaited were ignored by _on_run: start them.
        for key, obj in list(self.runs.cache.items()):
            if key not in self._tracked and not (obj.get("status") or {}).get("phase"):
                self._start(key, obj)

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
                    _remove(run_dir)
                    self.swept += 1

    async def _remove_folder(self, key: Key) -> None:
        await asyncio.to_thread(_remove, paths.run_dir(self.settings.data_dir, *key))

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

    async def _choose_agent(self, obj: Obj) -> tuple[str, tuple[str, ...]]:
        """The instance's agent (annotation sympozium.ai/agent), else the default."""
        ns, _ = key_of(obj)
        instance_name = str((obj.get("spec") or {}).get("instanceRef") or "")
        wanted = ""
        if instance_name:
            with contextlib.suppress(NotFound):
                instance = await self.store.get(Ref(Kind.INSTANCE, ns, instance_name))
                annotations = (instance.get("metadata") or {}).get("annotations") or {}
                value = annotations.get(ANNOTATION_AGENT) if isinstance(annotations, dict) else None
                wanted = value.strip() if isinstance(value, str) else ""
        name = wanted or self.settings.default_agent
        command = self.settings.agents.get(name)
        if command is None:
            known = ", ".join(sorted(self.settings.agents))
            where = (f"SympoziumInstance {instance_name} asks for agent {name!r} "
                     f"(annotation {ANNOTATION_AGENT})") if wanted else f"the default agent {name!r}"
            raise AgentNotFound(f"{where}, which `run` does not define (defined: {known}; "
                                "add one with --agent NAME=COMMAND)")
        return name, command

    async def _secret_for(self, obj: Obj, notes: list[str]) -> dict[str, str]:
        ns, _ = key_of(obj)
        model = (obj.get("spec") or {}).get("model") or {}
        ref = model.get("authSecretRef") if isinstance(model, dict) else None
        if not isinstance(ref, str) or not ref.strip():
            return {}
        try:
            secret = await self.store.get(Ref(Kind.SECRET, ns, ref.strip()))
        except NotFound:
            notes.append(f"Secret {ns}/{ref} (spec.model.authSecretRef) not found: no key variables "
                         "set (apply a v1 Secret with that name)")
            return {}
        values, problems = secret_env(secret)
        notes += [f"Secret {ns}/{ref}: {p}" for p in problems]
        if values:
            notes.append(f"Secret {ns}/{ref}: set {', '.join(sorted(values))}")
        return values

    def _prepare(self, key: Key, obj: Obj) -> Path:
        data = self.settings.data_dir
        ipc = paths.run_ipc(data, *key)
        for folder in (ipc / "input", ipc / "output", ipc / "schedules",
                       paths.run_work(data, *key), paths.run_tmp(data, *key)):
            folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            paths.run_dir(data, *key).chmod(0o700)
        (ipc / "input" / "task.json").write_text(json.dumps(task_input(obj), indent=2))
        (ipc / "output" / "result.json").unlink(missing_ok=True)
        return ipc

    async def _run_agent(self, key: Key, tracked: _Tracked, obj: Obj, blog: Any) -> None:
        data = self.settings.data_dir
        ipc = await asyncio.to_thread(self._prepare, key, obj)
        started = self.clock()
        running = await self._set_status(obj, {"phase": "Running", "startedAt": format_time(started)})
        if running is None or tracked.cancelled:
            return
        timeout = _timeout_of(obj, self.settings.default_timeout)
        notes: list[str] = []
        error = ""
        exit_code: int | None = None
        log_file = paths.run_log(data, *key)
        output = _Output(log_file.open("ab"), self.settings.log_limit)
        bridge_task: asyncio.Task[None] | None = None
        bridge_stop = asyncio.Event()
        try:
            try:
                agent, command = await self._choose_agent(obj)
            except AgentNotFound as exc:
                error = str(exc)
                raise
            env = agent_environment(
                obj, data_dir=data, agent=agent, timeout=timeout, operator=self.settings.env,
                secret=await self._secret_for(obj, notes), inherited=os.environ)
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
            exit_code, error = await self._supervise(tracked, argv, env, key, timeout, output)
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

    async def _supervise(self, tracked: _Tracked, argv: tuple[str, ...], env: dict[str, str],
                         key: Key, timeout: timedelta, output: _Output) -> tuple[int | None, str]:
        """Start the agent, copy its output, enforce the time limit. When the agent
        exits, whatever it left running in its process group is killed too."""
        data = self.settings.data_dir
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=paths.run_work(data, *key), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        tracked.process = process
        pumps = [asyncio.create_task(output.pump(process.stdout, is_stdout=True)),
                 asyncio.create_task(output.pump(process.stderr, is_stdout=False))]
        error = ""
        try:
            exit_code: int | None = await asyncio.wait_for(process.wait(), timeout.total_seconds())
        except TimeoutError:
            self._kill(tracked)
            await process.wait()
            exit_code = process.returncode
            error = f"timed out after {timeout} (spec.timeout or the runner's --run-timeout)"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        _, pending = await asyncio.wait(pumps, timeout=_DRAIN_GRACE)
        for pump in pending:
            pump.cancel()
        return exit_code, error

    async def _record_failure(self, run: Obj, error: str) -> None:
        """A failed run is a Warning Event on the AgentRun (describe shows it with the
        schedule's); best effort, as every Event."""
        note = Note("Warning", "RunFailed", error or "the run failed")
        with contextlib.suppress(StoreError):
            await self.store.create(build_event(run, note, format_time(self.clock()), self._host))

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

        self._background(finish())


def _remove(folder: Path) -> None:
    """Remove a run's folder; never follows a symlink an agent planted in it."""
    if folder.is_symlink():
        folder.unlink(missing_ok=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
