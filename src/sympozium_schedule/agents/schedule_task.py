"""The ``schedule_task`` tool: how an agent manages its own recurring work.

:data:`TOOL_DEFINITION` is the JSON-schema tool definition an LLM runtime
hands to a model; :func:`schedule_task` is its implementation. It checks what
it can locally (the action, the fields it needs, that the cron parses), writes
the request in Sympozium's own format (``<ipc>/schedules/schedule-<id>.json``)
atomically, and can wait for the router's answer
(``schedule-<id>.result.json``, written back by the IPC bridge).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sympozium_schedule.core.cron import compile_schedule
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.requests import ACTIONS, Limits, RequestError, parse_request

TOOL_DEFINITION: dict[str, Any] = {
    "name": "schedule_task",
    "description": (
        "Create, update, suspend, resume or delete a recurring task of yours. Each time the "
        "schedule fires, a new independent run of you starts with the given task. Use it for "
        "heartbeats, periodic checks and follow-ups. You can only change schedules you created."
    ),
    "parameters": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "action"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63,
                     "description": "Short unique name, e.g. 'cluster-health-check'."},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "schedule": {"type": "string", "description": (
                "Cron: 5 fields (minute hour day-of-month month day-of-week), e.g. '*/30 * * * *', "
                "or @hourly/@daily/@weekly, or '@every 1h'. Required for create.")},
            "task": {"type": "string", "description": (
                "What each run should do. Be specific and self-contained: every run starts "
                "fresh. Required for create.")},
            "type": {"type": "string", "enum": ["heartbeat", "scheduled", "sweep"]},
            "timeZone": {"type": "string", "description": "IANA time zone, default UTC."},
            "concurrencyPolicy": {"type": "string", "enum": ["Forbid", "Allow", "Replace"]},
            "includeMemory": {"type": "boolean"},
        },
    },
}


def _ipc_default() -> Path:
    return Path(os.environ.get("IPC_PATH", "/ipc"))


def write_request(ipc_path: Path, request: dict[str, Any]) -> Path:
    """Write ``request`` as ``schedules/schedule-<id>.json``: an exclusively created
    temporary name (never through a planted symlink, never someone else's file),
    then a rename, so the bridge never reads half a file."""
    folder = ipc_path / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    request_id = f"{time.time_ns()}{secrets.token_hex(4)}"
    final = folder / f"schedule-{request_id}.json"
    tmp = folder / f".schedule-{request_id}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(request))
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def result_path(request_file: Path) -> Path:
    return request_file.with_name(request_file.name.removesuffix(".json") + ".result.json")


def wait_for_result(request_file: Path, timeout: float) -> dict[str, Any] | None:
    target = result_path(request_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            loaded = json.loads(target.read_text())
            return loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError):
            time.sleep(0.02)
    return None


def schedule_task(
    *,
    name: str,
    action: str,
    schedule: str | None = None,
    task: str | None = None,
    ipc_path: Path | None = None,
    wait: float | None = None,
    **optional: Any,
) -> dict[str, Any]:
    """Submit a request; returns ``{"status", "message", ...}`` for the model to read.

    ``status`` is ``rejected`` (checked locally or by the router), ``accepted``,
    or ``submitted`` when not waiting (or no answer came within ``wait`` seconds).
    """
    body: dict[str, Any] = {"name": name, "action": action}
    if schedule is not None:
        body["schedule"] = schedule
    if task is not None:
        body["task"] = task
    body |= {k: v for k, v in optional.items() if v is not None}
    try:
        parsed = parse_request(body, Limits(max_task_bytes=1 << 30))
        if parsed.schedule is not None:
            compile_schedule(parsed.schedule, time_zone=parsed.time_zone or "UTC",
                             anchor=datetime.now(UTC))
    except (RequestError, SpecError) as exc:
        return {"status": "rejected", "message": str(exc)}
    request_file = write_request(ipc_path or _ipc_default(), body)
    if not wait:
        return {"status": "submitted", "message": f"request {request_file.stem} submitted"}
    answer = wait_for_result(request_file, wait)
    if answer is None:
        return {"status": "submitted",
                "message": f"request {request_file.stem} submitted; no answer within {wait:g}s"}
    return answer
