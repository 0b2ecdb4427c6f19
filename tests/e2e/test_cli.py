"""The CLI end to end, as a subprocess: apply, get, describe, delete, next, trigger.

No scheduler runs here (tests/e2e/test_run_process.py covers ``run``). Each CLI
call is a Python start-up costing a third of a CPU second, so the read-only
checks share one seeded store and go out in one concurrent batch (``world``);
the tests below each assert on their part of it. Tests that write get a
store of their own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.cli import session
from sympozium_schedule.core.model import format_time
from tests.e2e.conftest import (
    DEMO_YAML,
    Cli,
    Result,
    base_env,
    instance_yaml,
    schedule_yaml,
)
from tests.support import seed_store

pytestmark = pytest.mark.e2e

DEMO_OBJECTS = [
    "configmap/demo-memory",
    "sympoziuminstance.sympozium.ai/demo",
    "sympoziumschedule.sympozium.ai/demo-heartbeat",
    "sympoziumschedule.sympozium.ai/demo-planner",
]


def one_error(result: Result) -> str:
    """The single ``error:`` line a failed command must print, and nothing else."""
    assert result.code != 0, str(result)
    lines = result.err_lines
    assert len(lines) == 1, str(result)
    assert lines[0].startswith("error: "), str(result)
    assert result.out == "", str(result)
    return lines[0]


def columns(table: str) -> list[list[str]]:
    """A kubectl-style table split on runs of 2+ spaces (cells hold single spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.strip().splitlines()]


def names(listing: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in listing["items"]]




# --- the shared, read-only world ----------------------------------------------------------------

ALIASES = {
    "SympoziumSchedule": ["sympoziumschedules", "sympoziumschedule", "schedules", "schedule",
                          "symsched", "SympoziumSchedules.sympozium.ai"],
    "SympoziumInstance": ["sympoziuminstances", "sympoziuminstance", "instances", "instance",
                          "syminst", "INSTANCES"],
    "AgentRun": ["agentruns", "agentrun", "runs", "run", "ar", "AgentRun"],
    "ConfigMap": ["configmaps", "configmap", "cm", "ConfigMaps"],
    "Event": ["events", "event", "ev", "Events"],
}

# case: (arguments, what the error line says, exit code: 2 for a bad command line)
ONE_LINE_FAILURES = {
    "missing-argument": (("get",), "Missing argument 'KIND'", 2),
    "unknown-kind": (("get", "pods"), 'unknown resource type "pods" (accepted: sympoziumschedules', 1),
    "get-missing": (("get", "run", "x"), 'error: agentrun "x" not found in namespace "default"', 1),
    "bad-namespace": (("get", "cm", "-n", "Not_A_Namespace"), "--namespace: 'Not_A_Namespace'", 2),
    "no-file": (("apply", "-f", "no-such-file.yaml"), "no-such-file.yaml: no such file", 1),
    "run-timeout": (("run", "--run-timeout", "10x"), "--run-timeout: '10x': not a duration", 2),
    "next-expression": (("next", "0 9 * *"), "EXPR: '0 9 * *': a cron expression has 5 fields", 2),
    "next-zone": (("next", "@hourly", "--tz", "Mars/Base"), "--tz: 'Mars/Base': unknown time zone", 2),
    "next-zone-every": (("next", "@every 5m", "--tz", "Nope/Nope"), "--tz: 'Nope/Nope'", 2),
    "next-after": (("next", "@hourly", "--after", "yesterday"), "--after: 'yesterday'", 2),
    "next-count": (("next", "@hourly", "--count", "0"), "--count: 0: must be between 1", 2),
}


@pytest.fixture(scope="module")
def world(module_cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """A store with one object of every kind (and a few more), and every read the
    tests below check, made at once: {name: result}."""
    cli = module_cli
    cli.ok("apply", "-f", "-", stdin="---\n".join([
        instance_yaml(), schedule_yaml("hb", "@daily"),
        schedule_yaml("nightly", "30 2 * * *", timeZone="America/New_York",
                      concurrencyPolicy="Allow"),
        schedule_yaml("orphan", "@daily", instance="ghost"),
        "{apiVersion: v1, kind: ConfigMap, metadata: {name: alice-memory}, data: {MEMORY.md: hi}}\n",
        "{apiVersion: v1, kind: ConfigMap, metadata: {name: blue, labels: {team: a}}, data: {k: v}}\n",
        "{apiVersion: v1, kind: ConfigMap, metadata: {name: green, namespace: ops, "
        "labels: {team: b}}, data: {k: v}}\n",
    ]))
    triggered = dict(zip(("hb-run", "nightly-run"),
                         cli.many(("trigger", "hb"), ("trigger", "nightly")), strict=True))
    hb_run = triggered["hb-run"].out.strip()
    seed_store(cli.data_dir, {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "hb.1", "namespace": "default"},
        "involvedObject": {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
                           "name": "hb", "namespace": "default"},
        "reason": "RunCreated", "message": "created AgentRun hb-1 for the tick", "type": "Normal",
        "lastTimestamp": format_time(datetime.now(UTC))}, {
        # apply refuses a bad schedule; another writer could still store one.
        "apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {"instanceRef": "alice", "schedule": "61 * * * *", "task": "x"}})
    garbage = tmp_path_factory.mktemp("garbage")
    (garbage / "store.db").write_bytes(b"not a database " * 100)

    data = ("--data-dir", str(cli.data_dir))
    # Every alias of a kind in one `get` (kubectl's comma form): an alias that resolved
    # to another kind would bring that kind's object into the list.
    reads: dict[str, tuple[str, ...]] = {
        kind: ("get", ",".join(aliases), "-o", "json", *data) for kind, aliases in ALIASES.items()}
    reads |= {
        "runs-and-events": ("get", "runs,ev", *data),
        "schedules-json": ("get", "schedules", "-o", "json", *data),
        "hb-json": ("get", "schedule", "hb", "-o", "json", *data),
        "schedules-yaml": ("get", "schedules", "-o", "yaml", *data),
        "hb-run-json": ("get", "run", hb_run, "-o", "json", *data),
        "describe-nightly": ("describe", "schedule", "nightly", *data),
        "describe-broken": ("describe", "sympoziumschedule", "broken", *data),
        "trigger-again": ("trigger", "hb", *data),
        "trigger-missing": ("trigger", "nope", *data),
        "trigger-orphan": ("trigger", "orphan", *data),
        "cm-everywhere": ("get", "cm", "-A", *data),
        "cm-team-a": ("get", "cm", "-A", "-l", "team=a", "-o", "json", *data),
        "cm-ops-empty": ("get", "runs", "-n", "ops", *data),
        "next-dst": ("next", "30 2 * * *", "--tz", "America/New_York",
                     "--after", "2026-03-07T00:00:00", "--count", "3"),
        "next-json": ("next", "@every 90m", "--after", "2026-03-27T12:00:00Z", "--count", "2",
                      "-o", "json"),
        "version": ("--version",),
        "store-garbage": ("get", "cm", "--data-dir", str(garbage)),
    }
    reads |= {case: (*args, *([] if args[0] == "next" else data))
              for case, (args, _, _) in ONE_LINE_FAILURES.items()}
    return triggered | dict(zip(reads, cli.many(*reads.values(), data_dir=False), strict=True))


@pytest.mark.parametrize("kind", list(ALIASES))
def test_every_alias_of_a_kind_names_that_kind(world: dict[str, Result], kind: str) -> None:
    listing = world[kind]
    assert listing.code == 0, str(listing)
    assert {item["kind"] for item in listing.json()["items"]} == {kind}


def test_runs_and_events_tables(world: dict[str, Result]) -> None:
    runs, events = (columns(t) for t in world["runs-and-events"].out.split("\n\n"))
    assert runs[0] == ["NAME", "INSTANCE", "SCHEDULE", "PHASE", "DURATION", "RESULT", "AGE"]
    # Several kinds at once: each row names its kind, as kubectl does.
    assert [row[:4] for row in runs[1:]] == [
        [f"agentrun.sympozium.ai/{world['hb-run'].out.strip()}", "alice", "hb", "<none>"],
        [f"agentrun.sympozium.ai/{world['nightly-run'].out.strip()}", "alice", "nightly", "<none>"]]
    assert events[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert events[1][1:] == ["Normal", "RunCreated", "sympoziumschedule/hb",
                             "created AgentRun hb-1 for the tick"]


def test_output_json_and_yaml_follow_kubectl(world: dict[str, Result]) -> None:
    listing = world["schedules-json"].json()
    assert list(listing) == ["apiVersion", "kind", "items"]
    assert listing["apiVersion"] == "v1"
    assert listing["kind"] == "List"
    assert names(listing) == ["broken", "hb", "nightly", "orphan"]
    single = world["hb-json"].json()
    assert single == listing["items"][1]
    assert list(single) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert world["schedules-yaml"].out.startswith(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: sympozium.ai/v1alpha1\n"
        "  kind: SympoziumSchedule\n  metadata:\n    name: broken\n")


def test_namespaces_and_label_selectors(world: dict[str, Result]) -> None:
    everywhere = columns(world["cm-everywhere"].out)
    assert everywhere[0] == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert [row[:3] for row in everywhere[1:]] == [
        ["default", "alice-memory", "1"], ["default", "blue", "1"], ["ops", "green", "1"]]
    assert names(world["cm-team-a"].json()) == ["blue"]
    empty = world["cm-ops-empty"]
    assert (empty.code, empty.out, empty.err) == (0, "", "No resources found in ops namespace.\n")


def test_describe_shows_spec_status_runs_and_next_fire_times(world: dict[str, Result]) -> None:
    text, run = world["describe-nightly"].out, world["nightly-run"].out.strip()
    for expected in ("Name:               nightly", "Namespace:          default",
                     "Instance:           alice", "Schedule:           30 2 * * *",
                     "Time Zone:          America/New_York", "Concurrency Policy: Allow",
                     "Total Runs:        1", f"Active Runs:       {run}", "Events:  <none>"):
        assert expected in text, text
    assert re.search(rf"Recent Runs:\n  NAME +PHASE +SCHEDULED +DURATION +RESULT +AGE\n  {run} +<none> "
                     r"+\S+Z \(manual\) +<none> +<none> ", text), text
    fire_times = text.split("Next Fire Times (America/New_York):\n")[1].splitlines()
    parsed = [datetime.fromisoformat(line.strip()) for line in fire_times]
    assert len(parsed) == 5
    assert all(t.hour == 2 and t.minute == 30 and t.utcoffset() is not None for t in parsed)


def test_describe_says_why_an_invalid_schedule_has_no_fire_times(world: dict[str, Result]) -> None:
    assert ("Next Fire Times:  none: spec.schedule: '61 * * * *': not a valid cron expression"
            in world["describe-broken"].out), world["describe-broken"].out


def test_trigger_creates_a_manual_run_and_respects_the_policy(world: dict[str, Result]) -> None:
    name = world["hb-run"].out.strip()
    assert re.fullmatch(r"hb-m\d+", name), name
    run = world["hb-run-json"].json()
    assert run["metadata"]["labels"]["sympozium.ai/schedule"] == "hb"
    assert run["metadata"]["annotations"]["sympozium.ai/trigger"] == "manual"
    assert world["hb-json"].json()["status"]["totalRuns"] == 1
    assert world["hb-json"].json()["status"]["lastRunName"] == name
    # Forbid (the default), and the first run has not finished: no runner is running.
    refused, missing, orphan = world["trigger-again"], world["trigger-missing"], world["trigger-orphan"]
    assert "concurrencyPolicy: Forbid" in one_error(refused)
    assert refused.code == 1
    assert one_error(missing) == 'error: sympoziumschedule "nope" not found in namespace "default"'
    assert "SympoziumInstance 'ghost' not found" in one_error(orphan)
    assert orphan.code == 1


def test_next_previews_fire_times_in_a_time_zone(world: dict[str, Result]) -> None:
    # 02:30 does not exist on 8 March 2026 in New York: it fires once, at the jump.
    assert world["next-dst"].out.splitlines() == [
        "2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    assert world["next-json"].json() == ["2026-03-27T13:30:00+00:00", "2026-03-27T15:00:00+00:00"]


def test_version(world: dict[str, Result]) -> None:
    assert re.fullmatch(r"sympozium-schedule \d+\.\d+\.\d+\S*\n", world["version"].out)


@pytest.mark.parametrize("case", list(ONE_LINE_FAILURES))
def test_every_failure_is_one_error_line(world: dict[str, Result], case: str) -> None:
    _, message, code = ONE_LINE_FAILURES[case]
    assert message in one_error(world[case])
    assert world[case].code == code, str(world[case])


def test_a_store_that_cannot_be_opened_is_one_error_line(world: dict[str, Result]) -> None:
    assert one_error(world["store-garbage"]).startswith("error: cannot open the store at ")
    assert one_error(world["store-garbage"]).endswith("file is not a database")
    assert world["store-garbage"].code == 1


# --- tests that write ---------------------------------------------------------------------------


def test_apply_creates_then_reports_unchanged_and_configured(cli: Cli) -> None:
    first = cli.ok("apply", "-f", str(DEMO_YAML))
    assert first.out.splitlines() == [f"{o} created" for o in DEMO_OBJECTS]
    assert first.err == "", "the demo manifest must apply without warnings"
    again = cli.ok("apply", "-f", str(DEMO_YAML))
    assert again.out.splitlines() == [f"{o} unchanged" for o in DEMO_OBJECTS]

    edited = DEMO_YAML.read_text().replace('"@every 20s"', '"@every 30s"')
    assert edited != DEMO_YAML.read_text()
    changed = cli.ok("apply", "-f", "-", stdin=edited)
    assert changed.out.splitlines() == [
        "configmap/demo-memory unchanged",
        "sympoziuminstance.sympozium.ai/demo unchanged",
        "sympoziumschedule.sympozium.ai/demo-heartbeat configured",
        "sympoziumschedule.sympozium.ai/demo-planner unchanged",
    ]

    schedule, tables = cli.many(("get", "schedule", "demo-heartbeat", "-o", "json"),
                                ("get", "schedules,instances,configmaps"))
    assert schedule.json()["spec"]["schedule"] == "@every 30s"
    assert schedule.json()["metadata"]["generation"] == 2
    schedules, instances, configmaps = (columns(t) for t in tables.out.split("\n\n"))
    assert schedules[0] == ["NAME", "INSTANCE", "SCHEDULE", "TYPE", "PHASE", "LAST RUN", "NEXT RUN",
                            "AGE"]
    assert schedules[1][:7] == ["sympoziumschedule.sympozium.ai/demo-heartbeat", "demo", "@every 30s",
                                "heartbeat", "<none>", "<none>", "<none>"]
    assert re.fullmatch(r"\d+s", schedules[1][7])
    assert schedules[2][:4] == ["sympoziumschedule.sympozium.ai/demo-planner", "demo", "@every 1h",
                                "scheduled"]
    assert len(schedules) == 3
    assert instances[0] == ["NAME", "MODEL", "AGE"]
    assert instances[1][:2] == ["sympoziuminstance.sympozium.ai/demo", "gpt-4o-mini"]
    assert configmaps[0] == ["NAME", "DATA", "AGE"]
    assert configmaps[1][:2] == ["configmap/demo-memory", "1"]


def test_delete_removes_the_object_and_the_runs_it_owns(cli: Cli) -> None:
    cli.apply_text(instance_yaml() + "---\n" + schedule_yaml("hb", "@daily"))
    cli.ok("trigger", "hb")
    deleted = cli.ok("delete", "schedule", "hb")
    assert deleted.out == 'sympoziumschedule.sympozium.ai "hb" deleted\n'
    runs, gone = cli.many(("get", "runs", "-o", "json"), ("delete", "symsched", "hb"))
    assert names(runs.json()) == []
    assert one_error(gone) == 'error: sympoziumschedule "hb" not found in namespace "default"'
    assert gone.code == 1


# Sympozium's own samples, as published (ours are corrected to validate: issue 8, defect 4).
UPSTREAM_SAMPLES = (Path(__file__).resolve().parents[3] / "shared" / "reference" / "sympozium-v1alpha1"
                    / "samples")


def test_sympozium_samples_apply_with_warnings_for_their_crd_violations(cli: Cli) -> None:
    result = cli.ok("apply", "-f", str(UPSTREAM_SAMPLES))
    assert sorted(result.out.splitlines()) == [
        "agentrun.sympozium.ai/alice-run-001 created",
        "sympoziuminstance.sympozium.ai/alice created",
        "sympoziumschedule.sympozium.ai/alice-heartbeat created",
        "sympoziumschedule.sympozium.ai/demo-heartbeat created",
    ]
    warnings = result.err_lines
    assert all(line.startswith("warning: ") for line in warnings), result.err
    for expected in (
        "agentrun_sample.yaml: AgentRun default/alice-run-001: spec.agentID: 'primary': unknown field",
        "agentrun_sample.yaml: AgentRun default/alice-run-001: spec.skills[0]: 'code-review': must "
        "be of type object",
        "sympoziuminstance_sample.yaml: SympoziumInstance default/alice: spec.authRefs[0].secret: "
        "None: is required",
        # demo-heartbeat's instance is not among the samples: accepted, with a warning.
        "SympoziumSchedule default/demo-heartbeat: spec.instanceRef: 'demo': SympoziumInstance not "
        "found",
    ):
        assert any(expected in line for line in warnings), f"{expected!r} not in\n{result.err}"


def test_data_dir_defaults_to_the_environment_and_help_says_so(cli: Cli, tmp_path: Path) -> None:
    env = base_env(tmp_path) | {"SYMPOZIUM_DATA_DIR": str(tmp_path / "env-dir"), "COLUMNS": "200"}
    applied = cli("apply", "-f", str(DEMO_YAML), data_dir=False, env=env)
    assert applied.code == 0, str(applied)
    assert (tmp_path / "env-dir" / "store.db").exists()
    # rich lays help out for the terminal's width (COLUMNS): wide, the path stays whole.
    helped = cli("get", "--help", data_dir=False, env=env)
    flat = " ".join(helped.out.split())
    assert "SYMPOZIUM_DATA_DIR" in flat
    assert "~/.local/share/sympozium-schedule" in flat


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({"SYMPOZIUM_DATA_DIR": "/srv/sched", "XDG_DATA_HOME": "/xdg"}, "/srv/sched",
                 id="env-wins"),
    pytest.param({"XDG_DATA_HOME": "/xdg"}, "/xdg/sympozium-schedule", id="xdg"),
    pytest.param({"HOME": "/home/someone"}, "/home/someone/.local/share/sympozium-schedule",
                 id="home"),
])
def test_the_default_data_dir_follows_the_documented_rule(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for key in ("SYMPOZIUM_DATA_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert session.default_data_dir() == Path(expected)
    assert session.store_file(Path(expected)) == Path(expected) / "store.db"
