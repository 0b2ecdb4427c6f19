"""Fixtures for the store contract suite: one ``store`` per registered adapter.

Adding an adapter is one entry in :data:`ADAPTERS`: a factory for a fresh,
empty store, a way to open a second client on the same data (another process),
and a way to make every version handed out so far too old to watch from. The
contract tests take the ``store`` (and ``adapter``/``peer``) fixtures and never
name an adapter, so every test in test_contract.py and test_informer.py runs
against each entry.

The objects the builders make validate against Sympozium's CRDs (required
fields present, every defaulted field spelled out, status fields declared), so
an API server that defaults and prunes returns them unchanged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.adapters.kubernetes.store import KubernetesStore
from sympozium_schedule.adapters.sqlite.store import SQLiteStore
from sympozium_schedule.core.model import API_VERSION, LABEL_SCHEDULE, Kind
from sympozium_schedule.ports.store import Obj, Ref, Store, WatchEvent
from tests import support
from tests.kube.controlplane import ADMIN_TOKEN, ControlPlane

NAMESPACE = "default"
OTHER_NAMESPACE = "other"
# How long to wait for something that should happen promptly. Only a failing
# test waits this long: every wait polls or returns as soon as it is satisfied.
PATIENCE = 5.0


# --- the adapter registry -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Adapter:
    """How the suite drives one store adapter."""

    name: str
    # A fresh, empty store (``tmp_path`` is the test's own directory; a shared real API
    # server comes as the second argument where the adapter needs one).
    open: Callable[[Path, ControlPlane | None], Awaitable[Store]]
    # A second client of the same data, as another process would open it.
    peer: Callable[[Store], Awaitable[Store]]
    # Make every resourceVersion handed out before the call too old to watch from (for
    # ConfigMaps at least: a real API server serves the other kinds from its watch cache).
    expire: Callable[[Store], Awaitable[None]]
    # Whether the adapter needs the session's real control plane (tests/kube).
    cluster: bool = False


# The SQLite change log keeps this many revisions at each compaction. Small, so that
# ``expire`` can push a version out of the log; compaction only runs every 500 commits,
# so tests that write less never notice.
SQLITE_KEEP_CHANGES = 10
# _Writer._commit compacts on every 500th commit of a writer. Among 1000 one-write
# commits two are compactions, the later one at least 500 commits after the first
# write here: every version older than the call is then behind the log's horizon.
_SQLITE_COMMITS_TO_EXPIRE = 1000


def _sqlite(store: Store) -> SQLiteStore:
    assert isinstance(store, SQLiteStore)
    return store


async def _sqlite_open(tmp_path: Path, plane: ControlPlane | None = None) -> Store:
    return SQLiteStore(tmp_path / "store.db", keep_changes=SQLITE_KEEP_CHANGES)


async def _sqlite_peer(store: Store) -> Store:
    return SQLiteStore(_sqlite(store).path, keep_changes=SQLITE_KEEP_CHANGES)


async def _sqlite_process_open(tmp_path: Path, plane: ControlPlane | None = None) -> Store:
    """The scheduler's store: its writes committed by a writer process."""
    return SQLiteStore(tmp_path / "store.db", keep_changes=SQLITE_KEEP_CHANGES, writer="process")


async def _sqlite_process_peer(store: Store) -> Store:
    return SQLiteStore(_sqlite(store).path, keep_changes=SQLITE_KEEP_CHANGES, writer="process")


async def _sqlite_expire(store: Store) -> None:
    filler = await store.create(configmap("compaction-filler", namespace="compaction"))
    for n in range(_SQLITE_COMMITS_TO_EXPIRE):
        # An update, not a status patch: ConfigMaps have no status subresource.
        filler["data"] = {"n": str(n)}
        filler["metadata"].pop("resourceVersion", None)
        filler = await store.update(filler)


class _ClusterStore(KubernetesStore):
    """A KubernetesStore on the contract suite's real API server (tests/kube), as admin: the
    contract is the store's, not the install's RBAC (tests/k8s holds that). The suite's tests
    share the server, so :func:`_kubernetes_open` empties the namespaces they use first."""

    plane: ControlPlane | None = None
    kubeconfig: Path | None = None


def _kubernetes(store: Store) -> _ClusterStore:
    assert isinstance(store, _ClusterStore)
    return store


_PLURALS = ("sympoziumschedules", "agentruns", "sympoziuminstances", "configmaps")


def _connect(plane: ControlPlane, kubeconfig: Path) -> _ClusterStore:
    opened = _ClusterStore(KubernetesStore.connect(kubeconfig).client, qps=0, burst=1)
    opened.plane, opened.kubeconfig = plane, kubeconfig
    return opened


async def _kubernetes_open(tmp_path: Path, plane: ControlPlane | None = None) -> Store:
    assert plane is not None
    api = plane.api()

    def empty() -> None:
        for namespace in (NAMESPACE, OTHER_NAMESPACE, "third", "compaction"):
            api.namespace(namespace)
            for plural in _PLURALS:
                api.delete_all(plural, namespace=namespace)

    plane.garbage_collector()  # cascading deletion is in the contract (main thread: it lives on)
    await asyncio.to_thread(empty)
    kubeconfig = plane.kubeconfig(tmp_path / "kubeconfig", token=ADMIN_TOKEN)
    return _connect(plane, kubeconfig)


async def _kubernetes_peer(store: Store) -> Store:
    own = _kubernetes(store)
    assert own.plane is not None
    assert own.kubeconfig is not None
    return _connect(own.plane, own.kubeconfig)


async def _kubernetes_expire(store: Store) -> None:
    plane = _kubernetes(store).plane
    assert plane is not None
    await asyncio.to_thread(plane.compact)


ADAPTERS: dict[str, Adapter] = {
    "sqlite": Adapter("sqlite", _sqlite_open, _sqlite_peer, _sqlite_expire),
    "sqlite-process": Adapter("sqlite-process", _sqlite_process_open, _sqlite_process_peer,
                              _sqlite_expire),
    "kubernetes": Adapter("kubernetes", _kubernetes_open, _kubernetes_peer, _kubernetes_expire,
                          cluster=True),
}


@pytest.fixture(params=[pytest.param(name, id=name, marks=[pytest.mark.kube] if a.cluster else [])
                        for name, a in ADAPTERS.items()])
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return ADAPTERS[request.param]


@pytest.fixture
async def store(adapter: Adapter, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    plane = request.getfixturevalue("store_plane") if adapter.cluster else None
    opened = await adapter.open(tmp_path, plane)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def peer(adapter: Adapter, store: Store) -> AsyncIterator[Store]:
    """A second client on the same data as ``store`` (another process)."""
    opened = await adapter.peer(store)
    try:
        yield opened
    finally:
        await opened.close()


# --- object builders ----------------------------------------------------------------------


def owner_reference(owner: Obj) -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": owner.get("apiVersion") or Kind(owner["kind"]).api_version,
            "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"]}


def _metadata(name: str, namespace: str, labels: dict[str, str] | None,
              annotations: dict[str, str] | None, owners: tuple[Obj, ...]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels is not None:
        meta["labels"] = dict(labels)
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    if owners:
        meta["ownerReferences"] = [owner_reference(o) for o in owners]
    return meta


def schedule(name: str = "hb", *, namespace: str = NAMESPACE, labels: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None, owners: tuple[Obj, ...] = (),
             **spec: Any) -> Obj:
    """A SympoziumSchedule; ``spec`` keys are the CRD's camelCase names."""
    full: dict[str, Any] = {"instanceRef": "alice", "schedule": "0 * * * *", "task": "Check in.",
                            "type": "scheduled", "concurrencyPolicy": "Forbid",
                            "includeMemory": True, "suspend": False,
                            # this project's CRD defaults, which an API server fills in
                            "timeZone": "UTC", "firstTick": "immediate",
                            "successfulRunsHistoryLimit": 3, "failedRunsHistoryLimit": 1}
    full.update(spec)
    return {"apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
            "metadata": _metadata(name, namespace, labels, annotations, owners), "spec": full}


def agent_run(name: str = "hb-1", *, namespace: str = NAMESPACE,
              labels: dict[str, str] | None = None, owners: tuple[Obj, ...] = (),
              task: str = "Check in.") -> Obj:
    """An AgentRun; with ``owners``, labelled with its first owner's name as the scheduler does."""
    if labels is None and owners:
        labels = {LABEL_SCHEDULE: owners[0]["metadata"]["name"]}
    return {
        "apiVersion": API_VERSION, "kind": Kind.AGENT_RUN.value,
        "metadata": _metadata(name, namespace, labels, None, owners),
        "spec": {"instanceRef": "alice", "agentId": "schedule-hb", "sessionKey": name,
                 "task": task, "mode": "task", "cleanup": "delete",
                 "model": {"model": "gpt-4o", "provider": "openai",
                           "authSecretRef": "alice-openai-key"}},
    }


def instance(name: str = "alice", *, namespace: str = NAMESPACE,
             labels: dict[str, str] | None = None, model: str = "gpt-4o") -> Obj:
    return {"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
            "metadata": _metadata(name, namespace, labels, None, ()),
            "spec": {"agents": {"default": {"model": model}}}}


def configmap(name: str = "alice-memory", *, namespace: str = NAMESPACE,
              labels: dict[str, str] | None = None, owners: tuple[Obj, ...] = (),
              data: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": Kind.CONFIG_MAP.value,
            "metadata": _metadata(name, namespace, labels, None, owners),
            "data": dict(data) if data is not None else {"MEMORY.md": "# Memory\n"}}


def ref(obj: Obj) -> Ref:
    return Ref.of(obj)


def rv(obj: Obj) -> str:
    return str(obj["metadata"]["resourceVersion"])


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


# --- waiting --------------------------------------------------------------------------------


async def next_event(events: AsyncIterator[WatchEvent], timeout: float = PATIENCE) -> WatchEvent:
    """The watch's next event, failing the test if none comes within ``timeout``."""
    try:
        return await asyncio.wait_for(anext(events), timeout)
    except TimeoutError:
        pytest.fail(f"no watch event within {timeout}s")


async def events_until(events: AsyncIterator[WatchEvent], done: Callable[[WatchEvent], bool],
                       timeout: float = PATIENCE) -> list[WatchEvent]:
    """Events up to and including the first one ``done`` accepts."""
    seen: list[WatchEvent] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                seen.append(event)
                if done(event):
                    return seen
    except TimeoutError:
        pass
    summary = [(e.type.value, name_of(e.object)) for e in seen]
    pytest.fail(f"the watch did not deliver the awaited event within {timeout}s; saw {summary}")


# Kubernetes' garbage collector is asynchronous: some contract checks must poll.
eventually = functools.partial(support.eventually, timeout=PATIENCE, interval=0.01)

