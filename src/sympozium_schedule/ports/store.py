"""The store: a Kubernetes-shaped object store with versions and watches.

Both adapters (embedded SQLite, Kubernetes API) implement :class:`Store`, and
one contract suite (tests/store/test_contract.py) runs against both. Objects
are JSON dicts as the Kubernetes API returns them. ``resourceVersion`` is an
opaque string; writes that carry one are conditional (optimistic concurrency).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from sympozium_schedule.core.model import Kind

Obj = dict[str, Any]
# Equality selectors; a None value means "the label is present, any value".
Labels = Mapping[str, str | None]


Known = Callable[[str, str], str | None]


def labels_match(obj: Obj, labels: Labels | None) -> bool:
    """Whether ``obj`` matches a label selector, as the API server would decide."""
    if not labels:
        return True
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(
        (key in have) if want is None else (have.get(key) == want)
        for key, want in labels.items()
    )


class StoreError(Exception):
    """Base of store errors. ``temporary`` says whether retrying can help."""

    temporary = False


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The object changed since the resourceVersion the write was based on."""

    temporary = True


class Invalid(StoreError):
    """The store refused the object itself (schema, name, size): permanent."""


class Forbidden(StoreError):
    """The store refused the caller (Kubernetes: 403, RBAC, an admission plugin, a quota):
    permanent until someone changes the permissions, so it is reported, not retried fast."""


class Unavailable(StoreError):
    """The store cannot be reached or written right now (disk full, API down)."""

    temporary = True


class Expired(StoreError):
    """A watch asked for a resourceVersion the store no longer has: relist."""

    temporary = True


@dataclass(frozen=True, slots=True)
class Ref:
    kind: Kind
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.namespace}/{self.name}"

    @classmethod
    def of(cls, obj: Obj) -> Ref:
        meta = obj.get("metadata") or {}
        return cls(Kind(obj["kind"]), str(meta.get("namespace") or "default"), str(meta["name"]))


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    object: Obj


@dataclass(frozen=True, slots=True)
class Listing:
    items: list[Obj]
    resource_version: str


@dataclass(frozen=True, slots=True)
class Create:
    """The object is handed over: the store may complete it in place and return it."""

    obj: Obj


@dataclass(frozen=True, slots=True)
class Update:
    """Labels, annotations and spec, as :meth:`Store.update` (conditional when the
    object carries a resourceVersion)."""

    obj: Obj


@dataclass(frozen=True, slots=True)
class PatchStatus:
    ref: Ref
    patch: Mapping[str, Any]
    resource_version: str | None = None
    # The object the patch applies to, as the caller read it at ``resource_version``.
    # A store may then answer with ``base`` patched (its status merged, the new
    # resourceVersion) instead of reading the object back, and write the merged
    # status whole; the write is still conditional on ``resource_version``.
    base: Obj | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    ref: Ref
    uid: str | None = None
    missing_ok: bool = False  # NotFound counts as done


Write = Create | Update | PatchStatus | Delete
# What a write gave: the object written (None for a delete), or why it failed.
WriteResult = Obj | None | StoreError
GroupResults = list[list[WriteResult]]  # module level: in a Store class, `list` is a method


class Store(Protocol):
    """What the runtime, the router and the CLI need from a store."""

    async def get(self, ref: Ref) -> Obj:
        """The object, or :class:`NotFound`."""
        ...

    async def list(
        self, kind: Kind, *, namespace: str | None = None,
        labels: Labels | None = None,
    ) -> Listing:
        """Objects of ``kind`` (all watched namespaces when ``namespace`` is None)
        matching every label in ``labels``, and the version to watch from."""
        ...

    def watch(
        self, kind: Kind, *, resource_version: str, namespace: str | None = None,
        labels: Labels | None = None, known: Known | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Changes after ``resource_version``; raises :class:`Expired` when it is too old.
        The iterator may end (a dropped connection): the caller watches again.

        ``known(namespace, name)`` returns the resourceVersion the caller already
        holds; an adapter may skip an ADDED/MODIFIED it can tell is not newer
        (the echo of the caller's own write) without decoding it."""
        ...

    async def create(self, obj: Obj) -> Obj:
        """Store a new object; :class:`AlreadyExists` if the name is taken.
        The store assigns uid, resourceVersion, generation and creationTimestamp."""
        ...

    async def update(self, obj: Obj) -> Obj:
        """Replace labels, annotations and spec (never status). When
        ``metadata.resourceVersion`` is set it must be current (:class:`Conflict`).
        ``metadata.generation`` moves on when the spec changes."""
        ...

    async def patch_status(
        self, ref: Ref, patch: Mapping[str, Any], *, resource_version: str | None = None
    ) -> Obj:
        """Merge ``patch`` (RFC 7386: a None value removes the key) into status only."""
        ...

    async def delete(self, ref: Ref, *, uid: str | None = None) -> None:
        """Delete (and, like Kubernetes' garbage collector, the objects it owns).
        With ``uid``, only that incarnation is deleted (:class:`Conflict` otherwise)."""
        ...

    async def write_groups(self, groups: Sequence[Sequence[Write]]) -> GroupResults:
        """Many independent groups of writes at once (a burst of fires).

        Within a group the writes run in order, each only if the one before
        succeeded; a group's results end at its first failure (that StoreError
        is the last entry). Groups do not affect each other. Nothing is atomic
        across writes: this only saves the per-call overhead of one call each.
        """
        ...

    async def close(self) -> None: ...
