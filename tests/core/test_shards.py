"""Sharding's plan on virtual time (core/shards.py): which shard a schedule is in, the quotas,
one round's plan from the Leases as read, and replicas converging on a balanced assignment
with every shard held by exactly one live replica as they come and go."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from sympozium_schedule.core.shards import (
    MAX_SHARDS,
    LeaseState,
    lease_names,
    member_lease,
    plan_round,
    quotas,
    shard_lease,
    shard_of,
)
from tests.core.helpers import utc

T0 = utc(2026, 5, 1, 12)
BASE = "sympozium-schedule"
DURATION = 15.0


def held(holder: str, at: datetime = T0, *, shards: int | None = None) -> LeaseState:
    return LeaseState(holder, at, DURATION, shards)


# --- which shard ---------------------------------------------------------------------------


def test_a_schedules_shard_is_pinned_across_processes_and_releases() -> None:
    """A replica of the next release must hash as this one does, or a rolling update would
    have two replicas disagree about who owns a schedule."""
    assert shard_of("team-a", "nightly", 8) == 7
    assert shard_of("team-a", "nightly", 16) == 15
    assert shard_of("team-b", "nightly", 16) == 2
    assert shard_of("default", "hb", 3) == 1


def test_shards_are_balanced_over_many_schedules() -> None:
    counts = Counter(shard_of(f"ns-{i % 7}", f"schedule-{i}", 8) for i in range(10_000))
    assert set(counts) == set(range(8))
    assert max(counts.values()) < 1.1 * 10_000 / 8
    assert min(counts.values()) > 0.9 * 10_000 / 8


def test_the_role_can_name_every_lease_up_to_the_maximum() -> None:
    names = lease_names(BASE)
    assert len(names) == len(set(names)) == 2 * MAX_SHARDS
    assert shard_lease(BASE, MAX_SHARDS - 1) in names
    assert member_lease(BASE, 0) in names


# --- quotas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("members", "shards", "expected"), [
    pytest.param([0], 8, {0: 8}, id="alone-holds-all"),
    pytest.param([0, 1], 8, {0: 4, 1: 4}, id="even"),
    pytest.param([0, 1, 2], 8, {0: 3, 1: 3, 2: 2}, id="lowest-slots-take-the-remainder"),
    pytest.param([5, 2, 9], 8, {2: 3, 5: 3, 9: 2}, id="by-slot-not-by-arrival"),
    pytest.param([0, 1, 2, 3, 4], 3, {0: 1, 1: 1, 2: 1, 3: 0, 4: 0}, id="more-replicas-than-shards"),
    pytest.param([], 8, {}, id="nobody"),
])
def test_quotas(members: list[int], shards: int, expected: dict[int, int]) -> None:
    got = quotas(members, shards)
    assert got == expected
    if members:
        assert sum(got.values()) == shards


# --- one round --------------------------------------------------------------------------------


def test_the_first_replica_joins_and_takes_every_shard() -> None:
    plan = plan_round(me="a", shards=4, now=T0, leases={}, base=BASE)
    assert (plan.member, plan.members, plan.quota) == (0, 1, 4)
    assert sorted(plan.acquire) == [0, 1, 2, 3]
    assert plan.release == ()
    assert plan.blocked is None


def test_a_newcomer_takes_a_slot_and_waits_for_shards_to_be_given_back() -> None:
    leases = {member_lease(BASE, 0): held("a")} | {shard_lease(BASE, i): held("a") for i in range(4)}
    newcomer = plan_round(me="b", shards=4, now=T0, leases=leases, base=BASE)
    assert (newcomer.member, newcomer.members, newcomer.quota) == (1, 2, 2)
    assert newcomer.acquire == (), "nothing is free yet"
    # The holder sees the newcomer's member Lease next round and gives back two.
    leases[member_lease(BASE, 1)] = held("b")
    holder = plan_round(me="a", shards=4, now=T0 + timedelta(seconds=2), leases=leases, base=BASE)
    assert (holder.member, holder.members, holder.quota) == (0, 2, 2)
    assert len(holder.release) == 2
    assert holder.acquire == ()
    # Once given back, the newcomer takes exactly those.
    for i in holder.release:
        leases[shard_lease(BASE, i)] = LeaseState()
    later = plan_round(me="b", shards=4, now=T0 + timedelta(seconds=4), leases=leases, base=BASE)
    assert sorted(later.acquire) == sorted(holder.release)


@pytest.mark.parametrize(("age", "expired"), [
    pytest.param(DURATION, False, id="renewed-exactly-a-duration-ago-still-held"),
    pytest.param(DURATION + 0.001, True, id="a-moment-later-expired"),
])
def test_a_shard_unrenewed_for_its_duration_is_taken(age: float, expired: bool) -> None:
    gone = T0 - timedelta(seconds=age)
    leases = {member_lease(BASE, 0): held("a"), member_lease(BASE, 1): held("dead", gone),
              shard_lease(BASE, 0): held("a"), shard_lease(BASE, 1): held("dead", gone)}
    plan = plan_round(me="a", shards=2, now=T0, leases=leases, base=BASE)
    assert plan.acquire == ((1,) if expired else ())
    assert plan.members == (1 if expired else 2)


def test_a_released_lease_is_free_at_once() -> None:
    leases = {member_lease(BASE, 0): held("a"), shard_lease(BASE, 0): held("a"),
              shard_lease(BASE, 1): LeaseState("", utc(1970, 1, 1), DURATION)}
    assert plan_round(me="a", shards=2, now=T0, leases=leases, base=BASE).acquire == (1,)


def test_more_replicas_than_slots_wait_as_standbys() -> None:
    leases = {member_lease(BASE, j): held(f"r{j}") for j in range(2)}
    plan = plan_round(me="late", shards=2, now=T0, leases=leases, base=BASE)
    assert (plan.member, plan.quota, plan.acquire) == (None, 0, ())


@pytest.mark.parametrize(("leases", "reason"), [
    pytest.param({BASE: held("old-leader")}, "held by old-leader", id="the-single-leaders-lease"),
    pytest.param({shard_lease(BASE, 0): held("other", shards=8)}, "for 8 shards, not 4",
                 id="a-shard-lease-of-another-count"),
])
def test_another_configuration_acting_blocks_every_shard(
        leases: dict[str, LeaseState], reason: str) -> None:
    """A rolling update from --shards 1 or another count: the hash differs, so this
    configuration waits until the other's Leases are given back or expire."""
    plan = plan_round(me="a", shards=4, now=T0, leases=leases, base=BASE, foreign=(BASE,))
    assert plan.blocked is not None
    assert reason in plan.blocked
    assert plan.acquire == ()
    assert plan.quota == 0
    expired = {name: LeaseState(s.holder, T0 - timedelta(seconds=60), DURATION, s.shards)
               for name, s in leases.items()}
    assert plan_round(me="a", shards=4, now=T0, leases=expired, base=BASE,
                      foreign=(BASE,)).blocked is None


# --- replicas over time --------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    alive: bool = True
    shards: set[int] = field(default_factory=set)
    draining: set[int] = field(default_factory=set)


class Cluster:
    """Replicas running rounds against a table of Leases (writes are atomic here, as a
    conditional update is on the API server), every ``ROUND`` seconds of virtual time,
    the adapter's order: renew, give back what was draining, read, plan."""

    ROUND = 2.0

    def __init__(self, shards: int, seed: int):
        self.shards = shards
        self.leases: dict[str, LeaseState] = {}
        self.replicas: dict[str, Replica] = {}
        self.now = T0
        self.random = random.Random(seed)

    def start(self, name: str) -> None:
        self.replicas[name] = Replica(name)

    def kill(self, name: str) -> None:
        self.replicas[name].alive = False  # its Leases expire

    def stop(self, name: str) -> None:
        """SIGTERM: it gives everything back."""
        replica = self.replicas.pop(name)
        for lease_name, lease in list(self.leases.items()):
            if lease.holder == replica.name:
                self.leases[lease_name] = LeaseState()

    def round(self) -> None:
        order = [r for r in self.replicas.values() if r.alive]
        self.random.shuffle(order)
        for replica in order:
            now = self.now + timedelta(seconds=self.random.uniform(0, self.ROUND / 2))
            for lease_name, lease in list(self.leases.items()):
                if lease.holder == replica.name and lease.live(now):
                    self.leases[lease_name] = LeaseState(replica.name, now, DURATION, lease.shards)
            for i in replica.draining:
                self.leases[shard_lease(BASE, i)] = LeaseState()
            replica.draining = set()
            plan = plan_round(me=replica.name, shards=self.shards, now=now, leases=dict(self.leases),
                              base=BASE)
            replica.shards = {i for i, holder in plan.holders.items() if holder == replica.name}
            replica.shards -= set(plan.release)
            replica.draining = set(plan.release)
            if plan.member is not None:
                self.leases[member_lease(BASE, plan.member)] = LeaseState(replica.name, now, DURATION)
                for i in plan.acquire:
                    assert not self.leases.get(shard_lease(BASE, i), LeaseState()).live(now)
                    self.leases[shard_lease(BASE, i)] = LeaseState(replica.name, now, DURATION,
                                                                   self.shards)
                    replica.shards.add(i)
        self.now += timedelta(seconds=self.ROUND)

    def owners(self) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {i: [] for i in range(self.shards)}
        for replica in self.replicas.values():
            if replica.alive:
                for i in replica.shards:
                    found[i].append(replica.name)
        return found

    def settled(self) -> bool:
        owners = self.owners()
        live = [r for r in self.replicas.values() if r.alive]
        counts = sorted(len(r.shards) for r in live)
        balanced = not counts or counts[-1] - counts[0] <= 1 or len(live) > self.shards
        return all(len(o) == 1 for o in owners.values()) and balanced

    def run_until_settled(self, rounds: int) -> int:
        for n in range(1, rounds + 1):
            self.round()
            assert all(len(o) <= 1 for o in self.owners().values()), "a shard acted on twice"
            if self.settled():
                return n
        raise AssertionError(f"not settled after {rounds} rounds: {self.owners()}")


@pytest.mark.parametrize("seed", range(20))
def test_replicas_settle_balanced_through_joins_stops_and_kills(seed: int) -> None:
    """Every shard ends up held by exactly one live replica, within a shard of the fair share,
    and no shard is ever acted on by two replicas in between."""
    cluster = Cluster(shards=8, seed=seed)
    cluster.start("a")
    assert cluster.run_until_settled(3) <= 2
    cluster.start("b")
    cluster.start("c")
    # Joining: a slot, the others give back a round later, it takes a round after that.
    assert cluster.run_until_settled(8) <= 6
    assert sorted(len(s) for s in (r.shards for r in cluster.replicas.values())) == [2, 3, 3]
    before = {name: set(r.shards) for name, r in cluster.replicas.items()}
    cluster.stop("b")  # scale-down: b's shards are free at once
    assert cluster.run_until_settled(4) <= 2
    for name in ("a", "c"):
        assert before[name] <= cluster.replicas[name].shards, "only b's shards moved"
    cluster.kill("c")  # SIGKILL: its Leases expire after their duration
    rounds = cluster.run_until_settled(20)
    assert rounds * Cluster.ROUND >= DURATION - Cluster.ROUND
    assert cluster.replicas["a"].shards == set(range(8))
