"""Leader election on a ``coordination.k8s.io/v1`` Lease, client-go's algorithm.

A replica leads while it holds the Lease and renews it every ``retry_period``.
Another replica takes the Lease only after ``lease_duration`` without a
renewal. The leader stops leading the moment a renewal has not succeeded for
``renew_deadline`` (shorter than ``lease_duration``), so by the time anyone
else may take over, the old leader has already stopped firing. Every write is
conditional on the Lease's resourceVersion: two candidates never both win.

Hand-written because lightkube has no leader election; this is the ~100
lines of client-go's leaderelection package the controller needs. One
elector holds one Lease (name and namespace are parameters), so a process
can run several, one per shard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from sympozium_schedule.adapters.kubernetes.store import KubernetesStore, Lease, RateLimiter, _plain
from sympozium_schedule.ports.store import AlreadyExists, Conflict, NotFound, StoreError

log = structlog.get_logger("leader")


def lease_time(t: datetime) -> str:
    """A Lease's MicroTime."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_lease_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text).astimezone(UTC)
    return None


def lease_limiter(store: KubernetesStore) -> RateLimiter:
    """A token bucket for the Lease requests alone, with the store's rate. On the store's own
    bucket a renewal queued behind a burst's writes (measured: a leader with 1,000 due at once
    at --kube-qps 50 renewed every 7-8 s, and passed its 10 s renew deadline, stopping
    mid-burst). controller-runtime gives leader election a client of its own for this."""
    return RateLimiter(store.limiter.qps, store.limiter.burst)


class LeaseElector:
    def __init__(self, store: KubernetesStore, *, name: str, namespace: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, clock: Callable[[], datetime] | None = None):
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.store = store
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock or (lambda: datetime.now(UTC))
        self.limiter = lease_limiter(store)
        self.transitions = 0
        self._leading = asyncio.Event()
        self._last_renew: datetime | None = None
        self._held: dict[str, Any] | None = None  # the Lease as this replica last wrote it
        self.healthy = False  # the last lease round reached the API

    @property
    def is_leading(self) -> bool:
        if not self._leading.is_set():
            return False
        # Stop at once when renewals have failed for too long, even between rounds.
        if self._last_renew is None or (self.clock() - self._last_renew) > timedelta(
                seconds=self.renew_deadline):
            self._lose("renewals failed for longer than the renew deadline")
            return False
        return True

    async def wait_leading(self) -> None:
        await self._leading.wait()

    def owns(self, key: tuple[str, str]) -> bool:
        """The leader acts on every schedule."""
        return self.is_leading

    def owner_status(self, key: tuple[str, str]) -> Mapping[str, str]:
        """Nothing in status: with one Lease, ``/leaderz`` and the Lease say who leads."""
        return {}

    def _lose(self, why: str) -> None:
        if self._leading.is_set():
            self._leading.clear()
            log.warning("lost leadership: stopped firing", identity=self.identity, reason=why)

    async def run(self) -> None:
        try:
            while True:
                try:
                    won = await self._try_acquire_or_renew()
                    self.healthy = True
                except StoreError as exc:
                    won = False
                    self.healthy = False
                    log.info("lease round failed", error=str(exc))
                if won:
                    self._last_renew = self.clock()
                    if not self._leading.is_set():
                        log.info("became leader", identity=self.identity, lease=self.name)
                        self._leading.set()
                elif self._leading.is_set():
                    self.is_leading  # noqa: B018 - applies the renew deadline
                await asyncio.sleep(self.retry_period)
        finally:
            if self._leading.is_set():
                self._leading.clear()
                with contextlib.suppress(StoreError, Exception):
                    await self._release()

    def _spec(self, now: datetime, acquired: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": lease_time(acquired),
            "renewTime": lease_time(now),
            "leaseTransitions": transitions,
        }

    async def _try_acquire_or_renew(self) -> bool:
        """One round. The leader renews with one conditional update of the Lease it last
        wrote (client-go's fast path): one request per ``retry_period``, and a GET only when
        that update conflicts or the Lease is gone. A standby GETs and takes an expired Lease."""
        held = self._held
        if held is not None and self._leading.is_set():
            renewed = dict(held) | {"spec": self._spec(self.clock(), self._acquired(held), self.transitions)}
            try:
                self._held = await self._replace("renew lease", renewed)
                return True
            except (Conflict, NotFound):
                self._held = None  # someone else wrote it: look again below
        return await self._acquire()

    def _acquired(self, lease: dict[str, Any]) -> datetime:
        return parse_lease_time((lease.get("spec") or {}).get("acquireTime")) or self.clock()

    async def _replace(self, what: str, lease: dict[str, Any]) -> dict[str, Any]:
        replaced = await self.store.call(what, self.store.client.replace(Lease.from_dict(lease)),
                                         limiter=self.limiter)
        return _plain(replaced)

    async def _acquire(self) -> bool:
        client = self.store.client
        now = self.clock()
        try:
            lease = _plain(await self.store.call(f"get lease {self.name}", client.get(
                Lease, self.name, namespace=self.namespace), limiter=self.limiter))
        except NotFound:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, now, 0)}
            try:
                created = await self.store.call("create lease", client.create(Lease.from_dict(body)),
                                                limiter=self.limiter)
            except (AlreadyExists, Conflict):
                return False
            self._held = _plain(created)
            self.transitions = 0
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = parse_lease_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = renewed is None or now > renewed + timedelta(seconds=duration)
        if holder != self.identity and holder and not expired:
            self._held = None
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquired = self._acquired(lease)
        else:
            acquired, transitions = now, transitions + 1
        lease["spec"] = self._spec(now, acquired, transitions)
        try:
            self._held = await self._replace("take lease", lease)
        except Conflict:
            return False
        self.transitions = transitions
        return True

    async def _release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once."""
        lease = self._held
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        spec = dict(lease["spec"]) | {"holderIdentity": "",
                                       "renewTime": lease_time(datetime(1970, 1, 1, tzinfo=UTC))}
        await self._replace("release lease", dict(lease) | {"spec": spec})
        self._held = None
