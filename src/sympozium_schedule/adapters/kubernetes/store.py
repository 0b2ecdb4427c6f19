"""KubernetesStore: the :class:`~sympozium_schedule.ports.store.Store` port on the Kubernetes API.

Built on lightkube's async client (chosen over kubernetes_asyncio and kr8s:
typed and small, async-first, generic resources are plain dicts, and its
watch resumes from the last resourceVersion by itself). Every resource is
handled as a lightkube generic resource, so objects stay the JSON dicts the
core reads. API errors map onto the store's error taxonomy (404 NotFound,
409 AlreadyExists/Conflict, 410 Expired, 403 Forbidden, other 4xx Invalid,
401/429/5xx/network Unavailable). A token bucket limits the request rate as client-go's does;
watches are not counted against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube import AsyncClient, KubeConfig, operators
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ApiError
from lightkube.core.generic_client import ALL_NS
from lightkube.core.selector import build_selector
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from sympozium_schedule.core.model import GROUP, VERSION, Kind, is_dns1123_label
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    Create,
    EventType,
    Expired,
    Forbidden,
    GroupResults,
    Invalid,
    Known,
    Labels,
    Listing,
    NotFound,
    Obj,
    PatchStatus,
    Ref,
    StoreError,
    Unavailable,
    Update,
    WatchEvent,
    Write,
    WriteResult,
)

FIELD_MANAGER = "sympozium-schedule"


def user_agent(component: str) -> str:
    """``sympozium-schedule/<version> (<component>)``, so that a cluster's audit log and
    ``apiserver_request_total`` name us (client-go sends ``<binary>/<version> ...``)."""
    from importlib import metadata

    try:
        version = metadata.version("sympozium-schedule")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    return f"sympozium-schedule/{version} ({component})"

RESOURCES: dict[Kind, Any] = {
    Kind.SCHEDULE: create_namespaced_resource(GROUP, VERSION, "SympoziumSchedule", "sympoziumschedules"),
    Kind.AGENT_RUN: create_namespaced_resource(GROUP, VERSION, "AgentRun", "agentruns"),
    Kind.INSTANCE: create_namespaced_resource(GROUP, VERSION, "SympoziumInstance", "sympoziuminstances"),
    Kind.CONFIG_MAP: create_namespaced_resource("", "v1", "ConfigMap", "configmaps"),
    Kind.EVENT: create_namespaced_resource("", "v1", "Event", "events"),
}
Lease = create_namespaced_resource("coordination.k8s.io", "v1", "Lease", "leases")


def _error(exc: Exception, what: str) -> StoreError:
    """The store error for an API or transport failure."""
    if isinstance(exc, ApiError):
        code, reason = exc.status.code, exc.status.reason or ""
        message = f"{what}: {exc.status.message or reason or code}"
        if code == 404:
            return NotFound(message)
        if code == 409:
            return AlreadyExists(message) if reason == "AlreadyExists" else Conflict(message)
        if code == 410:
            return Expired(message)
        if code in (400, 413, 422):
            return Invalid(message)
        if code == 403:
            return Forbidden(f"{message} (check the ServiceAccount's RBAC)")
        if code == 401:  # a token being rotated: the next request reads the new one
            return Unavailable(message)
        return Unavailable(message)
    return Unavailable(f"{what}: {exc or type(exc).__name__}")


def _plain(resource: Any) -> Obj:
    """The object as the core reads it, without ``metadata.managedFields``: server-side apply's
    bookkeeping, often larger than the object, that nothing here reads (controller-runtime's
    caches strip it the same way)."""
    obj: Obj = resource.to_dict()
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def _selector(labels: Labels | None) -> dict[str, Any] | None:
    if not labels:
        return None
    return {k: (operators.exists() if v is None else v) for k, v in labels.items()}


class RateLimiter:
    """A token bucket: ``qps`` requests per second on average, bursts of ``burst``.

    Two priorities: a low-priority request (an Event: best effort, never on a fire's path)
    waits while any normal one is waiting, so a burst of fires is paced by the bucket alone
    and its Events follow (client-go shares one limiter between both; issue 13's target for
    the burst is the bucket's own bound)."""

    def __init__(self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self._normal_waiting = 0
        self._normal_idle = asyncio.Event()
        self._normal_idle.set()

    async def acquire(self, *, low: bool = False) -> None:
        if self.qps <= 0:
            return
        if not low:
            self._normal_waiting += 1
            self._normal_idle.clear()
            try:
                async with self._lock:
                    await self._take()
            finally:
                self._normal_waiting -= 1
                if not self._normal_waiting:
                    self._normal_idle.set()
            return
        while True:
            await self._normal_idle.wait()
            async with self._lock:
                if self._normal_waiting:
                    continue  # one arrived while this waited for the lock: it goes first
                await self._take()
                return

    async def _take(self) -> None:
        # Tokens are counted from the clock after every wait, so time the event loop took
        # to wake us up is credited (setting the bucket to 1 after a sleep lost it: ~2 ms a
        # request on a loaded machine, 10 % of a burst at 50 requests/s).
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await self._sleep((1 - self._tokens) / self.qps)


def load_config(kubeconfig: Path | None = None, context: str | None = None) -> KubeConfig | SingleConfig:
    """``--kubeconfig``, else ``$KUBECONFIG`` / ``~/.kube/config``, else in-cluster."""
    config = (KubeConfig.from_file(kubeconfig) if kubeconfig is not None
              else KubeConfig.from_env()).get(context_name=context)
    if config is None:
        raise Unavailable(f"the kubeconfig has no context {context or '(current)'}")
    return config


class KubernetesStore:
    def __init__(self, client: AsyncClient, *, qps: float = 50.0, burst: int = 100):
        self.client = client
        self.limiter = RateLimiter(qps, burst)
        self.requests = 0

    @classmethod
    def connect(cls, kubeconfig: Path | None = None, *, context: str | None = None,
                qps: float = 50.0, burst: int = 100, component: str = "controller") -> KubernetesStore:
        try:
            config = load_config(kubeconfig, context)
        except Exception as exc:  # lightkube raises ConfigError and plain OSErrors
            raise Unavailable(f"no usable Kubernetes configuration: {exc}") from exc
        client = AsyncClient(config=config, field_manager=FIELD_MANAGER, trust_env=False)
        # lightkube takes no User-Agent; its httpx client is built at once (lazy=True only
        # defers the kubeconfig's exec credentials), so the header is set on it here.
        client._client._client.headers["User-Agent"] = user_agent(component)
        return cls(client, qps=qps, burst=burst)

    async def call(self, what: str, coro: Any, *, low: bool = False,
                   limiter: RateLimiter | None = None) -> Any:
        """Run one API request under the rate limit, mapping errors to the store taxonomy.
        ``limiter``: a token bucket of the caller's own instead (the Leases': leader.py)."""
        await (limiter or self.limiter).acquire(low=low)
        self.requests += 1
        try:
            return await coro
        except (ApiError, httpx.HTTPError, OSError) as exc:
            raise _error(exc, what) from exc

    # --- the port -------------------------------------------------------------------------

    async def get(self, ref: Ref) -> Obj:
        res = RESOURCES[ref.kind]
        obj = await self.call(f"get {ref}", self.client.get(res, ref.name, namespace=ref.namespace))
        return _plain(obj)

    async def list(self, kind: Kind, *, namespace: str | None = None,
                   labels: Labels | None = None) -> Listing:
        res = RESOURCES[kind]
        iterable = self.client.list(res, namespace=namespace or "*", labels=_selector(labels))

        async def collect() -> list[Obj]:
            return [_plain(o) async for o in iterable]

        items = await self.call(f"list {kind.value}", collect())
        return Listing(items, str(iterable.resourceVersion))

    async def watch(self, kind: Kind, *, resource_version: str, namespace: str | None = None,
                    labels: Labels | None = None, known: Known | None = None,
                    ) -> AsyncIterator[WatchEvent]:
        # ``known`` is not used: the API server sends every event decoded anyway.
        res = RESOURCES[kind]
        self.requests += 1
        # lightkube's watch() re-opens a watch the server ended (every --min-request-timeout,
        # 30-60 min in clusters) from the last version it saw, but takes no
        # allowWatchBookmarks: the request is built here so that BOOKMARK events keep that
        # version current while nothing we watch changes, and a re-opened watch resumes
        # instead of answering 410 Gone (and a relist) once the server's window has moved on.
        generic = self.client._client
        request = generic.prepare_request("list", res=res, namespace=namespace or ALL_NS, watch=True, params={
            "resourceVersion": resource_version, "allowWatchBookmarks": "true",
            "labelSelector": build_selector(_selector(labels) or {}) if labels else None})
        stream = generic.watch(request)
        try:
            async for change, obj in stream:
                if change in ("ADDED", "MODIFIED", "DELETED"):
                    yield WatchEvent(EventType(change), _plain(obj))
        except (ApiError, httpx.HTTPError, OSError) as exc:
            raise _error(exc, f"watch {kind.value}") from exc
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def create(self, obj: Obj) -> Obj:
        ref = _ref(obj)
        res = RESOURCES[ref.kind]
        draft = dict(obj)
        draft["metadata"] = dict(obj.get("metadata") or {}) | {"namespace": ref.namespace}
        created = await self.call(f"create {ref}", self.client.create(res.from_dict(draft)),
                                  low=ref.kind is Kind.EVENT)
        return _plain(created)

    async def update(self, obj: Obj) -> Obj:
        ref = _ref(obj)
        res = RESOURCES[ref.kind]
        draft = {k: v for k, v in obj.items() if k != "status"}
        meta = dict(draft.get("metadata") or {})
        if not meta.get("resourceVersion"):
            # PUT needs a version; without one the caller asked for last-writer-wins.
            current = await self.get(ref)
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        draft["metadata"] = meta | {"namespace": ref.namespace}
        replaced = await self.call(f"update {ref}", self.client.replace(res.from_dict(draft)))
        return _plain(replaced)

    async def patch_status(self, ref: Ref, patch: Mapping[str, Any], *,
                           resource_version: str | None = None) -> Obj:
        body: dict[str, Any] = {"status": dict(patch)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}  # a precondition
        res = RESOURCES[ref.kind]
        patched = await self.call(f"patch {ref} status", self.client.patch(
            res.Status, ref.name, body, namespace=ref.namespace, patch_type=PatchType.MERGE))
        return _plain(patched)

    async def delete(self, ref: Ref, *, uid: str | None = None) -> None:
        if uid:
            # lightkube's delete takes no preconditions; a get first narrows the race to
            # the moment between the two calls, and the run name carries the rest.
            current = await self.get(ref)
            if current["metadata"].get("uid") != uid:
                raise Conflict(f"{ref} is another incarnation (uid {current['metadata'].get('uid')})")
        await self.call(f"delete {ref}", self.client.delete(RESOURCES[ref.kind], ref.name,
                                                              namespace=ref.namespace))

    async def write_groups(self, groups: Sequence[Sequence[Write]]) -> GroupResults:
        """The API has no batch call: groups run concurrently (the rate limiter paces
        them), each group's writes in order."""

        async def one(write: Write) -> WriteResult:
            if isinstance(write, Create):
                return await self.create(write.obj)
            if isinstance(write, PatchStatus):
                return await self.patch_status(write.ref, write.patch,
                                               resource_version=write.resource_version)
            if isinstance(write, Update):
                return await self.update(write.obj)
            try:
                await self.delete(write.ref, uid=write.uid)
            except NotFound:
                if not write.missing_ok:
                    raise
            return None

        async def group(writes: Sequence[Write]) -> list[WriteResult]:
            done: list[WriteResult] = []
            for write in writes:
                try:
                    done.append(await one(write))
                except StoreError as exc:
                    done.append(exc)
                    break
            return done

        return list(await asyncio.gather(*(group(g) for g in groups)))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


def _ref(obj: Obj) -> Ref:
    """Where an object goes; what the API server would refuse is refused here, so
    a bad object costs no request and gets the same Invalid from both stores."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        raise Invalid("metadata: must be a mapping")
    namespace = meta.get("namespace") or "default"
    if not isinstance(namespace, str) or not is_dns1123_label(namespace):
        raise Invalid(f"metadata.namespace: {namespace!r}: not a valid namespace name")
    try:
        kind = Kind(str(obj.get("kind")))
    except ValueError as exc:
        raise Invalid(f"kind {obj.get('kind')!r} is not one this store handles") from exc
    name = meta.get("name") or meta.get("generateName")  # the server completes a generateName
    if not isinstance(name, str) or not name:
        raise Invalid("metadata.name is required")
    return Ref(kind, namespace, name)
