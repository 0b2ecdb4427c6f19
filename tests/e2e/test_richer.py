"""Richer schedules under the real ``run`` on the embedded store: jitter, a time window,
maxRuns, several specs with exclusions, buffered overlap, pauseOnFailure, and from the
CLI a backfill and a suspend with a note. Schedules tick every second or two; agents are
real processes (the demo agent, or a shell command for a slow or failing one)."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from sympozium_schedule.core.model import format_time, parse_time
from sympozium_schedule.core.naming import run_name
from tests.e2e.conftest import RUN_FLAGS, Cli, Scheduler, schedule_yaml, stored_runs, wait_for

pytestmark = pytest.mark.e2e

KEEP = {"successfulRunsHistoryLimit": 100, "failedRunsHistoryLimit": 100}
AGENTS = ("--agent", "slow=sh -c 'sleep 2.5; echo slow done'",
          "--agent", "failing=sh -c 'echo no luck >&2; exit 3'")


def instance(name: str, agent: str | None = None) -> str:
    meta: dict[str, Any] = {"name": name}
    if agent:
        meta["annotations"] = {"sympozium.ai/agent": agent}
    return yaml.safe_dump({"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumInstance",
                           "metadata": meta,
                           "spec": {"agents": {"default": {"model": "gpt-4o"}}}}, sort_keys=False)


def of(runs: list[dict[str, Any]], schedule: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["metadata"]["labels"]["sympozium.ai/schedule"] == schedule]


def tick(run: dict[str, Any]) -> datetime:
    found = parse_time(run["metadata"]["annotations"]["sympozium.ai/scheduled-time"])
    assert found is not None
    return found


def schedules(cli: Cli) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in cli.ok("get", "schedules", "-o", "json").json()["items"]}


def test_richer_schedules_under_run(cli: Cli, scheduler: Scheduler) -> None:
    now = datetime.now(UTC)
    window = (now + timedelta(seconds=4), now + timedelta(seconds=9))
    # Early in the schedule's life: Events are rate-limited per object (10, then one a
    # minute), and the skips must still be within that budget to be seen as Events.
    hole = (now + timedelta(seconds=3), now + timedelta(seconds=6))
    cli.apply_text("---\n".join([
        instance("alice"), instance("slowpoke", "slow"), instance("broken", "failing"),
        schedule_yaml("jit", "@every 2s", jitter="1s", **KEEP, concurrencyPolicy="Allow"),
        schedule_yaml("limited", "@every 1s", maxRuns=3, **KEEP, concurrencyPolicy="Allow"),
        schedule_yaml("multi", "@every 3s", schedules=[{"schedule": "@every 2s"}], **KEEP,
                      concurrencyPolicy="Allow"),
        schedule_yaml("holey", "@every 1s", exclude=[{"start": format_time(hole[0]),
                                                      "end": format_time(hole[1])}],
                      concurrencyPolicy="Allow", **KEEP),
        schedule_yaml("windowed", "@every 1s", startTime=format_time(window[0]),
                      endTime=format_time(window[1]), concurrencyPolicy="Allow", **KEEP),
        schedule_yaml("serial", "@every 1s", instance="slowpoke", concurrencyPolicy="BufferOne",
                      **KEEP),
        schedule_yaml("fragile", "@every 1s", instance="broken", pauseOnFailure=True, **KEEP),
    ]))
    scheduler.start(*AGENTS, flags=RUN_FLAGS)

    def settled() -> bool:
        current = schedules(cli)
        return ((current["windowed"].get("status") or {}).get("phase") == "Completed"
                and current["fragile"]["spec"].get("suspend") is True
                and len([r for r in stored_runs(cli.data_dir)
                         if r["metadata"]["labels"]["sympozium.ai/schedule"] == "serial"
                         and r.get("status", {}).get("phase") == "Succeeded"]) >= 2)

    wait_for(settled, timeout=60, what="the window to close, a pause and two serial runs")
    current = schedules(cli)
    runs = stored_runs(cli.data_dir)

    # Jitter: runs keep their tick (on the 2 s grid from creation) and start within 1 s of it.
    created = parse_time(current["jit"]["metadata"]["creationTimestamp"])
    assert created is not None
    created = created.replace(microsecond=0)  # @every counts from the creation's second
    for run in of(runs, "jit"):
        assert (tick(run) - created).total_seconds() % 2 == 0
        started = parse_time(run["metadata"]["creationTimestamp"])
        assert started is not None
        assert timedelta(0) <= started - tick(run) < timedelta(seconds=1) + timedelta(seconds=3)
    assert "nextFireTime" in current["jit"]["status"]

    # maxRuns: three runs, then Completed; remainingRuns counted down.
    assert len(of(runs, "limited")) == 3
    assert current["limited"]["status"]["phase"] == "Completed"
    assert current["limited"]["status"]["remainingRuns"] == 0

    # Several specs: one run per distinct tick of the merged stream.
    multi = [tick(r) for r in of(runs, "multi")]
    assert len(multi) == len(set(multi))
    multi_created = parse_time(current["multi"]["metadata"]["creationTimestamp"])
    assert multi_created is not None
    multi_created = multi_created.replace(microsecond=0)
    offsets = {int((t - multi_created).total_seconds()) for t in multi}
    assert {2, 3, 4, 6} & offsets  # ticks of either interval
    assert all(o % 2 == 0 or o % 3 == 0 for o in offsets if o)

    # Exclusions: nothing in the hole, and the skips were recorded.
    assert not [r for r in of(runs, "holey") if hole[0] <= tick(r) < hole[1]]
    assert [r for r in of(runs, "holey") if tick(r) >= hole[1]]
    reasons = Counter(e["reason"] for e in cli.ok("get", "events", "-o", "json").json()["items"]
                      if e["involvedObject"]["name"] == "holey")
    assert reasons["TickSkipped"] >= 2

    # The window: no tick outside it, then Completed.
    windowed = [tick(r) for r in of(runs, "windowed")]
    assert windowed
    assert all(window[0] - timedelta(seconds=1) <= t <= window[1] for t in windowed)

    # BufferOne: the slow agent's runs never overlap, and each waiting tick started later.
    spans = sorted((parse_time(r["status"]["startedAt"]), parse_time(r["status"].get("completedAt")))
                   for r in of(runs, "serial") if r.get("status", {}).get("startedAt"))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None
        assert start is not None
        assert start >= end
    assert len(current["serial"]["status"].get("buffered", [])) <= 1

    # pauseOnFailure: suspended with a note naming the failed run.
    fragile = current["fragile"]
    (failed,) = [r for r in of(runs, "fragile") if r["status"].get("phase") == "Failed"][:1]
    assert fragile["spec"]["suspendedBy"] == "sympozium-schedule (pauseOnFailure)"
    assert failed["metadata"]["name"] in fragile["spec"]["suspendReason"]
    described = cli.ok("describe", "schedule", "fragile").out
    assert "Suspend Reason:" in described
    assert "PausedOnFailure" in described


def test_backfill_and_a_suspend_note_from_the_cli(cli: Cli, scheduler: Scheduler) -> None:
    created = datetime.now(UTC)
    cli.apply_text("---\n".join([instance("alice"), schedule_yaml(
        "minutely", "* * * * *", firstTick="afterInterval", **KEEP)]))
    scheduler.start(flags=RUN_FLAGS)
    start = (created - timedelta(minutes=5)).replace(second=0, microsecond=0)
    asked = cli.ok("backfill", "minutely", "--from", format_time(start),
                   "--to", format_time(created))
    assert "backfill" in asked.out
    assert "requested" in asked.out

    def done() -> dict[str, Any] | None:
        status = schedules(cli)["minutely"].get("status") or {}
        backfill = status.get("backfill") or {}
        return backfill if backfill.get("state") == "Completed" else None

    progress = wait_for(done, timeout=60, what="the backfill to complete")
    expected = [start + timedelta(minutes=k) for k in range(6) if start + timedelta(minutes=k) <= created]
    names = {r["metadata"]["name"] for r in stored_runs(cli.data_dir)}
    assert {run_name("minutely", t) for t in expected} <= names
    assert progress["created"] == len(expected)
    # Asking again creates nothing twice.
    cli.ok("backfill", "minutely", "--from", format_time(start), "--to", format_time(created))

    def done_again() -> dict[str, Any] | None:
        backfill = done()
        return backfill if backfill is not None and backfill["id"] != progress["id"] else None

    again = wait_for(done_again, timeout=60, what="the second backfill")
    assert (again["created"], again["existing"]) == (0, len(expected))
    assert len(stored_runs(cli.data_dir)) == len(names)

    bad = cli("backfill", "minutely", "--from", format_time(created), "--to", format_time(start))
    assert bad.code == 1
    assert bad.err.startswith("error: backfill: to (")

    cli.ok("suspend", "minutely", "--note", "database migration until noon")
    listed = cli.ok("get", "schedules").out
    assert "Suspended (database migration until noon)" in listed
    described = cli.ok("describe", "schedule", "minutely").out
    assert "database migration until noon" in described
    assert "@" in schedules(cli)["minutely"]["spec"]["suspendedBy"]
    cli.ok("resume", "minutely")
    spec = schedules(cli)["minutely"]["spec"]
    assert "suspendReason" not in spec
    assert "suspendedBy" not in spec
