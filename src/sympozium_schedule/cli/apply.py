"""Writing checked documents: create what is absent, update what is there.

Dependencies go first (ConfigMaps, then instances, then schedules, then
runs), whatever the order in the files: a running scheduler that sees a
schedule before its instance would flag it InstanceNotFound for a moment,
and its first run would miss the instance's memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

from sympozium_schedule.cli.kinds import info
from sympozium_schedule.cli.validate import Document
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Create,
    NotFound,
    Obj,
    Ref,
    Store,
    StoreError,
    Update,
    Write,
    WriteResult,
)

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


# Objects per write_groups call: one transaction of the SQLite store each. Large enough
# that a transaction's fixed cost vanishes, small enough that the lines keep coming.
CHUNK = 2000


async def apply_all(store: Store, documents: Sequence[Document],
                    emit: Callable[[str], None]) -> None:
    """Apply in dependency order, reporting the objects as soon as they are written.

    What :func:`apply_one` does for each in turn, in chunks written as one chain of
    writes each through :meth:`Store.write_groups` (one transaction of the SQLite
    store instead of one per object, which bounded ``apply -f`` of 100,000 objects),
    each write only if the one before it succeeded. A chunk is first written as
    creates, with no look-up (a new object is what a large apply mostly writes);
    once a create finds its object there, the chunks that follow are looked up
    first (a read each) and what exists is updated, until a chunk finds none.
    Where a chain stops (an object already there, or twice in the manifests, or a
    store error), that object goes through :func:`apply_one` as before, which
    raises what it cannot get past, and the next chain starts after it.
    """
    ordered = in_dependency_order(documents)
    look_up = False
    at = 0
    while at < len(ordered):
        chunk = ordered[at:at + CHUNK]
        writes, before = await _writes(store, chunk, look_up=look_up)
        try:
            [results] = await store.write_groups([writes])
        except StoreError:
            results = []  # not even a first write: that one goes the way of a failure
        lines = []
        for doc, result, rv in zip(chunk, results, before, strict=False):
            if isinstance(result, StoreError):
                break
            lines.append(_line(doc, _outcome(result, rv)))
        if lines:
            emit("\n".join(lines))
        at += len(lines)
        look_up = any(rv is not None for rv in before)
        if len(lines) < len(chunk):
            look_up = look_up or isinstance(results[-1] if results else None, AlreadyExists)
            emit(_line(ordered[at], await apply_one(store, ordered[at].obj)))
            at += 1


async def _writes(store: Store, chunk: Sequence[Document], *,
                  look_up: bool) -> tuple[list[Write], list[str | None]]:
    """A chunk's writes, and for each the resourceVersion an update starts from
    (None: a create)."""
    writes: list[Write] = []
    before: list[str | None] = []
    for doc in chunk:
        current = None
        if look_up:
            with contextlib.suppress(NotFound):
                current = await store.get(Ref.of(doc.obj))
        if current is None:
            # Create hands the object over, to be completed in place: the store fills
            # in a copy of the metadata, and the document stays as it was read.
            writes.append(Create({**doc.obj, "metadata": dict(doc.obj["metadata"])}))
            before.append(None)
        else:
            writes.append(Update(doc.obj))
            before.append(current["metadata"].get("resourceVersion"))
    return writes, before


def _outcome(written: WriteResult, before: str | None) -> Outcome:
    if before is None:
        return "created"
    assert isinstance(written, dict)
    return "unchanged" if written["metadata"].get("resourceVersion") == before else "configured"


def _line(doc: Document, outcome: Outcome) -> str:
    return f"{info(doc.kind).qualified}/{doc.name} {outcome}"


async def stored_instances(store: Store) -> set[tuple[str, str]]:
    listing = await store.list(Kind.INSTANCE)
    return {(str(o["metadata"].get("namespace")), str(o["metadata"].get("name")))
            for o in listing.items}
