"""Your own agents under a real ``run``: a script, the built-in LLM agent against a
real OpenAI-compatible server, the environment an agent gets, and the sandbox.

Each test starts ``run`` (its NATS server, router, runner, a bridge per run) on a
data directory of its own, with agents defined by flags and chosen per instance
by the ``sympozium.ai/agent`` annotation.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Cli, Scheduler, stored_runs, wait_for
from tests.llm_server import Running
from tests.support import free_port

pytestmark = pytest.mark.e2e

MODEL = "test-model"
KEY = "sk-e2e-key"
FLAGS = ("--log-format", "json", "--max-parallel", "4")


def instance(name: str, agent: str | None, **default: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if agent is not None:
        meta["annotations"] = {"sympozium.ai/agent": agent}
    spec: dict[str, Any] = {"agents": {"default": {"model": "m"} | default}}
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumInstance", "metadata": meta,
            "spec": spec}


def schedule(name: str, instance_name: str, task: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
            "metadata": {"name": name},
            "spec": {"instanceRef": instance_name, "schedule": "@daily", "task": task} | spec}


def apply(cli: Cli, *objects: dict[str, Any]) -> None:
    cli.ok("apply", "-f", "-", stdin=yaml.safe_dump_all(objects, sort_keys=False))


def finished_runs(cli: Cli, schedule_name: str) -> list[dict[str, Any]]:
    return [r for r in stored_runs(cli.data_dir)
            if r["metadata"].get("labels", {}).get("sympozium.ai/schedule") == schedule_name
            and (r.get("status") or {}).get("phase") in ("Succeeded", "Failed")]


def wait_run(cli: Cli, scheduler: Scheduler, schedule_name: str) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        assert all(p.poll() is None for p in scheduler.processes), scheduler.tail()
        runs = finished_runs(cli, schedule_name)
        return runs[0] if runs else None

    found: dict[str, Any] = wait_for(look, timeout=90, what=f"a finished run of {schedule_name}")
    return found


def python_agent(tmp_path: Path, name: str, source: str) -> str:
    script = tmp_path / "agents" / f"{name}.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(textwrap.dedent(source))
    return f"{name}={shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def test_a_plain_script_is_an_agent_and_gets_only_the_documented_environment(
        cli: Cli, scheduler: Scheduler, tmp_path: Path) -> None:
    script = python_agent(tmp_path, "script", """
        import os, sys
        print("scratch line")
        print(f"hello from {os.environ['INSTANCE_NAME']} in {os.getcwd()}")
        print("ENV " + " ".join(sorted(os.environ)))
    """)
    failing = python_agent(tmp_path, "failing", """
        import sys
        print("working on it")
        print("the database is on fire", file=sys.stderr)
        sys.exit(3)
    """)
    apply(cli, instance("bob", "script"), instance("carol", "failing"), instance("dave", "nosuch"),
          schedule("greet", "bob", "Say hello."), schedule("burn", "carol", "Try."),
          schedule("lost", "dave", "Try."))
    port = free_port()
    scheduler.start("--agent", script, "--agent", failing, "--metrics-port", str(port),
                    flags=FLAGS, env={"SCHEDULER_SECRET": "do-not-leak", "EVENT_BUS_URL": ""})

    greet = wait_run(cli, scheduler, "greet")
    status = greet["status"]
    assert status["phase"] == "Succeeded", status
    name = greet["metadata"]["name"]
    work = cli.data_dir / "runs" / "default" / name / "work"
    assert f"hello from bob in {work}" in status["result"]
    names = set(status["result"].split("ENV ", 1)[1].split())
    documented = {"IPC_PATH", "AGENT_RUN_ID", "AGENT_NAMESPACE", "INSTANCE_NAME", "AGENT_NAME",
                  "TASK", "MODEL_PROVIDER", "MODEL_NAME", "MODEL_BASE_URL", "AGENT_TIMEOUT_SECONDS",
                  "HOME", "TMPDIR", "PATH", "LANG", "LANGUAGE", "TZ"}
    assert names - documented <= {n for n in names if n.startswith("LC_")}, names - documented
    assert "SCHEDULER_SECRET" not in names
    assert "EVENT_BUS_URL" not in names

    burn = wait_run(cli, scheduler, "burn")
    assert burn["status"]["phase"] == "Failed"
    assert burn["status"]["error"] == "the agent exited with code 3: the database is on fire"
    lost = wait_run(cli, scheduler, "lost")
    assert lost["status"]["error"].startswith(
        "SympoziumInstance dave asks for agent 'nosuch' (annotation sympozium.ai/agent), which `run` "
        "does not define (defined: demo, failing, llm, script;")

    # What a person sees: the log, the runs table, describe, the Event, the metric.
    logs, runs, described = cli.many(("logs", name), ("get", "runs"), ("describe", "schedule", "burn"))
    assert "scratch line\n" in logs.out, str(logs)
    assert "[sympozium-schedule] agent script:" in logs.out
    rows = {line.split()[0]: line for line in runs.out.splitlines()[1:]}
    assert runs.out.splitlines()[0].split() == ["NAME", "INSTANCE", "SCHEDULE", "PHASE", "DURATION",
                                                 "RESULT", "AGE"]
    assert "scratch line" in rows[name]
    assert "error: the agent exited with code 3" in rows[burn["metadata"]["name"]]
    assert "the agent exited with code 3: the database is on fire" in described.out, described.out
    assert re.search(r"Warning +RunFailed", described.out), described.out
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert re.search(r'sympozium_agent_runs_total\{phase="Failed"\} 2\.0', metrics), metrics
    assert re.search(r'sympozium_agent_runs_total\{phase="Succeeded"\} 1\.0', metrics), metrics


def test_the_llm_agent_schedules_its_own_follow_up_which_then_fires(
        cli: Cli, scheduler: Scheduler, tmp_path: Path) -> None:
    server = Running(models=[MODEL], key=KEY, record=tmp_path / "requests.jsonl")
    try:
        apply(cli, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-llm"},
                    "stringData": {"OPENAI_API_KEY": KEY}},
              instance("alice", "llm", model=MODEL, baseURL=server.base_url)
              | {"spec": {"agents": {"default": {"model": MODEL, "baseURL": server.base_url}},
                          "authRefs": [{"provider": "openai", "secret": "alice-llm"}]}},
              schedule("plan", "alice", "Plan the week.\nCALL schedule_task "
                       '{"name": "followup", "action": "create", "schedule": "@every 1h", '
                       '"task": "Check on the plan."}'))
        scheduler.start(flags=FLAGS)
        plan = wait_run(cli, scheduler, "plan")
        assert plan["status"]["phase"] == "Succeeded", plan["status"]
        assert plan["status"]["result"].startswith("Done: accepted"), plan["status"]
        usage = plan["status"]["tokenUsage"]
        assert usage["toolCalls"] == 1
        assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0

        followup = cli.ok("get", "schedule", "alice-followup", "-o", "json").json()
        assert followup["metadata"]["labels"]["sympozium.ai/source"] == "agent"
        fired = wait_run(cli, scheduler, "alice-followup")
        assert fired["status"]["phase"] == "Succeeded", fired["status"]
        assert fired["status"]["result"] == "Answer: Check on the plan."
        assert len(server.requests()) == 3  # plan: a tool call and the answer; the follow-up
        log = (cli.data_dir / "runs" / "default" / plan["metadata"]["name"] / "agent.log").read_text()
        assert "Secret default/alice-llm: set OPENAI_API_KEY" in log
        assert KEY not in log
        secret = cli.ok("get", "secret", "alice-llm", "-o", "yaml").out
        assert KEY not in secret
        assert "OPENAI_API_KEY: '<hidden: " in secret
    finally:
        server.stop()


ATTACKER = """
    import json, os, signal
    data = os.environ["DATA_DIR"]
    out = {}
    def attempt(name, action):
        try:
            action()
            out[name] = "allowed"
        except PermissionError:
            out[name] = "denied"
        except OSError as exc:
            out[name] = f"error {exc.errno}"
    attempt("read the store", lambda: open(os.path.join(data, "store.db"), "rb").read(10))
    attempt("list the data directory", lambda: os.listdir(data))
    attempt("read another run", lambda: open(os.path.join(
        data, "runs", "default", "victim", "ipc", "input", "task.json")).read())
    attempt("append to the store", lambda: open(os.path.join(data, "store.db"), "ab").write(b"x"))
    attempt("read the scheduler's environment",
            lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
    attempt("signal the scheduler", lambda: os.kill(os.getppid(), 0))
    attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
    attempt("write its own folder", lambda: open("mine.txt", "w").write("ok"))
    caps = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith(("CapEff", "CapPrm"))]
    out["capabilities"] = "none" if set(caps) == {"0000000000000000"} else " ".join(caps)
    attempt("write its TMPDIR", lambda: open(os.path.join(os.environ["TMPDIR"], "t"), "w").write("ok"))
    print(json.dumps(out))
"""


def test_the_sandbox_keeps_an_agent_out_of_the_store_other_runs_and_the_scheduler(
        cli: Cli, scheduler: Scheduler, tmp_path: Path) -> None:
    attacker = python_agent(tmp_path, "attacker", ATTACKER)
    victim = {"apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun",
              "metadata": {"name": "victim"},
              "spec": {"instanceRef": "eve", "agentId": "x", "sessionKey": "x", "task": "secret plan",
                       "model": {"provider": "openai", "model": "m", "authSecretRef": ""}}}
    apply(cli, instance("eve", None), victim)
    scheduler.start("--agent", attacker, "--agent-env", f"DATA_DIR={cli.data_dir}", flags=FLAGS)
    wait_for(lambda: any(r["metadata"]["name"] == "victim" and r.get("status", {}).get("phase")
                         == "Succeeded" for r in stored_runs(cli.data_dir)),
             timeout=90, what="the victim run")
    apply(cli, instance("mallory", "attacker"), schedule("attack", "mallory", "Attack."))
    run = wait_run(cli, scheduler, "attack")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    outcomes = json.loads(run["status"]["result"])
    assert outcomes == {
        "read the store": "denied", "list the data directory": "denied",
        "read another run": "denied", "append to the store": "denied",
        "read the scheduler's environment": "denied", "signal the scheduler": "denied",
        "read /etc/shadow": "denied", "write its own folder": "allowed",
        "write its TMPDIR": "allowed", "capabilities": "none",
    }
    assert all(p.poll() is None for p in scheduler.processes)


def test_an_allowed_path_holding_the_data_directory_is_refused(cli: Cli, tmp_path: Path) -> None:
    refused = cli("run", "--agent-allow", str(tmp_path), "--log-format", "json")
    assert refused.code == 1, str(refused)
    errors = [line for line in refused.err_lines if line.startswith("error: ")]
    assert errors == [f"error: --agent-allow: {str(tmp_path)!r}: reaches the data directory "
                      f"{cli.data_dir.resolve()} (the store, Secrets and every run's folder), which "
                      "agents must never read"], refused.err
