"""The two faults a real API server cannot be made to produce on cue, against the API emulator
(tests/k8s/emulator.py): a write to the schedule landing between the controller's decision and
its status patch (a 409 Conflict at that exact moment), and status patches failing with 503
while creates succeed. Everything else runs against the real kube-apiserver (test_controller.py,
test_leader.py, test_rbac.py, test_router.py, test_install.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.k8s.conftest import Process, Processes, Space, namespace_for, ticks
from tests.k8s.emulator import ApiServer, Call, api_error
from tests.k8s.test_controller import calls_in, consecutive, created_once, snapshot

SCHEDULES = "sympozium.ai/v1alpha1/sympoziumschedules"


@dataclass
class Emulated:
    server: ApiServer
    controller: Process


@pytest.fixture(scope="module")
def emulated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    with ApiServer() as server:
        processes = Processes(server, tmp_path_factory.mktemp("controller"))
        try:
            yield Emulated(server, processes.controller("controller"))
        finally:
            processes.close()


@pytest.fixture
def ns(emulated_cluster: Emulated, request: pytest.FixtureRequest) -> Iterator[Space]:
    api = emulated_cluster.server.api()
    space = Space(emulated_cluster.server, api, namespace_for(request.node.name))
    try:
        yield space
        assert emulated_cluster.controller.alive, emulated_cluster.controller.log_tail()
    finally:
        space.delete_schedules()
        api.close()


def status_patches_in(ns: Space, user: str) -> Callable[[Call], bool]:
    return lambda c: (c.user, c.namespace, c.resource) == (user, ns.name, "sympoziumschedules/status")


def test_a_conflicting_write_before_the_status_write_neither_doubles_nor_loses_a_run(
        emulated_cluster: Emulated, ns: Space) -> None:
    """Someone writes the schedule between the controller's decision and its status write:
    the conditional patch gets 409 Conflict, and the controller reads the schedule again and
    records the run it already created (no second run, the count right)."""
    ctl = emulated_cluster.controller
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 1, "the first fire")
    edit = {"metadata": {"labels": {"edited-by": "someone"}}}
    fault = emulated_cluster.server.inject(  # someone writes the schedule between the decision and its status
        status_patches_in(ns, ctl.user), api_error(409, "Conflict", "the object has been modified"),
        before=lambda emu: emu.write(SCHEDULES, ns.name, "hb", edit))
    ns.wait(lambda: fault.hits, "the conflict")
    ns.wait_runs("hb", len(ns.runs("hb")) + 1)
    status, runs = snapshot(ns, "hb")
    assert consecutive(ticks(runs))
    assert status["totalRuns"] == len(runs)
    assert {r["metadata"]["name"] for r in runs} <= set(created_once(ctl, ns))
    assert calls_in(ctl, ns, "sympoziumschedules", "get"), "a conflict is resolved by reading again"
    assert ns.get("hb")["metadata"]["labels"] == {"edited-by": "someone"}


def test_runs_created_while_status_writes_fail_are_all_counted(
        emulated_cluster: Emulated, ns: Space) -> None:
    """Status writes failing for longer than the interval (503 on /status for 2.2 s, while
    creates succeed): every run created meanwhile must be counted once the status can be
    written again, as the core counts a run whose status write was lost ("Count it; never
    create a second one")."""
    ctl = emulated_cluster.controller
    ns.instance()
    ns.schedule("hb", "@every 1s", concurrencyPolicy="Allow")
    ns.wait(lambda: ns.status("hb").get("totalRuns", 0) >= 1, "the first fire")
    outage = emulated_cluster.server.inject(status_patches_in(ns, ctl.user),
                                   api_error(503, "ServiceUnavailable", "etcd is unavailable"), seconds=2.2)
    ns.wait(lambda: outage.hits and time.monotonic() > (outage.until or 0), "the end of the outage")
    status, runs = snapshot(ns, "hb")
    assert {r["metadata"]["name"] for r in runs} <= set(created_once(ctl, ns))
    assert status["totalRuns"] == len(runs), (
        f"status.totalRuns is {status['totalRuns']} but the schedule has {len(runs)} runs: "
        f"{[r['metadata']['name'] for r in runs]}")
