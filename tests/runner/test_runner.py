"""The local runner on a real SQLite store with real agent processes (no controller):
the agent contract's outcomes, the Secret's variables, bounded logs, and run
folders that go with their AgentRuns."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import NotFound, Obj, Ref
from sympozium_schedule.runtime import paths
from sympozium_schedule.runtime.runner import LocalRunner
from sympozium_schedule.runtime.runner_settings import RunnerSettings
from tests.support import eventually

PATIENCE = 60.0


def py(source: str) -> tuple[str, ...]:
    return (sys.executable, "-c", source)


AGENTS = {
    "prints": py("print('scratch'); print('the answer')"),
    "result-error": py("import json, os; open(os.environ['IPC_PATH'] + '/output/result.json', 'w')"
                       ".write(json.dumps({'status': 'error', 'error': 'no luck', 'response': ''}))"),
    "sleeps": py("import time; time.sleep(60)"),
    "killed": py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
    "chatty": py("import sys\nfor i in range(3000): sys.stdout.write(f'{i:05d}' + 'x' * 995 + chr(10))"),
    "env": py("import os; print(os.environ.get('OPENAI_API_KEY'), os.environ.get('LD_PRELOAD'), "
              "os.environ['PATH'] != '/evil')"),
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "data" / "store.db")
    yield opened
    await opened.close()


async def start(store: SQLiteStore, tmp_path: Path, **settings: Any) -> tuple[LocalRunner, Any]:
    runner = LocalRunner(store, RunnerSettings(
        data_dir=tmp_path / "data", agents=AGENTS, default_agent="prints",
        default_timeout=timedelta(seconds=30), **settings))
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.runs.synced.is_set(), timeout=PATIENCE, what="the runner")
    return runner, task


async def stop(task: Any) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def new_run(store: SQLiteStore, name: str, agent: str, **spec: Any) -> Obj:
    instance = f"i-{name}"
    await store.create({"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumInstance",
                        "metadata": {"name": instance, "namespace": "default",
                                     "annotations": {"sympozium.ai/agent": agent}},
                        "spec": {"agents": {"default": {"model": "m"}}}})
    return await store.create({"apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun",
                               "metadata": {"name": name, "namespace": "default"},
                               "spec": {"instanceRef": instance, "task": "t"} | spec})


async def finished(store: SQLiteStore, name: str) -> dict[str, Any]:
    async def look() -> dict[str, Any] | None:
        run = await store.get(Ref(Kind.AGENT_RUN, "default", name))
        status: dict[str, Any] = run.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    found: dict[str, Any] = await eventually(look, timeout=PATIENCE, what=f"run {name} to finish")
    return found


@pytest.mark.parametrize(("agent", "phase", "result", "error"), [
    pytest.param("prints", "Succeeded", "scratch\nthe answer", None, id="exit-0-stdout-is-the-result"),
    pytest.param("result-error", "Failed", None, "no luck", id="result-json-error"),
    pytest.param("killed", "Failed", None, "the agent was killed by SIGKILL", id="killed"),
])
async def test_the_outcome_follows_the_contract(store: SQLiteStore, tmp_path: Path, agent: str,
                                                phase: str, result: str | None,
                                                error: str | None) -> None:
    _, task = await start(store, tmp_path)
    try:
        await new_run(store, "r", agent)
        status = await finished(store, "r")
    finally:
        await stop(task)
    assert status["phase"] == phase, status
    assert status.get("result") == result
    assert status.get("error") == error


async def test_a_time_limit_kills_the_agent(store: SQLiteStore, tmp_path: Path) -> None:
    _, task = await start(store, tmp_path)
    try:
        await new_run(store, "slow", "sleeps", timeout="1s")
        status = await finished(store, "slow")
    finally:
        await stop(task)
    assert status["phase"] == "Failed"
    assert status["error"] == "timed out after 0:00:01 (spec.timeout or the runner's --run-timeout)"


async def test_the_log_is_bounded_and_the_result_is_the_end_of_stdout(
        store: SQLiteStore, tmp_path: Path) -> None:
    _, task = await start(store, tmp_path, log_limit=100_000)
    try:
        await new_run(store, "chatty", "chatty")
        status = await finished(store, "chatty")
    finally:
        await stop(task)
    log = paths.run_log(tmp_path / "data", "default", "chatty").read_bytes()
    assert 100_000 <= len(log) < 100_000 + 200
    assert log.endswith(b"more bytes of output dropped; agent.log keeps the first 100000]\n")
    assert status["phase"] == "Succeeded"
    assert status["result"].endswith("02999" + "x" * 995)
    assert len(status["result"]) <= 32 * 1024


async def test_the_instances_secret_becomes_variables_but_never_path_or_loader_ones(
        store: SQLiteStore, tmp_path: Path) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    await store.create({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "key", "namespace": "default"},
                        "data": {"OPENAI_API_KEY": b64("sk-1"), "LD_PRELOAD": b64("/evil.so"),
                                 "PATH": b64("/evil")}})
    _, task = await start(store, tmp_path)
    try:
        await new_run(store, "env", "env", model={"provider": "openai", "model": "m",
                                                  "authSecretRef": "key"})
        status = await finished(store, "env")
    finally:
        await stop(task)
    assert status["result"] == "sk-1 None True"
    log = paths.run_log(tmp_path / "data", "default", "env").read_text()
    assert "Secret default/key: key 'LD_PRELOAD' would override what the runner sets, left out" in log
    assert "Secret default/key: set OPENAI_API_KEY" in log
    runner_lines = [line for line in log.splitlines() if line.startswith("[sympozium-schedule]")]
    assert runner_lines
    assert not any("sk-1" in line for line in runner_lines)  # the agent printed it, the runner not


async def test_a_runs_folder_goes_with_it_and_orphans_are_swept_at_start(
        store: SQLiteStore, tmp_path: Path) -> None:
    data = tmp_path / "data"
    orphan = paths.run_dir(data, "default", "deleted-while-down")
    (orphan / "work").mkdir(parents=True)
    (orphan / "work" / "escape").symlink_to(tmp_path)  # rmtree must not follow it
    runner, task = await start(store, tmp_path)
    try:
        await eventually(lambda: not orphan.exists(), timeout=PATIENCE, what="the orphan swept")
        assert tmp_path.is_dir()  # noqa: ASYNC240 - the symlink was not followed
        await new_run(store, "done", "prints")
        await finished(store, "done")
        assert paths.run_log(data, "default", "done").exists()
        await store.delete(Ref(Kind.AGENT_RUN, "default", "done"))
        await eventually(lambda: not paths.run_dir(data, "default", "done").exists(),
                         timeout=PATIENCE, what="the finished run's folder removed")

        await new_run(store, "busy", "sleeps")
        await eventually(lambda: paths.run_log(data, "default", "busy").exists(), timeout=PATIENCE,
                         what="the busy run to start")
        await store.delete(Ref(Kind.AGENT_RUN, "default", "busy"))
        await eventually(lambda: not paths.run_dir(data, "default", "busy").exists(),
                         timeout=PATIENCE, what="the deleted running run's folder removed")
        with pytest.raises(NotFound):
            await store.get(Ref(Kind.AGENT_RUN, "default", "busy"))
    finally:
        await stop(task)
    assert runner.swept == 1


async def test_an_annotation_naming_a_command_runs_nothing(store: SQLiteStore,
                                                          tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _, task = await start(store, tmp_path)
    try:
        await new_run(store, "sneaky", f"touch {marker}")
        status = await finished(store, "sneaky")
    finally:
        await stop(task)
    assert status["phase"] == "Failed"
    assert status["error"].startswith(f"SympoziumInstance i-sneaky asks for agent 'touch {marker}'")
    assert not marker.exists()
