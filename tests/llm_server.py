"""An OpenAI-compatible chat-completions server for the tests: a real process on a
loopback port, speaking the protocol as OpenAI documents it, with a scripted model.

``python -m tests.llm_server --model NAME [--key KEY] [--record FILE]`` prints
``port <N>`` once it listens. The protocol parts that matter to a client:

- ``POST /v1/chat/completions``: ``model``, ``messages`` (system, user, assistant
  with ``tool_calls``, tool with a ``tool_call_id`` answering one of them), ``tools``
  (``{"type": "function", "function": {...}}``); a ``chat.completion`` object with
  ``choices[0].message`` (``content`` or ``tool_calls`` with JSON-string
  ``arguments``), ``finish_reason`` (``stop`` or ``tool_calls``) and ``usage``;
- errors as OpenAI sends them: ``{"error": {"message", "type", "param", "code"}}``
  with 400 (a malformed request), 401 (a wrong key), 404 (an unknown model).

The scripted model reads the last user message. Each line ``CALL <tool> <json>``
becomes a tool call on the first turn; once every call has its tool message, it
answers ``Done: <status> <message>`` for each. ``LOOP`` makes it call a tool on
every turn (a runaway model); ``SLEEP <seconds>`` delays the answer. Otherwise
it answers ``Answer: <first line of the task>``. Token counts are characters / 4.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

_ROLES = ("system", "user", "assistant", "tool", "developer")


def _error(status: int, message: str, *, kind: str = "invalid_request_error",
           param: str | None = None, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param,
                                        "code": code}}, status=status)


def _check(body: object) -> str | None:
    """What is wrong with a request, as the API would refuse it; None when fine."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"messages[{i}]: invalid role"
        if message["role"] == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
                    return f"messages[{i}].tool_calls: each needs function.name and string arguments"
                open_calls.add(str(call.get("id")))
        elif message["role"] == "tool":
            if message.get("tool_call_id") not in open_calls:
                return (f"messages[{i}]: a message with role 'tool' must be a response to a "
                        "preceding message with 'tool_calls'")
            if not isinstance(message.get("content"), str):
                return f"messages[{i}].content must be a string"
    for i, tool in enumerate(body.get("tools") or []):
        if not (isinstance(tool, dict) and tool.get("type") == "function"
                and isinstance(tool.get("function"), dict)
                and isinstance(tool["function"].get("name"), str)):
            return f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ...}}}}"
    return None


class ScriptedModel:
    def __init__(self, models: list[str], key: str | None, record: Path | None):
        self.models = models
        self.key = key
        self.record = record
        self.ids = itertools.count(1)

    def reply(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        messages = body["messages"]
        task = next((str(m.get("content") or "") for m in reversed(messages)
                     if m["role"] == "user"), "")
        lines = [ln.strip() for ln in task.splitlines() if ln.strip()]
        results = [m for m in messages if m["role"] == "tool"]
        wanted = [ln.split(None, 2) for ln in lines if ln.startswith("CALL ")]
        if "LOOP" in lines or (wanted and not results):
            calls = wanted or [["CALL", "schedule_task", '{"name": "again", "action": "delete"}']]
            return None, [{"id": f"call_{next(self.ids)}", "type": "function",
                           "function": {"name": parts[1], "arguments": parts[2] if len(parts) > 2
                                        else "{}"}} for parts in calls]
        if results:
            said = []
            for message in results:
                try:
                    answer = json.loads(message["content"])
                except ValueError:
                    answer = {}
                said.append(f"{answer.get('status')} {answer.get('message')}")
            return "Done: " + "; ".join(said), []
        return "Answer: " + (lines[0] if lines else ""), []

    async def completions(self, request: web.Request) -> web.Response:
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        problem = _check(body)
        if problem is not None:
            return _error(400, problem)
        if body["model"] not in self.models:
            return _error(404, f"The model `{body['model']}` does not exist or you do not have "
                               "access to it.", param="model", code="model_not_found")
        if self.record is not None:
            with self.record.open("a") as out:
                out.write(json.dumps(body) + "\n")
        task = next((str(m.get("content") or "") for m in reversed(body["messages"])
                     if m["role"] == "user"), "")
        for line in task.splitlines():
            if line.strip().startswith("SLEEP "):
                await asyncio.sleep(float(line.split()[1]))
        content, calls = self.reply(body)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        prompt = sum(len(json.dumps(m)) for m in body["messages"]) // 4
        completion = (len(content or "") + len(json.dumps(calls) if calls else "")) // 4 + 1
        return web.json_response({
            "id": f"chatcmpl-{next(self.ids)}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"], "system_fingerprint": "fp_tests",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "tests"} for m in self.models]})


async def serve(models: list[str], key: str | None, record: Path | None, port: int) -> None:
    model = ScriptedModel(models, key, record)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.completions)
    app.router.add_get("/v1/models", model.list_models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    sys.stdout.write(f"port {bound}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--key")
    parser.add_argument("--record", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.model, args.key, args.record, args.port))


if __name__ == "__main__":
    main()


class Running:
    """The server as a child process of a test: started, its port read, stopped by pid."""

    def __init__(self, *, models: list[str], key: str | None, record: Path | None):
        import subprocess

        args = [sys.executable, "-m", "tests.llm_server"]
        for name in models:
            args += ["--model", name]
        if key is not None:
            args += ["--key", key]
        if record is not None:
            args += ["--record", str(record)]
        self.record = record
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                        cwd=Path(__file__).resolve().parent.parent)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until it listens (or dies)
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"the test LLM server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[dict[str, Any]]:
        if self.record is None or not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
