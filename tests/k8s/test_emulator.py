"""The emulator's own contract: each semantic StrictEmulator adds to kmock, seen through
lightkube (what the adapter uses) and raw HTTP (what lightkube hides: status codes, headers,
the exact watch lines).

These tests run the emulator on the test's own event loop; the last few check the
threaded :class:`ApiServer` the controller tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import kmock
import pytest
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.types import CascadeType, PatchType

from sympozium_schedule.adapters.kubernetes.store import RESOURCES, Lease
from sympozium_schedule.core.model import Kind
from tests import support
from tests.k8s.emulator import (
    ApiServer,
    FastShutdownServer,
    Selector,
    StrictEmulator,
    api_error,
    sympozium_emulator,
)

Schedule, Run, Instance = RESOURCES[Kind.SCHEDULE], RESOURCES[Kind.AGENT_RUN], RESOURCES[Kind.INSTANCE]
ConfigMap, Event = RESOURCES[Kind.CONFIG_MAP], RESOURCES[Kind.EVENT]
NS = "ns"
GROUP_URL = "/apis/sympozium.ai/v1alpha1/namespaces/ns"
RUNS = "sympozium.ai/v1alpha1/agentruns"
SCHEDULES = "sympozium.ai/v1alpha1/sympoziumschedules"


@dataclass
class Env:
    emu: StrictEmulator
    url: str
    kube: AsyncClient  # lightkube, as the adapter uses it
    http: httpx.AsyncClient  # raw, to see what lightkube hides


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    emu = sympozium_emulator()
    async with emu, kmock.Server(emu, server_cls=FastShutdownServer) as server:
        url = f"http://127.0.0.1:{server.port}"
        config = KubeConfig.from_one(cluster=Cluster(server=url), user=User(token="tester"), namespace=NS)
        async with AsyncClient(config=config, trust_env=False, field_manager="tester") as kube, \
                httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer raw"}) as http:
            try:
                yield Env(emu, url, kube, http)
            finally:
                emu.break_watches()


eventually = functools.partial(support.eventually, timeout=5.0, interval=0.01)


def schedule(name: str = "hb", **spec: Any) -> Any:
    return Schedule.from_dict({
        "apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"instanceRef": "alice", "schedule": "@every 1m", "task": "Check in."} | spec})


def run(name: str, *, labels: dict[str, str] | None = None, owners: list[Any] | None = None,
        **meta: Any) -> Any:
    metadata: dict[str, Any] = {"name": name, "namespace": NS, "labels": labels or {}} | meta
    if owners:
        metadata["ownerReferences"] = [
            {"apiVersion": o.apiVersion, "kind": o.kind, "name": o.metadata.name, "uid": o.metadata.uid}
            for o in owners]
    return Run.from_dict({"apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun", "metadata": metadata,
                          "spec": {"instanceRef": "alice", "agentId": "a", "sessionKey": name, "task": "t",
                                   "model": {"provider": "openai", "model": "gpt-4o", "authSecretRef": ""}}})


def configmap(name: str, *, labels: dict[str, str] | None = None, owners: list[Any] | None = None) -> Any:
    metadata: dict[str, Any] = {"name": name, "namespace": NS, "labels": labels or {}}
    if owners:
        metadata["ownerReferences"] = [
            {"apiVersion": o.apiVersion, "kind": o.kind, "name": o.metadata.name, "uid": o.metadata.uid}
            for o in owners]
    return ConfigMap.from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                                "data": {"k": "v"}})


def rv(obj: Any) -> int:
    return int(obj.metadata.resourceVersion)


async def raw_watch(env: Env, path: str, **params: str) -> list[dict[str, Any]]:
    """Every line of one watch stream, until the server ends it."""
    events = []
    async with env.http.stream("GET", path, params={"watch": "true", **params}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.strip():
                events.append(json.loads(line))
    return events


async def backlog_of(env: Env, path: str, **params: str) -> list[dict[str, Any]]:
    """What a new watch sends at once (then the stream is ended from the server side)."""
    before = env.emu.open_watches()
    task = asyncio.create_task(raw_watch(env, path, **params))
    await eventually(lambda: env.emu.open_watches() > before or task.done(), what="the watch to open")
    await asyncio.sleep(0.05)  # the backlog is written right after the subscription
    env.emu.break_watches()
    return await task


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


class Watching:
    """A lightkube watch consumed in the background, as the informer consumes it."""

    def __init__(self, env: Env, res: Any, **kwargs: Any):
        self.seen: list[tuple[str, str, int]] = []
        self.error: BaseException | None = None
        self._stream = env.kube.watch(res, namespace=NS, **kwargs)
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for change, obj in self._stream:
                self.seen.append((change, obj.metadata.name, rv(obj)))
        except ApiError as exc:
            self.error = exc

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# --- metadata the server owns ------------------------------------------------------------------


async def test_create_answers_201_with_the_server_fields(env: Env) -> None:
    response = await env.http.post(f"{GROUP_URL}/sympoziumschedules", json=schedule().to_dict())
    assert response.status_code == 201
    meta = response.json()["metadata"]
    assert int(meta["resourceVersion"]) > 100  # the first version issued (see resource_version)
    assert meta["generation"] == 1
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert len(meta["creationTimestamp"]) == 20
    cm = await env.kube.create(configmap("plain"))
    assert cm.metadata.generation is None, "built-in kinds without a spec have no generation"


async def test_resource_versions_are_one_increasing_counter_across_kinds(env: Env) -> None:
    seen = [rv(await env.kube.create(schedule("a"))), rv(await env.kube.create(configmap("b"))),
            rv(await env.kube.patch(Schedule, "a", {"spec": {"task": "x"}}, namespace=NS,
                                    patch_type=PatchType.MERGE)),
            rv(await env.kube.create(run("c")))]
    assert seen == sorted(seen)
    assert len(set(seen)) == 4


async def test_a_taken_name_is_409_already_exists(env: Env) -> None:
    await env.kube.create(schedule())
    with pytest.raises(ApiError) as caught:
        await env.kube.create(schedule())
    assert (caught.value.status.code, caught.value.status.reason) == (409, "AlreadyExists")


async def test_generate_name_completes_the_name(env: Env) -> None:
    event = await env.kube.create(Event.from_dict({
        "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "hb.", "namespace": NS},
        "involvedObject": {"kind": "SympoziumSchedule", "name": "hb", "namespace": NS},
        "reason": "RunCreated", "message": "m", "type": "Normal"}))
    assert event.metadata.name.startswith("hb.")
    assert len(event.metadata.name) == len("hb.") + 5


async def test_create_drops_the_status_of_a_kind_with_a_status_subresource(env: Env) -> None:
    created = await env.kube.create(Schedule.from_dict(schedule().to_dict() | {"status": {"phase": "Fake"}}))
    assert created.status is None


@pytest.mark.parametrize(("patch", "bumped"), [
    pytest.param({"spec": {"task": "Another task."}}, True, id="spec"),
    pytest.param({"metadata": {"labels": {"team": "a"}}}, False, id="labels"),
    pytest.param({"metadata": {"annotations": {"note": "x"}}}, False, id="annotations"),
])
async def test_generation_counts_spec_changes_only(env: Env, patch: dict[str, Any], bumped: bool) -> None:
    await env.kube.create(schedule())
    patched = await env.kube.patch(Schedule, "hb", patch, namespace=NS, patch_type=PatchType.MERGE)
    assert patched.metadata.generation == (2 if bumped else 1)
    status = await env.kube.patch(Schedule.Status, "hb", {"status": {"phase": "Active"}}, namespace=NS,
                                  patch_type=PatchType.MERGE)
    assert status.metadata.generation == patched.metadata.generation


async def test_a_write_that_changes_nothing_keeps_the_version_and_sends_no_event(env: Env) -> None:
    created = await env.kube.create(schedule())
    watching = Watching(env, Schedule, resource_version=created.metadata.resourceVersion)
    same = await env.kube.patch(Schedule, "hb", {"spec": {"task": "Check in."}}, namespace=NS,
                                patch_type=PatchType.MERGE)
    assert rv(same) == rv(created)
    await env.kube.patch(Schedule, "hb", {"spec": {"task": "Changed."}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    await eventually(lambda: watching.seen, what="the real change")
    await watching.close()
    assert [s[0] for s in watching.seen] == ["MODIFIED"]


# --- optimistic concurrency and PUT ----------------------------------------------------------------


async def test_a_merge_patch_with_a_stale_resource_version_is_409_conflict(env: Env) -> None:
    created = await env.kube.create(schedule())
    await env.kube.patch(Schedule, "hb", {"spec": {"task": "Newer."}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    stale = {"metadata": {"resourceVersion": created.metadata.resourceVersion},
             "status": {"phase": "Active"}, "spec": {"task": "Lost."}}
    for res in (Schedule, Schedule.Status):
        with pytest.raises(ApiError) as caught:
            await env.kube.patch(res, "hb", stale, namespace=NS, patch_type=PatchType.MERGE)
        assert (caught.value.status.code, caught.value.status.reason) == (409, "Conflict")
    current = await env.kube.get(Schedule, "hb", namespace=NS)
    patched = await env.kube.patch(Schedule.Status, "hb", {
        "metadata": {"resourceVersion": current.metadata.resourceVersion}, "status": {"phase": "Active"}},
        namespace=NS, patch_type=PatchType.MERGE)
    assert patched.status == {"phase": "Active"}
    assert rv(patched) > rv(current)


async def test_put_replaces_the_object_and_checks_its_resource_version(env: Env) -> None:
    created = await env.kube.create(schedule())
    await env.kube.patch(Schedule.Status, "hb", {"status": {"phase": "Active"}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    current = await env.kube.get(Schedule, "hb", namespace=NS)
    draft = current.to_dict()
    draft["spec"] = {"instanceRef": "bob", "schedule": "@every 5m", "task": "Replaced."}
    draft["status"] = {"phase": "Hacked"}
    draft["metadata"]["uid"] = created.metadata.uid
    replaced = await env.kube.replace(Schedule.from_dict(draft))
    assert replaced.spec["instanceRef"] == "bob"
    assert replaced.spec["concurrencyPolicy"] == "Forbid"
    assert replaced.status == {"phase": "Active"}, "a PUT of the main resource keeps the status"
    assert replaced.metadata.generation == 2
    assert replaced.metadata.uid == created.metadata.uid
    assert replaced.metadata.creationTimestamp == created.metadata.creationTimestamp
    with pytest.raises(ApiError) as stale:
        await env.kube.replace(Schedule.from_dict(draft))  # still at the previous version
    assert (stale.value.status.code, stale.value.status.reason) == (409, "Conflict")
    del draft["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as unconditional:
        await env.kube.replace(Schedule.from_dict(draft))
    assert unconditional.value.status.code == 422, "a custom resource's PUT needs a resourceVersion"


async def test_a_put_to_status_replaces_the_status_only(env: Env) -> None:
    current = (await env.kube.create(schedule())).to_dict()
    current["spec"]["task"] = "Hacked."
    current["status"] = {"phase": "Active", "totalRuns": 1}
    replaced = await env.kube.replace(Schedule.Status.from_dict(current))
    assert replaced.status == {"phase": "Active", "totalRuns": 1}
    assert replaced.spec["task"] == "Check in."


async def test_leases_renew_by_put_with_or_without_a_version(env: Env) -> None:
    lease = await env.kube.create(Lease.from_dict({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader", "namespace": NS},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                 "renewTime": "2026-01-01T00:00:00.000000Z"}}))
    draft = lease.to_dict()
    draft["spec"]["renewTime"] = "2026-01-01T00:00:02.000000Z"
    renewed = await env.kube.replace(Lease.from_dict(draft))
    assert rv(renewed) > rv(lease)
    with pytest.raises(ApiError) as caught:
        await env.kube.replace(Lease.from_dict(draft))  # the version it was renewed from
    assert caught.value.status.code == 409
    del draft["metadata"]["resourceVersion"]
    draft["spec"]["holderIdentity"] = "b"
    taken = await env.kube.replace(Lease.from_dict(draft))  # built-ins allow an unconditional PUT
    assert taken.spec["holderIdentity"] == "b"


# --- the status subresource ------------------------------------------------------------------------


async def test_a_status_patch_cannot_change_spec_or_metadata(env: Env) -> None:
    await env.kube.create(schedule())
    patched = await env.kube.patch(Schedule.Status, "hb", {
        "status": {"phase": "Active"}, "spec": {"task": "Hacked."},
        "metadata": {"labels": {"hacked": "yes"}}}, namespace=NS, patch_type=PatchType.MERGE)
    assert patched.status == {"phase": "Active"}
    assert patched.spec["task"] == "Check in."
    assert not patched.metadata.labels


async def test_main_resource_writes_cannot_change_the_status(env: Env) -> None:
    await env.kube.create(schedule())
    await env.kube.patch(Schedule.Status, "hb", {"status": {"phase": "Active"}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    patched = await env.kube.patch(Schedule, "hb", {"status": {"phase": "Hacked"}, "spec": {"task": "New."}},
                                   namespace=NS, patch_type=PatchType.MERGE)
    assert patched.status == {"phase": "Active"}
    assert patched.spec["task"] == "New."


# --- selectors and lists ---------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    pytest.param("sympozium.ai/schedule", {"sympozium.ai/schedule": "hb"}, True, id="exists"),
    pytest.param("sympozium.ai/schedule", {"other": "x"}, False, id="exists-absent"),
    pytest.param("!sympozium.ai/schedule", {"other": "x"}, True, id="not-exists"),
    pytest.param("sympozium.ai/component=memory", {"sympozium.ai/component": "memory"}, True, id="equals"),
    pytest.param("sympozium.ai/component==memory", {"sympozium.ai/component": "x"}, False,
                 id="double-equals"),
    pytest.param("a!=1", {}, True, id="not-equals-absent"),
    pytest.param("a!=1", {"a": "1"}, False, id="not-equals"),
    pytest.param("a in (1, 2)", {"a": "2"}, True, id="in"),
    pytest.param("a notin (1,2)", {"a": "3"}, True, id="notin"),
    pytest.param("a,b=2", {"a": "", "b": "2"}, True, id="all-of"),
    pytest.param("a,b=2", {"a": ""}, False, id="all-of-one-missing"),
    pytest.param("", {}, True, id="empty"),
])
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert Selector.parse(selector).matches(labels) is expected


async def test_list_filters_by_labels_exists_and_equality_and_names_its_version(env: Env) -> None:
    await env.kube.create(run("mine", labels={"sympozium.ai/schedule": "hb"}))
    await env.kube.create(run("other", labels={"team": "a"}))
    await env.kube.create(configmap("alice-memory", labels={"sympozium.ai/component": "memory"}))
    last = await env.kube.create(configmap("unrelated"))
    runs = env.kube.list(Run, namespace="*", labels={"sympozium.ai/schedule": None})
    assert [r.metadata.name async for r in runs] == ["mine"]
    assert runs.resourceVersion == last.metadata.resourceVersion
    cms = env.kube.list(ConfigMap, namespace=NS, labels={"sympozium.ai/component": "memory"})
    assert [c.metadata.name async for c in cms] == ["alice-memory"]
    named = env.kube.list(Run, namespace=NS, fields={"metadata.name": "other"})
    assert [r.metadata.name async for r in named] == ["other"]
    response = await env.http.get(f"{GROUP_URL}/agentruns", params={"labelSelector": "a in (b"})
    assert response.status_code == 400


async def test_lists_are_scoped_to_their_namespace(env: Env) -> None:
    await env.kube.create(run("here"))
    elsewhere = run("there").to_dict()
    elsewhere["metadata"]["namespace"] = "other"
    await env.kube.create(Run.from_dict(elsewhere))
    assert [r.metadata.name async for r in env.kube.list(Run, namespace=NS)] == ["here"]
    assert [r.metadata.name async for r in env.kube.list(Run, namespace="*")] == ["here", "there"]


# --- watches ---------------------------------------------------------------------------------------


async def test_a_watch_without_a_version_sends_the_state_then_the_changes(env: Env) -> None:
    await env.kube.create(run("before"))
    watching = Watching(env, Run)
    await eventually(lambda: watching.seen, what="the current state")
    await env.kube.create(run("after"))
    await env.kube.delete(Run, "before", namespace=NS)
    await eventually(lambda: len(watching.seen) == 3, what="the changes")
    await watching.close()
    assert [s[:2] for s in watching.seen] == [("ADDED", "before"), ("ADDED", "after"), ("DELETED", "before")]


async def test_a_watch_from_a_version_replays_the_changes_after_it(env: Env) -> None:
    a = await env.kube.create(run("a"))
    await env.kube.create(run("b"))
    await env.kube.patch(Run, "a", {"metadata": {"labels": {"x": "y"}}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    await env.kube.delete(Run, "b", namespace=NS)
    events = await backlog_of(env, f"{GROUP_URL}/agentruns", resourceVersion=a.metadata.resourceVersion)
    assert summary(events) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)
    assert versions[0] > rv(a)


async def test_a_deleted_event_carries_a_version_of_its_own(env: Env) -> None:
    created = await env.kube.create(run("a"))
    watching = Watching(env, Run, resource_version=created.metadata.resourceVersion)
    await env.kube.delete(Run, "a", namespace=NS)
    await eventually(lambda: watching.seen, what="the deletion")
    await watching.close()
    assert watching.seen[0][0] == "DELETED"
    assert watching.seen[0][2] > rv(created)
    assert env.emu.resource_version == watching.seen[0][2]


async def test_a_selective_watch_sees_objects_enter_and_leave_its_selector(env: Env) -> None:
    await env.kube.create(run("r"))
    watching = Watching(env, Run, labels={"sympozium.ai/schedule": None})
    await asyncio.sleep(0.05)
    labelled = {"metadata": {"labels": {"sympozium.ai/schedule": "hb"}}}
    await env.kube.patch(Run, "r", labelled, namespace=NS, patch_type=PatchType.MERGE)
    await env.kube.patch(Run, "r", {"metadata": {"annotations": {"a": "b"}}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    await env.kube.patch(Run, "r", {"metadata": {"labels": {"sympozium.ai/schedule": None}}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    await env.kube.create(run("unlabelled"))
    await eventually(lambda: len(watching.seen) == 3, what="enter, change, leave")
    await asyncio.sleep(0.05)
    await watching.close()
    assert [s[:2] for s in watching.seen] == [("ADDED", "r"), ("MODIFIED", "r"), ("DELETED", "r")]


async def test_a_watch_from_a_compacted_version_gets_410_in_the_stream(env: Env) -> None:
    created = await env.kube.create(run("a"))
    latest = await env.kube.create(run("b"))
    env.emu.compact()
    current = await backlog_of(env, f"{GROUP_URL}/agentruns", resourceVersion=latest.metadata.resourceVersion)
    assert current == [], "the current version stays watchable"
    events = await raw_watch(env, f"{GROUP_URL}/agentruns", resourceVersion=created.metadata.resourceVersion)
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"
    with pytest.raises(ApiError) as caught:
        async for _ in env.kube.watch(Run, namespace=NS, resource_version=created.metadata.resourceVersion):
            pass
    assert caught.value.status.code == 410


async def test_an_injected_410_ends_an_open_watch_with_an_error(env: Env) -> None:
    watching = Watching(env, Run)
    await eventually(lambda: env.emu.open_watches() == 1, what="the watch")
    assert env.emu.break_watches(RUNS, gone=True) == 1
    await eventually(lambda: watching.task.done(), what="the watch to fail")
    assert isinstance(watching.error, ApiError)
    assert watching.error.status.code == 410
    assert env.emu.open_watches() == 0


async def test_a_clean_break_is_resumed_by_lightkube_without_losing_a_change(env: Env) -> None:
    watching = Watching(env, Run)
    await eventually(lambda: env.emu.open_watches() == 1, what="the watch")
    await env.kube.create(run("a"))
    await eventually(lambda: watching.seen, what="the first change")
    assert env.emu.break_watches(SCHEDULES) == 0, "only the named resource's watches end"
    assert env.emu.break_watches(RUNS) == 1
    await env.kube.create(run("b"))  # most likely before lightkube has watched again
    await eventually(lambda: len(watching.seen) == 2, what="the change made during the break")
    await watching.close()
    assert [s[:2] for s in watching.seen] == [("ADDED", "a"), ("ADDED", "b")]
    watches = [c for c in env.emu.calls if c.verb == "watch"]
    assert len(watches) == 2
    assert watching.error is None


async def test_a_watch_ends_cleanly_after_its_timeout_seconds(env: Env) -> None:
    started = time.monotonic()
    events = await raw_watch(env, f"{GROUP_URL}/agentruns", timeoutSeconds="1")
    assert events == []
    assert 0.9 < time.monotonic() - started < 3


# --- garbage collection, finalizers ---------------------------------------------------------------


async def test_deleting_an_owner_deletes_its_dependents_recursively(env: Env) -> None:
    owner = await env.kube.create(schedule())
    child = await env.kube.create(run("child", owners=[owner]))
    grandchild = await env.kube.create(configmap("grandchild", owners=[child]))
    bystander = await env.kube.create(run("bystander"))
    assert rv(bystander) > rv(grandchild)
    watching = Watching(env, Run, resource_version=bystander.metadata.resourceVersion)
    cms = Watching(env, ConfigMap, resource_version=bystander.metadata.resourceVersion)
    await env.kube.delete(Schedule, "hb", namespace=NS)
    await eventually(lambda: watching.seen and cms.seen, what="the dependents' deletions")
    await watching.close()
    await cms.close()
    assert [s[:2] for s in watching.seen] == [("DELETED", "child")]
    assert [s[:2] for s in cms.seen] == [("DELETED", "grandchild")]
    assert [r.metadata.name async for r in env.kube.list(Run, namespace=NS)] == ["bystander"]


async def test_a_dependent_with_another_live_owner_only_loses_the_reference(env: Env) -> None:
    first, second = await env.kube.create(schedule("first")), await env.kube.create(schedule("second"))
    await env.kube.create(run("shared", owners=[first, second]))
    await env.kube.delete(Schedule, "first", namespace=NS)
    shared = await env.kube.get(Run, "shared", namespace=NS)
    assert [o.name for o in shared.metadata.ownerReferences] == ["second"]


async def test_orphan_propagation_keeps_the_dependents(env: Env) -> None:
    owner = await env.kube.create(schedule())
    await env.kube.create(run("child", owners=[owner]))
    await env.kube.delete(Schedule, "hb", namespace=NS, cascade=CascadeType.ORPHAN)
    assert (await env.kube.get(Run, "child", namespace=NS)).metadata.name == "child"


async def test_finalizers_hold_a_deletion_until_they_are_removed(env: Env) -> None:
    await env.kube.create(run("r", finalizers=["sympozium.ai/cleanup"]))
    await env.kube.delete(Run, "r", namespace=NS)
    held = await env.kube.get(Run, "r", namespace=NS)
    assert held.metadata.deletionTimestamp is not None
    await env.kube.patch(Run, "r", {"metadata": {"finalizers": None}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    with pytest.raises(ApiError) as caught:
        await env.kube.get(Run, "r", namespace=NS)
    assert caught.value.status.code == 404


# --- admission: names, labels, schemas ---------------------------------------------------------


async def test_custom_resources_are_pruned_defaulted_and_validated(env: Env) -> None:
    created = await env.kube.create(Schedule.from_dict(schedule().to_dict() | {"unknown": 1}))
    assert created.get("unknown") is None
    assert created.spec["concurrencyPolicy"] == "Forbid"
    assert created.spec["includeMemory"] is True
    status = await env.kube.patch(Schedule.Status, "hb", {"status": {"phase": "Active", "madeUp": 1}},
                                  namespace=NS, patch_type=PatchType.MERGE)
    assert status.status == {"phase": "Active"}, "a status field the CRD lacks is pruned, silently"
    with pytest.raises(ApiError) as caught:
        await env.kube.create(schedule("bad", concurrencyPolicy="Sometimes"))
    assert caught.value.status.code == 422
    assert "concurrencyPolicy" in caught.value.status.message


@pytest.mark.parametrize("obj", [
    pytest.param(run("Not_A_Name"), id="name"),
    pytest.param(run("r", labels={"sympozium.ai/schedule": "x" * 64}), id="label-value"),
    pytest.param(run("r", labels={"bad key!": "x"}), id="label-key"),
])
async def test_names_and_labels_are_validated(env: Env, obj: Any) -> None:
    with pytest.raises(ApiError) as caught:
        await env.kube.create(obj)
    assert (caught.value.status.code, caught.value.status.reason) == (422, "Invalid")


async def test_an_event_must_name_an_object_in_its_own_namespace(env: Env) -> None:
    with pytest.raises(ApiError) as caught:
        await env.kube.create(Event.from_dict({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": NS},
            "involvedObject": {"kind": "SympoziumSchedule", "name": "hb", "namespace": "elsewhere"},
            "reason": "R", "message": "m"}))
    assert caught.value.status.code == 422


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "kwargs", "code", "reason"), [
    pytest.param("GET", f"{GROUP_URL}/agentruns/missing", {}, 404, "NotFound", id="not-found"),
    pytest.param("GET", "/apis/sympozium.ai/v1alpha1/namespaces/ns/unknowns", {}, 404, "NotFound",
                 id="unknown-resource"),
    pytest.param("GET", "/apis/batch/v1/namespaces/ns/cronjobs", {}, 404, "NotFound", id="unknown-group"),
    pytest.param("PATCH", f"{GROUP_URL}/agentruns/x", {
        "content": b"[]", "headers": {"Content-Type": "application/json-patch+json"}},
        415, "UnsupportedMediaType", id="json-patch"),
    pytest.param("PATCH", f"{GROUP_URL}/agentruns/x", {
        "content": b"{}", "headers": {"Content-Type": "application/strategic-merge-patch+json"}},
        415, "UnsupportedMediaType", id="strategic-merge-patch"),
    pytest.param("DELETE", f"{GROUP_URL}/agentruns", {}, 405, "MethodNotAllowed", id="deletecollection"),
    pytest.param("POST", f"{GROUP_URL}/agentruns", {"json": {"apiVersion": "v1", "kind": "ConfigMap",
                                                             "metadata": {"name": "x"}}},
                 400, "BadRequest", id="wrong-kind"),
    pytest.param("POST", f"{GROUP_URL}/agentruns", {"json": {
        "apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "x", "namespace": "elsewhere"}}}, 400, "BadRequest", id="wrong-namespace"),
])
async def test_errors_are_status_objects_in_exactly_application_json(
        env: Env, method: str, path: str, kwargs: dict[str, Any], code: int, reason: str) -> None:
    response = await env.http.request(method, path, **kwargs)
    assert response.status_code == code
    assert response.headers["Content-Type"] == "application/json", "lightkube needs exactly this"
    body = response.json()
    assert (body["kind"], body["status"], body["code"], body["reason"]) == ("Status", "Failure", code, reason)


async def test_lightkube_sees_api_errors_with_their_reason(env: Env) -> None:
    with pytest.raises(ApiError) as caught:
        await env.kube.get(Run, "missing", namespace=NS)
    assert caught.value.status.reason == "NotFound"
    assert caught.value.status.message == 'agentruns.sympozium.ai "missing" not found'


# --- injected faults -------------------------------------------------------------------------------


async def test_an_injected_fault_answers_in_place_of_the_api_after_its_side_effect(env: Env) -> None:
    await env.kube.create(schedule())
    fault = env.emu.inject(
        lambda call: call.resource == "sympoziumschedules/status",
        api_error(409, "Conflict", "injected"),
        before=lambda emu: emu.write(SCHEDULES, NS, "hb", {"metadata": {"labels": {"by": "someone"}}}))
    with pytest.raises(ApiError) as caught:
        await env.kube.patch(Schedule.Status, "hb", {"status": {"phase": "Active"}}, namespace=NS,
                             patch_type=PatchType.MERGE)
    assert caught.value.status.code == 409
    stored = await env.kube.get(Schedule, "hb", namespace=NS)
    assert stored.metadata.labels == {"by": "someone"}, "the concurrent write happened"
    assert stored.status is None, "the failed request was not applied"
    await env.kube.patch(Schedule.Status, "hb", {"status": {"phase": "Active"}}, namespace=NS,
                         patch_type=PatchType.MERGE)  # only the next one failed
    assert [c.code for c in fault.hits] == [409]


async def test_a_kmock_reaction_answers_in_place_of_the_emulated_api(env: Env) -> None:
    env.emu[kmock.action.CREATE, kmock.resource(RUNS)][:1] << 503 << {"kind": "Status", "code": 503}
    response = await env.http.post(f"{GROUP_URL}/agentruns", json=run("r").to_dict())
    assert response.status_code == 503
    assert env.emu.current(RUNS, NS, "r") is None, "the write the reaction answered was not applied"
    assert (await env.kube.create(run("r"))).metadata.name == "r", "only the first one"
    assert [c.code for c in env.emu.calls] == [503, 201]


# --- the request record --------------------------------------------------------------------------


async def test_every_request_is_recorded_with_its_rbac_verb_and_caller(env: Env) -> None:
    created = await env.kube.create(schedule())
    await env.kube.get(Schedule, "hb", namespace=NS)
    _ = [o async for o in env.kube.list(Schedule, namespace="*")]
    await env.kube.patch(Schedule.Status, "hb", {"status": {"phase": "Active"}}, namespace=NS,
                         patch_type=PatchType.MERGE)
    await env.kube.replace(Schedule.from_dict((await env.kube.get(Schedule, "hb", namespace=NS)).to_dict()))
    await env.kube.delete(Schedule, "hb", namespace=NS)
    await env.http.get("/apis/sympozium.ai/v1alpha1")  # discovery is not a resource request
    await backlog_of(env, f"{GROUP_URL}/sympoziumschedules", resourceVersion=created.metadata.resourceVersion)
    group = "sympozium.ai"
    assert [(c.user, *c.rbac, c.code) for c in env.emu.calls] == [
        ("tester", group, "sympoziumschedules", "create", NS, None, 201),
        ("tester", group, "sympoziumschedules", "get", NS, "hb", 200),
        ("tester", group, "sympoziumschedules", "list", None, None, 200),
        ("tester", group, "sympoziumschedules/status", "patch", NS, "hb", 200),
        ("tester", group, "sympoziumschedules", "get", NS, "hb", 200),
        ("tester", group, "sympoziumschedules", "update", NS, "hb", 200),
        ("tester", group, "sympoziumschedules", "delete", NS, "hb", 200),
        ("raw", group, "sympoziumschedules", "watch", NS, None, 200),
    ]


# --- the threaded server ---------------------------------------------------------------------------


def test_the_threaded_server_serves_another_process_through_a_kubeconfig(
        emulated: ApiServer, tmp_path: Path) -> None:
    server = emulated
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig", user="test")
    api = server.api(user="setup")
    try:
        api.create({"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumInstance",
                    "metadata": {"name": "alice", "namespace": "default"},
                    "spec": {"agents": {"default": {"model": "gpt-4o"}}}})
        stored = api.get("sympoziuminstances", "alice", namespace="default")
    finally:
        api.close()
    assert stored is not None
    script = ("from lightkube import Client, KubeConfig\n"
              "from sympozium_schedule.adapters.kubernetes.store import RESOURCES\n"
              "from sympozium_schedule.core.model import Kind\n"
              f"c = Client(config=KubeConfig.from_file({str(kubeconfig)!r}), trust_env=False)\n"
              "print(c.get(RESOURCES[Kind.INSTANCE], 'alice').metadata.uid)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == stored["metadata"]["uid"]
    assert [c.rbac for c in server.calls(user="test")] == [
        ("sympozium.ai", "sympoziuminstances", "get", "default", "alice")], "the kubeconfig's namespace"


def test_the_threaded_server_stops_promptly_with_watches_open() -> None:
    server = ApiServer().start()
    api = server.api()

    def watch() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server goes away under it, as it should
            for _ in api.client.watch(Run, namespace="*"):
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait = time.monotonic() + 5
    while server.open_watches() == 0 and time.monotonic() < wait:
        time.sleep(0.01)
    assert server.open_watches() == 1
    mark = server.mark()
    assert server.break_watches(gone=False) == 1  # lightkube watches again, at once
    while not server.calls(since=mark) and time.monotonic() < wait:
        time.sleep(0.01)
    assert [c.verb for c in server.calls(since=mark)] == ["watch"]
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    api.close()
