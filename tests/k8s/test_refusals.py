"""A write the API server refuses for good, other than a run's create (see
test_controller.py::test_a_forbidden_create_is_reported_once_and_each_tick_tries_once): the
controller runs as a ServiceAccount whose ClusterRole is the shipped one without ``patch`` on
``sympoziumschedules/status``, so every status write is 403. It must say so once (a log line
and one Warning Event) and try again only at its longest back-off, never crash, never double a
run; it used to retry at once, then every 0.5, 1, 2, 4 ... s as if the API were down."""

from __future__ import annotations

import time

from sympozium_schedule.manifests import generate
from tests.k8s.conftest import INSTALL_NAMESPACE, Cluster, Processes, Space
from tests.kube.controlplane import ApiError

USER = "no-status-patch"


def bind_without_status_patch(cluster: Cluster) -> None:
    api = cluster.api()
    rules = [r for r in generate.rbac_rules() if r["resources"] != ["sympoziumschedules/status"]]
    assert len(rules) == len(generate.rbac_rules()) - 1
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    for path, obj in (
        (f"{rbac}/clusterroles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                  "metadata": {"name": f"test-{USER}"}, "rules": rules}),
        (f"/api/v1/namespaces/{INSTALL_NAMESPACE}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": USER}}),
        (f"{rbac}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"test-{USER}"},
            "subjects": [{"kind": "ServiceAccount", "name": USER, "namespace": INSTALL_NAMESPACE}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": f"test-{USER}"}}),
    ):
        try:
            api.request("POST", path, obj)
        except ApiError as exc:
            if exc.code != 409:
                raise


def test_a_refused_status_write_is_said_once_and_retried_only_at_the_longest_back_off(
        cluster: Cluster, processes: Processes, space: Space) -> None:
    bind_without_status_patch(cluster)
    cluster.token(USER, bind=False)  # its own ClusterRole only, not the shipped roles
    ctl = processes.controller(USER, args=("-n", space.name))
    space.instance()
    space.schedule("hb", "@every 1h")
    space.wait_runs("hb", 1)
    event = space.wait(lambda: space.events("hb", reason="StoreRefused"), "the Warning Event")[0]
    assert event["type"] == "Warning"
    assert "forbidden" in event["message"]
    mark = cluster.mark()
    time.sleep(6.0)  # the old back-off would have tried 4 more times by now
    patches = [c for c in ctl.calls(since=mark) if c.resource == "sympoziumschedules/status"]
    assert len(patches) <= 1, [round(c.at, 1) for c in patches]
    assert len(space.events("hb", reason="StoreRefused")) == 1
    assert len(space.runs("hb")) == 1, "the run is not created twice"
    refusals = [line for line in ctl.logs() if "refused" in str(line.get("event"))]
    assert len(refusals) == 1, refusals
    assert ctl.alive, ctl.log_tail()
