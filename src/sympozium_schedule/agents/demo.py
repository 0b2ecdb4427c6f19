"""A stand-in agent for the embedded demo: no LLM, just the IPC contract.

It reads ``$IPC_PATH/input/task.json`` (or ``$TASK``), works for a moment and
writes ``output/result.json`` in Sympozium's AgentResult shape. Lines of the
task that start with ``schedule_task:`` are handed to the schedule_task tool,
which is how the demo shows an agent scheduling itself, e.g.::

    schedule_task: {"action": "create", "name": "followup", "schedule": "@every 30s",
                    "task": "follow up"}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _task(ipc: Path) -> str:
    env_task = os.environ.get("TASK", "")
    if env_task:
        return env_task
    try:
        data = json.loads((ipc / "input" / "task.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(data.get("task", "")) if isinstance(data, dict) else ""


def _self_schedule(ipc: Path, task: str) -> list[str]:
    notes: list[str] = []
    for line in task.splitlines():
        if not line.strip().startswith("schedule_task:"):
            continue
        payload = line.split(":", 1)[1].strip()
        try:
            from sympozium_schedule.agents.schedule_task import schedule_task

            args: dict[str, Any] = json.loads(payload)
            answer = schedule_task(ipc_path=ipc, wait=5.0, **args)
            notes.append(f"schedule_task {args.get('action')} {args.get('name')}: {answer}")
        except Exception as exc:
            notes.append(f"schedule_task failed: {exc}")
    return notes


def main() -> int:
    ipc = Path(os.environ.get("IPC_PATH", "/ipc"))
    started = time.monotonic()
    task = _task(ipc)
    delay = float(os.environ.get("DEMO_AGENT_SECONDS", "1"))
    time.sleep(delay)
    notes = _self_schedule(ipc, task)
    first_line = next((ln.strip() for ln in task.splitlines() if ln.strip()), "(empty task)")
    if task.startswith("## Memory Context"):
        first_line = "(with memory) " + task.split("## Task", 1)[-1].strip().splitlines()[0]
    response = f"demo agent: did '{first_line[:200]}'"
    if notes:
        response += "\n" + "\n".join(notes)
    fail = "please fail" in task.lower()
    result = {
        "status": "error" if fail else "success",
        "response": response,
        "error": "asked to fail" if fail else "",
        "metrics": {"durationMs": int((time.monotonic() - started) * 1000), "inputTokens": len(task) // 4,
                    "outputTokens": len(response) // 4, "toolCalls": len(notes)},
    }
    out = ipc / "output"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "result.json")
    print(response)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
