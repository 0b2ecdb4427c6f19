"""Writing checked documents: create what is absent, update what is there.

Dependencies go first (ConfigMaps, then instances, then schedules, then
runs), whatever the order in the files: a running scheduler that sees a
schedule before its instance would flag it InstanceNotFound for a moment,
and its first run would miss the instance's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from sympozium_schedule.cli.kinds import info
from sympozium_schedule.cli.validate import Document
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import AlreadyExists, NotFound, Obj, Ref, Store

Outcome = Literal["created", "configured", "unchanged"]
_ORDER = (Kind.SECRET, Kind.CONFIG_MAP, Kind.INSTANCE, Kind.SCHEDULE, Kind.AGENT_RUN)


def in_dependency_order(documents: Sequence[Document]) -> list[Document]:
    return sorted(documents, key=lambda d: _ORDER.index(d.kind))


async def apply_one(store: Store, obj: Obj) -> Outcome:
    """Create, or replace labels, annotations and spec (never status)."""
    ref = Ref.of(obj)
    try:
        current = await store.get(ref)
    except NotFound:
        try:
            await store.create(obj)
            return "created"
        except AlreadyExists:  # created by someone else since we looked
            current = await store.get(ref)
    before = current["metadata"].get("resourceVersion")
    updated = await store.update(obj)
    return "unchanged" if updated["metadata"].get("resourceVersion") == before else "configured"


async def apply_all(store: Store, documents: Sequence[Document],
                    emit: Callable[[str], None]) -> None:
    """Apply in dependency order, reporting each object as soon as it is written."""
    for doc in in_dependency_order(documents):
        outcome = await apply_one(store, doc.obj)
        emit(f"{info(doc.kind).qualified}/{doc.name} {outcome}")


async def stored_instances(store: Store) -> set[tuple[str, str]]:
    listing = await store.list(Kind.INSTANCE)
    return {(str(o["metadata"].get("namespace")), str(o["metadata"].get("name")))
            for o in listing.items}
