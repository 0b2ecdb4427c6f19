"""Kubernetes mode against a real kube-apiserver (tests/kube): the real
``sympozium-schedule`` processes pointed at it by a kubeconfig, and a namespace per test.

Every process runs as the shipped ServiceAccount under the shipped RBAC (the install is
applied to the cluster), so an RBAC gap fails a test. Where a test needs two processes told
apart, the second runs as another ServiceAccount bound to the same shipped ClusterRole and
Role. The API server's audit log records every request with its user: that is how a test
counts what the controller (and not the test itself) asked for.

A few faults a real server cannot be made to produce on cue (a write landing between the
controller's decision and its status patch; 503s on status patches only) still run against
the API emulator (tests/k8s/emulator.py), in test_emulated_faults.py; the ``emulated_*``
fixtures here serve them.

Nothing sleeps to wait for something to happen: :func:`wait_until` polls, with timeouts a
loaded 2-core machine meets; a test only sleeps for a window in which nothing must happen.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sympozium_schedule import manifests
from sympozium_schedule.adapters.nats.server import EmbeddedNats
from sympozium_schedule.agents.schedule_task import result_path, schedule_task
from sympozium_schedule.core.model import API_VERSION, parse_time
from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
from tests import support
from tests.k8s.emulator import ApiServer
from tests.kube.controlplane import INSTALL_NAMESPACE, SERVICE_ACCOUNT, Api, ApiError, ControlPlane, Obj
from tests.support import free_port

# Generous for a loaded 2-core machine; a passing test never waits anywhere near it.
TIMEOUT = 20.0
PROGRAM = str(Path(sys.executable).parent / "sympozium-schedule")
LEASE_NAMESPACE = INSTALL_NAMESPACE  # where the Role grants the Lease, and the default since issue 8
CONTROLLER = SERVICE_ACCOUNT  # the shipped ServiceAccount's name: the processes' default identity
SCHEDULED_TIME = "sympozium.ai/scheduled-time"


wait_until = functools.partial(support.wait_for, interval=0.1)
# For async tests: the loop keeps running the bridge between looks.
until = functools.partial(support.eventually, timeout=TIMEOUT, interval=0.05)


# --- the processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    status: int  # 0: nothing answered
    body: str


class Cluster:
    """The real API server, seen by the tests: identities for processes, and their calls."""

    def __init__(self, plane: ControlPlane):
        self.plane = plane
        self._tokens: dict[str, str] = {}

    def user_name(self, user: str) -> str:
        return f"system:serviceaccount:{INSTALL_NAMESPACE}:{user}"

    def token(self, user: str, *, bind: bool = True) -> str:
        """The shipped ServiceAccount's token, or another ServiceAccount's bound to the same
        shipped ClusterRole and Role (to tell two replicas apart in the audit log); with
        ``bind=False`` the ServiceAccount must exist and keeps whatever bindings it has."""
        if user == SERVICE_ACCOUNT:
            return self.plane.service_account_token()
        if user not in self._tokens and not bind:
            answer = self.plane.api().request(
                "POST", f"/api/v1/namespaces/{INSTALL_NAMESPACE}/serviceaccounts/{user}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
            self._tokens[user] = str(answer["status"]["token"])
        if user not in self._tokens:
            api = self.plane.api()
            sa = f"/api/v1/namespaces/{INSTALL_NAMESPACE}/serviceaccounts"
            subject = [{"kind": "ServiceAccount", "name": user, "namespace": INSTALL_NAMESPACE}]
            rbac = "/apis/rbac.authorization.k8s.io/v1"
            for path, obj in (
                (sa, {"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": {"name": user, "namespace": INSTALL_NAMESPACE}}),
                (f"{rbac}/clusterrolebindings", {
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"test-{user}"}, "subjects": subject,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": SERVICE_ACCOUNT}}),
                (f"{rbac}/namespaces/{INSTALL_NAMESPACE}/rolebindings", {
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": f"test-{user}", "namespace": INSTALL_NAMESPACE},
                    "subjects": subject,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": f"{SERVICE_ACCOUNT}-leader-election"}}),
            ):
                try:
                    api.request("POST", path, obj)
                except ApiError as exc:  # made by an earlier test of the session
                    if exc.code != 409:
                        raise
            answer = api.request("POST", f"{sa}/{user}/token", {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 86400}})
            self._tokens[user] = str(answer["status"]["token"])
        return self._tokens[user]

    def kubeconfig(self, path: Path, *, user: str) -> Path:
        return self.plane.kubeconfig(path, token=self.token(user))

    def calls(self, *, user: str | None = None, since: int = 0) -> list[Any]:
        return self.plane.audit.calls(user=None if user is None else self.user_name(user), since=since)

    def mark(self) -> int:
        return self.plane.audit.mark()

    def open_watches(self, user: str) -> int:
        return self.plane.audit.open_watches(self.user_name(user))

    def api(self) -> Api:
        return self.plane.api()

    def delete_lease(self) -> None:
        self.api().delete("leases", LEASE_NAMESPACE_LEASE, namespace=LEASE_NAMESPACE)


LEASE_NAMESPACE_LEASE = "sympozium-schedule"  # the Lease's name (manifests.generate.LEASE_NAME)
Backend = Cluster | ApiServer


class Process:
    """A ``sympozium-schedule`` command against the API, logging JSON lines to a file."""

    def __init__(self, server: Backend, directory: Path, user: str, args: list[str], port_flag: str,
                 *, pod_name: bool = True):
        self.server = server
        self.user = user  # its ServiceAccount, and (unless pod_name=False) its POD_NAME
        self.port = free_port()
        self.log_path = directory / f"{user}.log"
        kubeconfig = server.kubeconfig(directory / f"{user}.kubeconfig", user=user)
        env = {k: v for k, v in os.environ.items()
               if k not in ("KUBECONFIG", "EVENT_BUS_URL", "POD_NAME", "POD_NAMESPACE")}
        env |= {"PYTHONUNBUFFERED": "1"}
        if pod_name:
            env["POD_NAME"] = user
        self.args = [PROGRAM, *args, port_flag, str(self.port), "--kubernetes",
                     "--kubeconfig", str(kubeconfig), "--log-format", "json"]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)

    def __repr__(self) -> str:
        return f"<{self.user} pid {self.proc.pid}>"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str) -> Probe:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return Probe(resp.status, resp.read().decode())
        except urllib.error.HTTPError as exc:
            return Probe(exc.code, exc.read().decode())
        except OSError:
            return Probe(0, "")

    def wait_ready(self, timeout: float = TIMEOUT) -> None:
        def ready() -> bool:
            assert self.alive, f"{self} exited with {self.proc.returncode}:\n{self.log_tail()}"
            return self.get("/readyz").status == 200

        wait_until(ready, timeout=timeout, what=f"{self} to be ready")

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{'name{label="v"}': value}``."""
        probe = self.get("/metrics")
        assert probe.status == 200, probe
        found = {}
        for line in probe.body.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                found[key] = float(value)
        return found

    def metric(self, name: str, **labels: str) -> float:
        key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        return self.metrics().get(key, 0.0)

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"event": line})
        return lines

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def calls(self, *, since: int = 0) -> list[Any]:
        return self.server.calls(user=self.user, since=since)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, as Kubernetes stops a pod; SIGKILL if it does not go in time."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, a node gone; no clean-up of any kind."""
        if self.alive:
            self.proc.kill()
        self.proc.wait()


class Processes:
    """Starts processes for one test (or module) and ends every one of them at teardown."""

    def __init__(self, server: Backend, directory: Path):
        self.server = server
        self.directory = directory
        self.started: list[Process] = []

    def controller(self, user: str = CONTROLLER, *, leader_election: bool = False, ready: bool = True,
                   pod_name: bool = True, args: tuple[str, ...] = ()) -> Process:
        """``run --kubernetes``; with leader election, as the README runs it (no
        --lease-namespace, no POD_NAMESPACE: the default must be where the Role grants it)."""
        flags = ["run", *args] + ([] if leader_election else ["--no-leader-election"])
        return self._start(user, flags, "--metrics-port", ready=ready, pod_name=pod_name)

    def router(self, user: str, nats_url: str, *extra: str) -> Process:
        return self._start(user, ["router", "--nats-url", nats_url, *extra], "--http-port", ready=True)

    def _start(self, user: str, args: list[str], port_flag: str, *, ready: bool,
               pod_name: bool = True) -> Process:
        process = Process(self.server, self.directory, user, args, port_flag, pod_name=pod_name)
        self.started.append(process)
        if ready:
            process.wait_ready()
        return process

    def close(self) -> None:
        for process in self.started:
            process.stop(timeout=5)


# --- a test's namespace ----------------------------------------------------------------------


_counter = itertools.count(1)


def namespace_for(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")
    return f"{slug[:50].rstrip('-')}-{next(_counter)}"


def scheduled_time(run: Obj) -> datetime:
    parsed = parse_time(run["metadata"]["annotations"][SCHEDULED_TIME])
    assert parsed is not None, run["metadata"]
    return parsed


def ticks(runs: list[Obj]) -> list[int]:
    """The runs' scheduled times as Unix seconds, in order."""
    return sorted(int(scheduled_time(r).timestamp()) for r in runs)


class Space:
    """One test's namespace: builders and reads, through the test's own client (admin)."""

    def __init__(self, server: Backend, api: Any, name: str):
        self.server = server
        self.api = api
        self.name = name

    def __repr__(self) -> str:
        return f"<namespace {self.name}>"

    # --- builders ---------------------------------------------------------------------------

    def instance(self, name: str = "alice", *, memory: str | None = None) -> Obj:
        if memory is not None:
            self.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": f"{name}-memory", "namespace": self.name,
                                          "labels": {"sympozium.ai/component": "memory"}},
                             "data": {"MEMORY.md": memory}})
        return self.api.create({"apiVersion": API_VERSION, "kind": "SympoziumInstance",
                                "metadata": {"name": name, "namespace": self.name},
                                "spec": {"agents": {"default": {"model": "gpt-4o"}},
                                         "authRefs": [{"provider": "openai", "secret": "openai-key"}]}})

    def schedule(self, name: str, schedule: str, *, instance: str = "alice", task: str = "Check in.",
                 **spec: Any) -> Obj:
        return self.api.create({"apiVersion": API_VERSION, "kind": "SympoziumSchedule",
                                "metadata": {"name": name, "namespace": self.name},
                                "spec": {"instanceRef": instance, "schedule": schedule, "task": task} | spec})

    def agent_run(self, name: str, *, labels: Mapping[str, str] | None = None) -> Obj:
        """An AgentRun made by someone else (a person, another tool)."""
        return self.api.create({
            "apiVersion": API_VERSION, "kind": "AgentRun",
            "metadata": {"name": name, "namespace": self.name, "labels": dict(labels or {})},
            "spec": {"instanceRef": "alice", "agentId": "someone", "sessionKey": name,
                     "task": "Not a scheduled run.",
                     "model": {"provider": "openai", "model": "gpt-4o", "authSecretRef": ""}}})

    def edit(self, name: str, **spec: Any) -> Obj:
        return self.api.patch("sympoziumschedules", name, {"spec": spec}, namespace=self.name)

    def finish(self, run: str, phase: str) -> Obj:
        """What Sympozium's run controller does when a run ends."""
        return self.api.patch("agentruns", run, {"status": {"phase": phase}}, namespace=self.name,
                              status=True)

    # --- reads --------------------------------------------------------------------------------

    def get(self, name: str) -> Obj:
        found = self.api.get("sympoziumschedules", name, namespace=self.name)
        assert found is not None, f"schedule {name} is gone"
        return found

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == kind), None)

    def runs(self, schedule: str | None = None) -> list[Obj]:
        """The AgentRuns (of one schedule), oldest tick first."""
        labels = {"sympozium.ai/schedule": schedule} if schedule else None
        found = self.api.list("agentruns", namespace=self.name, labels=labels)
        return sorted(found, key=lambda r: (r["metadata"].get("annotations") or {}).get(SCHEDULED_TIME, ""))

    def run_names(self, schedule: str | None = None) -> list[str]:
        return [r["metadata"]["name"] for r in self.runs(schedule)]

    def events(self, involved: str | None = None, *, reason: str | None = None) -> list[Obj]:
        return [e for e in self.api.list("events", namespace=self.name)
                if (involved is None or e["involvedObject"]["name"] == involved)
                and (reason is None or e["reason"] == reason)]

    def wait(self, check: Callable[[], Any], what: str, *, timeout: float = TIMEOUT) -> Any:
        return wait_until(check, timeout=timeout, what=f"{what} in {self.name}")

    def wait_runs(self, schedule: str, count: int, *, timeout: float = TIMEOUT) -> list[Obj]:
        def enough() -> list[Obj] | None:
            runs = self.runs(schedule)
            return runs if len(runs) >= count else None

        found: list[Obj] = self.wait(enough, f"{count} runs of {schedule}", timeout=timeout)
        return found

    def delete_schedules(self) -> None:
        """Stop everything firing here (the runs go with their schedules)."""
        for obj in self.api.list("sympoziumschedules", namespace=self.name):
            self.api.delete("sympoziumschedules", obj["metadata"]["name"], namespace=self.name)


# --- CRD schemas -----------------------------------------------------------------------------


def _closed(node: Any) -> Any:
    """An openAPIV3Schema as JSON Schema with every declared object closed: a field the CRD
    lacks would be pruned by the API server without an error, so here it is one."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(filename: str) -> Draft202012Validator:
    schema = _closed(manifests.crd_schema(filename))
    schema["properties"]["metadata"] = {"type": "object"}
    return Draft202012Validator(schema)


def crd_problems(obj: Obj, filename: str) -> list[str]:
    """What the (closed) CRD schema finds wrong with ``obj``."""
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in _validator(filename).iter_errors(obj)]


def without_nulls(value: Any) -> Any:
    """A merge patch without its deletions (``null``: remove the key), for validation."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# --- self-scheduling: NATS and an agent's side ------------------------------------------------


class Agent:
    """One agent run's side of self-scheduling: its IPC folder, the bridge sidecar (a task on
    the test's loop) and the schedule_task tool as a model calls it."""

    def __init__(self, ipc: Path, bridge: Bridge, task: asyncio.Task[None]):
        self.ipc = ipc
        self.bridge = bridge
        self.task = task

    @classmethod
    async def start(cls, root: Path, *, nats_url: str, instance: str, namespace: str,
                    run: str = "agent-run-1") -> Agent:
        ipc = root / run / "ipc"
        bridge = Bridge(BridgeSettings(ipc_path=ipc, agent_run_id=run, instance=instance,
                                       namespace=namespace, nats_url=nats_url))
        agent = cls(ipc, bridge, asyncio.create_task(bridge.run(), name=run))
        # The bridge has no readiness signal; a file it answers by itself (not JSON) shows
        # that it watches the folder and follows its results.
        probe = ipc / "schedules" / "probe.json"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("not json")
        await until(lambda: result_path(probe).exists() or agent.task.done(), what="the bridge")
        assert not agent.task.done(), agent.task
        return agent

    async def ask(self, **arguments: Any) -> dict[str, Any]:
        """The tool blocks while it waits for the answer: a thread, so the bridge runs."""
        answer: dict[str, Any] = await asyncio.to_thread(
            functools.partial(schedule_task, ipc_path=self.ipc, wait=TIMEOUT, **arguments))
        return answer

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def cluster(cluster_plane: ControlPlane) -> Cluster:
    """The session's real API server."""
    return Cluster(cluster_plane)


@pytest.fixture
def processes(cluster: Cluster, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(cluster, tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def space(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Space]:
    """A fresh namespace; its schedules are deleted afterwards (their runs go with them)."""
    name = namespace_for(request.node.name)
    cluster.api().namespace(name)
    space = Space(cluster, cluster.api(), name)
    try:
        yield space
    finally:
        space.delete_schedules()


# --- the emulator, for the faults a real server cannot produce on cue ---------------------------


@pytest.fixture
def emulated() -> Iterator[ApiServer]:
    with ApiServer() as api_server:
        yield api_server


@pytest.fixture
def emulated_processes(emulated: ApiServer, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(emulated, tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    """A real NATS server (JetStream on), for one test."""
    server = EmbeddedNats(tmp_path / "nats")
    try:
        yield await server.start()
    finally:
        await server.stop()
