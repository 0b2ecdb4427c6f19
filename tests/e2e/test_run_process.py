"""``sympozium-schedule run`` as a real process: fires on time, one per data directory,
stops cleanly on SIGTERM, and survives SIGKILL without duplicating or replaying ticks.

Schedules fire every 1-2 seconds and the demo agent answers in a tenth of a
second; `run` runs whole (its NATS server, router, runner and one IPC bridge
per run). Every wait polls for a condition with a generous timeout; the one
deliberate sleep is the downtime after SIGKILL, which is what that test is about.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.core.model import parse_time
from tests.e2e.conftest import (
    RUN_FLAGS,
    Cli,
    Scheduler,
    instance_yaml,
    schedule_yaml,
    stored_runs,
    wait_for,
)

pytestmark = pytest.mark.e2e

SECOND = timedelta(seconds=1)
# Generous for a busy 2-core machine: the controller arms a timer for each tick,
# so on an idle machine runs land within milliseconds.
MAX_LAG = timedelta(seconds=3)
# Keep every run: the history limits would otherwise delete the evidence.
KEEP_ALL = {"concurrencyPolicy": "Allow", "successfulRunsHistoryLimit": 1000,
            "failedRunsHistoryLimit": 1000}


def schedule_of(run: dict[str, Any]) -> str:
    return str(run["metadata"].get("labels", {}).get("sympozium.ai/schedule", ""))


def tick_of(run: dict[str, Any]) -> datetime:
    tick = parse_time(run["metadata"]["annotations"]["sympozium.ai/scheduled-time"])
    assert tick is not None
    return tick


def created(run: dict[str, Any]) -> datetime:
    stamp = parse_time(run["metadata"]["creationTimestamp"])
    assert stamp is not None
    return stamp


def phase(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("phase") or "")


def test_run_fires_on_time_refuses_a_second_run_and_stops_on_sigterm(
        cli: Cli, scheduler: Scheduler) -> None:
    manifest = "---\n".join([instance_yaml(), schedule_yaml("every1", "@every 1s", **KEEP_ALL),
                              schedule_yaml("every2", "@every 2s", **KEEP_ALL)])
    cli.ok("apply", "-f", "-", stdin=manifest)
    process = scheduler.start("--demo")

    def enough_succeeded() -> bool:
        done = Counter(schedule_of(r) for r in stored_runs(cli.data_dir) if phase(r) == "Succeeded")
        assert process.poll() is None, scheduler.tail()
        return (done["every1"] >= 3 and done["every2"] >= 2 and done["demo-heartbeat"] >= 1
                and done["demo-planner"] >= 1)

    wait_for(enough_succeeded, timeout=60, interval=0.3, what="runs of every schedule to succeed")

    second = cli("run", *RUN_FLAGS)
    assert second.code == 1, str(second)
    assert len(second.err_lines) == 1, str(second)
    assert second.err_lines[0].startswith("error: "), str(second)
    assert "is in use by `sympozium-schedule run`" in second.err

    # What a person would look at while it runs.
    describe, events = cli.many(("describe", "schedule", "every1"), ("get", "events"))
    assert "Phase:             Active" in describe.out, describe.out
    for expected in ("RunCreated", "Succeeded"):
        assert expected in describe.out, describe.out
    assert re.search(r"Normal +RunCreated +sympoziumschedule/every1 ", events.out), events.out

    # SIGTERM with runs in flight: agents are stopped, the store closed, exit 0.
    assert scheduler.stop(process) == 0, scheduler.tail()
    assert not scheduler.live_nats_servers(), "run left its NATS server behind"
    assert "its AgentRun was deleted" not in scheduler.log.read_text()
    # --demo created its objects once the scheduler was ready, and printed what to try
    # next (on stdout; the JSON lines around it are the logs, on stderr).
    banner = [line for line in scheduler.log.read_text().splitlines()
              if not line.startswith(("{", "console: ", "  token: "))]  # the console's lines first
    assert banner[0] == f"sympozium-schedule is running the demo (data dir {cli.data_dir}).", banner
    assert f"  sympozium-schedule describe schedule demo-heartbeat --data-dir {cli.data_dir}" in banner

    # The planner's agent scheduled itself: tool, bridge, NATS, router, store.
    followup = cli.ok("get", "schedule", "demo-followup", "-o", "json").json()
    assert followup["spec"]["schedule"] == "@every 10m", followup
    assert followup["spec"]["instanceRef"] == "demo", followup
    planner_runs = [r for r in cli.runs() if schedule_of(r) == "demo-planner"]
    assert any("schedule_task create followup" in r["status"]["result"] for r in planner_runs)

    runs = cli.runs()
    for name, interval in (("every1", SECOND), ("every2", 2 * SECOND)):
        mine = sorted((r for r in runs if schedule_of(r) == name), key=tick_of)
        # SIGTERM interrupts what is in flight: such a run says so (and is not "deleted").
        interrupted = [r for r in mine if r.get("status", {}).get("error") ==
                       "interrupted: the scheduler stopped while this run was in progress"]
        finished = [r for r in mine if phase(r) in ("Succeeded", "Failed") and r not in interrupted]
        assert finished
        assert all(phase(r) == "Succeeded" for r in finished), finished
        assert all(phase(r) == "Failed" for r in interrupted), interrupted
        assert all("demo agent" in r["status"]["result"] for r in finished)
        ticks = [tick_of(r) for r in mine]
        assert len(set(ticks)) == len(ticks)
        assert all(b - a == interval for a, b in itertools.pairwise(ticks)), ticks
        # The first run may be a catch-up for a tick from before the scheduler started.
        lags = [created(r) - tick_of(r) for r in mine[1:]]
        assert all(timedelta(0) <= lag < MAX_LAG for lag in lags), lags


def test_sigkill_and_restart_neither_duplicates_nor_replays_ticks(
        cli: Cli, scheduler: Scheduler) -> None:
    cli.ok("apply", "-f", "-", stdin=instance_yaml() + "---\n"
           + schedule_yaml("tick", "@every 1s", **KEEP_ALL))
    first = scheduler.start()
    wait_for(lambda: len(stored_runs(cli.data_dir)) >= 3, timeout=60, interval=0.2,
             what="three runs before the crash")

    scheduler.note_nats_servers()
    first.kill()  # SIGKILL: no shutdown, mid-stream
    first.wait(timeout=30)
    # Its NATS server goes with it (PR_SET_PDEATHSIG), freeing the JetStream files.
    wait_for(lambda: not scheduler.live_nats_servers(), timeout=10, interval=0.1,
             what="the killed run's NATS server to exit")
    killed_at = datetime.now(UTC)  # after the wait: every run of the first process is older
    time.sleep(2.5)  # the downtime: ticks nobody fires
    restarted_at = datetime.now(UTC)
    second = scheduler.start()

    def runs_after_restart() -> bool:
        return sum(created(r) > restarted_at for r in stored_runs(cli.data_dir)) >= 3

    wait_for(runs_after_restart, timeout=60, interval=0.2, what="three runs after the restart")
    second.kill()  # test 1 covers SIGTERM; here only the runs it made matter
    second.wait(timeout=30)

    runs = [r for r in cli.runs() if schedule_of(r) == "tick"]
    ticks = sorted(tick_of(r) for r in runs)
    assert len(set(ticks)) == len(ticks), f"a tick has two runs: {ticks}"
    before = [r for r in runs if created(r) < killed_at]
    after = [r for r in runs if created(r) > restarted_at]
    assert len(before) + len(after) == len(runs), "a run was created while nothing was running"

    last_before = max(tick_of(r) for r in before)
    catch_up = tick_of(min(after, key=created))  # the restarted scheduler's first fire
    # Before the crash and after the catch-up, every tick has its run.
    for start, end in ((min(ticks), last_before), (catch_up, max(ticks))):
        expected = [start + k * SECOND for k in range(int((end - start) / SECOND) + 1)]
        assert [t for t in ticks if start <= t <= end] == expected
    # Of the ticks missed while it was down, only the most recent gets a run (one
    # catch-up), and none of the older ones is replayed later.
    assert all(tick_of(r) >= catch_up for r in after), sorted(tick_of(r) for r in after)
    assert catch_up > restarted_at - SECOND - timedelta(milliseconds=1), (catch_up, restarted_at)
    missed = int((catch_up - last_before) / SECOND) - 1
    assert missed >= 2, f"the downtime should have skipped ticks: {last_before} .. {catch_up}"


def test_ctrl_c_in_a_terminal_stops_run_and_its_children_quietly(cli: Cli, tmp_path: Path) -> None:
    """A terminal's Ctrl-C sends SIGINT to the whole foreground process group: `run`, its
    store writer, its NATS server and the agents. `run` stops cleanly (exit 0) and no child
    prints a traceback into the user's terminal (the store writer did)."""
    log = tmp_path / "ctrl-c.log"
    with log.open("w") as out:
        process = subprocess.Popen(cli.command("run", "--demo", *RUN_FLAGS), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                   env=cli.env, start_new_session=True)
    try:
        wait_for(lambda: any(phase(r) == "Succeeded" for r in stored_runs(cli.data_dir)),
                 timeout=60, interval=0.3, what="a demo run to succeed (the writer process is up)")
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "Fatal Python error" not in text, text[-3000:]
