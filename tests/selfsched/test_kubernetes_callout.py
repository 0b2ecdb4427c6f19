"""Kubernetes mode's bus identity: a bridge presents its pod's ServiceAccount token, the
router's auth callout asks a real kube-apiserver (TokenReview) whose it is, maps the pod
to its AgentRun and grants that run's subjects, or nothing.

The API server is real (tokens minted by it, bound to Pods it holds); the AgentRuns the
callout looks the pod up in are in a SQLite store here (the lookup goes through the
Store port, as it does against the cluster); NATS, the router and the bridge are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from sympozium_schedule.adapters.nats.bus import NatsBroker
from sympozium_schedule.adapters.nats.callout import Callout, ConnectAttempt, Refused
from sympozium_schedule.adapters.nats.jwt import Signer
from sympozium_schedule.adapters.nats.server import BusAuth, EmbeddedNats
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.agents.schedule_task import schedule_task
from sympozium_schedule.core.model import API_VERSION, Kind
from sympozium_schedule.ports.bus import Credential
from sympozium_schedule.ports.store import Ref
from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
from sympozium_schedule.runtime.bus_identity import ServiceAccountTokens, lightkube_review
from sympozium_schedule.runtime.router import Router, RouterSettings
from tests import support
from tests.selfsched.kube import ApiServer, api_server

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]

AUDIENCE = "sympozium-schedule"
TIMEOUT = 20.0
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "default"},
       "spec": {"serviceAccountName": "agent", "automountServiceAccountToken": False,
                "containers": [{"name": "agent", "image": "agent:1"}]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with api_server(tmp_path_factory.mktemp("kube")) as server:
        server.kubectl("create", "serviceaccount", "agent", "-n", "default")
        for pod in ("alice-pod", "done-pod"):
            server.kubectl("apply", "-f", "-", stdin=json.dumps(
                POD | {"metadata": {"name": pod, "namespace": "default"}}))
        yield server


def token(cluster: ApiServer, *args: str) -> str:
    return cluster.kubectl("create", "token", "agent", "-n", "default", *args).strip()


def bound(cluster: ApiServer, pod: str, audience: str = AUDIENCE) -> str:
    return token(cluster, "--bound-object-kind", "Pod", "--bound-object-name", pod,
                 "--audience", audience)


def agent_run(name: str, pod: str, phase: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": Kind.AGENT_RUN.value,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"instanceRef": "alice", "agentId": "a", "sessionKey": name, "task": "t",
                     "mode": "task", "cleanup": "delete", "model": {"model": "gpt-4o", "provider": "openai",
                                                                  "authSecretRef": "k"}},
            "status": {"podName": pod, "phase": phase}}


class Cluster:
    def __init__(self, api: ApiServer, url: str, store: SQLiteStore, reviewer: ServiceAccountTokens):
        self.api, self.url, self.store, self.reviewer = api, url, store, reviewer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(cluster: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("bus")
    auth = BusAuth.generate()
    server = EmbeddedNats(root / "nats", auth=auth)
    url = await server.start()
    store = SQLiteStore(root / "store.db")
    await store.create({"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
                        "metadata": {"name": "alice", "namespace": "default"},
                        "spec": {"agents": {"default": {"model": "gpt-4o"}}}})
    for name, pod, phase in (("alice-run-1", "alice-pod", "Running"), ("done-run", "done-pod", "Succeeded")):
        created = await store.create(agent_run(name, pod, phase))
        await store.patch_status(Ref.of(created), {"podName": pod, "phase": phase})
    client = AsyncClient(config=KubeConfig.from_file(str(cluster.kubeconfig)).get())
    reviewer = ServiceAccountTokens(store, lightkube_review(client, AUDIENCE), ttl=60)
    callout = Callout(Signer.from_seed(auth.issuer_seed), auth.account, reviewer.authorize)
    router = Router(store, RouterSettings(nats_url=url, credential=Credential(nkey_seed=auth.router_seed)))
    tasks = [asyncio.create_task(callout.serve(NatsBroker(url), Credential(nkey_seed=auth.callout_seed))),
             asyncio.create_task(router.run())]
    try:
        await support.eventually(lambda: router.ready.is_set(), timeout=TIMEOUT, what="the router")
        yield Cluster(cluster, url, store, reviewer)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        await store.close()
        await server.stop()


async def test_a_bridge_with_its_pods_token_schedules_for_its_run(world: Cluster, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(bound(world.api, "alice-pod"))
    ipc = tmp_path / "ipc"
    (ipc / "schedules").mkdir(parents=True)
    bridge = Bridge(BridgeSettings(ipc_path=ipc, agent_run_id="alice-run-1", instance="alice",
                                   namespace="default", nats_url=world.url, token_file=token_file))
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        answer = await asyncio.to_thread(schedule_task, name="k8s", action="create", schedule="@hourly",
                                         task="from a pod", ipc_path=ipc, wait=TIMEOUT)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)

    assert answer["status"] == "accepted", answer
    stored = await world.store.get(Ref(Kind.SCHEDULE, "default", "alice-k8s"))
    assert stored["metadata"]["annotations"]["sympozium.ai/requested-by-run"] == "alice-run-1"


@pytest.mark.parametrize(("which", "reason"), [
    pytest.param("finished-run", "AgentRun default/done-run has finished", id="the-pod-of-a-finished-run"),
    pytest.param("not-bound", "not bound to a pod", id="a-token-bound-to-no-pod"),
    pytest.param("audience", "token audiences", id="a-token-for-another-audience"),
    pytest.param("garbage", "invalid bearer token", id="not-a-token"),
    pytest.param("none", "no credential", id="no-credential"),
])
async def test_other_tokens_are_refused(world: Cluster, which: str, reason: str) -> None:
    options = {
        "finished-run": lambda: {"token": bound(world.api, "done-pod")},
        "not-bound": lambda: {"token": token(world.api, "--audience", AUDIENCE)},
        "audience": lambda: {"token": bound(world.api, "alice-pod", audience="someone-else")},
        "garbage": lambda: {"token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"},
        "none": lambda: {},
    }[which]()

    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await nats.connect(world.url, allow_reconnect=False, connect_timeout=5, **options)
    # Why, as the callout logs it (the client is told no more than "authorization violation").
    attempt = ConnectAttempt("server", "UKEY", 1, "127.0.0.1", "", options.get("token"), None, None)
    with pytest.raises(Refused, match=reason):
        await world.reviewer.authorize(attempt)
