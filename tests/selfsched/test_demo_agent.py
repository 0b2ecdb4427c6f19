"""The demo agent as a real process: its ``schedule_task:`` lines go through the tool,
its bridge and the router, and the answers end up in its AgentResult."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from sympozium_schedule.core.model import LABEL_SOURCE
from sympozium_schedule.core.requests import ANNOTATION_REQUESTED_BY
from tests.selfsched.conftest import TIMEOUT, Agent, System

# The router's and the bridge's logic: on the in-memory bus (see conftest).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.memory_bus]

FOLLOWUP = {"action": "create", "name": "followup", "schedule": "@every 1h",
            "task": "follow up on the disk alert"}
TOO_FAST = {"action": "create", "name": "too-fast", "schedule": "@every 30s", "task": "spin"}
TASK = "\n".join([
    "Check the disk alert on node-3.",
    f"schedule_task: {json.dumps(FOLLOWUP)}",
    f"  schedule_task: {json.dumps(TOO_FAST)}",
])


async def run_demo_agent(agent: Agent, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sympozium_schedule.agents.demo",
        env=os.environ | {"IPC_PATH": str(agent.ipc), "DEMO_AGENT_SECONDS": "0"} | env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize("how", [pytest.param("env", id="TASK-env"),
                                 pytest.param("file", id="input-task-json")])
async def test_the_demo_agent_schedules_itself(system: System, alice: Agent, how: str) -> None:
    env: dict[str, str] = {}
    if how == "env":
        env["TASK"] = TASK
    else:
        (alice.ipc / "input").mkdir(parents=True)
        (alice.ipc / "input" / "task.json").write_text(json.dumps({"task": TASK}))

    code, output = await run_demo_agent(alice, env)

    assert code == 0, output
    result: dict[str, Any] = json.loads((alice.ipc / "output" / "result.json").read_text())
    assert result["status"] == "success"
    assert result["metrics"]["toolCalls"] == 2
    followup, too_fast = result["response"].splitlines()[1:]
    assert followup.startswith("schedule_task create followup: ")
    assert "'status': 'accepted'" in followup
    assert "created schedule 'alice-followup'" in followup
    assert too_fast.startswith("schedule_task create too-fast: ")
    assert "'status': 'rejected'" in too_fast
    assert "at most once every 5m" in too_fast
    assert result["response"] in output, "the agent printed its response"

    stored = await system.schedule("alice-followup")
    assert stored is not None
    assert stored["spec"]["schedule"] == "@every 1h"
    assert stored["spec"]["task"] == FOLLOWUP["task"]
    assert stored["metadata"]["labels"][LABEL_SOURCE] == "agent"
    assert stored["metadata"]["annotations"][ANNOTATION_REQUESTED_BY] == alice.run
    assert await system.schedule_names() == ["alice-followup"]
