"""The Store contract: what every store adapter does, run against each one in conftest.ADAPTERS.

Semantics are Kubernetes' (the API server with CRDs that have a status
subresource); where the port allows an adapter latitude the tests accept
either choice, and say so:

- a watch may coalesce several changes of one object into one event carrying
  its latest state (the SQLite store does), so a watcher can see an object's
  first event as MODIFIED, or only its DELETED;
- Kubernetes' garbage collector is asynchronous, so cascade deletion is
  polled for.
"""

from __future__ import annotations

import asyncio
import copy
import re
from contextlib import aclosing
from typing import Any

import pytest

from sympozium_schedule.core.model import Kind, parse_time
from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    EventType,
    Expired,
    Invalid,
    Labels,
    NotFound,
    Obj,
    Ref,
    Store,
    WatchEvent,
)
from tests.store.conftest import (
    NAMESPACE,
    OTHER_NAMESPACE,
    Adapter,
    agent_run,
    configmap,
    events_until,
    eventually,
    instance,
    name_of,
    next_event,
    ref,
    rv,
    schedule,
)

ADDED, MODIFIED, DELETED = EventType.ADDED, EventType.MODIFIED, EventType.DELETED

# The three kinds with a status subresource (and a generation that follows the spec).
CRD_KINDS = [
    pytest.param(schedule, id="SympoziumSchedule"),
    pytest.param(agent_run, id="AgentRun"),
    pytest.param(instance, id="SympoziumInstance"),
]


def without_version(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"].pop("resourceVersion", None)
    return out


async def absent(store: Store, target: Ref) -> bool:
    try:
        await store.get(target)
    except NotFound:
        return True
    return False


async def names(store: Store, kind: Kind, **query: Any) -> set[str]:
    return {name_of(o) for o in (await store.list(kind, **query)).items}


# --- create -------------------------------------------------------------------------------


@pytest.mark.parametrize("build", CRD_KINDS)
async def test_create_assigns_identity_version_time_and_generation(store: Store, build: Any) -> None:
    draft = build()
    del draft["metadata"]["namespace"]

    created = await store.create(draft)

    meta = created["metadata"]
    assert meta["name"] == draft["metadata"]["name"]
    assert meta["namespace"] == "default"
    assert isinstance(meta["uid"], str)
    assert meta["uid"]
    assert isinstance(meta["resourceVersion"], str)
    assert meta["resourceVersion"]
    assert parse_time(meta["creationTimestamp"]) is not None
    assert meta["generation"] == 1
    assert created["spec"] == draft["spec"]
    assert await store.get(ref(created)) == created


async def test_create_of_a_configmap_keeps_its_data(store: Store) -> None:
    created = await store.create(configmap(data={"MEMORY.md": "- likes tea\n"}))

    assert created["data"] == {"MEMORY.md": "- likes tea\n"}
    assert created["metadata"]["uid"]
    assert created["metadata"]["resourceVersion"]
    assert await store.get(ref(created)) == created


async def test_each_create_gets_its_own_uid_and_version(store: Store) -> None:
    first = await store.create(schedule("a"))
    second = await store.create(schedule("b"))

    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert rv(first) != rv(second)


async def test_create_of_an_existing_name_is_already_exists_and_changes_nothing(store: Store) -> None:
    first = await store.create(schedule("hb", task="First."))

    with pytest.raises(AlreadyExists):
        await store.create(schedule("hb", task="Second."))

    assert await store.get(ref(first)) == first


async def test_the_same_name_in_another_namespace_is_another_object(store: Store) -> None:
    here = await store.create(schedule("hb"))
    there = await store.create(schedule("hb", namespace=OTHER_NAMESPACE))

    assert here["metadata"]["uid"] != there["metadata"]["uid"]


def _with(obj: Obj, path: str, value: Any) -> Obj:
    """``obj`` with the dotted ``path`` set to ``value``."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


@pytest.mark.parametrize("draft", [
    pytest.param(_with(schedule(), "metadata.name", "Has_Capitals"), id="name-not-dns1123"),
    pytest.param(_with(schedule(), "metadata.name", ""), id="name-empty"),
    pytest.param(_with(schedule(), "metadata.name", "x" * 254), id="name-too-long"),
    pytest.param(_with(schedule(), "metadata.name", "-leading-dash"), id="name-leading-dash"),
    pytest.param(_with(schedule(), "metadata.namespace", "Not_A_Namespace"), id="namespace-invalid"),
    pytest.param(_with(schedule(), "metadata", "hb"), id="metadata-not-a-mapping"),
    pytest.param(_with(schedule(), "kind", "Pod"), id="unknown-kind"),
    pytest.param(_with(schedule(), "kind", None), id="no-kind"),
    pytest.param(_with(schedule(), "spec.task", {1, 2}), id="not-json"),
])
async def test_create_refuses_an_invalid_object(store: Store, draft: Obj) -> None:
    with pytest.raises(Invalid):
        await store.create(draft)

    assert (await store.list(Kind.SCHEDULE)).items == []


@pytest.mark.parametrize("build", CRD_KINDS)
async def test_status_sent_on_create_is_ignored(store: Store, build: Any) -> None:
    draft = build()
    draft["status"] = {"phase": "Succeeded"}

    created = await store.create(draft)

    assert not created.get("status")
    assert not (await store.get(ref(created))).get("status")


# --- get and list -------------------------------------------------------------------------


async def test_get_of_a_missing_object_is_not_found(store: Store) -> None:
    await store.create(schedule("hb"))

    with pytest.raises(NotFound):
        await store.get(Ref(Kind.SCHEDULE, NAMESPACE, "nope"))
    with pytest.raises(NotFound):
        await store.get(Ref(Kind.SCHEDULE, OTHER_NAMESPACE, "hb"))
    with pytest.raises(NotFound):
        await store.get(Ref(Kind.AGENT_RUN, NAMESPACE, "hb"))


async def test_list_by_kind_and_namespace(store: Store) -> None:
    await store.create(schedule("a"))
    await store.create(schedule("b", namespace=OTHER_NAMESPACE))
    await store.create(agent_run("a"))

    assert await names(store, Kind.SCHEDULE) == {"a", "b"}
    assert await names(store, Kind.SCHEDULE, namespace=NAMESPACE) == {"a"}
    assert await names(store, Kind.SCHEDULE, namespace=OTHER_NAMESPACE) == {"b"}
    assert await names(store, Kind.AGENT_RUN) == {"a"}
    assert await names(store, Kind.INSTANCE) == set()


async def test_list_returns_the_stored_objects(store: Store) -> None:
    created = await store.create(schedule("a"))

    listing = await store.list(Kind.SCHEDULE)

    assert listing.items == [created]
    assert listing.resource_version


@pytest.mark.parametrize(("selector", "expected"), [
    pytest.param({"team": "a"}, {"a-gold", "a-plain"}, id="equality"),
    pytest.param({"team": None}, {"a-gold", "a-plain", "b-gold"}, id="exists"),
    pytest.param({"team": "a", "tier": "gold"}, {"a-gold"}, id="all-must-match"),
    pytest.param({"team": "a", "tier": None}, {"a-gold"}, id="equality-and-exists"),
    pytest.param({"team": "c"}, set(), id="no-such-value"),
    pytest.param({"missing": None}, set(), id="no-such-label"),
    pytest.param({}, {"a-gold", "a-plain", "b-gold", "unlabelled"}, id="empty-selector"),
])
async def test_list_by_label_selector(store: Store, selector: Labels, expected: set[str]) -> None:
    await store.create(schedule("a-gold", labels={"team": "a", "tier": "gold"}))
    await store.create(schedule("a-plain", labels={"team": "a"}))
    await store.create(schedule("b-gold", labels={"team": "b", "tier": "gold"}))
    await store.create(schedule("unlabelled"))

    assert await names(store, Kind.SCHEDULE, labels=selector) == expected


async def test_list_version_is_a_starting_point_for_watch(store: Store) -> None:
    await store.create(schedule("before"))
    listing = await store.list(Kind.SCHEDULE)

    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version)) as events:
        after = await store.create(schedule("after"))
        event = await next_event(events)

    assert (event.type, event.object) == (ADDED, after)


# --- update -------------------------------------------------------------------------------


async def test_update_replaces_labels_annotations_and_spec_and_keeps_status(store: Store) -> None:
    created = await store.create(schedule("hb", labels={"team": "a"}, annotations={"note": "x"}))
    with_status = await store.patch_status(ref(created), {"phase": "Active", "totalRuns": 3})
    draft = schedule("hb", labels={"tier": "gold"}, task="Check in twice.")
    draft["metadata"]["resourceVersion"] = rv(with_status)
    draft["status"] = {"phase": "Suspended"}  # ignored: status has its own subresource

    updated = await store.update(draft)

    meta = updated["metadata"]
    assert meta["labels"] == {"tier": "gold"}
    assert not meta.get("annotations")
    assert updated["spec"] == draft["spec"]
    assert updated["status"] == {"phase": "Active", "totalRuns": 3}
    assert meta["uid"] == created["metadata"]["uid"]
    assert meta["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert rv(updated) != rv(with_status)
    assert await store.get(ref(created)) == updated


@pytest.mark.parametrize(("change", "generation"), [
    pytest.param({"labels": {"team": "b"}}, 1, id="labels"),
    pytest.param({"annotations": {"note": "y"}}, 1, id="annotations"),
    pytest.param({"task": "Something else."}, 2, id="spec"),
    pytest.param({"labels": {"team": "b"}, "suspend": True}, 2, id="labels-and-spec"),
])
async def test_generation_moves_on_only_when_the_spec_changes(
    store: Store, change: dict[str, Any], generation: int,
) -> None:
    created = await store.create(schedule("hb", labels={"team": "a"}))

    updated = await store.update(schedule("hb", **{"labels": {"team": "a"}, **change}))

    assert updated["metadata"]["generation"] == generation
    assert rv(updated) != rv(created)


async def test_update_with_a_stale_version_is_a_conflict_and_changes_nothing(store: Store) -> None:
    created = await store.create(schedule("hb"))
    current = await store.update(schedule("hb", task="Newer."))
    stale = schedule("hb", task="Based on an old read.")
    stale["metadata"]["resourceVersion"] = rv(created)

    with pytest.raises(Conflict):
        await store.update(stale)

    assert await store.get(ref(created)) == current


async def test_update_with_the_current_version_succeeds(store: Store) -> None:
    created = await store.create(schedule("hb"))
    draft = copy.deepcopy(created)
    draft["spec"]["task"] = "Newer."

    updated = await store.update(draft)

    assert updated["spec"]["task"] == "Newer."


@pytest.mark.parametrize("conditional", [
    pytest.param(True, id="with-version"), pytest.param(False, id="without-version"),
])
async def test_an_update_that_changes_nothing_keeps_the_version(store: Store, conditional: bool) -> None:
    created = await store.create(schedule("hb", labels={"team": "a"}))
    same = copy.deepcopy(created) if conditional else without_version(created)

    updated = await store.update(same)

    assert updated == created
    assert await store.get(ref(created)) == created


async def test_update_of_a_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update(schedule("nope"))


# --- patch_status -------------------------------------------------------------------------

_TOKENS = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "toolCalls": 0, "durationMs": 900}


def _delegate(child: str) -> dict[str, str]:
    """A status.delegates entry as the AgentRun CRD requires it."""
    return {"childRunName": child, "targetPersona": "reviewer"}


@pytest.mark.parametrize(("before", "patch", "after"), [
    pytest.param({}, {"phase": "Running"}, {"phase": "Running"}, id="into-empty"),
    pytest.param({"phase": "Running", "podName": "p"}, {"phase": "Succeeded"},
                 {"phase": "Succeeded", "podName": "p"}, id="replace-one-keep-others"),
    pytest.param({"phase": "Failed", "error": "boom"}, {"error": None, "phase": "Running"},
                 {"phase": "Running"}, id="none-removes"),
    pytest.param({"phase": "Running"}, {"error": None}, {"phase": "Running"}, id="remove-absent"),
    pytest.param({"tokenUsage": _TOKENS}, {"tokenUsage": {"toolCalls": 2}},
                 {"tokenUsage": {**_TOKENS, "toolCalls": 2}}, id="nested-merge"),
    pytest.param({"delegates": [_delegate("a"), _delegate("b")]}, {"delegates": [_delegate("c")]},
                 {"delegates": [_delegate("c")]}, id="lists-replaced"),
])
async def test_patch_status_is_a_json_merge_patch(
    store: Store, before: dict[str, Any], patch: dict[str, Any], after: dict[str, Any],
) -> None:
    created = await store.create(agent_run())
    if before:
        await store.patch_status(ref(created), before)

    patched = await store.patch_status(ref(created), patch)

    assert (patched.get("status") or {}) == after
    assert await store.get(ref(created)) == patched


async def test_patch_status_leaves_spec_and_metadata_alone(store: Store) -> None:
    created = await store.create(schedule("hb", labels={"team": "a"}, annotations={"note": "x"}))

    patched = await store.patch_status(ref(created), {"phase": "Active"})

    assert patched["spec"] == created["spec"]
    assert without_version(patched)["metadata"] == without_version(created)["metadata"]
    assert rv(patched) != rv(created)


async def test_patch_status_with_a_stale_version_is_a_conflict_and_changes_nothing(store: Store) -> None:
    created = await store.create(schedule("hb"))
    current = await store.patch_status(ref(created), {"phase": "Active"})

    with pytest.raises(Conflict):
        await store.patch_status(ref(created), {"phase": "Suspended"}, resource_version=rv(created))

    assert await store.get(ref(created)) == current


async def test_patch_status_with_the_current_version_succeeds(store: Store) -> None:
    created = await store.create(schedule("hb"))

    patched = await store.patch_status(ref(created), {"phase": "Active"}, resource_version=rv(created))

    assert patched["status"] == {"phase": "Active"}


@pytest.mark.parametrize("patch", [
    pytest.param({"phase": "Active"}, id="same-value"),
    pytest.param({"lastRunName": None}, id="remove-absent-key"),
    pytest.param({}, id="empty"),
])
async def test_a_patch_that_changes_nothing_keeps_the_version(store: Store, patch: dict[str, Any]) -> None:
    created = await store.create(schedule("hb"))
    active = await store.patch_status(ref(created), {"phase": "Active"})

    again = await store.patch_status(ref(created), patch)

    assert again == active
    assert await store.get(ref(created)) == active


async def test_patch_status_of_a_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.patch_status(Ref(Kind.SCHEDULE, NAMESPACE, "nope"), {"phase": "Active"})


async def test_patch_status_refuses_what_json_cannot_carry(store: Store) -> None:
    """Invalid, like create: the caller's error taxonomy covers every refusal of the object."""
    created = await store.create(schedule("hb"))

    with pytest.raises(Invalid):
        await store.patch_status(ref(created), {"phase": {"Active", "Suspended"}})

    assert await store.get(ref(created)) == created


# --- delete -------------------------------------------------------------------------------


async def test_delete_removes_the_object(store: Store) -> None:
    created = await store.create(schedule("hb"))
    kept = await store.create(schedule("other"))

    await store.delete(ref(created))

    assert await absent(store, ref(created))
    assert (await store.list(Kind.SCHEDULE)).items == [kept]


async def test_delete_of_a_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.delete(Ref(Kind.SCHEDULE, NAMESPACE, "nope"))


async def test_delete_with_the_uid_of_another_incarnation_is_a_conflict(store: Store) -> None:
    first = await store.create(schedule("hb"))
    await store.delete(ref(first))
    second = await store.create(schedule("hb"))

    with pytest.raises(Conflict):
        await store.delete(ref(second), uid=first["metadata"]["uid"])
    assert await store.get(ref(second)) == second

    await store.delete(ref(second), uid=second["metadata"]["uid"])
    assert await absent(store, ref(second))


GC_PATIENCE = 60.0


async def test_deleting_an_owner_deletes_what_it_owns_recursively(store: Store) -> None:
    owner = await store.create(schedule("hb"))
    sibling = await store.create(schedule("other"))
    run = await store.create(agent_run("hb-1", owners=(owner,)))
    grandchild = await store.create(configmap("hb-1-output", owners=(run,)))
    other_run = await store.create(agent_run("other-1", owners=(sibling,)))
    loose = await store.create(agent_run("loose-1"))

    await store.delete(ref(owner))

    for gone in (owner, run, grandchild):
        # Kubernetes' garbage collector works in the background, level by level, and on a
        # loaded 2-core machine takes seconds: patience here is the collector's, not ours.
        await eventually(lambda gone=gone: absent(store, ref(gone)), timeout=GC_PATIENCE,
                         what=f"{ref(gone)} deleted with its owner")
    for kept in (sibling, other_run, loose):
        assert await store.get(ref(kept)) == kept


# --- watch --------------------------------------------------------------------------------


def replay(items: list[Obj], events: list[WatchEvent]) -> dict[tuple[str, str], Obj]:
    """What a cache built from ``items`` holds after ``events``."""
    state = {(o["metadata"]["namespace"], name_of(o)): o for o in items}
    for event in events:
        key = (event.object["metadata"]["namespace"], name_of(event.object))
        if event.type is DELETED:
            state.pop(key, None)
        else:
            state[key] = event.object
    return state


def types_by_object(events: list[WatchEvent]) -> dict[str, str]:
    """Each object's event types, as a string such as ``"AMD"`` (ADDED, MODIFIED, DELETED)."""
    out: dict[str, str] = {}
    for event in events:
        out[name_of(event.object)] = out.get(name_of(event.object), "") + event.type.value[0]
    return out


async def test_watch_from_a_list_version_delivers_the_later_changes(store: Store) -> None:
    untouched = await store.create(schedule("untouched"))
    changed = await store.create(schedule("changed"))
    doomed = await store.create(schedule("doomed"))
    listing = await store.list(Kind.SCHEDULE)

    await store.patch_status(ref(changed), {"phase": "Active"})
    brief = await store.create(schedule("brief"))
    await store.update(schedule("brief", task="Changed before it went."))
    await store.delete(ref(brief))
    await store.delete(ref(doomed))
    await store.create(schedule("grown"))
    await store.update(schedule("grown", task="Grown."))
    await store.create(schedule("marker"))
    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version)) as events:
        seen = await events_until(events, lambda e: name_of(e.object) == "marker")

    final = await store.list(Kind.SCHEDULE)
    assert replay(listing.items, seen) == replay(final.items, [])
    types = types_by_object(seen)
    assert "untouched" not in types, untouched
    # Objects the list held are never ADDED; new ones may be (or be coalesced into
    # one MODIFIED); nothing follows a DELETED.
    assert re.fullmatch("M+", types["changed"])
    assert re.fullmatch("M*D", types["doomed"])
    assert re.fullmatch("A?M*D", types["brief"])
    assert re.fullmatch("A?M+", types["grown"])
    assert types["marker"] == "A"
    # In order. (The version a DELETED carries: see test_a_watch_resumed_after_a_deletion...)
    live = [int(rv(e.object)) for e in seen if e.type is not DELETED]
    assert live == sorted(set(live)), "watch events out of resourceVersion order"


async def test_watch_delivers_each_change_as_it_happens(store: Store) -> None:
    listing = await store.list(Kind.SCHEDULE)
    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version)) as events:
        created = await store.create(schedule("hb"))
        added = await next_event(events)
        patched = await store.patch_status(ref(created), {"phase": "Active"})
        status_modified = await next_event(events)
        updated = await store.update(schedule("hb", task="Again."))
        spec_modified = await next_event(events)
        await store.delete(ref(created))
        deleted = await next_event(events)

    assert (added.type, added.object) == (ADDED, created)
    assert (status_modified.type, status_modified.object) == (MODIFIED, patched)
    assert (spec_modified.type, spec_modified.object) == (MODIFIED, updated)
    assert deleted.type is DELETED
    assert deleted.object["metadata"]["uid"] == created["metadata"]["uid"]
    assert deleted.object["spec"] == updated["spec"]


async def test_a_watch_resumed_after_a_deletion_does_not_see_it_again(store: Store) -> None:
    """A DELETED event carries the version of the deletion, as Kubernetes' does.

    Watchers resume from the version of the last event they saw (the informer does);
    a deletion that carried an older version would be delivered again, and the
    resume point would move backwards, towards Expired.
    """
    listing = await store.list(Kind.SCHEDULE)
    created = await store.create(schedule("hb"))
    await store.delete(ref(created))
    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version)) as events:
        seen = await events_until(events, lambda e: e.type is DELETED)
    resume_at = rv(seen[-1].object)
    await store.create(schedule("marker"))

    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=resume_at)) as events:
        first = await next_event(events)

    assert (first.type.value, name_of(first.object)) == ("ADDED", "marker")


async def test_watch_filters_by_namespace(store: Store) -> None:
    listing = await store.list(Kind.SCHEDULE, namespace=NAMESPACE)
    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version,
                                    namespace=NAMESPACE)) as events:
        await store.create(schedule("elsewhere", namespace=OTHER_NAMESPACE))
        await store.create(schedule("here"))
        await store.create(schedule("marker"))
        seen = await events_until(events, lambda e: name_of(e.object) == "marker")

    assert [(name_of(e.object), e.object["metadata"]["namespace"]) for e in seen] == [
        ("here", NAMESPACE), ("marker", NAMESPACE)]


@pytest.mark.parametrize(("selector", "expected"), [
    pytest.param({"team": "a"}, ["a-gold", "a-plain", "marker"], id="equality"),
    pytest.param({"team": None}, ["a-gold", "a-plain", "b-gold", "marker"], id="exists"),
    pytest.param({"team": "a", "tier": "gold"}, ["a-gold", "marker"], id="all-must-match"),
])
async def test_watch_filters_by_labels(store: Store, selector: Labels, expected: list[str]) -> None:
    listing = await store.list(Kind.SCHEDULE, labels=selector)
    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version,
                                    labels=selector)) as events:
        await store.create(schedule("a-gold", labels={"team": "a", "tier": "gold"}))
        await store.create(schedule("a-plain", labels={"team": "a"}))
        await store.create(schedule("b-gold", labels={"team": "b", "tier": "gold"}))
        await store.create(schedule("unlabelled"))
        await store.create(schedule("marker", labels={"team": "a", "tier": "gold"}))
        seen = await events_until(events, lambda e: name_of(e.object) == "marker")

    assert [name_of(e.object) for e in seen] == expected


async def test_an_object_that_stops_matching_a_label_watch_is_deleted_from_it(store: Store) -> None:
    """Kubernetes sends DELETED when an update moves an object out of a watch's selector;
    without it, a label-filtered informer (the controller's runs) keeps it forever."""
    selector = {"team": "a"}
    listing = await store.list(Kind.SCHEDULE, labels=selector)
    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version,
                                    labels=selector)) as events:
        created = await store.create(schedule("hb", labels={"team": "a"}))
        assert (await next_event(events)).type is ADDED
        await store.update(schedule("hb", labels={"team": "b"}))
        await store.create(schedule("marker", labels={"team": "a"}))
        seen = await events_until(events, lambda e: name_of(e.object) == "marker")

    left = [e for e in seen if name_of(e.object) == "hb"]
    assert [e.type for e in left] == [DELETED]
    assert left[0].object["metadata"]["uid"] == created["metadata"]["uid"]


async def test_an_object_that_comes_to_match_a_label_watch_is_delivered(store: Store) -> None:
    selector = {"team": "a"}
    await store.create(schedule("hb", labels={"team": "b"}))
    listing = await store.list(Kind.SCHEDULE, labels=selector)
    async with aclosing(store.watch(Kind.SCHEDULE, resource_version=listing.resource_version,
                                    labels=selector)) as events:
        moved = await store.update(schedule("hb", labels={"team": "a"}))
        event = await next_event(events)

    assert event.type in (ADDED, MODIFIED)
    assert event.object == moved


async def test_watch_from_a_version_too_old_is_expired(adapter: Adapter, store: Store) -> None:
    """On ConfigMaps: a real API server serves the other kinds from its watch cache, which
    forgets a version only after ~100k events in 75 s (see tests/kube/controlplane.py)."""
    listing = await store.list(Kind.CONFIG_MAP, namespace=NAMESPACE)
    await store.create(configmap("before"))
    await adapter.expire(store)

    with pytest.raises(Expired):
        async with aclosing(store.watch(Kind.CONFIG_MAP, namespace=NAMESPACE,
                                        resource_version=listing.resource_version)) as events:
            await next_event(events)

    # A relist gives a version that can be watched from again.
    fresh = await store.list(Kind.CONFIG_MAP, namespace=NAMESPACE)
    async with aclosing(store.watch(Kind.CONFIG_MAP, namespace=NAMESPACE,
                                    resource_version=fresh.resource_version)) as events:
        created = await store.create(configmap("after"))
        event = await next_event(events)
    assert (event.type, event.object) == (ADDED, created)


async def test_two_clients_see_each_others_writes_within_a_second(store: Store, peer: Store) -> None:
    for writer, watcher, name in ((peer, store, "from-peer"), (store, peer, "from-store")):
        listing = await watcher.list(Kind.SCHEDULE)
        async with aclosing(watcher.watch(Kind.SCHEDULE,
                                          resource_version=listing.resource_version)) as events:
            created = await writer.create(schedule(name))
            event = await next_event(events, timeout=1.0)
        assert (event.type, event.object) == (ADDED, created)
        assert await watcher.get(ref(created)) == created


# --- optimistic concurrency ---------------------------------------------------------------


@pytest.mark.parametrize("write", ["patch_status", "update"])
async def test_of_many_concurrent_writes_from_one_read_exactly_one_wins(store: Store, write: str) -> None:
    created = await store.create(schedule("hb"))

    async def attempt(n: int) -> Obj:
        if write == "patch_status":
            return await store.patch_status(ref(created), {"totalRuns": n + 1},
                                            resource_version=rv(created))
        draft = copy.deepcopy(created)
        draft["spec"]["task"] = f"Writer {n}."
        return await store.update(draft)

    outcomes = await asyncio.gather(*(attempt(n) for n in range(16)), return_exceptions=True)

    winners = [o for o in outcomes if isinstance(o, dict)]
    losers = [o for o in outcomes if not isinstance(o, dict)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in losers), losers
    assert await store.get(ref(created)) == winners[0]
