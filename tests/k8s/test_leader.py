"""Leader election on the real kube-apiserver: replicas of ``run --kubernetes`` started as the
README says (no ``--lease-namespace``, no ``POD_NAMESPACE``), as ServiceAccounts bound to the
shipped ClusterRole and Lease Role.

No controller is shared here: each test starts the replicas it needs, and the Lease is
removed before and after each, so that no test waits out a Lease a killed replica left.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.k8s.conftest import (
    LEASE_NAMESPACE,
    TIMEOUT,
    Cluster,
    Process,
    Processes,
    Space,
    ticks,
    wait_until,
)

LEASE = "sympozium-schedule"
# What run_kubernetes gives LeaseElector (client-go's defaults): a standby takes over once
# the Lease has gone unrenewed this long, checking every RETRY_PERIOD.
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def no_lease(cluster: Cluster) -> Iterator[None]:
    cluster.api().delete("leases", LEASE, namespace=LEASE_NAMESPACE)
    try:
        yield
    finally:
        cluster.api().delete("leases", LEASE, namespace=LEASE_NAMESPACE)


def lease(cluster: Cluster) -> dict[str, object]:
    found = cluster.api().get("leases", LEASE, namespace=LEASE_NAMESPACE)
    assert found is not None, "no Lease"
    spec: dict[str, object] = found["spec"]
    return spec


def standing_by(cluster: Cluster, replica: Process) -> None:
    """Wait for a standby to be up (informers watching, the Lease looked at), by the API's
    record rather than its /readyz: see test_a_standby_replica_is_ready."""
    wait_until(lambda: cluster.open_watches(replica.user) == 4
               and any(c.resource == "leases" for c in replica.calls()),
               timeout=TIMEOUT, what=f"{replica} to stand by")
    assert replica.alive, replica.log_tail()


def test_a_standby_replica_is_ready(cluster: Cluster, processes: Processes, no_lease: None) -> None:
    """A replica that finds the Lease held must still pass its readiness probe (run_kubernetes
    says so: "a standby counts as ready while it can reach the API"), or the Deployment's
    rollout never completes and its PodDisruptionBudget (maxUnavailable: 1) blocks every
    drain of the leader's node."""
    cluster.api().create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                          "metadata": {"name": LEASE, "namespace": LEASE_NAMESPACE},
                          "spec": {"holderIdentity": "the-leader", "leaseDurationSeconds": 3600,
                                   "acquireTime": now_micro(), "renewTime": now_micro()}})
    standby = processes.controller("standby", leader_election=True, ready=False)
    standing_by(cluster, standby)
    deadline = time.monotonic() + 1.0  # its lease round is done: /readyz has what it needs
    probe = standby.get("/readyz")
    while probe.status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        probe = standby.get("/readyz")
    assert standby.get("/leaderz").status == 503
    assert standby.get("/healthz").status == 200
    assert probe.status == 200, f"the standby's /readyz says {probe.status} {probe.body.strip()!r}"
    processes.close()  # before the Lease goes: it must not lead


def test_the_readmes_command_leads_as_the_shipped_service_account(
        cluster: Cluster, processes: Processes, space: Space, no_lease: None) -> None:
    """Issue 8, defect 3: ``run --kubernetes`` from a workstation (no POD_NAMESPACE) put its
    Lease in ``default``, where the shipped Role grants nothing: 403, never leading, never
    firing, /readyz 503. The default is now the install's namespace."""
    # Its own calls only: earlier tests' controllers ran as the same ServiceAccount (one of
    # them meets a quota's 403s on purpose).
    mark = cluster.mark()
    leader = processes.controller(leader_election=True, pod_name=False)  # the shipped SA itself
    space.wait(lambda: leader.get("/leaderz").status == 200, "it to lead")
    assert str(lease(cluster)["holderIdentity"]).startswith(socket.gethostname() + "_")
    space.instance()
    space.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    space.wait_runs("hb", 2)
    leases = [c for c in leader.calls(since=mark) if c.resource == "leases"]
    assert {c.namespace for c in leases} == {LEASE_NAMESPACE}
    assert [c for c in leader.calls(since=mark) if c.code == 403] == []


def test_two_processes_on_one_host_do_not_both_lead(
        cluster: Cluster, processes: Processes, space: Space, no_lease: None) -> None:
    """Issue 8, defect 2: the identity was POD_NAME, else the hostname, so two processes on
    one workstation shared it and both answered 200 on /leaderz. Now each has its own
    (hostname + "_" + a random suffix, as client-go's) and exactly one leads."""
    a = processes.controller("host-a", leader_election=True, pod_name=False)
    b = processes.controller("host-b", leader_election=True, pod_name=False)

    def leaders() -> list[Process]:
        return [p for p in (a, b) if p.get("/leaderz").status == 200]

    space.wait(lambda: len(leaders()) == 1, "one of the two to lead")
    holder = str(lease(cluster)["holderIdentity"])
    assert holder.startswith(socket.gethostname() + "_")
    # Over several renewals the other never leads too.
    deadline = time.monotonic() + 2 * RETRY_PERIOD + 0.5
    while time.monotonic() < deadline:
        assert len(leaders()) <= 1
        time.sleep(0.2)
    assert str(lease(cluster)["holderIdentity"]) == holder
    standby = b if leaders() == [a] else a
    assert [c for c in standby.calls() if c.resource == "leases" and c.verb == "update"] == [], (
        "the standby never wrote the Lease")


def test_with_leader_election_one_replica_fires_and_the_other_takes_over_when_it_dies(
        cluster: Cluster, processes: Processes, space: Space, no_lease: None) -> None:
    a = processes.controller("replica-a", leader_election=True)
    space.wait(lambda: a.get("/leaderz").status == 200, "replica-a to lead")
    mark = cluster.mark()
    b = processes.controller("replica-b", leader_election=True, ready=False)
    # While nothing is scheduled the leader only renews its Lease: one update a round, no get.
    space.wait(lambda: [c for c in a.calls(since=mark) if c.resource == "leases"][1:],
               "two Lease renewals", timeout=2 * RETRY_PERIOD + TIMEOUT)
    standing_by(cluster, b)
    assert {(c.resource, c.verb, c.namespace) for c in a.calls(since=mark) if c.verb != "watch"} == {
        ("leases", "update", LEASE_NAMESPACE)}
    assert b.get("/leaderz").status == 503, "a standby does not lead"
    standby_from = cluster.mark()

    space.instance()
    space.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    before = space.wait_runs("hb", 1)
    # Killed just before its next renewal, the Lease expires soonest: a shorter test (the
    # bound below holds wherever the kill falls).
    renewed = max(c.at for c in a.calls() if (c.resource, c.verb) == ("leases", "update"))
    time.sleep(max(0.0, renewed + RETRY_PERIOD - 0.3 - time.time()))
    a.kill()
    killed_at = time.monotonic()
    space.wait(lambda: b.get("/leaderz").status == 200, "replica-b to take over",
               timeout=LEASE_DURATION + RETRY_PERIOD + TIMEOUT)
    took = time.monotonic() - killed_at
    # The Lease was last renewed at most RETRY_PERIOD before the kill; the standby looks
    # every RETRY_PERIOD: it leads within LEASE_DURATION + RETRY_PERIOD, plus load.
    assert took <= LEASE_DURATION + RETRY_PERIOD + 3.0, f"took {took:.1f}s"
    after = space.wait_runs("hb", len(before) + 1)

    calls_b = [c for c in b.calls(since=standby_from) if c.verb != "watch"]
    became = next(i for i, c in enumerate(calls_b) if (c.resource, c.verb) == ("leases", "update"))
    assert {(c.resource, c.verb) for c in calls_b[:became]} == {("leases", "get")}, "a standby only looks"
    creates = [c for c in cluster.calls() if (c.resource, c.verb) == ("agentruns", "create")
               and c.namespace == space.name]
    assert {c.code for c in creates} == {201}, "no replica ever tried a tick the other had fired"
    assert {c.user for c in creates if c.body["metadata"]["name"] in
            {r["metadata"]["name"] for r in before}} <= {cluster.user_name("replica-a")}
    seconds = ticks(after)
    assert len(set(seconds)) == len(seconds)
    spec = lease(cluster)
    assert str(spec["holderIdentity"]).startswith("replica-b_")
    assert spec["leaseTransitions"] == 1
    assert b.stop() == 0, b.log_tail()  # SIGTERM: the leader gives the Lease back for the next one
    assert lease(cluster)["holderIdentity"] in ("", None)


def test_the_leader_keeps_renewing_while_a_burst_waits_for_its_rate_limit(
        cluster: Cluster, processes: Processes, space: Space, no_lease: None) -> None:
    """At --kube-qps 4, 30 schedules' initial statuses and then their fires, all due at once,
    queue 30-60 writes: 8-15 s, longer than the 10 s renew deadline. The Lease's requests have a
    token bucket of their own, so its renewals keep their 2 s pace and the leader never stops
    mid-burst (on the shared bucket it did: "lost leadership" in every burst of bench/shards)."""
    leader = processes.controller(leader_election=True, args=("--kube-qps", "4", "--kube-burst", "4"))
    space.wait(lambda: leader.get("/leaderz").status == 200, "it to lead")
    space.instance()
    mark = cluster.mark()
    started = time.time()
    names = [f"b-{i}" for i in range(30)]
    for name in names:
        space.schedule(name, "@every 15s", concurrencyPolicy="Allow", firstTick="afterInterval")
    for name in names:
        space.wait_runs(name, 1, timeout=60 + TIMEOUT)
    renewals = sorted(c.at for c in leader.calls(since=mark)
                      if (c.resource, c.verb, c.code) == ("leases", "update", 200))
    writes = [c for c in leader.calls(since=mark) if c.resource in ("agentruns", "sympoziumschedules")
              and c.verb != "watch"]
    assert max(c.at for c in writes) - started > 12, "the writes did queue past the renew deadline"
    gaps = [b - a for a, b in zip([started, *renewals], [*renewals, time.time()], strict=True)]
    assert max(gaps) < 6.0, f"a renewal waited {max(gaps):.1f}s (every 2 s when free)"
    assert not [line for line in leader.logs() if line.get("event") == "lost leadership: stopped firing"]
