"""The install's RBAC against what the processes really call, on the real kube-apiserver.

One scenario drives every path that touches the API: the controller (the shipped
ServiceAccount, leader election on, its Lease where the install puts it by default) fires,
skips, replaces, prunes history, meets a run name someone else took, reports a broken
schedule, serves a console request for a schedule's Events, and gives its Lease back on
SIGTERM; then a sharded replica (``--shards 2``) lists the Leases, takes and renews its shard
and member Leases and gives them back; the router (another ServiceAccount bound to the same
shipped roles) creates, updates, suspends and deletes an agent's schedule, and finds an
instance's namespace for a bridge that sends none. The real RBAC authorizer must have allowed
every request (the audit log records its decision), and every verb the rules grant must have
been used: least privilege, checked both ways.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from sympozium_schedule.adapters.nats.bus import UPSERT_SUBJECT, Bus, envelope, result_subject
from sympozium_schedule.core.model import parse_time
from sympozium_schedule.manifests import generate
from tests.k8s.conftest import CONTROLLER, LEASE_NAMESPACE, Agent, Cluster, Processes, Space, until
from tests.kube.controlplane import ADMIN_TOKEN, ApiError
from tests.support import free_port

USERS = (CONTROLLER, "router")
# Granted but never requested: the API server checks it on the controller's behalf when a run's
# owner reference sets blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
CHECKED_NOT_CALLED = {("sympozium.ai", "sympoziumschedules/finalizers", "update")}


def granted() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every verb the install's rules grant."""
    return {(group, resource, verb)
            for rule in generate.rbac_rules() + generate.leader_election_rules()
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


def test_generate_permits_reads_the_rules_as_the_rbac_authorizer_does() -> None:
    """The oracle itself, on the cases the scenario below leans on."""
    assert generate.permits(verb="watch", group="sympozium.ai", resource="agentruns")
    assert generate.permits(verb="patch", group="sympozium.ai", resource="sympoziumschedules/status",
                            namespace="team-a", name="hb")
    assert not generate.permits(verb="patch", group="sympozium.ai", resource="sympoziumschedules",
                                namespace="team-a", name="hb")
    assert generate.permits(verb="update", group="coordination.k8s.io", resource="leases",
                            namespace=LEASE_NAMESPACE, name=generate.LEASE_NAME)
    assert not generate.permits(verb="update", group="coordination.k8s.io", resource="leases",
                                namespace=LEASE_NAMESPACE, name="another-lease")
    assert not generate.permits(verb="get", group="coordination.k8s.io", resource="leases",
                                namespace="default", name=generate.LEASE_NAME)


async def test_every_call_is_permitted_and_every_grant_is_used(
        cluster: Cluster, processes: Processes, space: Space, nats_url: str, tmp_path: Path) -> None:
    for lease in cluster.api().list("leases", namespace=LEASE_NAMESPACE):  # others' tests' too
        if lease["metadata"]["name"].startswith(generate.LEASE_NAME):
            cluster.api().delete("leases", lease["metadata"]["name"], namespace=LEASE_NAMESPACE)
    mark = cluster.mark()
    console_port = free_port()
    controller = processes.controller(leader_election=True,
                                      args=("--console-address", f"127.0.0.1:{console_port}"))
    space.wait(lambda: controller.get("/leaderz").status == 200, "the controller to lead")
    # (Its requests below include one on Sympozium's old, unscoped subject.)
    router = processes.router("router", nats_url, "--allow-unscoped-publishers")

    # --- the controller's paths ---------------------------------------------------------------
    space.instance("alice", memory="Prefers short answers.")
    space.schedule("forbid", "@every 1s")  # fires once, then skips (Events)
    space.schedule("replace", "@every 1s", concurrencyPolicy="Replace")  # deletes runs
    space.schedule("pruned", "@every 1s", concurrencyPolicy="Allow", successfulRunsHistoryLimit=0)
    space.schedule("broken", "61 * * * *")  # a Warning Event
    taken = space.schedule("taken", "@every 1s", concurrencyPolicy="Allow")
    created = parse_time(taken["metadata"]["creationTimestamp"])
    assert created is not None
    for tick in range(2, 7):  # names of ticks to come, taken by someone else
        name = f"taken-{int(created.timestamp()) + tick}"
        try:
            space.agent_run(name)
        except ApiError as exc:  # the controller got there first (a loaded machine): the next
            if exc.code != 409:
                raise

    # --- the router's paths, while the controller fires -----------------------------------------
    agent = await Agent.start(tmp_path / "runs", nats_url=nats_url, instance="alice", namespace=space.name)
    try:
        for request in ({"action": "create", "schedule": "@every 10m", "task": "Follow up."},
                        {"action": "update", "task": "Follow up again."},
                        {"action": "suspend"}, {"action": "delete"}):
            answer = await agent.ask(name="followup", **request)
            assert answer["status"] == "accepted", answer
    finally:
        await agent.stop()
    # A run of an instance the router's cache does not hold: the router asks the API server
    # (a get), which has none either.
    ghost = await Agent.start(tmp_path / "ghost-runs", nats_url=nats_url, instance="ghost",
                              namespace=space.name, run="ghost-run-1")
    try:
        answer = await ghost.ask(name="haunt", action="create", schedule="@every 10m", task="Boo.")
        assert answer["status"] == "rejected", answer
        assert "does not exist" in answer["message"], answer
    finally:
        await ghost.stop()
    # Sympozium's older bridge sends no namespace: the router looks the instance up (by a
    # name no other test's namespace has: the API server is shared by the session).
    solo = space.instance(f"solo-{space.name}"[:63].rstrip("-"))["metadata"]["name"]
    bus = await Bus.connect(nats_url, name="rbac-test")
    answers: list[dict[str, str]] = []

    async def collect(data: bytes) -> None:
        answers.append(json.loads(data))

    try:
        sub = await bus.follow(result_subject(space.name, "old-bridge-run"), collect)
        await bus.publish(UPSERT_SUBJECT, envelope(
            {"name": "legacy", "action": "create", "schedule": "@every 10m", "task": "Old style."},
            {"agentRunID": "old-bridge-run", "instanceName": solo, "requestId": "legacy-1",
             "requestFile": "schedule-legacy.json"}), msg_id="legacy-1")
        await until(lambda: answers, what="the answer to a request without a namespace")
        await sub.unsubscribe()
    finally:
        await bus.close()
    assert answers[0]["status"] == "accepted", answers

    # --- the controller has been through every path ------------------------------------------
    space.wait(lambda: space.events("forbid", reason="TickSkipped"), "a skipped tick")
    space.wait(lambda: any(c.resource == "agentruns" and c.verb == "delete" and c.name.startswith("replace-")
                           for c in controller.calls()), "a replaced run")
    pruned = space.wait_runs("pruned", 1)[0]["metadata"]["name"]
    space.finish(pruned, "Succeeded")
    space.wait(lambda: ("agentruns", "delete", pruned) in
               [(c.resource, c.verb, c.name) for c in controller.calls()], "the pruned run's deletion")
    space.wait(lambda: space.events("taken", reason="RunNameTaken"), "a tick whose run name was taken")
    space.wait(lambda: space.events("broken", reason="InvalidSchedule"), "the broken schedule's Event")
    # --- the console's path: a person's request, read as the scheduler ------------------------
    request = urllib.request.Request(
        f"http://127.0.0.1:{console_port}/api/v1/schedules/broken/events?namespace={space.name}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def read_events() -> int:
        with urllib.request.urlopen(request, timeout=20) as response:
            return int(response.status)

    assert await asyncio.to_thread(read_events) == 200
    space.delete_schedules()
    assert controller.stop() == 0, controller.log_tail()  # gives the Lease back: get, update
    assert router.stop() == 0, router.log_tail()
    # --- a sharded replica: lists the Leases a round, creates and renews the shards' -----------
    sharded = processes.controller(leader_election=True, args=("--shards", "2"))
    await until(lambda: sharded.metric("sympozium_schedule_shards_held") == 2,
                what="the sharded replica to hold both shards")
    assert sharded.stop() == 0, sharded.log_tail()

    calls = [c for user in USERS for c in cluster.calls(user=user, since=mark)]
    assert calls
    denied = sorted({(c.user, c.group, c.resource, c.verb, c.namespace, c.name) for c in calls
                     if c.decision != "allow" or c.code == 403}, key=str)
    assert denied == [], "calls the RBAC authorizer refused (user, group, resource, verb, ns, name)"
    used = {(c.group, c.resource, c.verb) for c in calls}
    assert sorted(granted() - used - CHECKED_NOT_CALLED) == [], "verbs granted but never used"
    lease = [(c.verb, c.namespace) for c in calls if c.resource == "leases"]
    assert set(lease) == {("create", LEASE_NAMESPACE), ("get", LEASE_NAMESPACE),
                          ("update", LEASE_NAMESPACE), ("list", LEASE_NAMESPACE)}
