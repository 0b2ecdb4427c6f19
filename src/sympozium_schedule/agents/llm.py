"""The built-in LLM agent: one AgentRun as an OpenAI-compatible chat completion.

It follows the same contract as any agent (docs/agents.md): the task from
``$IPC_PATH/input/task.json``, the answer to ``output/result.json``. The model
gets the task and one tool, ``schedule_task`` (its JSON-schema definition from
:mod:`sympozium_schedule.agents.schedule_task`); each call is carried out
through the IPC folder and its answer fed back, until the model answers in
plain text or a limit is reached. The same protocol is served by OpenAI and by
local servers (Ollama, vLLM, llama.cpp, LM Studio), so one client fits all:
the official ``openai`` SDK.

Where things come from, never from the task text:

- model, provider and base URL: the AgentRun's ``spec.model`` (the runner
  passes them as ``MODEL_NAME``, ``MODEL_PROVIDER``, ``MODEL_BASE_URL``);
- the key: ``MODEL_API_KEY``, else ``<PROVIDER>_API_KEY`` (``OPENAI_API_KEY``,
  ``ANTHROPIC_API_KEY``...), set from the instance's Secret
  (``spec.model.authSecretRef``) or by the operator (``run --agent-env``);
- limits: ``LLM_MAX_TURNS`` (default 8 model calls), ``AGENT_TIMEOUT_SECONDS``
  (the run's time limit; the agent stops itself a little before it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1/",
    "ollama": "http://localhost:11434/v1",
    "lm-studio": "http://localhost:1234/v1",
}
KEYLESS = frozenset({"ollama", "lm-studio"})
DEFAULT_MAX_TURNS = 8
SYSTEM_PROMPT = (
    "You are an agent started by a schedule: this run is one of many, and nothing of earlier "
    "runs is remembered except what the task says. Do the task and answer briefly. You may use "
    "the schedule_task tool to create or change your own recurring tasks; only use it when the "
    "task asks for it."
)
_TOOL_WAIT = 10.0  # seconds to wait for the router's answer to a schedule_task call
_MARGIN = 3.0  # stop this long before the runner's time limit, to write the answer


class AgentError(Exception):
    """A failure to report in result.json: one line a person can act on."""


@dataclass(slots=True)
class Usage:
    started: float = field(default_factory=time.monotonic)
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0

    def as_metrics(self) -> dict[str, int]:
        return {"durationMs": int((time.monotonic() - self.started) * 1000),
                "inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
                "toolCalls": self.tool_calls}


@dataclass(frozen=True, slots=True)
class Settings:
    model: str
    provider: str
    base_url: str
    api_key: str
    max_turns: int
    deadline: float  # time.monotonic() by which the answer must be written

    @classmethod
    def from_env(cls, env: dict[str, str], task: dict[str, Any]) -> Settings:
        given = task.get("model") if isinstance(task.get("model"), dict) else {}
        model = env.get("MODEL_NAME") or str((given or {}).get("model") or "")
        provider = (env.get("MODEL_PROVIDER") or str((given or {}).get("provider") or "")
                    or "openai").lower()
        base_url = env.get("MODEL_BASE_URL") or str((given or {}).get("baseURL") or "")
        if not model:
            raise AgentError("no model: the instance's spec.agents.default.model is empty")
        if not base_url:
            base_url = DEFAULT_BASE_URLS.get(provider, "")
        if not base_url:
            raise AgentError(f"no base URL for provider {provider!r}: set "
                             "spec.agents.default.baseURL on the instance")
        key_var = provider.upper().replace("-", "_") + "_API_KEY"
        api_key = env.get("MODEL_API_KEY") or env.get(key_var) or ""
        if not api_key and provider not in KEYLESS and provider != "custom":
            raise AgentError(
                f"no API key for provider {provider!r}: put MODEL_API_KEY or {key_var} in the "
                "Secret the instance's authRefs name (or pass it with run --agent-env)")
        try:
            turns = int(env.get("LLM_MAX_TURNS") or DEFAULT_MAX_TURNS)
        except ValueError as exc:
            raise AgentError(f"LLM_MAX_TURNS: {env.get('LLM_MAX_TURNS')!r}: not a number") from exc
        try:
            limit = float(env.get("AGENT_TIMEOUT_SECONDS") or 600)
        except ValueError:
            limit = 600.0
        return cls(model=model, provider=provider, base_url=base_url, api_key=api_key or "unused",
                   max_turns=max(turns, 1),
                   deadline=time.monotonic() + max(limit - _MARGIN, 1.0))

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def read_task(ipc: Path, env: dict[str, str]) -> dict[str, Any]:
    try:
        loaded = json.loads((ipc / "input" / "task.json").read_text())
    except (OSError, ValueError):
        loaded = {}
    task = loaded if isinstance(loaded, dict) else {}
    if not task.get("task") and env.get("TASK"):
        task["task"] = env["TASK"]
    if not str(task.get("task") or "").strip():
        raise AgentError("the task is empty (input/task.json has no task)")
    return task


def tools() -> list[dict[str, Any]]:
    from sympozium_schedule.agents.schedule_task import TOOL_DEFINITION

    return [{"type": "function", "function": TOOL_DEFINITION}]


def call_tool(name: str, arguments: str, ipc: Path, wait: float) -> dict[str, Any]:
    """Carry out one tool call; whatever the model sent, the answer is a dict it can
    read. Only the tool's declared parameters pass: the model cannot choose where
    the request is written or how long to wait."""
    from sympozium_schedule.agents.schedule_task import TOOL_DEFINITION, schedule_task

    if name != TOOL_DEFINITION["name"]:
        return {"status": "rejected", "message": f"unknown tool {name!r}; the only tool is "
                                                 f"{TOOL_DEFINITION['name']}"}
    try:
        args = json.loads(arguments or "{}")
    except ValueError as exc:
        return {"status": "rejected", "message": f"the arguments are not valid JSON: {exc}"}
    if not isinstance(args, dict):
        return {"status": "rejected", "message": "the arguments must be a JSON object"}
    declared = TOOL_DEFINITION["parameters"]["properties"]
    unknown = sorted(k for k in args if k not in declared)
    if unknown:
        return {"status": "rejected", "message": f"unknown arguments: {', '.join(unknown)}"}
    if not isinstance(args.get("name"), str) or not isinstance(args.get("action"), str):
        return {"status": "rejected", "message": "name and action are required strings"}
    try:
        return schedule_task(ipc_path=ipc, wait=max(min(wait, _TOOL_WAIT), 0.1), **args)
    except Exception as exc:  # the tool's own failure is the model's to read, not a crash
        return {"status": "rejected", "message": f"{type(exc).__name__}: {exc}"}


def converse(settings: Settings, task: dict[str, Any], ipc: Path, usage: Usage) -> str:
    """The model's final answer, calling tools as it asks."""
    import openai

    # The SDK's own retries would give every attempt the whole remaining time: retry
    # here instead, within the run's time limit.
    client = openai.OpenAI(api_key=settings.api_key, base_url=settings.base_url, max_retries=0)
    system = SYSTEM_PROMPT
    if task.get("systemPrompt"):
        system += "\n\n" + str(task["systemPrompt"])
    messages: list[dict[str, Any]] = [{"role": "system", "content": system},
                                      {"role": "user", "content": str(task["task"])}]
    for _ in range(settings.max_turns):
        if settings.remaining() <= 0:
            raise AgentError("out of time before the model gave a final answer")
        try:
            response = _create(client, settings, messages)
        except openai.APIStatusError as exc:
            raise AgentError(f"the model server at {settings.base_url} answered "
                             f"{exc.status_code}: {_api_message(exc)}") from exc
        except openai.APITimeoutError as exc:
            raise AgentError(f"the model server at {settings.base_url} did not answer in time") from exc
        except openai.APIConnectionError as exc:
            raise AgentError(f"cannot reach the model server at {settings.base_url}: "
                             f"{exc.__cause__ or exc}") from exc
        if response.usage is not None:
            usage.input_tokens += response.usage.prompt_tokens or 0
            usage.output_tokens += response.usage.completion_tokens or 0
        if not response.choices:
            raise AgentError("the model server answered with no choices")
        message = response.choices[0].message
        calls = [c for c in (message.tool_calls or []) if getattr(c, "type", "") == "function"]
        if not calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True, include={"role", "content",
                                                                        "tool_calls"}))
        for call in calls:
            function = call.function
            answer = call_tool(function.name, function.arguments, ipc, settings.remaining())
            usage.tool_calls += 1
            sys.stderr.write(f"tool {function.name} {function.arguments} -> "
                             f"{json.dumps(answer)[:500]}\n")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(answer)})
    raise AgentError(f"no final answer after {settings.max_turns} model calls (LLM_MAX_TURNS)")


_RETRIES = (1.0, 2.0)  # seconds before each retry of a transient failure


def _create(client: Any, settings: Settings, messages: list[dict[str, Any]]) -> Any:
    """One chat completion; a rate limit, a server error or a refused connection is
    retried twice while the run's time allows, a timeout is not (it used the time)."""
    import openai

    for pause in (*_RETRIES, None):
        try:
            return client.chat.completions.create(
                model=settings.model, messages=messages, tools=tools(),
                timeout=max(settings.remaining(), 0.1))
        except (openai.RateLimitError, openai.InternalServerError) as exc:
            failure: Exception = exc
        except openai.APITimeoutError:
            raise
        except openai.APIConnectionError as exc:
            failure = exc
        if pause is None or settings.remaining() <= pause:
            raise failure
        time.sleep(pause)
    raise AssertionError("unreachable")


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(message, str) and message:
            return message[:500]
    return str(exc)[:500]


def write_result(ipc: Path, result: dict[str, Any]) -> None:
    out = ipc / "output"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "result.json")


def main() -> int:
    env = dict(os.environ)
    ipc = Path(env.get("IPC_PATH", "/ipc"))
    usage = Usage()
    try:
        task = read_task(ipc, env)
        settings = Settings.from_env(env, task)
        answer = converse(settings, task, ipc, usage)
    except AgentError as exc:
        write_result(ipc, {"status": "error", "response": "", "error": str(exc),
                           "metrics": usage.as_metrics()})
        sys.stderr.write(f"llm agent: {exc}\n")
        return 1
    write_result(ipc, {"status": "success", "response": answer, "error": "",
                       "metrics": usage.as_metrics()})
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
