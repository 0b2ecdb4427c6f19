"""Runs, their logs, and instances."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sympozium_schedule.runtime.paths import run_log
from tests.console.conftest import Api, instance, schedule


def run(name: str, schedule_name: str, *, tick: str, phase: str | None = None,
        namespace: str = "default") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"sympozium.ai/schedule": schedule_name, "sympozium.ai/instance": "alice"},
                     "annotations": {"sympozium.ai/scheduled-time": tick}},
        "spec": {"instanceRef": "alice", "agentId": "default", "sessionKey": name, "task": "t"},
    }
    if phase:
        obj["status"] = {"phase": phase}
    return obj


async def test_runs_by_schedule_newest_first(api: Api) -> None:
    await api.seed(schedule("a"), schedule("b"),
                   run("a-1", "a", tick="2026-01-01T09:00:00Z"), run("a-2", "a", tick="2026-01-02T09:00:00Z"),
                   run("b-1", "b", tick="2026-01-01T10:00:00Z"))
    reply = await api.get("/api/v1/runs?schedule=a")
    assert [r["metadata"]["name"] for r in reply.body] == ["a-2", "a-1"]
    everything = await api.get("/api/v1/runs")
    assert len(everything.body) == 3
    assert (await api.get("/api/v1/runs?schedule=..")).status == 400


async def test_get_a_run(api: Api) -> None:
    await api.seed(run("r-1", "a", tick="2026-01-01T09:00:00Z"))
    assert (await api.get("/api/v1/runs/r-1")).body["metadata"]["name"] == "r-1"
    missing = await api.get("/api/v1/runs/r-2")
    assert missing.status == 404
    assert missing.body["error"] == 'agentrun "r-2" not found in namespace "default"'


async def test_logs_where_the_local_runner_wrote_them(api: Api) -> None:
    await api.seed(run("r-1", "a", tick="2026-01-01T09:00:00Z"))
    path = run_log(api.data_dir, "default", "r-1")
    path.parent.mkdir(parents=True)
    path.write_text("hello from the agent\n" + "x" * 100 + "\nlast line\n")
    reply = await api.get("/api/v1/runs/r-1/logs")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.text.startswith("hello from the agent")
    tail = await api.get("/api/v1/runs/r-1/logs?tailBytes=12")
    assert tail.text.endswith("last line\n")
    assert "are left out" in tail.text


async def test_logs_missing_and_for_missing_runs(api: Api) -> None:
    await api.seed(run("r-1", "a", tick="2026-01-01T09:00:00Z"))
    no_log = await api.get("/api/v1/runs/r-1/logs")
    assert no_log.status == 404
    assert "has no log yet" in no_log.body["error"]
    assert (await api.get("/api/v1/runs/ghost/logs")).status == 404


async def test_a_log_replaced_by_a_symlink_is_not_followed(api: Api, tmp_path: Any) -> None:
    """An agent can write to its run folder: it must not make the console read other files."""
    await api.seed(run("r-1", "a", tick="2026-01-01T09:00:00Z"))
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show")
    path = run_log(api.data_dir, "default", "r-1")
    path.parent.mkdir(parents=True)
    os.symlink(secret, path)
    reply = await api.get("/api/v1/runs/r-1/logs")
    assert reply.status == 403
    assert "do not show" not in reply.text


@pytest.mark.parametrize("query", ["tailBytes=0", "tailBytes=lots"])
async def test_bad_log_queries(api: Api, query: str) -> None:
    await api.seed(run("r-1", "a", tick="2026-01-01T09:00:00Z"))
    assert (await api.get(f"/api/v1/runs/r-1/logs?{query}")).status == 400


async def test_instances(api: Api) -> None:
    await api.seed(instance("bob"), instance("carol", "team-a"))
    names = [i["metadata"]["name"] for i in (await api.get("/api/v1/instances")).body]
    assert names == ["alice", "bob"]
    every = await api.get("/api/v1/instances?allNamespaces=true")
    assert len(every.body) == 3
