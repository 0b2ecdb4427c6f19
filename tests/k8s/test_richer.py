"""Richer schedules on the real kube-apiserver: the CRD refuses bad values of the new fields
with the API server's own message (types, patterns and CEL rules), and the real controller
(the shipped ServiceAccount under the shipped RBAC) fires them: maxRuns completes, a failed
run pauses a pauseOnFailure schedule through a spec update, BufferOne starts the waiting
tick when the run ends, a backfill asked for with the annotation creates the past ticks'
runs, and jitter plans a fire time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sympozium_schedule.core.model import ANNOTATION_BACKFILL, API_VERSION, format_time, parse_time
from sympozium_schedule.core.naming import run_name
from tests.k8s.conftest import Cluster, Process, Processes, Space, namespace_for, scheduled_time
from tests.kube.controlplane import ApiError, ControlPlane


@pytest.fixture(scope="module")
def controller(cluster_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Cluster, Process]]:
    server = Cluster(cluster_plane)
    processes = Processes(server, tmp_path_factory.mktemp("richer"))
    try:
        yield server, processes.controller()
    finally:
        processes.close()


@pytest.fixture
def ns(controller: tuple[Cluster, Process], request: pytest.FixtureRequest) -> Iterator[Space]:
    server, process = controller
    name = namespace_for(request.node.name)
    server.api().namespace(name)
    space = Space(server, server.api(), name)
    space.instance("alice")
    try:
        yield space
        assert process.alive, process.log_tail()
    finally:
        space.delete_schedules()


def manifest(namespace: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SympoziumSchedule",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": {"instanceRef": "alice", "schedule": "@hourly", "task": "t"} | spec}


@pytest.mark.parametrize(("spec", "says"), [
    pytest.param({"jitter": "30 seconds"}, "spec.jitter", id="jitter-not-a-duration"),
    pytest.param({"maxRuns": 0}, "spec.maxRuns", id="max-runs-zero"),
    pytest.param({"startTime": "tomorrow"}, "spec.startTime", id="start-not-a-time"),
    pytest.param({"startTime": "2026-02-01T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"},
                 "spec.endTime must be after spec.startTime", id="window-reversed"),
    pytest.param({"exclude": [{"schedule": "* * 25 12 *", "start": "2026-12-24",
                               "end": "2026-12-26"}]},
                 "an exclude entry is either a schedule, or both start and end", id="exclude-both"),
    pytest.param({"exclude": [{"start": "2026-12-24"}]},
                 "an exclude entry is either a schedule, or both start and end",
                 id="exclude-half-range"),
    pytest.param({"exclude": [{"start": "24/12/2026", "end": "2026-12-26"}]},
                 "spec.exclude[0].start", id="exclude-bad-date"),
    pytest.param({"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy", id="bad-policy"),
    pytest.param({"schedules": [{"timeZone": "UTC"}]}, "spec.schedules[0].schedule",
                 id="schedules-entry-without-schedule"),
    pytest.param({"suspendReason": "x" * 1025}, "spec.suspendReason", id="note-too-long"),
])
def test_the_api_server_refuses_bad_richer_fields(ns: Space, spec: dict[str, Any],
                                                  says: str) -> None:
    with pytest.raises(ApiError) as refused:
        ns.api.create(manifest(ns.name, **spec))
    assert refused.value.code == 422
    assert says in str(refused.value)
    assert ns.api.get("sympoziumschedules", "bad", namespace=ns.name) is None


def test_the_api_server_accepts_every_richer_field(ns: Space) -> None:
    created = ns.api.create(manifest(
        ns.name, suspend=True, schedules=[{"schedule": "0 12 * * 6", "timeZone": "Europe/Warsaw"}],
        exclude=[{"schedule": "* * 25 12 *"}, {"start": "2026-12-24", "end": "2026-12-26"},
                 {"start": "2026-12-31T22:00:00Z", "end": "2027-01-01T02:00:00+01:00"}],
        jitter="1m30s", startTime="2026-12-01T00:00:00Z", endTime="2027-06-30T23:59:59Z",
        maxRuns=10, concurrencyPolicy="BufferAll", pauseOnFailure=True,
        suspendedBy="alice@laptop", suspendReason="not yet"), strict=True)
    assert created["spec"]["concurrencyPolicy"] == "BufferAll"
    ready = ns.wait(lambda: next((c for c in (ns.status("bad").get("conditions") or [])
                                  if c["type"] == "Ready"), None), "the controller's verdict")
    assert (ready["reason"], ready["message"]) == ("Suspended", "suspended by alice@laptop: not yet")


def test_max_runs_completes_and_deletes_nothing(ns: Space) -> None:
    ns.schedule("limited", "@every 1s", maxRuns=2, concurrencyPolicy="Allow")
    ns.wait(lambda: ns.status("limited").get("phase") == "Completed", "the schedule to complete")
    status = ns.status("limited")
    assert (status["scheduledRuns"], status["remainingRuns"]) == (2, 0)
    assert len(ns.runs("limited")) == 2


def test_a_failed_run_pauses_a_pause_on_failure_schedule(ns: Space) -> None:
    ns.schedule("fragile", "@every 1s", pauseOnFailure=True)
    (run,) = ns.wait_runs("fragile", 1)[:1]
    ns.api.patch("agentruns", run["metadata"]["name"],
                 {"status": {"phase": "Failed", "error": "the model said no"}},
                 namespace=ns.name, status=True)
    spec = ns.wait(lambda: (s := ns.get("fragile")["spec"]).get("suspend") and s, "the pause")
    assert spec["suspendedBy"] == "sympozium-schedule (pauseOnFailure)"
    assert spec["suspendReason"] == f"AgentRun {run['metadata']['name']} failed: the model said no"
    ns.wait(lambda: ns.events("fragile", reason="PausedOnFailure"), "its Warning Event")
    ns.wait(lambda: ns.status("fragile").get("phase") == "Suspended", "the Suspended phase")


def test_buffer_one_starts_the_waiting_tick_when_the_run_ends(ns: Space) -> None:
    ns.schedule("serial", "@every 2s", concurrencyPolicy="BufferOne")
    first = ns.wait_runs("serial", 1)[0]
    waiting = ns.wait(lambda: ns.status("serial").get("buffered"), "a waiting tick")
    tick = parse_time(waiting[0])
    assert tick is not None
    ns.finish(first["metadata"]["name"], "Succeeded")
    started = ns.wait(lambda: next((r for r in ns.runs("serial")
                                    if scheduled_time(r) == tick), None), "the waiting tick's run")
    assert started["metadata"]["name"] == run_name("serial", tick)


def test_a_backfill_asked_for_with_the_annotation(ns: Space) -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(minutes=4)).replace(second=0, microsecond=0)
    ns.schedule("minutely", "* * * * *", firstTick="afterInterval", concurrencyPolicy="Allow")
    ns.api.request("PATCH", f"/apis/sympozium.ai/v1alpha1/namespaces/{ns.name}/sympoziumschedules/"
                   "minutely", {"metadata": {"annotations": {ANNOTATION_BACKFILL: json.dumps(
                       {"from": format_time(start), "to": format_time(now), "overlap": "Allow"})}}},
                   content_type="application/merge-patch+json")
    progress = ns.wait(lambda: (b := ns.status("minutely").get("backfill")) and
                       b.get("state") == "Completed" and b, "the backfill")
    ticks = [start + timedelta(minutes=k) for k in range(5) if start + timedelta(minutes=k) <= now]
    assert progress["created"] == len(ticks)
    names = set(ns.run_names("minutely"))
    assert {run_name("minutely", t) for t in ticks} <= names
    backfilled = [r for r in ns.runs("minutely")
                  if r["metadata"]["annotations"].get("sympozium.ai/trigger") == "backfill"]
    assert len(backfilled) == len(ticks)


def test_jitter_plans_the_fire_time(ns: Space) -> None:
    ns.schedule("spread", "@every 1h", jitter="20m", firstTick="afterInterval")
    status = ns.wait(lambda: (s := ns.status("spread")).get("nextFireTime") and s, "a plan")
    tick, fire = parse_time(status["nextRunTime"]), parse_time(status["nextFireTime"])
    assert tick is not None
    assert fire is not None
    assert tick <= fire < tick + timedelta(minutes=20)
