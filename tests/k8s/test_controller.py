"""The real controller process (``sympozium-schedule run --kubernetes``) against the emulated
API: what it creates, what it writes where, how it survives watch faults, what it costs in
API calls, and two replicas with and without leader election.

Most tests share one controller (``cluster``, one per module: a start-up is a second of CPU)
and each gets a namespace of its own, so the controller is idle again after each; a second
replica joins it where a test needs one (``extra``). Only the fail-over test, whose leader
must be the one killed, has an API server and both replicas of its own.

Two tests here fail on purpose: they expose bugs in src/ (see their docstrings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.core.model import API_VERSION, parse_time
from tests.k8s.conftest import (
    LEASE_NAMESPACE,
    TIMEOUT,
    Process,
    Processes,
    Space,
    crd_problems,
    namespace_for,
    scheduled_time,
    ticks,
    wait_until,
    without_nulls,
)
from tests.k8s.emulator import ApiServer, Call, Obj, api_error

AGENT_RUNS_CRD = "sympozium.ai_agentruns.yaml"
SCHEDULES_CRD = "sympozium.ai_sympoziumschedules.yaml"
SCHEDULES = "sympozium.ai/v1alpha1/sympoziumschedules"
# What run_kubernetes gives LeaseElector (client-go's defaults): a standby takes over once
# the Lease has gone unrenewed this long, checking every RETRY_PERIOD.
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0
QUIET = 2.5  # a window in which an idle controller must not call the API at all


@dataclass
class Cluster:
    server: ApiServer
    controller: Process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with ApiServer() as server:
        processes = Processes(server, tmp_path_factory.mktemp("controller"))
        try:
            yield Cluster(server, processes.controller("controller"))
        finally:
            processes.close()


@pytest.fixture
def extra(cluster: Cluster, tmp_path: Path) -> Iterator[Processes]:
    """More processes on the shared cluster, for one test."""
    processes = Processes(cluster.server, tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def ns(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Space]:
    """A namespace of the shared cluster; its schedules are deleted afterwards, so the next
    test finds the controller idle."""
    api = cluster.server.api()
    space = Space(cluster.server, api, namespace_for(request.node.name))
    try:
        yield space
        assert cluster.controller.alive, cluster.controller.log_tail()
    finally:
        space.delete_schedules()
        api.close()


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
        cluster: Cluster, ns: Space) -> None:
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


def test_status_is_written_through_the_status_subresource_only(cluster: Cluster, ns: Space) -> None:
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


def test_metrics_and_probes(cluster: Cluster, ns: Space) -> None:
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


def test_forbid_skips_ticks_while_its_run_is_unfinished(cluster: Cluster, ns: Space) -> None:
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


def test_replace_deletes_the_unfinished_run_for_the_new_one(cluster: Cluster, ns: Space) -> None:
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


def test_history_limits_delete_the_oldest_finished_runs(cluster: Cluster, ns: Space) -> None:
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


def status_patches_in(ns: Space, user: str) -> Callable[[Call], bool]:
    return lambda c: (c.user, c.namespace, c.resource) == (user, ns.name, "sympoziumschedules/status")


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


def test_a_conflicting_write_before_the_status_write_neither_doubles_nor_loses_a_run(
        cluster: Cluster, ns: Space) -> None:
    """Someone writes the schedule between the controller's decision and its status write:
    the conditional patch gets 409 Conflict, and the controller reads the schedule again and
    records the run it already created (no second run, the count right)."""
    ctl = cluster.controller
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 1, "the first fire")
    edit = {"metadata": {"labels": {"edited-by": "someone"}}}
    fault = cluster.server.inject(  # someone writes the schedule between the decision and its status
        status_patches_in(ns, ctl.user), api_error(409, "Conflict", "the object has been modified"),
        before=lambda emu: emu.write(SCHEDULES, ns.name, "hb", edit))
    ns.wait(lambda: fault.hits, "the conflict")
    ns.wait_runs("hb", len(ns.runs("hb")) + 1)
    status, runs = snapshot(ns, "hb")
    assert consecutive(ticks(runs))
    assert status["totalRuns"] == len(runs)
    assert {r["metadata"]["name"] for r in runs} <= set(created_once(ctl, ns))
    assert calls_in(ctl, ns, "sympoziumschedules", "get"), "a conflict is resolved by reading again"
    assert ns.get("hb")["metadata"]["labels"] == {"edited-by": "someone"}


def test_runs_created_while_status_writes_fail_are_all_counted(cluster: Cluster, ns: Space) -> None:
    """Status writes failing for longer than the interval (503 on /status for 2.2 s, while
    creates succeed): every run created meanwhile must be counted once the status can be
    written again, as the core counts a run whose status write was lost ("Count it; never
    create a second one")."""
    ctl = cluster.controller
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 1, "the first fire")
    outage = cluster.server.inject(status_patches_in(ns, ctl.user),
                                   api_error(503, "ServiceUnavailable", "etcd is unavailable"), seconds=2.2)
    ns.wait(lambda: outage.hits and time.monotonic() > (outage.until or 0), "the end of the outage")
    status, runs = snapshot(ns, "hb")
    assert {r["metadata"]["name"] for r in runs} <= set(created_once(ctl, ns))
    assert status["totalRuns"] == len(runs), (
        f"status.totalRuns is {status['totalRuns']} but the schedule has {len(runs)} runs: "
        f"{[r['metadata']['name'] for r in runs]}")


# --- watch faults --------------------------------------------------------------------------------


def test_broken_and_expired_watches_lose_no_fire_and_double_none(cluster: Cluster, ns: Space) -> None:
    server, ctl = cluster.server, cluster.controller
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait_runs("hb", 1)

    def watching() -> bool:
        return server.open_watches(ctl.user) == 4

    mark = server.mark()
    assert server.break_watches() == 4  # clean ends: lightkube watches again where it stopped
    ns.wait_runs("hb", 2)
    ns.wait(watching, "the four informers watching again")
    server.compact()
    server.break_watches()  # resuming is refused (410 Gone): the informers relist
    ns.wait_runs("hb", 3)
    ns.wait(watching, "the four informers watching again")
    assert server.break_watches(gone=True) == 4  # a 410 Gone in the open streams
    ns.wait_runs("hb", 5)
    ns.wait(watching, "the four informers watching again")

    status, runs = snapshot(ns, "hb")
    seconds = ticks(runs)
    assert consecutive(seconds), f"a tick missed or doubled: {seconds}"
    assert status["totalRuns"] == len(runs)
    since = ctl.calls(since=mark)
    assert len([c for c in since if c.verb == "list"]) >= 4, "the 410s made the informers relist"
    assert len([c for c in since if c.verb == "watch"]) >= 12


# --- what it costs -------------------------------------------------------------------------------


def test_an_idle_controller_does_not_call_the_api(cluster: Cluster, ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1h")
    ns.wait_runs("hb", 1)
    ns.wait(lambda: ns.status("hb").get("totalRuns") == 1, "the fire in the status")
    ns.wait(lambda: ns.events("hb", reason="RunCreated"), "the fire's event")
    mark = cluster.server.mark()
    time.sleep(QUIET)
    assert cluster.controller.calls(since=mark) == []
    assert cluster.server.open_watches(cluster.controller.user) == 4, "only its four watches stay open"


def test_a_fire_costs_one_create_and_one_status_patch(cluster: Cluster, ns: Space) -> None:
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 1, "the first fire")
    mark = cluster.server.mark()
    fired = ns.status("hb")["totalRuns"]
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= fired + 2, "two more fires")
    calls = cluster.controller.calls(since=mark)
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


# --- two replicas ------------------------------------------------------------------------------


def standing_by(server: ApiServer, replica: Process) -> None:
    """Wait for a standby to be up (informers watching, the Lease looked at), by the API's
    record rather than its /readyz: see test_a_standby_replica_is_ready."""
    wait_until(lambda: server.open_watches(replica.user) == 4
               and any(c.resource == "leases" for c in replica.calls()),
               timeout=TIMEOUT, what=f"{replica} to stand by")
    assert replica.alive, replica.log_tail()


def test_a_standby_replica_is_ready(cluster: Cluster, extra: Processes) -> None:
    """A replica that finds the Lease held must still pass its readiness probe (run_kubernetes
    says so: "a standby counts as ready while it can reach the API"), or the Deployment's
    rollout never completes and its PodDisruptionBudget (maxUnavailable: 1) blocks every
    drain of the leader's node."""
    api = cluster.server.api()
    try:
        api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "sympozium-schedule", "namespace": LEASE_NAMESPACE},
                    "spec": {"holderIdentity": "the-leader", "leaseDurationSeconds": 3600,
                             "acquireTime": now_micro(), "renewTime": now_micro()}})
        standby = extra.controller("standby", leader_election=True, ready=False)
        standing_by(cluster.server, standby)
        deadline = time.monotonic() + 1.0  # its lease round is done: /readyz has what it needs
        probe = standby.get("/readyz")
        while probe.status != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            probe = standby.get("/readyz")
        assert standby.get("/leaderz").status == 503
        assert standby.get("/healthz").status == 200
        assert probe.status == 200, f"the standby's /readyz says {probe.status} {probe.body.strip()!r}"
    finally:
        extra.close()  # before the Lease goes: it must not lead the shared cluster
        api.delete("leases", "sympozium-schedule", namespace=LEASE_NAMESPACE)
        api.close()


def test_with_leader_election_one_replica_fires_and_the_other_takes_over_when_it_dies(
        server: ApiServer, processes: Processes, space: Space) -> None:
    a = processes.controller("replica-a", leader_election=True)
    space.wait(lambda: a.get("/leaderz").status == 200, "replica-a to lead")
    mark = server.mark()
    b = processes.controller("replica-b", leader_election=True, ready=False)
    # While nothing is scheduled the leader only renews its Lease.
    space.wait(lambda: ("leases", "update") in [(c.resource, c.verb) for c in a.calls(since=mark)],
               "a Lease renewal", timeout=RETRY_PERIOD + TIMEOUT)
    standing_by(server, b)
    assert {(c.resource, c.verb, c.namespace) for c in a.calls(since=mark)} <= {
        ("leases", "get", LEASE_NAMESPACE), ("leases", "update", LEASE_NAMESPACE)}
    assert b.get("/leaderz").status == 503, "a standby does not lead"
    standby_from = server.mark()

    space.instance()
    space.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    before = space.wait_runs("hb", 1)
    # Killed just before its next renewal, the Lease expires soonest: a shorter test (the
    # bound below holds wherever the kill falls).
    renewed = max(c.at for c in a.calls() if (c.resource, c.verb) == ("leases", "update"))
    time.sleep(max(0.0, renewed + RETRY_PERIOD - 0.3 - time.monotonic()))
    a.kill()
    killed_at = time.monotonic()
    space.wait(lambda: b.get("/leaderz").status == 200, "replica-b to take over",
               timeout=LEASE_DURATION + RETRY_PERIOD + TIMEOUT)
    took = time.monotonic() - killed_at
    # The Lease was last renewed at most RETRY_PERIOD before the kill; the standby looks
    # every RETRY_PERIOD: it leads within LEASE_DURATION + RETRY_PERIOD, plus load.
    assert took <= LEASE_DURATION + RETRY_PERIOD + 3.0, f"took {took:.1f}s"
    after = space.wait_runs("hb", len(before) + 1)

    calls_b = b.calls(since=standby_from)
    became = next(i for i, c in enumerate(calls_b) if (c.resource, c.verb) == ("leases", "update"))
    assert {(c.resource, c.verb) for c in calls_b[:became]} == {("leases", "get")}, "a standby only watches"
    creates = [c for c in server.calls() if (c.resource, c.verb) == ("agentruns", "create")]
    assert {c.code for c in creates} == {201}, "no replica ever tried a tick the other had fired"
    assert {c.user for c in creates if c.body["metadata"]["name"] in
            {r["metadata"]["name"] for r in before}} <= {"replica-a"}
    seconds = ticks(after)
    assert len(set(seconds)) == len(seconds)
    lease = space.api.get("leases", "sympozium-schedule", namespace=LEASE_NAMESPACE)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert b.stop() == 0, b.log_tail()  # SIGTERM: the leader gives the Lease back for the next one
    released = space.api.get("leases", "sympozium-schedule", namespace=LEASE_NAMESPACE)
    assert released is not None
    assert released["spec"]["holderIdentity"] == ""


def test_without_leader_election_two_replicas_still_create_each_run_once(
        cluster: Cluster, extra: Processes, ns: Space) -> None:
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
