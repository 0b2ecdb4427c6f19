"""Write jobs: what each write of the port does inside the writer's transaction.

A job is prepared on the caller's side (checked and serialised there, so what
the file cannot hold is refused before it is queued) and run by the writer
thread with the group's :class:`~sympozium_schedule.adapters.sqlite.tx.Tx`.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sympozium_schedule.adapters.sqlite.codec import (
    MANAGED_META,
    STATUS_KINDS,
    UIDS,
    assemble,
    check_size,
    dumps,
    owner_of,
    prepare,
    storable,
    valid_name,
)
from sympozium_schedule.adapters.sqlite.tx import Job, Tx
from sympozium_schedule.core.merge import merge_patch
from sympozium_schedule.core.model import format_time
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    Create,
    EventType,
    GroupResults,
    NotFound,
    Obj,
    PatchStatus,
    Ref,
    StoreError,
    Update,
    Write,
    WriteResult,
)


def create_job(obj: Obj, *, owned: bool = False) -> Job:
    kind, namespace, draft = prepare(obj, copy=not owned)
    if not draft["metadata"].get("name") and draft["metadata"].get("generateName"):
        base = str(draft["metadata"]["generateName"])
        draft["metadata"]["name"] = base + secrets.token_hex(3)[:5]
    name = valid_name(draft)
    body_status = draft.pop("status", None)
    status = None if kind in STATUS_KINDS or body_status is None else dumps(body_status)
    owner = owner_of(draft)
    uid = UIDS.next()

    def job(tx: Tx) -> Obj:
        meta = draft["metadata"]
        meta.pop("resourceVersion", None)
        meta.update(uid=uid, namespace=namespace, generation=1,
                    creationTimestamp=format_time(tx.now))
        body = storable(draft, "the object")
        check_size(body, status)
        try:  # the primary key decides "already exists": no read first
            tx.insert(kind, namespace, name, uid, tx.revision + 1, owner, body, status)
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"{kind.value} {namespace}/{name} already exists") from exc
        rv = tx.bump()
        tx.change(kind, namespace, name, rv, EventType.ADDED)
        # Completed in place: the object is this call's (prepare copied it, or the
        # caller handed it over).
        meta["resourceVersion"] = str(rv)
        if body_status is not None and status is not None:
            draft["status"] = body_status
        return draft

    return job


def update_job(obj: Obj) -> Job:
    kind, namespace, draft = prepare(obj)
    name = valid_name(draft)
    expected = draft["metadata"].get("resourceVersion")
    draft.pop("status", None)
    owner = owner_of(draft)

    def job(tx: Tx) -> Obj:
        found = tx.row(kind, namespace, name)
        if found is None:
            raise NotFound(f"{kind.value} {namespace}/{name} not found")
        uid, rv, body, status = found
        if expected and str(expected) != str(rv):
            raise Conflict(f"{kind.value} {namespace}/{name} changed (resourceVersion "
                           f"{rv}, not {expected}): read it again and retry")
        current = orjson.loads(body)
        meta = {k: v for k, v in draft["metadata"].items() if k not in MANAGED_META}
        for key in MANAGED_META:
            if key in current["metadata"]:
                meta[key] = current["metadata"][key]
        new = {k: v for k, v in draft.items() if k != "metadata"}
        new["metadata"] = meta
        if new.get("spec") != current.get("spec"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if new == current:
            return assemble(body, status, rv)
        new_body = dumps(new)
        check_size(new_body, status)
        new_rv = tx.bump()
        tx.put(kind, namespace, name, uid, new_rv, owner, new_body, status, EventType.MODIFIED)
        return assemble(new_body, status, new_rv)

    return job


def patch_job(ref: Ref, patch: Mapping[str, Any], resource_version: str | None,
              base: Obj | None = None) -> Job:
    if base is not None and resource_version:
        fast = _merged_patch_job(ref, patch, str(resource_version), base)
        if fast is not None:
            return fast
    # Serialised here, once: refuses what the file cannot hold before queueing.
    text = storable(dict(patch), "the status patch")
    expected = str(resource_version) if resource_version else None

    def job(tx: Tx) -> Obj:
        new_rv = tx.revision + 1
        written = tx.patch_status(ref.kind, ref.namespace, ref.name, new_rv, text, expected)
        if written is not None:
            tx.bump()
            obj: Obj = orjson.loads(written[0])
            obj["metadata"]["resourceVersion"] = str(new_rv)
            obj["status"] = orjson.loads(written[1])
            return obj
        # Nothing written: say why (the uncommon path, so a second look is fine).
        found = tx.row(ref.kind, ref.namespace, ref.name)
        if found is None:
            raise NotFound(f"{ref} not found")
        _uid, rv, body, status = found
        if expected and expected != str(rv):
            raise Conflict(f"{ref} changed (resourceVersion {rv}, not {expected})")
        merged = tx.conn.execute("SELECT json_patch(?, ?)", (status or "{}", text)).fetchone()[0]
        if merged != (status or "{}"):
            check_size(body, merged)
        return assemble(body, status, rv)  # the patch changes nothing

    return job


def _merged_patch_job(ref: Ref, patch: Mapping[str, Any], expected: str, base: Obj) -> Job | None:
    """The patch merged here into ``base``'s status (the object at ``expected``) and
    written whole: the transaction runs one UPDATE and parses nothing, and the answer
    is ``base`` with the merged status and the new version. None for a patch that
    changes nothing (the general job says so without writing)."""
    current = base.get("status") or {}
    merged = dict(current)
    for key, value in patch.items():  # RFC 7386, the top level here (it is most of it)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            merged[key] = merge_patch(current.get(key), value)
        else:
            merged[key] = value
    if merged == current:
        return None
    text = storable(merged, "the status patch")
    result = dict(base)
    result["metadata"] = dict(base.get("metadata") or {})
    result["status"] = merged

    def job(tx: Tx) -> Obj:
        rv = tx.revision + 1
        if not tx.set_status(ref.kind, ref.namespace, ref.name, rv, text, expected):
            # Why not: gone, changed, or too large; the general job finds out.
            answer: Obj = patch_job(ref, patch, expected)(tx)
            return answer
        tx.bump()
        result["metadata"]["resourceVersion"] = str(rv)
        return result

    return job


def delete_job(ref: Ref, uid: str | None, *, missing_ok: bool) -> Job:
    def job(tx: Tx) -> None:
        found = tx.row(ref.kind, ref.namespace, ref.name)
        if found is None:
            if missing_ok:
                return
            raise NotFound(f"{ref} not found")
        if uid and found[0] != uid:
            raise Conflict(f"{ref} is another incarnation (uid {found[0]}, not {uid})")
        tx.remove(ref.kind, ref.namespace, ref.name, found[0])

    return job


def job_for(write: Write) -> Job:
    if isinstance(write, Create):
        return create_job(write.obj, owned=True)
    if isinstance(write, PatchStatus):
        return patch_job(write.ref, write.patch, write.resource_version, write.base)
    if isinstance(write, Update):
        return update_job(write.obj)
    return delete_job(write.ref, write.uid, missing_ok=write.missing_ok)


def groups_job(groups: Sequence[Sequence[Write]]) -> Job | None:
    """Every group as one job: within a group each write only if the one before
    succeeded (a group's results end at its first failure). None for no groups."""
    prepared: list[list[Job | StoreError]] = []
    for group in groups:
        jobs: list[Job | StoreError] = []
        for write in group:
            try:
                jobs.append(job_for(write))
            except StoreError as exc:
                jobs.append(exc)
                break
        prepared.append(jobs)

    def job(tx: Tx) -> GroupResults:
        results: GroupResults = []
        for jobs in prepared:
            done: list[WriteResult] = []
            for item in jobs:
                if isinstance(item, StoreError):
                    done.append(item)
                    break
                try:
                    done.append(item(tx))
                except StoreError as exc:
                    done.append(exc)
                    break
            results.append(done)
        return results

    return job if prepared else None
