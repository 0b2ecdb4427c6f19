"""What an agent process gets and gives back (docs/agents.md is the contract).

Input: ``$IPC_PATH/input/task.json`` (Sympozium's TaskInput) and a few documented
environment variables, nothing else of the scheduler's environment (no bus URL,
no credentials). Output: ``$IPC_PATH/output/result.json`` (Sympozium's
AgentResult), or for a simple script its exit status and stdout. The runner
(``runtime.runner``) starts agents; this module builds their environment and
reads what they left.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import shutil
import signal
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from sympozium_schedule.core.cron import parse_duration
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import NotFound, Obj, Ref, Store
from sympozium_schedule.runtime import paths
from sympozium_schedule.runtime.informer import key_of

DEMO_AGENT = (sys.executable, "-m", "sympozium_schedule.agents.demo")
LLM_AGENT = (sys.executable, "-m", "sympozium_schedule.agents.llm")
BUILTIN_AGENTS: dict[str, tuple[str, ...]] = {"demo": DEMO_AGENT, "llm": LLM_AGENT}
ANNOTATION_AGENT = "sympozium.ai/agent"

MAX_RESULT = 32 * 1024  # status.result / status.error, as the CLI and the console show them
LOG_LIMIT = 1 << 20  # bytes of agent output kept in agent.log

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


class AgentNotFound(Exception):
    pass


def timeout_of(run: Obj, default: timedelta) -> timedelta:
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


class Output:
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


def prepare_folders(data_dir: Path, key: tuple[str, str], run: Obj) -> Path:
    """A run's folders, its task written in; its IPC folder."""
    ipc = paths.run_ipc(data_dir, *key)
    for folder in (ipc / "input", ipc / "output", ipc / "schedules",
                   paths.run_work(data_dir, *key), paths.run_tmp(data_dir, *key)):
        folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        paths.run_dir(data_dir, *key).chmod(0o700)
    (ipc / "input" / "task.json").write_text(json.dumps(task_input(run), indent=2))
    (ipc / "output" / "result.json").unlink(missing_ok=True)
    return ipc


def remove_folder(folder: Path) -> None:
    """Remove a run's folder; never follows a symlink an agent planted in it."""
    if folder.is_symlink():
        folder.unlink(missing_ok=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)


async def choose_agent(store: Store, obj: Obj, agents: Mapping[str, tuple[str, ...]],
                   default_agent: str) -> tuple[str, tuple[str, ...]]:
    """The instance's agent (annotation sympozium.ai/agent), else the default."""
    ns, _ = key_of(obj)
    instance_name = str((obj.get("spec") or {}).get("instanceRef") or "")
    wanted = ""
    if instance_name:
        with contextlib.suppress(NotFound):
            instance = await store.get(Ref(Kind.INSTANCE, ns, instance_name))
            annotations = (instance.get("metadata") or {}).get("annotations") or {}
            value = annotations.get(ANNOTATION_AGENT) if isinstance(annotations, dict) else None
            wanted = value.strip() if isinstance(value, str) else ""
    name = wanted or default_agent
    command = agents.get(name)
    if command is None:
        known = ", ".join(sorted(agents))
        where = (f"SympoziumInstance {instance_name} asks for agent {name!r} "
                 f"(annotation {ANNOTATION_AGENT})") if wanted else f"the default agent {name!r}"
        raise AgentNotFound(f"{where}, which `run` does not define (defined: {known}; "
                            "add one with --agent NAME=COMMAND)")
    return name, command

async def secret_for(store: Store, obj: Obj, notes: list[str]) -> dict[str, str]:
    """The variables of the run's auth Secret (spec.model.authSecretRef), as Sympozium's
    ``envFrom`` gives them; what was left out, and why, goes to ``notes``."""
    ns, _ = key_of(obj)
    model = (obj.get("spec") or {}).get("model") or {}
    ref = model.get("authSecretRef") if isinstance(model, dict) else None
    if not isinstance(ref, str) or not ref.strip():
        return {}
    try:
        secret = await store.get(Ref(Kind.SECRET, ns, ref.strip()))
    except NotFound:
        notes.append(f"Secret {ns}/{ref} (spec.model.authSecretRef) not found: no key variables "
                     "set (apply a v1 Secret with that name)")
        return {}
    values, problems = secret_env(secret)
    notes += [f"Secret {ns}/{ref}: {p}" for p in problems]
    if values:
        notes.append(f"Secret {ns}/{ref}: set {', '.join(sorted(values))}")
    return values
