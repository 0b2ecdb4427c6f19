"""The real controller process (``sympozium-schedule run --kubernetes``, as the shipped
ServiceAccount under the shipped RBAC) against a real kube-apiserver: what it creates, what it
writes where, how it survives watches the server ends and a 410 Gone, what it costs in API
requests, how it reports what it may not do, and a second replica without leader election
(leader election: test_leader.py).

The tests share one controller (``cluster``, one per module: a start-up is a second of CPU)
and each gets a namespace of its own, so the controller is idle again after each; a second
replica joins it where a test needs one (``extra``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.core.model import API_VERSION, parse_time
from sympozium_schedule.manifests import generate
from tests.k8s.conftest import (
    TIMEOUT,
    Cluster,
    Process,
    Processes,
    Space,
    crd_problems,
    namespace_for,
    scheduled_time,
    ticks,
    without_nulls,
)
from tests.kube.controlplane import MIN_REQUEST_TIMEOUT, Call, ControlPlane, Obj

AGENT_RUNS_CRD = "sympozium.ai_agentruns.yaml"
SCHEDULES_CRD = "sympozium.ai_sympoziumschedules.yaml"
QUIET = 2.5  # a window in which an idle controller must not read or write anything


@dataclass
class Shared:
    server: Cluster
    controller: Process


@pytest.fixture(scope="module")
def cluster(cluster_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    server = Cluster(cluster_plane)
    processes = Processes(server, tmp_path_factory.mktemp("controller"))
    try:
        yield Shared(server, processes.controller())
    finally:
        processes.close()


@pytest.fixture
def extra(cluster: Shared, tmp_path: Path) -> Iterator[Processes]:
    """More processes on the shared cluster, for one test."""
    processes = Processes(cluster.server, tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def ns(cluster: Shared, request: pytest.FixtureRequest) -> Iterator[Space]:
    """A fresh namespace; its schedules are deleted afterwards, so the next test finds the
    controller idle. (``cluster`` here is this module's: the API server and one controller.)"""
    name = namespace_for(request.node.name)
    cluster.server.api().namespace(name)
    space = Space(cluster.server, cluster.server.api(), name)
    try:
        yield space
        assert cluster.controller.alive, cluster.controller.log_tail()
    finally:
        space.delete_schedules()


def calls_in(process: Process, space: Space, resource: str | None = None, verb: str | None = None,
             ) -> list[Call]:
    """The process's calls in the namespace (to one resource, with one verb)."""
    return [c for c in process.calls() if c.namespace == space.name
            and (resource is None or c.resource == resource) and (verb is None or c.verb == verb)]


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def consecutive(seconds: list[int]) -> bool:
    return seconds == list(range(seconds[0], seconds[0] + len(seconds)))


def ref(space: Space, name: str) -> dict[str, str]:
    return {"apiVersion": API_VERSION, "kind": "AgentRun", "name": name, "namespace": space.name}


# --- firing ------------------------------------------------------------------------------------


def test_a_schedule_fires_runs_that_sympoziums_crd_accepts_with_the_memory_in_front(
        cluster: Shared, ns: Space) -> None:
    ns.instance("alice", memory="Prefers short answers.")
    schedule = ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow", type="heartbeat")
    runs = ns.wait_runs("hb", 2)
    assert consecutive(ticks(runs))
    for run in runs:
        meta = run["metadata"]
        assert meta["name"] == f"hb-{int(scheduled_time(run).timestamp())}"
        assert meta["labels"] == {"sympozium.ai/instance": "alice", "sympozium.ai/schedule": "hb",
                                  "sympozium.ai/type": "heartbeat"}
        assert meta["ownerReferences"] == [{
            "apiVersion": API_VERSION, "kind": "SympoziumSchedule", "name": "hb",
            "uid": schedule["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        assert run["spec"]["task"] == "## Memory Context\nPrefers short answers.\n\n## Task\nCheck in."
        assert run["spec"]["model"] == {"provider": "openai", "model": "gpt-4o",
                                        "authSecretRef": "openai-key"}
    # As sent, before the API server could prune anything: every field is in Sympozium's CRD.
    sent = [c.body for c in calls_in(cluster.controller, ns, "agentruns", "create")]
    assert len(sent) >= 2
    for body in sent:
        assert crd_problems(body, AGENT_RUNS_CRD) == []
    # The memory is read from the informer's cache: an edit shows in the next run.
    ns.api.patch("configmaps", "alice-memory", {"data": {"MEMORY.md": "Now prefers long answers."}},
                 namespace=ns.name)
    ns.wait(lambda: ns.runs("hb")[-1]["spec"]["task"].startswith("## Memory Context\nNow prefers long"),
            "a run with the edited memory")


def test_status_is_written_through_the_status_subresource_only(cluster: Shared, ns: Space) -> None:
    ns.instance()
    schedule = ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    status = ns.wait(lambda: (s := ns.status("hb")).get("totalRuns", 0) >= 2 and s, "two fires in the status")
    assert status["phase"] == "Active"
    assert status["observedGeneration"] == 1
    last = parse_time(status["lastRunTime"])
    assert last is not None
    assert status["lastRunName"] == f"hb-{int(last.timestamp())}"
    ready = ns.condition("hb", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    calls = calls_in(cluster.controller, ns)
    patches = [c for c in calls if c.resource == "sympoziumschedules/status"]
    assert patches
    assert {c.verb for c in patches} == {"patch"}
    assert all(c.body["metadata"]["resourceVersion"] for c in patches), "each is conditional"
    for patch in patches:  # as sent: every status field the controller writes is in the CRD
        obj = {"apiVersion": API_VERSION, "kind": "SympoziumSchedule", "metadata": {},
               "spec": schedule["spec"], "status": without_nulls(patch.body["status"])}
        assert crd_problems(obj, SCHEDULES_CRD) == []
    assert [c for c in calls if c.resource == "sympoziumschedules" and c.write] == []


def test_metrics_and_probes(cluster: Shared, ns: Space) -> None:
    ctl = cluster.controller
    fired = ctl.metric("sympozium_schedule_fires_total", trigger="schedule")
    lagged = ctl.metric("sympozium_schedule_fire_lag_seconds_count")
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait_runs("hb", 2)
    ns.wait(lambda: ctl.metric("sympozium_schedule_fires_total", trigger="schedule") >= fired + 2,
            "the fires counted")
    assert ctl.metric("sympozium_schedule_fire_lag_seconds_count") >= lagged + 2
    assert ctl.metric("sympozium_schedule_fire_lag_seconds_sum") > 0
    assert ctl.metric("sympozium_schedules", phase="Active") >= 1
    assert ctl.get("/healthz").status == 200
    assert ctl.get("/readyz").status == 200
    assert ctl.get("/leaderz").status == 200, "without leader election it always leads"


# --- concurrency policies ------------------------------------------------------------------------


def test_forbid_skips_ticks_while_its_run_is_unfinished(cluster: Shared, ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1s")  # Forbid is the default
    (first,) = ns.wait_runs("hb", 1)
    name = first["metadata"]["name"]

    def skipped() -> dict[str, str] | None:
        condition = ns.condition("hb", "TickSkipped")
        return condition if condition and condition["status"] == "True" else None

    condition = ns.wait(skipped, "a skipped tick")
    assert condition["reason"] == "ConcurrencyPolicyForbid"
    assert name in condition["message"]
    event = ns.wait(lambda: ns.events("hb", reason="TickSkipped"), "a TickSkipped event")[0]
    assert event["type"] == "Normal"
    assert ns.run_names("hb") == [name]
    status = ns.status("hb")
    assert status["lastScheduleTime"] > status["lastRunTime"], "a skip moves the cursor on"
    assert status["active"] == [ref(ns, name)]
    assert cluster.controller.metric("sympozium_schedule_skips_total", reason="ConcurrencyPolicyForbid") >= 1
    ns.finish(name, "Succeeded")  # Sympozium's run controller: the run is done
    ns.wait_runs("hb", 2)
    ns.wait(lambda: (c := ns.condition("hb", "TickSkipped")) and c["status"] == "False"
            and c["reason"] == "RunCreated", "the skip condition to clear")


def test_allow_starts_runs_beside_unfinished_ones(ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait_runs("hb", 3)

    def every_run_active() -> bool:
        names = ns.run_names("hb")
        active = [a["name"] for a in ns.status("hb").get("active") or []]
        return len(names) >= 3 and sorted(active) == sorted(names)

    ns.wait(every_run_active, "status.active to list every unfinished run")
    assert consecutive(ticks(ns.runs("hb")))


def test_replace_deletes_the_unfinished_run_for_the_new_one(cluster: Shared, ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Replace")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 3, "three fires")

    def only_the_latest() -> bool:
        status = ns.status("hb")
        return (ns.run_names("hb") == [status["lastRunName"]]
                and status.get("active") == [ref(ns, status["lastRunName"])])

    ns.wait(only_the_latest, "only the latest run to be left")
    deleted = [c.name for c in calls_in(cluster.controller, ns, "agentruns", "delete")]
    assert len(deleted) >= 2
    assert ns.status("hb")["lastRunName"] not in deleted
    assert ns.wait(lambda: ns.events("hb", reason="RunReplaced"), "a RunReplaced event")


def test_suspend_stops_the_fires_and_resume_does_not_replay_the_pause(ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait_runs("hb", 1)
    ns.edit("hb", suspend=True)
    status = ns.wait(lambda: (s := ns.status("hb")).get("phase") == "Suspended" and s, "phase Suspended")
    assert "nextRunTime" not in status
    ready = ns.condition("hb", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    before = ns.run_names("hb")
    time.sleep(1.5)  # a tick or two go by while suspended
    assert ns.run_names("hb") == before
    resumed_at = time.time()
    ns.edit("hb", suspend=False)
    runs = ns.wait_runs("hb", len(before) + 1)
    new = [r for r in runs if r["metadata"]["name"] not in before]
    assert all(scheduled_time(r).timestamp() >= int(resumed_at) for r in new), "no tick of the pause fires"
    ns.wait(lambda: ns.status("hb").get("phase") == "Active", "phase Active")
    reasons = [e["reason"] for e in ns.events("hb")]
    assert "Suspended" in reasons
    ns.wait(lambda: ns.events("hb", reason="Scheduled"), "a Scheduled event on resume")


# --- errors a person must fix --------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "reason", "fix"), [
    pytest.param({"schedule": "61 * * * *"}, "InvalidSchedule", "schedule", id="invalid-cron"),
    pytest.param({"schedule": "@every 1s", "timeZone": "Mars/Olympus"}, "InvalidTimeZone", "zone",
                 id="invalid-time-zone"),
    pytest.param({"schedule": "@every 1s", "instance": "ghost"}, "InstanceNotFound", "instance",
                 id="missing-instance"),
])
def test_a_broken_schedule_is_an_error_that_clears_once_fixed(
        ns: Space, spec: dict[str, str], reason: str, fix: str) -> None:
    ns.instance()
    ns.schedule("hb", **spec)
    status = ns.wait(lambda: (s := ns.status("hb")).get("phase") == "Error" and s, "phase Error")
    assert "nextRunTime" not in status
    ready = ns.condition("hb", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert "spec." in ready["message"], "the message names the field to fix"
    event = ns.wait(lambda: ns.events("hb", reason=reason), f"a {reason} event")[0]
    assert event["type"] == "Warning"
    assert ns.runs("hb") == []
    if fix == "schedule":
        ns.edit("hb", schedule="@every 1s")
    elif fix == "zone":
        ns.edit("hb", timeZone="Europe/Warsaw")
    else:
        ns.instance("ghost")
    (run,) = ns.wait_runs("hb", 1)
    ns.wait(lambda: (c := ns.condition("hb", "Ready")) and c["status"] == "True", "Ready again")
    assert ns.status("hb")["phase"] == "Active"
    assert run["spec"]["instanceRef"] == spec.get("instance", "alice")


def test_history_limits_delete_the_oldest_finished_runs(cluster: Shared, ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow", successfulRunsHistoryLimit=1,
                failedRunsHistoryLimit=1)
    first, second, third, fourth = [r["metadata"]["name"] for r in ns.wait_runs("hb", 4)[:4]]
    for name, phase in ((first, "Succeeded"), (second, "Succeeded"), (third, "Failed"), (fourth, "Failed")):
        ns.finish(name, phase)
    ns.wait(lambda: not {first, third} & set(ns.run_names("hb")), "the older finished runs to go")
    assert {second, fourth} <= set(ns.run_names("hb")), "the newest of each kind stays"
    deleted = {c.name for c in calls_in(cluster.controller, ns, "agentruns", "delete")}
    assert deleted == {first, third}


# --- faults --------------------------------------------------------------------------------------


def created_once(process: Process, ns: Space) -> list[str]:
    """The runs the process created (a create that found the name taken created nothing),
    each of which it created once."""
    names = [c.body["metadata"]["name"] for c in calls_in(process, ns, "agentruns", "create")
             if c.code == 201]
    assert len(names) == len(set(names))
    return sorted(names)


def snapshot(ns: Space, name: str) -> tuple[dict[str, Any], list[Obj]]:
    """The status and the runs of a firing schedule, read when they agree on the newest run
    (runs first, then status: a fire in between shows as a mismatch, and we look again).
    An edit to stop the schedule would race with a fire; reading between fires does not."""
    def consistent() -> tuple[dict[str, Any], list[Obj]] | None:
        runs = ns.runs(name)
        status = ns.status(name)
        return (status, runs) if runs and status.get("lastRunName") == runs[-1]["metadata"]["name"] else None

    found: tuple[dict[str, Any], list[Obj]] = ns.wait(consistent, "the status to agree with the runs")
    return found


# --- watches the server ends -----------------------------------------------------------------------


def test_watches_the_server_ends_and_a_410_gone_lose_no_fire_and_double_none(
        cluster: Shared, ns: Space) -> None:
    """The API server ends every watch after --min-request-timeout (10-20 s here, 30-60 min in
    clusters): each informer re-opens it from the last version it saw. Compacting etcd makes
    the ConfigMap watch (served without the watch cache) answer its re-open with 410 Gone: that
    informer relists. Fires go on throughout, none lost, none doubled."""
    server, ctl = cluster.server, cluster.controller
    ns.instance("alice", memory="Before.")
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait_runs("hb", 1)
    mark = server.mark()
    server.plane.compact()

    def reopened() -> bool:
        since = ctl.calls(since=mark)
        watched = {c.resource for c in since if c.verb == "watch"}
        return watched >= {"sympoziumschedules", "agentruns", "sympoziuminstances", "configmaps"} and any(
            (c.verb, c.resource) == ("list", "configmaps") for c in since)

    ns.wait(reopened, "every watch re-opened and the ConfigMaps relisted after the 410",
            timeout=2 * MIN_REQUEST_TIMEOUT + TIMEOUT)
    # The relisted ConfigMap informer is current: an edit shows in the next run.
    ns.api.patch("configmaps", "alice-memory", {"data": {"MEMORY.md": "After."}}, namespace=ns.name)
    ns.wait(lambda: ns.runs("hb")[-1]["spec"]["task"].startswith("## Memory Context\nAfter."),
            "a run with the edited memory")
    status, runs = snapshot(ns, "hb")
    seconds = ticks(runs)
    assert consecutive(seconds), f"a tick missed or doubled: {seconds}"
    assert status["totalRuns"] == len(runs)
    lists = [c.resource for c in ctl.calls(since=mark) if c.verb == "list"]
    assert "sympoziumschedules" not in lists, "the cached watches resumed without a relist"
    assert ctl.alive, ctl.log_tail()


# --- what it costs -------------------------------------------------------------------------------


def test_an_idle_controller_only_keeps_its_watches_open(cluster: Shared, ns: Space) -> None:
    """Nothing due: no reads, no writes; the only requests are watches the server ended being
    re-opened (without leader election: see test_leader.py for the Lease's cost)."""
    ns.instance()
    ns.schedule("hb", "@every 1h")
    ns.wait_runs("hb", 1)
    ns.wait(lambda: ns.status("hb").get("totalRuns") == 1, "the fire in the status")
    ns.wait(lambda: ns.events("hb", reason="RunCreated"), "the fire's event")
    mark = cluster.server.mark()
    time.sleep(QUIET)
    assert [c for c in cluster.controller.calls(since=mark) if c.verb != "watch"] == []
    assert cluster.server.open_watches(cluster.controller.user) == 4, "only its four watches stay open"


def test_a_fire_costs_one_create_and_one_status_patch_plus_its_event(cluster: Shared, ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 1, "the first fire")
    mark = cluster.server.mark()
    fired = ns.status("hb")["totalRuns"]
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= fired + 2, "two more fires")
    calls = [c for c in cluster.controller.calls(since=mark) if c.verb != "watch"]
    assert {c.namespace for c in calls} == {ns.name}
    assert [c for c in calls if not c.write] == [], "a fire reads nothing from the API"
    writes = [(c.resource, c.verb) for c in calls if c.resource != "events"]
    # Fires caught half way at either end of the window:
    if writes and writes[0] == ("sympoziumschedules/status", "patch"):
        writes.pop(0)
    if writes and writes[-1] == ("agentruns", "create"):
        writes.pop()
    fires = len(writes) // 2
    assert fires >= 1
    assert writes == [("agentruns", "create"), ("sympoziumschedules/status", "patch")] * fires
    events = [c for c in calls if c.resource == "events"]
    assert {c.verb for c in events} == {"create"}
    assert fires - 1 <= len(events) <= fires + 2, "one RunCreated Event per fire, written off the fire path"


def test_every_request_names_sympozium_schedule_and_is_allowed(cluster: Shared, ns: Space) -> None:
    """The User-Agent lets a cluster's audit log attribute the controller's requests; under
    the shipped RBAC none of them is refused."""
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Replace")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 2, "two fires")
    calls = cluster.controller.calls()
    assert calls
    assert {c.user_agent for c in calls} == {f"sympozium-schedule/{generate.project_version()} (controller)"}
    assert [c for c in calls if c.decision != "allow" or c.code == 403] == []


# --- two replicas ------------------------------------------------------------------------------


def test_without_leader_election_two_replicas_still_create_each_run_once(
        cluster: Shared, extra: Processes, ns: Space) -> None:
    """A second controller without leader election beside the shared one: the run names
    from the tick keep every tick to one run, and the status counts each once."""
    second = extra.controller("replica-b")
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait_runs("hb", 3)
    status, runs = snapshot(ns, "hb")
    seconds = ticks(runs)
    assert consecutive(seconds), f"a tick missed or doubled: {seconds}"
    assert status["totalRuns"] == len(runs)
    creates = [c for process in (cluster.controller, second)
               for c in calls_in(process, ns, "agentruns", "create")]
    # (None: a create the snapshot caught between storing the run and answering.)
    assert {c.code for c in creates} <= {201, 409, None}, "a lost race is AlreadyExists"
    created = [c.body["metadata"]["name"] for c in creates if c.code in (201, None)]
    assert len(created) == len(set(created))
    assert {r["metadata"]["name"] for r in runs} <= set(created)


# --- what the API server refuses for good --------------------------------------------------------


def test_a_forbidden_create_is_reported_once_and_each_tick_tries_once(cluster: Shared, ns: Space) -> None:
    """A quota that allows no AgentRun: every create is 403 Forbidden, which retrying cannot
    fix. Each tick is reported as skipped (TickSkipped, reason RunForbidden) and tried once,
    with one Warning Event while the cause persists (it used to be retried as a temporary
    error, on a fast back-off, forever); once the quota goes, the next tick fires."""
    quota = f"/api/v1/namespaces/{ns.name}/resourcequotas"
    hard = {"count/agentruns.sympozium.ai": "0"}
    ns.api.request("POST", quota, {"apiVersion": "v1", "kind": "ResourceQuota",
                                   "metadata": {"name": "no-runs"}, "spec": {"hard": hard}})
    # No quota controller runs here: the status it would write is written by hand.
    ns.api.request("PATCH", f"{quota}/no-runs/status", {"status": {"hard": hard, "used": {
        "count/agentruns.sympozium.ai": "0"}}}, content_type="application/merge-patch+json")
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    condition = ns.wait(lambda: (c := ns.condition("hb", "TickSkipped")) and c["reason"] == "RunForbidden"
                        and c, "the TickSkipped condition")
    assert "forbidden" in condition["message"]
    assert "exceeded quota" in condition["message"]
    ctl = cluster.controller
    mark = cluster.server.mark()
    started = time.monotonic()
    time.sleep(3.5)  # three or four ticks, each refused
    window = time.monotonic() - started
    creates = [c for c in ctl.calls(since=mark) if (c.resource, c.verb) == ("agentruns", "create")]
    assert {c.code for c in creates} == {403}
    assert 2 <= len(creates) <= window + 2, f"{len(creates)} creates in {window:.1f}s: one a tick"
    warnings = ns.events("hb", reason="RunForbidden")
    assert len(warnings) == 1, [e["message"] for e in warnings]
    assert warnings[0]["type"] == "Warning"
    assert ns.runs("hb") == []
    assert ctl.alive, ctl.log_tail()

    ns.api.request("DELETE", f"{quota}/no-runs")
    ns.wait_runs("hb", 1)
    ns.wait(lambda: (c := ns.condition("hb", "TickSkipped")) and c["status"] == "False",
            "the condition to clear")
