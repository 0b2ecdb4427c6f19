"""Objects on their way in: checking what is stored and serialising it (the caller's side)."""

from __future__ import annotations

import os
import threading
from typing import Any

import orjson

from sympozium_schedule.adapters.sqlite.tx import MAX_OBJECT_BYTES, dumps
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import Kind, check_name, is_dns1123_label
from sympozium_schedule.ports.store import Invalid, Obj

# Kinds whose status lives behind a /status subresource: create and update ignore it.
STATUS_KINDS = frozenset({Kind.SCHEDULE, Kind.AGENT_RUN, Kind.INSTANCE})


def storable(value: Any, what: str) -> str:
    """``value`` as JSON text the database can hold, or :class:`Invalid`: not JSON at
    all, or text with lone surrogates (valid in Python, not in UTF-8)."""
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise Invalid(f"{what} cannot be stored: {exc}") from exc


def owner_of(obj: Obj) -> str | None:
    """The uid whose deletion deletes this object: its controller, else its first
    owner. (Kubernetes waits for every owner; every owner here is the one controller.)"""
    refs = [r for r in obj.get("metadata", {}).get("ownerReferences") or []
            if isinstance(r, dict) and r.get("uid")]
    for ref in refs:
        if ref.get("controller"):
            return str(ref["uid"])
    return str(refs[0]["uid"]) if refs else None


class UidSource:
    """Random (version 4) UUIDs from a buffer: one getrandom() call per thousand
    uids instead of one per object, which showed up in the burst profile; formatted
    from the hex digits directly (uuid.UUID's constructor costs as much again)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._at = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            if self._at + 32 > len(self._buffer):
                self._buffer, self._at = os.urandom(16 * 1024).hex(), 0
            h = self._buffer[self._at:self._at + 32]
            self._at += 32
        # The version nibble is 4; the variant's two high bits are 10 (RFC 4122).
        return (f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
UIDS = UidSource()


def prepare(obj: Obj, *, copy: bool = True) -> tuple[Kind, str, Obj]:
    """``obj`` (a deep copy unless the caller handed it over) with its kind and
    namespace checked."""
    if not isinstance(obj, dict):
        raise Invalid("an object must be a mapping")
    draft: Obj = orjson.loads(storable(obj, "the object")) if copy else obj
    try:
        kind = Kind(str(draft.get("kind")))
    except ValueError as exc:
        known = ", ".join(k.value for k in Kind)
        raise Invalid(f"kind: {draft.get('kind')!r}: unknown kind (known: {known})") from exc
    meta = draft.get("metadata")
    if not isinstance(meta, dict):
        raise Invalid("metadata: must be a mapping")
    namespace = meta.get("namespace") or "default"
    if not isinstance(namespace, str) or (namespace not in _NAMESPACES
                                          and not is_dns1123_label(namespace)):
        raise Invalid(f"metadata.namespace: {namespace!r}: not a valid namespace name")
    meta["namespace"] = namespace
    draft.setdefault("apiVersion", kind.api_version)
    return kind, namespace, draft


_NAMESPACES = frozenset({"default"})  # known good, checked without a regular expression


def valid_name(draft: Obj) -> str:
    try:
        return check_name(draft["metadata"].get("name"), field_path="metadata.name")
    except SpecError as exc:
        raise Invalid(str(exc)) from exc


def not_newer(held: str | None, rv: int) -> bool:
    try:
        return held is not None and int(held) >= rv
    except ValueError:
        return False


__all__ = ["MAX_OBJECT_BYTES", "STATUS_KINDS", "UIDS", "not_newer", "owner_of", "prepare",
           "storable", "valid_name"]
