"""The Schedule Router in Kubernetes mode (``sympozium-schedule router --kubernetes``): an
agent's requests, written by the schedule_task tool and published by the IPC bridge over a
real NATS server, applied to the real kube-apiserver (as a ServiceAccount bound to the shipped
roles) and answered in the agent's folder."""

from __future__ import annotations

import json
from pathlib import Path

from sympozium_schedule.agents.schedule_task import result_path
from sympozium_schedule.core.model import API_VERSION
from sympozium_schedule.manifests import generate
from tests.k8s.conftest import Agent, Cluster, Processes, namespace_for

RESULT_KEYS = {"requestId", "requestFile", "status", "message", "schedule"}


async def test_the_router_applies_an_agents_requests_to_the_api_and_answers_them(
        cluster: Cluster, processes: Processes, nats_url: str, tmp_path: Path) -> None:
    NS = namespace_for("agents")
    api = cluster.api()
    api.namespace(NS)
    api.create({"apiVersion": API_VERSION, "kind": "SympoziumInstance",
                "metadata": {"name": "alice", "namespace": NS},
                "spec": {"agents": {"default": {"model": "gpt-4o"}}}})
    mark = cluster.mark()  # the router's ServiceAccount may have served an earlier test
    router = processes.router("router", nats_url)
    agent = await Agent.start(tmp_path / "runs", nats_url=nats_url, instance="alice", namespace=NS)
    try:
        created = await agent.ask(name="followup", action="create", schedule="@every 10m",
                                  task="Follow up on the deploy.")
        assert created["status"] == "accepted", created
        on_disk = json.loads(result_path(agent.ipc / "schedules" / created["requestFile"]).read_text())
        assert on_disk == created
        assert set(created) == RESULT_KEYS
        # A request id is unique per request; the archived file carries it.
        sent = agent.ipc / "schedules" / ".sent" / f"{created['requestId']}~{created['requestFile']}"
        assert sent.exists()
        assert created["schedule"]["name"] == "alice-followup"
        stored = api.get("sympoziumschedules", "alice-followup", namespace=NS)
        assert stored is not None
        assert stored["metadata"]["labels"] == {"sympozium.ai/instance": "alice",
                                                "sympozium.ai/source": "agent"}
        assert stored["metadata"]["annotations"] == {"sympozium.ai/requested-by-run": "agent-run-1"}
        assert stored["spec"]["schedule"] == "@every 10m"
        assert stored["spec"]["task"] == "Follow up on the deploy."

        updated = await agent.ask(name="followup", action="update", task="Follow up again.")
        assert updated["status"] == "accepted", updated
        stored = api.get("sympoziumschedules", "alice-followup", namespace=NS)
        assert stored is not None
        assert stored["spec"]["task"] == "Follow up again."
        assert stored["metadata"]["generation"] == 2

        suspended = await agent.ask(name="followup", action="suspend")
        assert suspended["status"] == "accepted", suspended
        stored = api.get("sympoziumschedules", "alice-followup", namespace=NS)
        assert stored is not None
        assert stored["spec"]["suspend"] is True

        too_often = await agent.ask(name="spam", action="create", schedule="*/1 * * * *", task="Ping.")
        assert too_often["status"] == "rejected", too_often
        assert api.get("sympoziumschedules", "alice-spam", namespace=NS) is None

        deleted = await agent.ask(name="followup", action="delete")
        assert deleted["status"] == "accepted", deleted
        assert api.get("sympoziumschedules", "alice-followup", namespace=NS) is None
    finally:
        await agent.stop()
        api.close()
    writes = [(c.resource, c.verb, c.namespace, c.code) for c in router.calls(since=mark) if c.write]
    assert {c.user_agent for c in router.calls(since=mark)} == {
        f"sympozium-schedule/{generate.project_version()} (router)"}
    assert writes == [("sympoziumschedules", "create", NS, 201), ("sympoziumschedules", "update", NS, 200),
                      ("sympoziumschedules", "update", NS, 200), ("sympoziumschedules", "delete", NS, 200)]
    assert router.get("/metrics").status == 200
