"""The hostile agent (hostile_agent.py) as the agent of a real ``run`` process: every bus
and IPC attack it tries from inside its run fails, nothing outside its own instance's
agent schedules and its own folder changes, and its legitimate request still works."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.adapters.nats.server import read_url
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import API_VERSION, Kind
from sympozium_schedule.ports.store import Obj
from tests import support

AGENT = Path(__file__).with_name("hostile_agent.py")
TIMEOUT = 90.0


def instance(name: str) -> Obj:
    return {"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"agents": {"default": {"model": "gpt-4o"}}}}


def schedule(name: str, owner: str, every: str, task: str | None = None, **labels: str) -> Obj:
    return {"apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"instanceRef": owner, "schedule": every, "task": task or f"{name}'s work",
                     "firstTick": "immediate" if owner == "alice" else "afterInterval"}}


def everything(data_dir: Path) -> dict[tuple[str, str], Obj]:
    async def read() -> dict[tuple[str, str], Obj]:
        store = SQLiteStore(data_dir / "store.db")
        try:
            found = {}
            for kind in (Kind.INSTANCE, Kind.SCHEDULE):
                for obj in (await store.list(kind)).items:
                    found[(kind.value, obj["metadata"]["name"])] = obj
            return found
        finally:
            await store.close()

    return asyncio.run(read())


def report_of(data_dir: Path) -> dict[str, Any] | None:
    for path in (data_dir / "runs" / "default").glob("alice-attack-*/ipc/output/hostile-report.json"):
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return None


@pytest.mark.e2e
def test_a_hostile_agent_changes_nothing_outside_its_own(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    support.seed_store(
        data_dir, instance("alice"), instance("bob"),
        schedule("bob-nightly", "bob", "@daily", **{"sympozium.ai/instance": "bob"}))
    # Only what a shell would have: no bus URL, no credential, nothing of the test's.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONUNBUFFERED": "1", "HOSTILE_WAIT": "15"}
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sympozium_schedule.cli.main", "run", "--data-dir", str(data_dir),
         "--agent-command", f"{sys.executable} {AGENT}", "--log-format", "json"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The sandbox hides /proc and the data directory from the agent, so it cannot find
        # the bus's port by itself; an attacker could still scan loopback for it. The task
        # tells it where the bus is, so the bus attacks are really made.
        url = support.wait_for(lambda: read_url(data_dir), timeout=TIMEOUT, what="the bus URL")
        support.seed_store(data_dir, schedule("alice-attack", "alice", "@every 1h",
                                              task=f"attack the bus at {url}"))
        before = everything(data_dir)
        report = support.wait_for(lambda: report_of(data_dir), timeout=TIMEOUT,
                                  what="the hostile agent's report", interval=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()

    assert data_dir.stat().st_mode & 0o777 == 0o700
    config = data_dir / "nats-server.conf"
    assert config.stat().st_mode & 0o777 == 0o600
    assert not re.search(r'"S[UA][A-Z2-7]{50,}"', config.read_text()), "a seed in the server config"
    attacks = report["attacks"]
    succeeded = {name: a["detail"] for name, a in attacks.items() if a["succeeded"]}
    assert succeeded == {}, json.dumps(report, indent=2)
    assert report["found"]["nats_ports"], "the agent did find the bus: the test attacked it"
    assert {"connect-without-a-credential", "request-symlink-to-the-store",
            "answer-written-through-a-planted-symlink", "files-outside-the-folder-changed",
            "archive-followed-a-symlinked-.sent", "identity-claimed-in-the-request-body",
            "credential-in-readable-files"} <= set(attacks)
    legit = report["legitimate"]["own-create"]
    assert legit["status"] == "accepted", legit

    after = everything(data_dir)
    new = set(after) - set(before)
    assert ("SympoziumSchedule", "alice-legit") in new
    for key in new:  # its own requests (the legitimate one, and the bait of an attack)
        assert key[0] == "SympoziumSchedule", key
        assert after[key]["metadata"]["labels"] == {
            "sympozium.ai/instance": "alice", "sympozium.ai/source": "agent"}, key
        assert after[key]["spec"]["instanceRef"] == "alice", key
    for key, obj in before.items():  # the controller writes status; nobody else writes
        assert after[key]["spec"] == obj["spec"], key
        assert after[key]["metadata"].get("labels") == obj["metadata"].get("labels"), key
        assert after[key]["metadata"]["uid"] == obj["metadata"]["uid"], key
