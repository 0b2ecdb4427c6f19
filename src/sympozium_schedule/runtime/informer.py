"""Informers: a list-then-watch cache of one kind, kept current from the store.

The controller reads only from these caches while firing. A watch that ends
(a dropped connection) is resumed from the last version seen; a watch whose
version has expired (410 Gone) triggers a relist, and the relist is diffed
against the cache so handlers see exactly the changes they missed.

Write-through: after a successful write the controller puts the returned
object into the cache at once (``observe``), so a reconcile that follows its
own write never acts on the state before it. A later, older watch event is
ignored by comparing resourceVersions.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import structlog

from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import (
    EventType,
    Expired,
    Labels,
    Obj,
    Store,
    StoreError,
)

Key = tuple[str, str]  # (namespace, name)
Handler = Callable[[EventType, Obj], None]

log = structlog.get_logger("informer")


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _rv(obj: Obj) -> int | None:
    text = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(text) if text is not None else None
    except (TypeError, ValueError):
        return None


def _same_version(a: Obj, b: Obj) -> bool:
    version = _rv(a)
    return version is not None and version == _rv(b)


def is_newer(new: Obj, old: Obj) -> bool:
    """Whether ``new`` supersedes ``old``. Kubernetes calls resourceVersions opaque,
    but both etcd and our SQLite store issue increasing integers; when either is
    not an integer, the later arrival wins."""
    a, b = _rv(new), _rv(old)
    if a is None or b is None:
        return True
    return a >= b


class Informer:
    def __init__(
        self,
        store: Store,
        kind: Kind,
        *,
        namespaces: tuple[str, ...] | None = None,
        labels: Labels | None = None,
        on_change: Handler | None = None,
        backoff_max: float = 30.0,
    ):
        self.store = store
        self.kind = kind
        self.namespaces = namespaces
        self.labels = labels
        self.cache: dict[Key, Obj] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        self._handlers: list[Handler] = [on_change] if on_change else []
        self._own_write_handlers: list[Handler] = []
        self._backoff_max = backoff_max

    def add_handler(self, handler: Handler, *, own_writes: bool = False) -> None:
        """Call ``handler`` on every change. A writer applies its own writes with
        ``observe(notify=False)`` so its handlers are not handed back what it just did;
        with ``own_writes`` the handler hears those too (a watcher of everything, such
        as the console's live stream, would otherwise never see a fire's status)."""
        self._handlers.append(handler)
        if own_writes:
            self._own_write_handlers.append(handler)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.cache.get((namespace, name))

    def _emit(self, change: EventType, obj: Obj, *, own_only: bool = False) -> None:
        for handler in self._own_write_handlers if own_only else self._handlers:
            try:
                handler(change, obj)
            except Exception:
                log.exception("informer handler failed", kind=self.kind.value)

    def _held(self, namespace: str, name: str) -> str | None:
        obj = self.cache.get((namespace, name))
        if obj is None:
            return None
        version = (obj.get("metadata") or {}).get("resourceVersion")
        return str(version) if version is not None else None

    def observe(self, obj: Obj, *, notify: bool = True) -> None:
        """Apply an object this process just wrote (write-through). A writer that
        already knows what it changed passes ``notify=False``: handlers would only
        hand it back its own write."""
        key = key_of(obj)
        old = self.cache.get(key)
        if old is not None and not is_newer(obj, old):
            return
        self.cache[key] = obj
        if notify or self._own_write_handlers:
            self._emit(EventType.MODIFIED if old else EventType.ADDED, obj, own_only=not notify)

    def forget(self, namespace: str, name: str, *, notify: bool = True) -> None:
        """Drop an object this process just deleted."""
        old = self.cache.pop((namespace, name), None)
        if old is not None and (notify or self._own_write_handlers):
            self._emit(EventType.DELETED, old, own_only=not notify)

    def _apply(self, change: EventType, obj: Obj) -> None:
        key = key_of(obj)
        old = self.cache.get(key)
        if change is EventType.DELETED:
            if old is not None and (
                _uid(old) == _uid(obj) or not _uid(obj)
            ) and is_newer(obj, old):
                del self.cache[key]
                self._emit(EventType.DELETED, old)
            return
        if old is not None and (not is_newer(obj, old) or _same_version(obj, old)):
            return  # older than what we hold, or the echo of our own write
        self.cache[key] = obj
        self._emit(change, obj)

    async def _relist(self, namespace: str | None) -> str:
        listing = await self.store.list(self.kind, namespace=namespace, labels=self.labels)
        fresh = {key_of(o): o for o in listing.items}
        listed_at = {"metadata": {"resourceVersion": listing.resource_version}}
        scope = [k for k in self.cache if namespace is None or k[0] == namespace]
        for key in scope:
            # Gone from the listing, unless this process wrote it after the snapshot.
            if key not in fresh and not is_newer(self.cache[key], listed_at):
                old = self.cache.pop(key)
                self._emit(EventType.DELETED, old)
        for obj in fresh.values():
            self._apply(EventType.ADDED, obj)
        return listing.resource_version

    async def run(self) -> None:
        """List and watch forever (one loop per namespace scope)."""
        scopes: tuple[str | None, ...] = self.namespaces or (None,)
        pending = set(scopes)
        ready: set[str | None] = set()

        async def loop(namespace: str | None) -> None:
            delay = 0.2
            version: str | None = None
            while True:
                try:
                    if version is None:
                        version = await self._relist(namespace)
                        self.relists += 1
                        ready.add(namespace)
                        if ready >= pending:
                            self.synced.set()
                    events = 0
                    async for event in self.store.watch(
                        self.kind, resource_version=version, namespace=namespace,
                        labels=self.labels, known=self._held,
                    ):
                        events += 1
                        self._apply(event.type, event.object)
                        version = (event.object.get("metadata") or {}).get(
                            "resourceVersion") or version
                    # A watch that ended cleanly: resume where it stopped, but never in a
                    # tight loop if the store keeps ending watches at once.
                    await asyncio.sleep(0 if events else delay)
                    delay = 0.2 if events else min(delay * 2, self._backoff_max)
                except Expired:
                    log.info("watch expired, relisting", kind=self.kind.value, namespace=namespace)
                    version = None
                except StoreError as exc:
                    log.warning("watch failed, retrying", kind=self.kind.value,
                                namespace=namespace, error=str(exc), retry_in=round(delay, 2))
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self._backoff_max)
                    version = None

        async with asyncio.TaskGroup() as group:
            for namespace in scopes:
                group.create_task(loop(namespace))


def _uid(obj: Obj) -> Any:
    return (obj.get("metadata") or {}).get("uid")


async def run_informers(*informers: Informer) -> None:
    async with asyncio.TaskGroup() as group:
        for informer in informers:
            group.create_task(informer.run())
