"""What the router asks of the store for every request, answered from memory: does
the requester's SympoziumInstance exist, which schedules has its agent made (the
per-instance cap counts them), and what does the schedule it names hold now.

From informers once they have synced: in ``run`` the controller's own (no second
cache, no second watch), for a router on its own (the ``router`` command, a
router-only replica) informers of its own. Before they sync, or for a namespace
they do not watch, the store is asked, as it is on a miss (an instance created a
moment ago that the watch has not brought yet). The router's own writes count at
once (write-through, kept beside a shared cache until its watch brings them), so
a burst of creates from one agent never outruns the cap; a schedule another writer
made reaches the count when its watch event does (as before, when two routers
counted at the same moment). A schedule read from memory may be a moment old: the
write based on it carries its resourceVersion (or uid), so a stale read is a
conflict, and the router reads the store then and decides again.
"""

from __future__ import annotations

import asyncio

from sympozium_schedule.core.model import LABEL_INSTANCE, LABEL_SOURCE, Kind
from sympozium_schedule.core.requests import SOURCE_AGENT
from sympozium_schedule.ports.store import EventType, NotFound, Obj, Ref, Store
from sympozium_schedule.runtime.informer import Informer, Key, is_newer, key_of, run_informers

AGENT_LABELS = {LABEL_SOURCE: SOURCE_AGENT}


def _agent_of(obj: Obj) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    instance = labels.get(LABEL_INSTANCE)
    if labels.get(LABEL_SOURCE) != SOURCE_AGENT or not isinstance(instance, str):
        return None
    return instance


class AgentDirectory:
    def __init__(self, store: Store, *, instances: Informer | None = None,
                 schedules: Informer | None = None):
        self.store = store
        self._own = instances is None or schedules is None
        self.instances = instances or Informer(store, Kind.INSTANCE)
        self.schedules = schedules or Informer(store, Kind.SCHEDULE, labels=AGENT_LABELS)
        self._names: dict[Key, set[str]] = {}  # (namespace, instance) -> agent schedule names
        self._owner: dict[Key, Key] = {}  # (namespace, schedule) -> (namespace, instance)
        # The router's own writes the schedules informer has not brought yet (None: deleted).
        self._recent: dict[Key, Obj | None] = {}
        self.schedules.add_handler(self._on_schedule)
        for obj in list(self.schedules.cache.values()):
            self._on_schedule(EventType.ADDED, obj)

    async def run(self) -> None:
        """Keep the directory's own informers current (nothing to do with shared ones)."""
        if self._own:
            await run_informers(self.instances, self.schedules)
        else:
            await asyncio.Event().wait()

    # --- the index ----------------------------------------------------------------------------

    def _on_schedule(self, change: EventType, obj: Obj) -> None:
        key = key_of(obj)
        if key in self._recent:
            mine = self._recent[key]
            if mine is None or change is EventType.DELETED or is_newer(obj, mine):
                del self._recent[key]  # the watch has caught up with our own write
        instance = None if change is EventType.DELETED else _agent_of(obj)
        old = self._owner.pop(key, None)
        if old is not None:
            names = self._names.get(old)
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._names[old]
        if instance is not None:
            owner = (key[0], instance)
            self._owner[key] = owner
            self._names.setdefault(owner, set()).add(key[1])

    def _covers(self, informer: Informer, namespace: str) -> bool:
        return informer.synced.is_set() and (
            informer.namespaces is None or namespace in informer.namespaces)

    # --- questions ----------------------------------------------------------------------------

    async def instance_exists(self, namespace: str, name: str) -> bool:
        if self._covers(self.instances, namespace) and self.instances.get(namespace, name):
            return True
        try:
            await self.store.get(Ref(Kind.INSTANCE, namespace, name))
        except NotFound:
            return False
        return True

    async def instance_namespaces(self, name: str) -> list[str]:
        """Every namespace with an instance of that name (Sympozium's older bridge
        sends none)."""
        if self.instances.synced.is_set() and self.instances.namespaces is None:
            return sorted(ns for ns, n in self.instances.cache if n == name)
        listing = await self.store.list(Kind.INSTANCE)
        return [str(o["metadata"].get("namespace", "default")) for o in listing.items
                if o["metadata"].get("name") == name]

    async def schedule(self, namespace: str, name: str, *, creating: bool) -> Obj | None:
        """The schedule as last seen, or None. From memory when the cache has it; a name
        it lacks may be a schedule the watch has not brought yet (or a person's, where
        only agent schedules are cached), so the store is asked, unless the agent is
        creating it: the create then fails as taken if it is, and the router looks
        again in the store."""
        key = (namespace, name)
        if key in self._recent:
            return self._recent[key]
        if self._covers(self.schedules, namespace):
            found = self.schedules.get(namespace, name)
            if found is not None or creating:
                return found
        return await self.stored_schedule(namespace, name)

    async def stored_schedule(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self.store.get(Ref(Kind.SCHEDULE, namespace, name))
        except NotFound:
            return None

    async def agent_schedules(self, namespace: str, instance: str) -> list[str]:
        """The names of the schedules the instance's agent made."""
        if self._covers(self.schedules, namespace):
            return sorted(self._names.get((namespace, instance), ()))
        listing = await self.store.list(Kind.SCHEDULE, namespace=namespace, labels={
            LABEL_INSTANCE: instance, **AGENT_LABELS})
        return [o["metadata"]["name"] for o in listing.items]

    # --- the router's own writes --------------------------------------------------------------

    def written(self, obj: Obj) -> None:
        """A schedule the router created or updated (the store's answer)."""
        if self._own:
            self.schedules.observe(obj)  # the index hears it; the watch's echo is skipped
            return
        self._on_schedule(EventType.MODIFIED, obj)
        self._recent[key_of(obj)] = obj

    def deleted(self, obj: Obj) -> None:
        namespace, name = key_of(obj)
        if self._own:
            self.schedules.forget(namespace, name)
            return
        self._on_schedule(EventType.DELETED, obj)
        self._recent[(namespace, name)] = None
