"""Writes as ops, on the caller's side: prepared here (checked, and what can be
serialised serialised, so what the file cannot hold is refused before it is
queued), handed to the writer as plain tuples (``engine``), and finished here
from what the writer answered (the object the port returns)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sympozium_schedule.adapters.sqlite.codec import (
    STATUS_KINDS,
    UIDS,
    owner_of,
    prepare,
    storable,
    valid_name,
)
from sympozium_schedule.adapters.sqlite.engine import Op, Outcome
from sympozium_schedule.adapters.sqlite.tx import assemble
from sympozium_schedule.core.merge import merge_patch
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    Create,
    GroupResults,
    Invalid,
    NotFound,
    Obj,
    PatchStatus,
    Ref,
    StoreError,
    Unavailable,
    Update,
    Write,
    WriteResult,
)

_ERRORS: dict[str, type[StoreError]] = {
    "NotFound": NotFound, "AlreadyExists": AlreadyExists, "Conflict": Conflict,
    "Invalid": Invalid, "Unavailable": Unavailable,
}


def error(outcome: Any) -> StoreError:
    """The StoreError a failed outcome's ``(name, message)`` stands for."""
    name, message = outcome
    return _ERRORS.get(name, Unavailable)(message)


@dataclass(slots=True)
class Prepared:
    op: Op
    finish: Callable[[Any], Any]  # the writer's value -> what the port returns


def create(obj: Obj, *, owned: bool = False) -> Prepared:
    """``owned``: the caller hands ``obj`` over, and gets it back completed."""
    kind, namespace, draft = prepare(obj, copy=not owned)
    if not draft["metadata"].get("name") and draft["metadata"].get("generateName"):
        base = str(draft["metadata"]["generateName"])
        draft["metadata"]["name"] = base + secrets.token_hex(3)[:5]
    name = valid_name(draft)
    body_status = draft.pop("status", None)
    status = (None if kind in STATUS_KINDS or body_status is None
              else storable(body_status, "the status"))
    owner = owner_of(draft)
    uid = UIDS.next()

    def finish(value: Any) -> Obj:
        rv, created = value
        meta = draft["metadata"]  # the writer filled it in too, unless it had a copy
        meta.pop("resourceVersion", None)
        meta.update(uid=uid, namespace=namespace, generation=1, creationTimestamp=created)
        meta["resourceVersion"] = str(rv)
        if body_status is not None and status is not None:
            draft["status"] = body_status
        return draft

    return Prepared(("create", kind.value, namespace, name, uid, owner, draft, status), finish)


def update(obj: Obj) -> Prepared:
    kind, namespace, draft = prepare(obj)
    name = valid_name(draft)
    expected = draft["metadata"].get("resourceVersion")
    draft.pop("status", None)
    op = ("update", kind.value, namespace, name, str(expected) if expected else None,
          owner_of(draft), draft)
    return Prepared(op, lambda value: assemble(*value))


def patch_status(ref: Ref, patch: Mapping[str, Any], resource_version: str | None,
                 base: Obj | None = None) -> Prepared:
    """With ``base`` (the object at ``resource_version``) the status is merged here and
    written whole, and the answer is ``base`` patched: the writer runs one UPDATE and
    parses nothing."""
    if base is not None and resource_version:
        current = base.get("status") or {}
        merged = dict(current)
        for key, value in patch.items():  # RFC 7386, the top level here (it is most of it)
            if value is None:
                merged.pop(key, None)
            elif isinstance(value, Mapping):
                merged[key] = merge_patch(current.get(key), value)
            else:
                merged[key] = value
        if merged != current:  # (a patch that changes nothing goes the general way)
            text = storable(merged, "the status patch")
            result = dict(base)
            result["metadata"] = dict(base.get("metadata") or {})
            result["status"] = merged

            def finish(value: Any) -> Obj:
                if isinstance(value, int):
                    result["metadata"]["resourceVersion"] = str(value)
                    return result
                return assemble(*value)  # it went the general way after all

            op = ("set_status", ref.kind.value, ref.namespace, ref.name, str(resource_version),
                  text, dict(patch))
            return Prepared(op, finish)
    text = storable(dict(patch), "the status patch")
    expected = str(resource_version) if resource_version else None
    return Prepared(("patch", ref.kind.value, ref.namespace, ref.name, expected, text),
                    lambda value: assemble(*value))


def delete(ref: Ref, uid: str | None, *, missing_ok: bool) -> Prepared:
    return Prepared(("delete", ref.kind.value, ref.namespace, ref.name, uid, missing_ok),
                    lambda _value: None)


def of(write: Write) -> Prepared:
    if isinstance(write, Create):
        return create(write.obj, owned=True)
    if isinstance(write, PatchStatus):
        return patch_status(write.ref, write.patch, write.resource_version, write.base)
    if isinstance(write, Update):
        return update(write.obj)
    return delete(write.ref, write.uid, missing_ok=write.missing_ok)


def groups(groups: Sequence[Sequence[Write]]) -> Prepared | None:
    """Every group as one op (see ``engine``); a write refused while being prepared
    ends its group without being sent. None for no groups."""
    prepared: list[tuple[list[Prepared], StoreError | None]] = []
    for group in groups:
        ready: list[Prepared] = []
        refused: StoreError | None = None
        for write in group:
            try:
                ready.append(of(write))
            except StoreError as exc:
                refused = exc
                break
        prepared.append((ready, refused))
    if not prepared:
        return None

    def finish(value: Any) -> GroupResults:
        results: GroupResults = []
        for (ready, refused), outcomes in zip(prepared, value, strict=True):
            done: list[WriteResult] = []
            for item, outcome in zip(ready, outcomes, strict=False):
                done.append(item.finish(outcome[1]) if outcome[0] else error(outcome[1]))
            if refused is not None and len(outcomes) == len(ready) and all(o[0] for o in outcomes):
                done.append(refused)
            results.append(done)
        return results

    return Prepared(("groups", [[item.op for item in ready] for ready, _ in prepared]), finish)


def settle(prepared: Prepared, outcome: Outcome) -> Any:
    """What the port returns for ``outcome``, or the StoreError it raises."""
    ok, value = outcome
    if not ok:
        raise error(value)
    return prepared.finish(value)
