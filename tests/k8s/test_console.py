"""The console under ``run --kubernetes`` on the real kube-apiserver: every request is
authenticated with TokenReview and authorized with SubjectAccessReview against the caller's
own RBAC, so the console never lets a person do what kubectl would not; the scheduler's
ServiceAccount does the reading and writing under the shipped RBAC (the Events panel
included)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.k8s.conftest import Cluster, Process, Processes, Space, namespace_for
from tests.kube.controlplane import ADMIN_TOKEN, INSTALL_NAMESPACE, ApiError, ControlPlane
from tests.support import free_port


@dataclass
class Console:
    process: Process
    url: str

    def call(self, method: str, path: str, *, token: str | None = None,
             body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return exc.code, json.loads(text) if text else None


@pytest.fixture(scope="module")
def console(cluster_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Cluster, Console]]:
    server = Cluster(cluster_plane)
    processes = Processes(server, tmp_path_factory.mktemp("console"))
    port = free_port()
    try:
        process = processes.controller(args=("--console-address", f"127.0.0.1:{port}"))
        yield server, Console(process, f"http://127.0.0.1:{port}")
    finally:
        processes.close()


@pytest.fixture
def ns(console: tuple[Cluster, Console], request: pytest.FixtureRequest) -> Iterator[Space]:
    server, _ = console
    name = namespace_for(request.node.name)
    server.api().namespace(name)
    space = Space(server, server.api(), name)
    space.instance("alice")
    try:
        yield space
    finally:
        space.delete_schedules()


def token_of(server: Cluster, name: str, *, rules: list[dict[str, Any]] | None = None,
             namespace: str | None = None) -> str:
    """A ServiceAccount of the test's own, bound to ``rules`` in ``namespace`` (none: no rights)."""
    api = server.api()
    with_sa = f"/api/v1/namespaces/{INSTALL_NAMESPACE}/serviceaccounts"
    for path, obj in [(with_sa, {"apiVersion": "v1", "kind": "ServiceAccount",
                                 "metadata": {"name": name, "namespace": INSTALL_NAMESPACE}})] + (
            [(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
              {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": namespace}, "rules": rules}),
             (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
              {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": namespace},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": INSTALL_NAMESPACE}],
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}})]
            if rules is not None else []):
        try:
            api.request("POST", path, obj)
        except ApiError as exc:
            if exc.code != 409:
                raise
    answer = api.request("POST", f"{with_sa}/{name}/token",
                         {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    return str(answer["status"]["token"])


def test_a_person_may_do_in_the_console_what_their_rbac_allows(
        console: tuple[Cluster, Console], ns: Space) -> None:
    server, ui = console
    ns.schedule("hb", "@every 1h", firstTick="afterInterval")
    q = f"?namespace={ns.name}"
    reader = token_of(server, f"reader-{ns.name}"[:63], namespace=ns.name, rules=[
        {"apiGroups": ["sympozium.ai"], "resources": ["sympoziumschedules"],
         "verbs": ["get", "list"]}])
    stranger = token_of(server, f"stranger-{ns.name}"[:63])

    status, listed = ui.call("GET", f"/api/v1/schedules{q}", token=ADMIN_TOKEN)
    assert status == 200, listed
    assert [o["metadata"]["name"] for o in listed] == ["hb"]
    status, body = ui.call("GET", f"/api/v1/schedules{q}")
    assert status == 401, body
    status, body = ui.call("GET", f"/api/v1/schedules{q}", token="not-a-token")
    assert status == 401, body

    status, listed = ui.call("GET", f"/api/v1/schedules{q}", token=reader)
    assert status == 200, listed
    status, body = ui.call("POST", f"/api/v1/schedules/hb/suspend{q}", token=reader,
                           body={"note": "not allowed"})
    assert status == 403, body
    assert "patch" in body["error"]
    status, body = ui.call("GET", f"/api/v1/schedules{q}", token=stranger)
    assert status == 403, body
    assert ns.get("hb")["spec"].get("suspend") is not True

    status, body = ui.call("POST", f"/api/v1/schedules/hb/suspend{q}", token=ADMIN_TOKEN,
                           body={"note": "maintenance"})
    assert status == 200, body
    spec = ns.get("hb")["spec"]
    assert (spec["suspend"], spec["suspendReason"]) == (True, "maintenance")
    assert "admin" in spec["suspendedBy"]


def test_the_events_panel_reads_as_the_scheduler(console: tuple[Cluster, Console],
                                                  ns: Space) -> None:
    _, ui = console
    ns.schedule("broken", "61 * * * *")
    ns.wait(lambda: ns.events("broken", reason="InvalidSchedule"), "the broken schedule's Event")
    status, events = ui.call("GET", f"/api/v1/schedules/broken/events?namespace={ns.name}",
                             token=ADMIN_TOKEN)
    assert status == 200, events
    assert [e["reason"] for e in events] == ["InvalidSchedule"]
