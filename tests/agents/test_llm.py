"""The built-in LLM agent against a real OpenAI-compatible server process.

The server (tests/llm_server.py) speaks the chat-completions protocol; its
answers are first checked against the SDK's own types, so what the agent is
tested against is what OpenAI and the local servers send. The agent runs as a
process with the environment the runner gives it; the test plays the IPC
bridge where a tool call needs an answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion

from sympozium_schedule.agents.schedule_task import TOOL_DEFINITION, result_path
from tests.agents.conftest import KEY, MODEL
from tests.llm_server import Running
from tests.support import free_port

TOOL_CALL = ('CALL schedule_task {"name": "followup", "action": "create", '
             '"schedule": "@every 1h", "task": "Follow up."}')


def post(server: Running, body: dict[str, Any], key: str = KEY) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_server_answers_in_the_sdks_own_types(llm_server: Running) -> None:
    tools = [{"type": "function", "function": TOOL_DEFINITION}]
    status, body = post(llm_server, {"model": MODEL, "messages": [
        {"role": "user", "content": TOOL_CALL}], "tools": tools})
    assert status == 200, body
    first = ChatCompletion.model_validate(body)
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "schedule_task"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["name"] == "followup"  # type: ignore[union-attr]
    status, body = post(llm_server, {"model": MODEL, "tools": tools, "messages": [
        {"role": "user", "content": TOOL_CALL},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "accepted", "message": "ok"}'},
    ]})
    second = ChatCompletion.model_validate(body)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Done: accepted ok"
    assert second.usage is not None
    assert second.usage.total_tokens == second.usage.prompt_tokens + second.usage.completion_tokens

    client = openai.OpenAI(api_key=KEY, base_url=llm_server.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        openai.OpenAI(api_key="wrong", base_url=llm_server.base_url, max_retries=0) \
            .chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="must be a response to a preceding"):
        client.chat.completions.create(model=MODEL, messages=[
            {"role": "tool", "tool_call_id": "call_x", "content": "{}"}])


class Bridge:
    """Answers every schedule request the agent writes, as the IPC bridge would."""

    def __init__(self, ipc: Path, answer: dict[str, Any]):
        self.ipc = ipc
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        folder = self.ipc / "schedules"
        while not self._stop.wait(0.02):
            for request in sorted(folder.glob("schedule-*.json")):
                if request.name.endswith(".result.json") or result_path(request).exists():
                    continue
                self.requests.append(json.loads(request.read_text()))
                result_path(request).write_text(json.dumps(self.answer))

    def __enter__(self) -> Bridge:
        (self.ipc / "schedules").mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def ipc(tmp_path: Path) -> Path:
    folder = tmp_path / "ipc"
    for sub in ("input", "output", "schedules"):
        (folder / sub).mkdir(parents=True)
    return folder


def run_agent(ipc: Path, task: str, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    (ipc / "input" / "task.json").write_text(json.dumps({"task": task, "model": {}}))
    done = subprocess.run([sys.executable, "-m", "sympozium_schedule.agents.llm"],
                          env={"PATH": "/usr/bin:/bin", "IPC_PATH": str(ipc)} | env,
                          capture_output=True, text=True, timeout=90)
    result = json.loads((ipc / "output" / "result.json").read_text())
    return done.returncode, result, done.stdout + done.stderr


def model_env(server: Running, **extra: str) -> dict[str, str]:
    return {"MODEL_NAME": MODEL, "MODEL_PROVIDER": "openai", "MODEL_BASE_URL": server.base_url,
            "OPENAI_API_KEY": KEY} | extra


def test_a_tool_call_is_carried_out_and_its_answer_fed_back(llm_server: Running, ipc: Path) -> None:
    answer = {"requestId": "r1", "status": "accepted", "message": "created alice-followup"}
    with Bridge(ipc, answer) as bridge:
        code, result, output = run_agent(ipc, "Plan the week.\n" + TOOL_CALL, model_env(llm_server))
    assert code == 0, output
    assert result["status"] == "success"
    assert result["response"] == "Done: accepted created alice-followup"
    assert bridge.requests == [{"name": "followup", "action": "create", "schedule": "@every 1h",
                                "task": "Follow up."}]
    first, second = llm_server.requests()
    assert first["tools"] == [{"type": "function", "function": TOOL_DEFINITION}]
    assert first["model"] == MODEL
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert "Plan the week." in first["messages"][1]["content"]
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == answer
    assert second["messages"][-2]["tool_calls"][0]["id"] == tool_message["tool_call_id"]
    metrics = result["metrics"]
    assert metrics["toolCalls"] == 1
    assert metrics["inputTokens"] > 0
    assert metrics["outputTokens"] > 0


def test_the_model_cannot_choose_where_the_tool_writes(llm_server: Running, ipc: Path,
                                                       tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    call = ('CALL schedule_task {"name": "x", "action": "create", "schedule": "@daily", '
            f'"task": "t", "ipc_path": "{elsewhere}", "wait": 600}}')
    code, result, output = run_agent(ipc, call, model_env(llm_server))
    assert code == 0, output
    assert result["response"] == "Done: rejected unknown arguments: ipc_path, wait"
    assert not elsewhere.exists()
    assert list((ipc / "schedules").iterdir()) == []


@pytest.mark.parametrize(("task", "env", "error"), [
    pytest.param("hello", {"OPENAI_API_KEY": "wrong"}, "answered 401: Incorrect API key provided.",
                 id="wrong-key"),
    pytest.param("hello", {"MODEL_NAME": "gpt-nope"},
                 "answered 404: The model `gpt-nope` does not exist", id="unknown-model"),
    pytest.param("hello", {"OPENAI_API_KEY": ""},
                 "no API key for provider 'openai': put MODEL_API_KEY or OPENAI_API_KEY in the Secret",
                 id="no-key"),
    pytest.param("hello", {"MODEL_NAME": ""}, "no model:", id="no-model"),
    pytest.param("hello", {"MODEL_PROVIDER": "bedrock", "MODEL_BASE_URL": ""},
                 "no base URL for provider 'bedrock'", id="no-base-url"),
    pytest.param("LOOP", {"LLM_MAX_TURNS": "2"}, "no final answer after 2 model calls",
                 id="turn-limit"),
    pytest.param("SLEEP 60\nhello", {"AGENT_TIMEOUT_SECONDS": "10"},
                 "did not answer in time", id="time-limit"),
])
def test_failures_are_one_line_in_result_json(llm_server: Running, ipc: Path, task: str,
                                              env: dict[str, str], error: str) -> None:
    with Bridge(ipc, {"status": "accepted", "message": "ok"}):
        code, result, output = run_agent(ipc, task, model_env(llm_server, **env))
    assert code == 1, output
    assert result["status"] == "error"
    assert error in result["error"], result
    assert "\n" not in result["error"]
    assert KEY not in json.dumps(result) + output


def test_an_unreachable_server_is_named(ipc: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    code, result, _ = run_agent(ipc, "hello", {"MODEL_NAME": "m", "MODEL_PROVIDER": "ollama",
                                               "MODEL_BASE_URL": url})
    assert code == 1
    assert result["error"].startswith(f"cannot reach the model server at {url}"), result
