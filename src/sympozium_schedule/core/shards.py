"""Sharding schedules over replicas (Kubernetes mode): which shard a schedule is in, and
which shards a replica should hold, decided from what the Leases say.

A fixed number of shards; shard ``i`` is held through the Lease ``<base>-shard-<i>``. A
replica announces itself by holding a member Lease ``<base>-member-<j>`` (one of as many
slots as there are shards: a replica beyond that could hold no shard anyway), because a
newcomer that holds no shard yet is invisible in the shard Leases, and the others would never
make room for it. Every replica reads all the Leases once a round and computes the same
quotas from them: the live members sorted by slot, the first ``shards % members`` of them
holding one more. A replica above its quota gives shards back (the ones farthest from its
natural range, so that a stable membership keeps a stable assignment); below it, it takes
free or expired ones, starting from its natural range so that two newcomers rarely race for
the same Lease. Only the extras move: a shard changes hands only when it must.

Pure: :func:`plan_round` is given the Leases as read and ``now``; the adapter
(adapters/kubernetes/sharding.py) reads and writes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Status fields that say which replica owns a schedule (written only with --shards > 1).
SHARD_STATUS_KEYS = ("shard", "replica")
# The install's Role names every shard and member Lease (RBAC cannot grant a name pattern).
MAX_SHARDS = 16
# On each shard Lease: the shard count it belongs to. Two configurations (a rolling update
# from 4 to 8 shards) hash schedules differently; a replica acts only while no Lease of
# another count is held.
SHARDS_ANNOTATION = "sympozium.ai/shards"


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard of a schedule: a stable hash of ``namespace/name`` (the same in every
    process and release: Python's own ``hash`` is salted per process)."""
    digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_lease(base: str, index: int) -> str:
    return f"{base}-shard-{index}"


def member_lease(base: str, index: int) -> str:
    return f"{base}-member-{index}"


def lease_names(base: str, shards: int = MAX_SHARDS) -> list[str]:
    """Every Lease name ``shards`` shards can use: the shards', then the members'."""
    return [shard_lease(base, i) for i in range(shards)] + [member_lease(base, i) for i in range(shards)]


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A Lease as read: who holds it, until when, and (shard Leases) for which count."""

    holder: str = ""
    renewed: datetime | None = None
    duration: float = 15.0
    shards: int | None = None

    def live(self, now: datetime) -> bool:
        """Held, and renewed within its duration (client-go's expiry rule)."""
        return bool(self.holder) and self.renewed is not None and (
            now <= self.renewed + timedelta(seconds=self.duration))

    def free(self, now: datetime) -> bool:
        return not self.live(now)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a replica does this round, besides renewing what it holds."""

    member: int | None  # the member slot it holds after this round (take it if not held)
    members: int  # live members, counting this replica
    quota: int  # shards this replica should hold
    acquire: tuple[int, ...] = ()  # free or expired shards to take now
    release: tuple[int, ...] = ()  # shards to give back (after a round of not acting on them)
    blocked: str | None = None  # why it holds nothing (another configuration is active)
    holders: Mapping[int, str] = field(default_factory=dict)  # shard -> live holder, as read


def quotas(members: Iterable[int], shards: int) -> dict[int, int]:
    """Shards per live member slot: ``shards // n`` each, one more for the lowest slots."""
    ordered = sorted(members)
    if not ordered:
        return {}
    base, extra = divmod(shards, len(ordered))
    return {slot: base + (1 if rank < extra else 0) for rank, slot in enumerate(ordered)}


def _order(shards: int, start: int) -> list[int]:
    """Shard indexes beginning at ``start`` and wrapping: a replica's preference."""
    return [(start + k) % shards for k in range(shards)]


def plan_round(*, me: str, shards: int, now: datetime, leases: Mapping[str, LeaseState],
               base: str, foreign: Iterable[str] = ()) -> Plan:
    """The round's plan from the Leases as listed (names not listed are free).

    ``foreign``: names of Leases that, when live, mean another configuration is acting
    (the single leader's Lease of ``--shards 1``); shard Leases of another count count too.
    """
    def state(name: str) -> LeaseState:
        return leases.get(name) or LeaseState()

    for name in foreign:
        lease = state(name)
        if lease.live(now) and lease.holder != me:
            return Plan(None, 0, 0, blocked=f"the Lease {name} is held by {lease.holder} "
                                                f"(a replica running without --shards {shards})")
    for name, lease in leases.items():
        if (name.startswith(f"{base}-shard-") and lease.shards not in (None, shards)
                and lease.live(now) and lease.holder != me):
            return Plan(None, 0, 0, blocked=f"the Lease {name} is held by {lease.holder} for "
                                                f"{lease.shards} shards, not {shards}")

    slots = {j: state(member_lease(base, j)) for j in range(shards)}
    mine = [j for j, lease in slots.items() if lease.holder == me and lease.live(now)]
    member = min(mine) if mine else next((j for j, lease in slots.items() if lease.free(now)), None)
    live = {j for j, lease in slots.items() if lease.live(now)}
    if member is not None:
        live.add(member)
    holders = {i: lease.holder for i in range(shards)
               if (lease := state(shard_lease(base, i))).live(now)}
    if member is None:  # every slot taken: a standby until one frees
        return Plan(None, len(live), 0, holders=holders)
    quota = quotas(live, shards)[member]
    rank = sorted(live).index(member)
    preference = _order(shards, rank * shards // len(live))
    held = [i for i in preference if holders.get(i) == me]
    release: tuple[int, ...] = ()
    acquire: tuple[int, ...] = ()
    if len(held) > quota:
        release = tuple(held[quota:])  # the farthest from its natural range
    elif len(held) < quota:
        acquire = tuple([i for i in preference if i not in holders][:quota - len(held)])
    return Plan(member, len(live), quota, acquire, release, holders=holders)
