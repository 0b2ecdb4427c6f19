"""Living with runs from the CLI, and the messages issue 10 found contradicting what
happens: each command as a subprocess on a store of its own (no scheduler runs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.cli.demo import banner, program
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import Ref
from tests.e2e.conftest import Cli, instance_yaml, schedule_yaml, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def seeded(cli: Cli) -> None:
    cli.apply_text("---\n".join([
        instance_yaml(),
        schedule_yaml("a", "@daily"),
        yaml.safe_dump({"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
                        "metadata": {"name": "b", "labels": {"team": "x"}},
                        "spec": {"instanceRef": "alice", "schedule": "@daily", "task": "t"}}),
        yaml.safe_dump({"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
                        "metadata": {"name": "c", "labels": {"team": "x"}},
                        "spec": {"instanceRef": "alice", "schedule": "@daily", "task": "t",
                                 "concurrencyPolicy": "Allow"}}),
    ]))


def suspended(cli: Cli) -> dict[str, bool]:
    items = cli.ok("get", "schedules", "-o", "json").json()["items"]
    return {o["metadata"]["name"]: o["spec"].get("suspend", False) for o in items}


def test_suspend_resume_trigger_and_delete_by_name_or_selector(cli: Cli) -> None:
    seeded(cli)
    out = cli.ok("suspend", "-l", "team=x").out
    assert out.splitlines() == ["sympoziumschedule.sympozium.ai/b suspended",
                                "sympoziumschedule.sympozium.ai/c suspended"]
    assert suspended(cli) == {"a": False, "b": True, "c": True}
    again = cli.ok("suspend", "b")
    assert again.out == "sympoziumschedule.sympozium.ai/b already suspended\n"
    assert cli.ok("resume", "c").out == "sympoziumschedule.sympozium.ai/c resumed\n"
    assert suspended(cli) == {"a": False, "b": True, "c": False}
    missing = cli("resume", "a", "nope")
    assert missing.code == 1
    assert missing.err == 'error: sympoziumschedule "nope" not found in namespace "default"\n'
    assert "sympoziumschedule.sympozium.ai/a not suspended" in missing.out
    both = cli("suspend", "a", "-l", "team=x")
    assert (both.code, both.err) == (2, "error: NAME and --selector cannot be used together\n")

    triggered = cli.ok("trigger", "-l", "team=x").out.split()
    assert [name.split("-m")[0] for name in triggered] == ["b", "c"]
    runs = cli.ok("get", "runs", "-o", "json").json()["items"]
    assert sorted(r["metadata"]["labels"]["sympozium.ai/schedule"] for r in runs) == ["b", "c"]

    deleted = cli("delete", "schedule", "a", "ghost", "b")
    assert deleted.code == 1
    assert deleted.out.splitlines() == ['sympoziumschedule.sympozium.ai "a" deleted',
                                        'sympoziumschedule.sympozium.ai "b" deleted']
    assert deleted.err == 'error: sympoziumschedule "ghost" not found in namespace "default"\n'
    assert cli.ok("delete", "schedules", "-l", "team=x").out == \
        'sympoziumschedule.sympozium.ai "c" deleted\n'
    assert suspended(cli) == {}
    assert cli.ok("get", "runs", "-o", "json").json()["items"] == []


def test_apply_dry_run_says_what_would_change_and_writes_nothing(cli: Cli) -> None:
    seeded(cli)
    cli.apply_text("apiVersion: v1\nkind: Secret\nmetadata: {name: key}\n"
                   "stringData: {OPENAI_API_KEY: sk-old}\n")
    before = cli.snapshot()
    changed = schedule_yaml("a", "@hourly") + "---\n" + schedule_yaml("new", "@daily") + "---\n" + \
        "apiVersion: v1\nkind: Secret\nmetadata: {name: key}\nstringData: {OPENAI_API_KEY: sk-new}\n"
    result = cli.ok("apply", "--dry-run", "-f", "-", stdin=changed)
    lines = result.out.splitlines()
    assert lines[0] == "secret/key configured (dry run)"
    assert "    -  OPENAI_API_KEY: <hidden>" in lines
    assert "    +  OPENAI_API_KEY: <hidden, changed>" in lines
    assert "sympoziumschedule.sympozium.ai/a configured (dry run)" in lines
    assert "    -  schedule: '@daily'" in lines
    assert "    +  schedule: '@hourly'" in lines
    assert "sympoziumschedule.sympozium.ai/new created (dry run)" in lines
    assert "sk-old" not in result.out
    assert "sk-new" not in result.out
    assert cli.snapshot() == before
    unchanged = cli.ok("apply", "--dry-run", "-f", "-", stdin=instance_yaml())
    assert unchanged.out == "sympoziuminstance.sympozium.ai/alice unchanged (dry run)\n"


def seed_run(cli: Cli, name: str, phase: str) -> None:
    async def write() -> None:
        store = SQLiteStore(cli.data_dir / "store.db")
        try:
            run = await store.create({
                "apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"instanceRef": "alice", "task": "t"}})
            await store.patch_status(Ref.of(run), {"phase": phase})
        finally:
            await store.close()

    asyncio.run(write())


def set_phase(cli: Cli, name: str, phase: str) -> None:
    async def write() -> None:
        store = SQLiteStore(cli.data_dir / "store.db")
        try:
            await store.patch_status(Ref(Kind.AGENT_RUN, "default", name), {"phase": phase})
        finally:
            await store.close()

    asyncio.run(write())


def test_logs_prints_and_follows_a_runs_output(cli: Cli) -> None:
    cli.apply_text(instance_yaml())
    seed_run(cli, "r1", "Running")
    log = cli.data_dir / "runs" / "default" / "r1" / "agent.log"
    log.parent.mkdir(parents=True)
    log.write_bytes("first line\npartial é".encode()[:-1])  # cut inside a UTF-8 character
    follower = subprocess.Popen(cli.command("logs", "r1", "-f"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cli.env)
    try:
        assert cli.ok("logs", "r1").out.startswith("first line\n")
        with log.open("ab") as out:
            out.write("é".encode()[-1:] + b"\nsecond line\n")
        set_phase(cli, "r1", "Succeeded")
        out_text, err_text = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err_text
    assert out_text == "first line\npartial é\nsecond line\n"
    seed_run(cli, "r2", "Pending")
    pending = cli("logs", "r2")
    assert (pending.code, pending.err) == (
        1, "error: agentrun 'r2' has no log yet (phase Pending); -f waits for it\n")
    missing = cli("logs", "nope")
    assert missing.err == 'error: agentrun "nope" not found in namespace "default"\n'


def test_get_watch_prints_each_change(cli: Cli) -> None:
    seeded(cli)
    watcher = subprocess.Popen(cli.command("get", "schedules", "-w"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=cli.env)
    received = bytearray()
    try:
        assert watcher.stdout is not None
        fd = watcher.stdout.fileno()
        os.set_blocking(fd, False)

        def read() -> list[str]:
            with contextlib.suppress(BlockingIOError):
                received.extend(os.read(fd, 65536))
            return received.decode().splitlines()

        wait_for(lambda: len(read()) >= 4, timeout=60, what="the table")
        assert read()[0].split()[:2] == ["NAME", "INSTANCE"]
        cli.apply_text(schedule_yaml("late", "@hourly"))
        wait_for(lambda: any(line.startswith("late ") for line in read()), timeout=60,
                 what="the new schedule's row")
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=30)
    assert watcher.returncode == 0


# --- the messages issue 10 found wrong ----------------------------------------------------------


@pytest.mark.parametrize("args", [
    pytest.param(("get", "schedules"), id="get"),
    pytest.param(("describe", "schedule", "a"), id="describe"),
    pytest.param(("logs", "r"), id="logs"),
    pytest.param(("trigger", "a"), id="trigger"),
    pytest.param(("delete", "schedule", "a"), id="delete"),
    pytest.param(("suspend", "a"), id="suspend"),
])
def test_a_mistyped_data_dir_is_an_error_and_creates_nothing(cli: Cli, tmp_path: Path,
                                                            args: tuple[str, ...]) -> None:
    wrong = tmp_path / "dta"
    result = cli(*args, "--data-dir", str(wrong), data_dir=False)
    assert result.code == 1
    assert result.err == (f"error: no store in {wrong} (nothing was applied there and `run` never "
                          "started there); check --data-dir or $SYMPOZIUM_DATA_DIR\n")
    assert not wrong.exists()


@pytest.mark.parametrize("args", [
    pytest.param(("get", "schedules"), id="get"),
    pytest.param(("apply", "-f", "-"), id="apply"),
    pytest.param(("run", "--log-format", "json"), id="run"),
])
def test_a_data_dir_that_is_a_file_says_so(cli: Cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = cli(*args, "--data-dir", str(a_file), stdin=instance_yaml(), data_dir=False)
    assert result.code == 2, str(result)
    assert result.err_lines[-1] == f"error: --data-dir: {str(a_file)!r}: not a directory"


def test_the_banner_names_a_command_you_can_type_and_promises_only_what_your_agent_does(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYMPOZIUM_SCHEDULE_PROG", "./dev")
    assert program() == "./dev"
    demo = banner(created=[], present=[], data_dir=tmp_path, default_dir=tmp_path, runner=True)
    assert "  ./dev get runs\n" in demo
    assert "  ./dev logs <run name>\n" in demo
    assert "the router creates demo-followup" in demo
    mine = banner(created=[], present=[], data_dir=tmp_path, default_dir=tmp_path, runner=True,
                  default_agent="default", agent_command=("/opt/agent", "--fast"))
    assert "which your agent 'default' executes (/opt/agent --fast)." in mine
    assert "the router creates demo-followup" not in mine
    monkeypatch.delenv("SYMPOZIUM_SCHEDULE_PROG")
    monkeypatch.setenv("PATH", str(tmp_path))  # not on PATH: name the way that works
    assert program().endswith(" -m sympozium_schedule.cli.main")


def test_dev_help_prints_only_its_help() -> None:
    done = subprocess.run([str(ROOT / "dev"), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == "One entry point for a fresh machine with Python 3.11+:"
    assert lines[-1] == "Each command creates .venv and installs the project into it when needed."
    assert not any("set -euo" in line or "export" in line for line in lines)
