"""Replicas that share the work, on the real kube-apiserver: three ``run --kubernetes --shards 6``
as ServiceAccounts bound to the shipped ClusterRole and Lease Role, each holding its shards
through their Leases (adapters/kubernetes/sharding.py).

What is shown: the shards are shared out (two each), each schedule is fired only by the
replica holding its shard, and its status names that replica; ``/metrics`` says how many
shards each holds. Then a SIGKILL (its shards are taken once their Leases expire) and a
scale-down (SIGTERM: its shards are given back and taken at once): no tick doubled, none lost
(a tick missed while nobody held its shard is caught up once: only the latest of an outage, as
for any missed tick), and every count in status right.

The shard and member Leases are removed before and after each test, so that no test waits
out a Lease a killed replica left.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sympozium_schedule.core.shards import member_lease, shard_lease, shard_of
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

SHARDS = 6
BASE = "sympozium-schedule"
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0  # what run_kubernetes gives the elector
REPLICAS = ("shard-a", "shard-b", "shard-c")
ARGS = ("--shards", str(SHARDS))


def clear_leases(cluster: Cluster) -> None:
    api = cluster.api()
    for lease in api.list("leases", namespace=LEASE_NAMESPACE):
        name = lease["metadata"]["name"]
        if name == BASE or name.startswith(f"{BASE}-"):
            api.delete("leases", name, namespace=LEASE_NAMESPACE)


@pytest.fixture
def no_leases(cluster: Cluster) -> Iterator[None]:
    clear_leases(cluster)
    try:
        yield
    finally:
        clear_leases(cluster)


def holders(cluster: Cluster) -> dict[int, str]:
    """shard -> its Lease's holder (live or not), as the API server has it."""
    found = {}
    for i in range(SHARDS):
        lease = cluster.api().get("leases", shard_lease(BASE, i), namespace=LEASE_NAMESPACE)
        found[i] = str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")
    return found


def user_of(identity: str) -> str:
    """A replica's identity is its POD_NAME (here its ServiceAccount) + "_" + a random suffix."""
    return identity.partition("_")[0]


def held(replica: Process) -> int:
    return int(replica.metric("sympozium_schedule_shards_held"))


def start(processes: Processes, *users: str) -> list[Process]:
    replicas = [processes.controller(user, leader_election=True, ready=False, args=ARGS)
                for user in users]
    for replica in replicas:
        replica.wait_ready(timeout=2 * TIMEOUT)
    return replicas


def shared_out(cluster: Cluster, replicas: list[Process]) -> bool:
    """Every shard held by one of ``replicas``, within one of the fair share each, and each
    replica's /metrics agreeing with the Leases."""
    owners = holders(cluster)
    by_user = Counter(user_of(h) for h in owners.values())
    fair = SHARDS / len(replicas)
    return (set(by_user) == {r.user for r in replicas}
            and all(abs(by_user[r.user] - fair) < 1 for r in replicas)
            and all(held(r) == by_user[r.user] for r in replicas))


def test_three_replicas_share_the_shards_and_each_fires_only_its_own(
        cluster: Cluster, processes: Processes, space: Space, no_leases: None) -> None:
    replicas = start(processes, *REPLICAS)
    space.wait(lambda: shared_out(cluster, replicas), "the shards shared out two each",
               timeout=4 * TIMEOUT)
    assert all(r.metric("sympozium_schedule_shards") == SHARDS for r in replicas)
    assert all(r.metric("sympozium_schedule_shard_replicas") == 3 for r in replicas)
    assert all(r.get("/leaderz").status == 200 for r in replicas), "each acts on its shards"
    mark = cluster.mark()

    space.instance()
    names = [f"hb-{i}" for i in range(12)]
    for name in names:
        space.schedule(name, "@every 2s", concurrencyPolicy="Allow")
    for name in names:
        space.wait_runs(name, 3)

    owners = holders(cluster)
    assert len({user_of(h) for h in owners.values()}) == 3
    creates = [c for c in cluster.calls(since=mark)
               if (c.resource, c.verb) == ("agentruns", "create") and c.namespace == space.name]
    by_schedule: dict[str, set[str]] = defaultdict(set)
    for call in creates:
        by_schedule[call.body["metadata"]["labels"]["sympozium.ai/schedule"]].add(call.user)
    for name in names:
        shard = shard_of(space.name, name, SHARDS)
        owner = owners[shard]
        assert by_schedule[name] == {cluster.user_name(user_of(owner))}, (
            f"{name} (shard {shard}) was fired by {by_schedule[name]}, not only by its owner")
        status = space.status(name)
        assert (status.get("shard"), status.get("replica")) == (shard, owner)
    assert {c.code for c in creates} == {201}, "no replica tried a tick another had fired"
    # Steady state: each replica renews its member Lease and its two shards, and lists once,
    # a round; nobody takes or gives back anything.
    lease_calls = Counter((c.verb, c.code) for c in cluster.calls(since=mark) if c.resource == "leases")
    assert set(lease_calls) <= {("update", 200), ("list", 200)}, lease_calls


@dataclass(frozen=True)
class Outage:
    """While nobody acted on ``shards``: from ``start`` (the kill, the SIGTERM) until the
    surviving replica's update that took each shard's Lease."""

    start: float
    taken: dict[int, float]


def took_over(cluster: Cluster, since: int, shards: set[int], users: set[str]) -> dict[int, float]:
    """When each shard's Lease was taken (a successful update by one of ``users``)."""
    names = {shard_lease(BASE, i): i for i in shards}
    taken: dict[int, float] = {}
    for call in cluster.calls(since=since):
        if (call.resource == "leases" and call.verb == "update" and call.code == 200
                and call.name in names and names[call.name] not in taken
                and call.user in {cluster.user_name(u) for u in users}
                and str((call.body or {}).get("spec", {}).get("holderIdentity") or "")):
            taken[names[call.name]] = call.at
    return taken


def lost_ticks(seconds: list[int], every: int, first: int, last: int,
               outages: list[tuple[float, float]]) -> list[int]:
    """Ticks in ``[first, last]`` with no run that should have one: a tick missed in an
    outage may be skipped only if a later tick of the same outage took its place (the
    catch-up fires the latest missed tick, once)."""
    have = set(seconds)
    lost = []
    for tick in range(first, last + 1, every):
        if tick in have:
            continue
        superseded = any(begin - every < tick and tick + every <= end for begin, end in outages)
        if not superseded:
            lost.append(tick)
    return lost


@pytest.mark.timeout(300)
def test_a_sigkill_and_a_scale_down_hand_shards_over_with_no_tick_doubled_or_lost(
        cluster: Cluster, processes: Processes, space: Space, no_leases: None) -> None:
    every = 4
    replicas = start(processes, *REPLICAS)
    a, b, c = replicas
    space.wait(lambda: shared_out(cluster, replicas), "the shards shared out", timeout=4 * TIMEOUT)
    space.instance()
    names = [f"tick-{i}" for i in range(9)]
    for name in names:
        space.schedule(name, f"@every {every}s", concurrencyPolicy="Allow")
    for name in names:
        space.wait_runs(name, 2)

    # --- SIGKILL: a's Leases expire, b and c take its shards ---------------------------------
    taken_by_c = c.metric("sympozium_schedule_shards_taken")
    owners = holders(cluster)
    a_shards = {i for i, h in owners.items() if user_of(h) == a.user}
    mark = cluster.mark()
    a.kill()
    killed = time.time()
    space.wait(lambda: shared_out(cluster, [b, c]), "b and c to share a's shards",
               timeout=LEASE_DURATION + 4 * RETRY_PERIOD + TIMEOUT)
    taken = took_over(cluster, mark, a_shards, {b.user, c.user})
    assert set(taken) == a_shards
    # Not before the Leases could expire (their last renewal was at most a round before).
    assert min(taken.values()) >= killed + LEASE_DURATION - RETRY_PERIOD - 1.0
    kill_outage = Outage(killed, taken)
    survivors_of_kill = holders(cluster)

    # --- scale-down: SIGTERM b, which gives its shards back; c takes them at once ------------
    b_shards = {i for i, h in survivors_of_kill.items() if user_of(h) == b.user}
    mark = cluster.mark()
    stopping = time.time()
    assert b.stop() == 0, b.log_tail()
    space.wait(lambda: shared_out(cluster, [c]), "c to hold every shard", timeout=TIMEOUT)
    taken = took_over(cluster, mark, b_shards, {c.user})
    assert set(taken) == b_shards
    assert max(taken.values()) - stopping < 3 * RETRY_PERIOD + 5.0, (
        "given back, not left to expire")
    down_outage = Outage(stopping, taken)
    for shard in a_shards | b_shards:  # the schedules of moved shards fire again
        for name in names:
            if shard_of(space.name, name, SHARDS) == shard:
                count = len(space.runs(name))
                space.wait_runs(name, count + 1)

    # --- what happened to every tick -------------------------------------------------------------
    for name in names:
        space.edit(name, suspend=True)
    end = time.time()

    seen: dict[str, tuple[Any, ...]] = {}

    def settled(name: str) -> dict[str, Any] | None:
        runs = space.run_names(name)
        status = space.status(name)
        latest = max(runs, key=lambda r: int(r.rsplit("-", 1)[1]))
        seen[name] = (status.get("phase"), status.get("lastRunName"), latest, status.get("totalRuns"),
                      len(runs))
        return status if status.get("phase") == "Suspended" and status.get("lastRunName") == latest else None

    for name in names:
        try:
            status = space.wait(lambda n=name: settled(n), f"{name} suspended with its last run recorded")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen (phase, lastRunName, latest run, totalRuns, "
                                 f"runs): {seen.get(name)}") from None
        runs = space.runs(name)
        seconds = ticks(runs)
        assert len(seconds) == len(set(seconds)), f"{name}: a tick fired twice: {seconds}"
        assert status["totalRuns"] == len(runs), f"{name}: status counts {status['totalRuns']}"
        shard = shard_of(space.name, name, SHARDS)
        outages = [(o.start, o.taken[shard]) for o in (kill_outage, down_outage) if shard in o.taken]
        first = seconds[0]  # firstTick immediate: the creation's tick
        last = max(t for t in range(first, int(end) - every, every))
        assert lost_ticks(seconds, every, first, last, outages) == [], (
            f"{name} (shard {shard}, outages {outages}) lost ticks; runs at {seconds}")
        assert status["replica"].startswith(f"{c.user}_"), "status names the shard's new holder"
    # /metrics counts the shards c took over: a's share of them, then all of b's.
    assert c.metric("sympozium_schedule_shards_taken") - taken_by_c == len(b_shards) + len(
        {i for i in a_shards if user_of(survivors_of_kill[i]) == c.user})


def test_member_and_shard_leases_are_given_back_on_sigterm(
        cluster: Cluster, processes: Processes, no_leases: None) -> None:
    (replica,) = start(processes, "shard-solo")
    wait_until(lambda: held(replica) == SHARDS, timeout=TIMEOUT, what="it to hold every shard")
    assert replica.stop() == 0, replica.log_tail()
    leases = [cluster.api().get("leases", name, namespace=LEASE_NAMESPACE)
              for name in [shard_lease(BASE, i) for i in range(SHARDS)] + [member_lease(BASE, 0)]]
    assert all(lease is not None and not lease["spec"].get("holderIdentity") for lease in leases)
