"""Shards of leader election: each replica acts on the schedules of the shards it holds.

The leader elector's algorithm (leader.py, client-go's) applied to N shard Leases, plus one
member Lease per replica so that a newcomer is seen before it holds any shard (the plan, its
quotas and why members exist: core/shards.py). One round every ``retry_period``:

1. renew what it holds (the member Lease and each shard's): one conditional update each, of
   the Lease as it last wrote it; a conflict means someone took it, so it stops acting on it;
2. give back the shards it stopped acting on a round ago (so that writes already on their
   way for those schedules have landed before another replica may take over);
3. list the namespace's Leases (one request: what every replica holds, and whose member
   Leases are live), and stop acting on the shards the plan asks it to give back;
4. take its member slot if it has none, then free or expired shards up to its quota (a
   conditional update of the Lease as listed, or a create), and mark the schedules of every
   shard taken dirty (``on_gain``), so a tick missed while nobody held it is caught up once.

It acts on a shard while the shard's Lease is held and was renewed within ``renew_deadline``
(shorter than the Lease's duration): by the time anyone may take an unrenewed shard, its
old holder has stopped. A double create during a handover is harmless anyway (run names come
from the tick), and status patches are conditional on the resourceVersion.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from sympozium_schedule.adapters.kubernetes.leader import lease_limiter, lease_time, parse_lease_time
from sympozium_schedule.adapters.kubernetes.store import KubernetesStore, Lease, _plain
from sympozium_schedule.core.shards import (
    SHARDS_ANNOTATION,
    LeaseState,
    Plan,
    member_lease,
    plan_round,
    shard_lease,
    shard_of,
)
from sympozium_schedule.ports.store import AlreadyExists, Conflict, NotFound, StoreError

log = structlog.get_logger("shards")

Key = tuple[str, str]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def lease_state(lease: Mapping[str, Any]) -> LeaseState:
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    shards = annotations.get(SHARDS_ANNOTATION)
    return LeaseState(holder=str(spec.get("holderIdentity") or ""),
                      renewed=parse_lease_time(spec.get("renewTime")),
                      duration=float(spec.get("leaseDurationSeconds") or 15),
                      shards=int(shards) if isinstance(shards, str) and shards.isdigit() else None)


class ShardElector:
    """Holds about ``shards / replicas`` of the shard Leases; see the module docstring."""

    def __init__(self, store: KubernetesStore, *, shards: int, base: str, namespace: str,
                 identity: str, lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, clock: Callable[[], datetime] | None = None,
                 foreign: Iterable[str] = ()):
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        if shards < 1:
            raise ValueError("need at least one shard")
        self.store = store
        self.shards = shards
        self.base = base
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock or (lambda: datetime.now(UTC))
        self.limiter = lease_limiter(store)  # not queued behind a burst's writes
        self.foreign = tuple(foreign)
        self.on_gain: Callable[[set[int]], None] | None = None
        self.healthy = False  # the last round reached the API
        self.members = 0  # live replicas seen in the last round
        self.quota = 0
        self.blocked: str | None = None
        self.taken = 0  # shards taken over since start
        self._held: dict[int, dict[str, Any]] = {}  # shard -> its Lease as last written
        self._renewed: dict[int, datetime] = {}
        self._draining: dict[int, dict[str, Any]] = {}  # not acted on; released next round
        self._member: tuple[int, dict[str, Any]] | None = None
        self._member_renewed: datetime | None = None
        self._leading = asyncio.Event()
        self._shard_of: dict[Key, int] = {}

    # --- what the controller asks (controller.Leadership) -----------------------------------

    def shard(self, key: Key) -> int:
        found = self._shard_of.get(key)
        if found is None:
            found = self._shard_of[key] = shard_of(key[0], key[1], self.shards)
        return found

    def owns(self, key: Key) -> bool:
        return self._acting(self.shard(key), self.clock())

    def owner_status(self, key: Key) -> Mapping[str, Any]:
        return {"shard": self.shard(key), "replica": self.identity}

    @property
    def is_leading(self) -> bool:
        now = self.clock()
        leading = any(self._acting(i, now) for i in self._held)
        if not leading and self._leading.is_set():
            self._leading.clear()
        return leading

    async def wait_leading(self) -> None:
        await self._leading.wait()

    def held(self) -> list[int]:
        """The shards it acts on now."""
        now = self.clock()
        return sorted(i for i in self._held if self._acting(i, now))

    def _acting(self, shard: int, now: datetime) -> bool:
        renewed = self._renewed.get(shard)
        return (shard in self._held and renewed is not None
                and now - renewed <= timedelta(seconds=self.renew_deadline))

    # --- the rounds ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.round()
                    self.healthy = True
                except StoreError as exc:
                    self.healthy = False
                    # A refusal (RBAC: the Role lacks a shard's name) needs a person; a network
                    # error is retried next round.
                    (log.info if exc.temporary else log.warning)("shard round failed", error=str(exc))
                self._update_leading()
                await asyncio.sleep(self.retry_period)
        finally:
            await self.release_all()

    async def round(self) -> None:
        await self._renew()
        for shard, lease in list(self._draining.items()):
            del self._draining[shard]
            with contextlib.suppress(StoreError):
                await self._release(lease)
            log.info("gave a shard back", shard=shard, identity=self.identity)
        listing = await self._list()
        states = {name: lease_state(lease) for name, lease in listing.items()}
        plan = plan_round(me=self.identity, shards=self.shards, now=self.clock(), leases=states,
                          base=self.base, foreign=self.foreign)
        self._apply_plan_facts(plan)
        if plan.blocked is not None:
            for shard in list(self._held):
                self._drain(shard)
            return
        for shard in plan.release:
            self._drain(shard)
        if self._member is None and plan.member is not None:
            await self._take_member(plan.member, listing.get(member_lease(self.base, plan.member)))
        if self._member is None:
            return
        gained = set()
        for shard in plan.acquire:
            if await self._take(shard, listing.get(shard_lease(self.base, shard))):
                gained.add(shard)
        if gained:
            self.taken += len(gained)
            log.info("took shards", shards=sorted(gained), held=self.held(), quota=plan.quota,
                     replicas=plan.members, identity=self.identity)
            self._update_leading()
            if self.on_gain is not None:
                self.on_gain(gained)

    def _apply_plan_facts(self, plan: Plan) -> None:
        if plan.blocked != self.blocked:
            if plan.blocked is not None:
                log.warning("not acting on any schedule", reason=plan.blocked)
            else:
                log.info("no other configuration holds a Lease any more")
        self.blocked = plan.blocked
        self.members = plan.members
        self.quota = plan.quota

    def _update_leading(self) -> None:
        if self.held():
            self._leading.set()
        else:
            self._leading.clear()

    def _drain(self, shard: int) -> None:
        """Stop acting on a shard now; its Lease is given back next round."""
        lease = self._held.pop(shard, None)
        self._renewed.pop(shard, None)
        if lease is not None:
            self._draining[shard] = lease
            log.info("giving a shard back", shard=shard, identity=self.identity)

    async def _list(self) -> dict[str, dict[str, Any]]:
        client = self.store.client

        async def collect() -> list[dict[str, Any]]:
            return [_plain(o) async for o in client.list(Lease, namespace=self.namespace)]

        prefix = f"{self.base}-"
        names = set(self.foreign)
        return {lease["metadata"]["name"]: lease
                for lease in await self.store.call("list leases", collect(), limiter=self.limiter)
                if lease["metadata"]["name"].startswith(prefix) or lease["metadata"]["name"] in names}

    def _spec(self, now: datetime, acquired: datetime, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": lease_time(acquired), "renewTime": lease_time(now),
                "leaseTransitions": transitions}

    async def _replace(self, what: str, lease: dict[str, Any]) -> dict[str, Any]:
        replaced = await self.store.call(what, self.store.client.replace(Lease.from_dict(lease)),
                                         limiter=self.limiter)
        return _plain(replaced)

    async def _renew_one(self, what: str, lease: dict[str, Any]) -> dict[str, Any] | None:
        """One conditional update; None when someone else wrote the Lease meanwhile."""
        spec = dict(lease.get("spec") or {}) | {"renewTime": lease_time(self.clock())}
        try:
            return await self._replace(what, dict(lease) | {"spec": spec})
        except (Conflict, NotFound):
            return None

    async def _renew(self) -> None:
        if self._member is not None:
            slot, lease = self._member
            renewed = await self._renew_one("renew member lease", lease)
            if renewed is None:
                log.warning("lost its member Lease", slot=slot, identity=self.identity)
                self._member = None
            else:
                self._member = (slot, renewed)
                self._member_renewed = self.clock()

        async def renew(shard: int, lease: dict[str, Any]) -> None:
            renewed = await self._renew_one(f"renew shard lease {shard}", lease)
            if shard not in self._held:
                return  # drained meanwhile
            if renewed is None:
                log.warning("lost a shard: someone else holds its Lease", shard=shard,
                            identity=self.identity)
                self._held.pop(shard, None)
                self._renewed.pop(shard, None)
            else:
                self._held[shard] = renewed
                self._renewed[shard] = self.clock()

        results = await asyncio.gather(*(renew(i, lease) for i, lease in list(self._held.items())),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _claim(self, what: str, name: str, listed: dict[str, Any] | None,
                     annotations: Mapping[str, str]) -> dict[str, Any] | None:
        """Take a free or expired Lease (as listed), or create it; None if another won."""
        now = self.clock()
        if listed is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": self.namespace,
                                 "annotations": dict(annotations)},
                    "spec": self._spec(now, now, 0)}
            try:
                return _plain(await self.store.call(
                    what, self.store.client.create(Lease.from_dict(body)), limiter=self.limiter))
            except (AlreadyExists, Conflict):
                return None
        meta = dict(listed.get("metadata") or {})
        meta["annotations"] = dict(meta.get("annotations") or {}) | dict(annotations)
        transitions = int((listed.get("spec") or {}).get("leaseTransitions") or 0) + 1
        try:
            return await self._replace(what, dict(listed) | {"metadata": meta,
                                                             "spec": self._spec(now, now, transitions)})
        except (Conflict, NotFound):
            return None

    async def _take_member(self, slot: int, listed: dict[str, Any] | None) -> None:
        lease = await self._claim("take member lease", member_lease(self.base, slot), listed, {})
        if lease is not None:
            self._member = (slot, lease)
            self._member_renewed = self.clock()
            log.info("joined the replicas", slot=slot, identity=self.identity)

    async def _take(self, shard: int, listed: dict[str, Any] | None) -> bool:
        lease = await self._claim(f"take shard lease {shard}", shard_lease(self.base, shard), listed,
                                  {SHARDS_ANNOTATION: str(self.shards)})
        if lease is None:
            return False
        self._held[shard] = lease
        self._renewed[shard] = self.clock()
        return True

    async def _release(self, lease: dict[str, Any]) -> None:
        spec = dict(lease.get("spec") or {}) | {"holderIdentity": "", "renewTime": lease_time(_EPOCH)}
        await self._replace("release lease", dict(lease) | {"spec": spec})

    async def release_all(self) -> None:
        """On a clean shutdown: stop acting at once, then give every Lease back, so the
        other replicas take the shards at their next round instead of after the expiry."""
        leases = list(self._held.values()) + list(self._draining.values())
        if self._member is not None:
            leases.append(self._member[1])
        self._held.clear()
        self._renewed.clear()
        self._draining.clear()
        self._member = None
        self._leading.clear()
        results = await asyncio.gather(*(self._release(lease) for lease in leases),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.info("some Leases were not given back (they expire)", error=str(failed[0]))
