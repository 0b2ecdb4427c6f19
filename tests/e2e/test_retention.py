"""Retention under a real ``run``: a schedule firing every second leaves only the
runs its history limits keep, and only their folders; a folder whose AgentRun
went while nothing ran is swept at start."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cli, Scheduler, instance_yaml, schedule_yaml, stored_runs, wait_for

pytestmark = pytest.mark.e2e

FIRES = 15


def test_run_folders_never_outnumber_what_the_history_limits_keep(
        cli: Cli, scheduler: Scheduler) -> None:
    cli.ok("apply", "-f", "-", stdin=instance_yaml() + "---\n" + schedule_yaml(
        "often", "@every 1s", successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1,
        concurrencyPolicy="Allow"))
    orphan = cli.data_dir / "runs" / "default" / "often-1"
    (orphan / "work").mkdir(parents=True)
    process = scheduler.start()
    runs_dir = cli.data_dir / "runs" / "default"
    most = 0

    def enough() -> bool:
        nonlocal most
        assert process.poll() is None, scheduler.tail()
        most = max(most, len(list(runs_dir.iterdir())))
        status = cli.ok("get", "schedule", "often", "-o", "json").json().get("status", {})
        return int(status.get("totalRuns", 0)) >= FIRES

    wait_for(enough, timeout=120, interval=0.5, what=f"{FIRES} fires")
    assert not orphan.exists()
    assert scheduler.stop(process) == 0, scheduler.tail()

    kept = {r["metadata"]["name"] for r in stored_runs(cli.data_dir)}
    folders = {p.name for p in runs_dir.iterdir()}
    assert folders == kept
    # The limits (2 succeeded, 1 failed) plus the runs in flight when they were counted.
    assert len(kept) <= 2 + 1 + 2, kept
    assert most <= 2 + 1 + 4, most
    size = sum(f.stat().st_size for f in runs_dir.rglob("*") if f.is_file())
    assert size < len(kept) * 64 * 1024, size
