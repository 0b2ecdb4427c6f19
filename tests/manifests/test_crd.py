"""The generated SympoziumSchedule CRD: in step with the model, compatible with Sympozium's
CRD, structural, and accepting exactly the objects it should."""

from __future__ import annotations

import copy
import types
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml

from sympozium_schedule import manifests
from sympozium_schedule.core.decide import MANAGED_STATUS_KEYS, reconcile
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import (
    API_VERSION,
    Kind,
    RunView,
    ScheduleSpec,
    ScheduleView,
    format_time,
)
from sympozium_schedule.core.shards import SHARD_STATUS_KEYS
from sympozium_schedule.manifests import crd_spec, generate
from tests.manifests.schemas import CrdValidator, structural_problems

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "examples"
NOW = datetime(2026, 3, 2, 9, 30, 5, tzinfo=UTC)

CRD = generate.crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
STATUS = SCHEMA["properties"]["status"]
UPSTREAM = generate.upstream_crd()
UPSTREAM_VERSION = UPSTREAM["spec"]["versions"][0]
UPSTREAM_SCHEMA = UPSTREAM_VERSION["schema"]["openAPIV3Schema"]
UPSTREAM_SPEC = UPSTREAM_SCHEMA["properties"]["spec"]
UPSTREAM_STATUS = UPSTREAM_SCHEMA["properties"]["status"]

OURS = CrdValidator(CRD)
THEIRS = CrdValidator(UPSTREAM)
SYMPOZIUM_CRDS = {crd["spec"]["names"]["kind"]: CrdValidator(crd) for crd in generate.sympozium_crds()}

# Model constraints our CRD leaves out on purpose: Sympozium's CRD has none for these fields,
# and ours must accept whatever theirs accepts. The controller reports such a spec in Ready.
LOOSER_THAN_MODEL = {("instanceRef", "minLength"), ("schedule", "minLength")}
ADDED_FIELDS = {"timeZone", "startingDeadlineSeconds", "firstTick", "successfulRunsHistoryLimit",
                "failedRunsHistoryLimit", "schedules", "exclude", "jitter", "startTime", "endTime",
                "maxRuns", "pauseOnFailure", "suspendedBy", "suspendReason"}


# Enum values added to Sympozium's fields (values of theirs keep their meaning).
EXTENDED_ENUMS = {"concurrencyPolicy": ["BufferOne", "BufferAll"]}


def schedule_obj(spec: dict[str, Any] | None = None, *, name: str = "alice-heartbeat",
                 status: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    full = {"instanceRef": "alice", "schedule": "*/30 * * * *", "task": "Check the cluster."}
    full.update(spec or {})
    full.update(fields)
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": Kind.SCHEDULE.value,
        "metadata": {"name": name, "namespace": "default"},
        "spec": full,
    }
    if status is not None:
        obj["status"] = status
    return obj


def without(field: str) -> dict[str, Any]:
    obj = schedule_obj()
    del obj["spec"][field]
    return obj


# --- generated files -------------------------------------------------------------------------


def test_the_committed_crd_is_the_generated_one() -> None:
    committed = manifests.path("crds", generate.CRD_FILE).read_text()
    assert committed == generate.crd_yaml(), (
        "crds/sympozium.ai_sympoziumschedules.yaml is stale: run "
        "python -m sympozium_schedule.manifests.generate")


def test_the_committed_crd_loads_as_the_generated_object() -> None:
    assert manifests.load_crd(generate.CRD_FILE) == CRD


def test_write_crd_writes_the_generated_text(tmp_path: Path) -> None:
    written = generate.write_crd(tmp_path)
    assert written == tmp_path / generate.CRD_FILE
    assert written.read_text() == generate.crd_yaml()


# --- in step with the model ------------------------------------------------------------------


def _model_fields() -> dict[str, Any]:
    return {(f.alias or name): f for name, f in ScheduleSpec.model_fields.items()}


def test_every_model_field_is_a_crd_property_and_nothing_else() -> None:
    assert set(SPEC["properties"]) == set(_model_fields())


def test_every_model_field_has_a_description() -> None:
    assert set(generate.SPEC_DESCRIPTIONS) == set(_model_fields())
    for name, prop in SPEC["properties"].items():
        assert prop["description"] == generate.SPEC_DESCRIPTIONS[name]


def test_the_required_fields_are_the_models() -> None:
    required = sorted(alias for alias, f in _model_fields().items() if f.is_required())
    assert SPEC["required"] == required == ["instanceRef", "schedule", "task"]


_JSON_TYPES = {str: "string", bool: "boolean", int: "integer"}


@pytest.mark.parametrize("alias", sorted(_model_fields()))
def test_each_property_matches_the_model_field(alias: str) -> None:
    """Read from model_fields, a different path than the generator's model_json_schema."""
    field = _model_fields()[alias]
    prop = SPEC["properties"][alias]
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # ``int | None``
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        assert prop["enum"] == choices
        assert prop["type"] == "string"
    elif typing.get_origin(annotation) is list:
        (entry,) = typing.get_args(annotation)
        assert prop["type"] == "array"
        assert set(prop["items"]["properties"]) == {
            (f.alias or n) for n, f in entry.model_fields.items()}
    else:
        assert "enum" not in prop
        assert prop["type"] == _JSON_TYPES[annotation]
    if field.is_required():
        assert "default" not in prop
    elif "default" in prop:
        assert prop["default"] == field.default
    else:
        # An absent field must mean what the model's default means.
        absent = field.default_factory() if field.default_factory else field.default
        assert absent in (None, False, []), f"{alias}: the model defaults to {absent!r}"
    constraints = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            constraints["minimum"] = item.ge
        elif isinstance(item, annotated_types.MinLen):
            constraints["minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            is_list = typing.get_origin(annotation) is list
            constraints["maxItems" if is_list else "maxLength"] = item.max_length
        elif getattr(item, "pattern", None):
            constraints["pattern"] = item.pattern
        else:
            pytest.fail(f"{alias}: the test does not know the constraint {item!r}")
    for keyword, value in constraints.items():
        if (alias, keyword) in LOOSER_THAN_MODEL:
            assert keyword not in prop
        else:
            assert prop.get(keyword) == value, f"{alias}.{keyword}"


def test_the_looser_than_model_exceptions_are_sympoziums_fields() -> None:
    for alias, keyword in LOOSER_THAN_MODEL:
        assert alias in UPSTREAM_SPEC["properties"]
        assert keyword not in UPSTREAM_SPEC["properties"][alias]


@pytest.mark.parametrize(("alias", "expected"), [
    pytest.param("type", {"type": "string", "enum": ["heartbeat", "scheduled", "sweep"],
                          "default": "scheduled"}, id="type"),
    pytest.param("concurrencyPolicy", {"type": "string", "default": "Forbid",
                                       "enum": ["Forbid", "Allow", "Replace", "BufferOne",
                                                "BufferAll"]}, id="concurrencyPolicy"),
    pytest.param("includeMemory", {"type": "boolean", "default": True}, id="includeMemory"),
    pytest.param("suspend", {"type": "boolean"}, id="suspend"),
    pytest.param("instanceRef", {"type": "string"}, id="instanceRef"),
    pytest.param("schedule", {"type": "string"}, id="schedule"),
    pytest.param("task", {"type": "string"}, id="task"),
    pytest.param("timeZone", {"type": "string", "default": "UTC", "minLength": 1}, id="timeZone"),
    pytest.param("startingDeadlineSeconds", {"type": "integer", "minimum": 1},
                 id="startingDeadlineSeconds"),
    pytest.param("firstTick", {"type": "string", "enum": ["immediate", "afterInterval"],
                               "default": "immediate"}, id="firstTick"),
    pytest.param("successfulRunsHistoryLimit", {"type": "integer", "default": 3, "minimum": 0},
                 id="successfulRunsHistoryLimit"),
    pytest.param("failedRunsHistoryLimit", {"type": "integer", "default": 1, "minimum": 0},
                 id="failedRunsHistoryLimit"),
])
def test_each_property_is_as_specified(alias: str, expected: dict[str, Any]) -> None:
    prop = {k: v for k, v in SPEC["properties"][alias].items() if k != "description"}
    assert prop == expected


def test_a_field_without_a_description_fails_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    descriptions = dict(generate.SPEC_DESCRIPTIONS)
    del descriptions["firstTick"]
    monkeypatch.setattr(crd_spec, "SPEC_DESCRIPTIONS", descriptions)
    with pytest.raises(ValueError, match=r"spec\.firstTick has no description"):
        crd_spec.spec_schema()


@pytest.mark.parametrize("prop", [
    pytest.param({"anyOf": [{"type": "integer"}, {"type": "string"}]}, id="a-union"),
    pytest.param({"type": "object", "properties": {}}, id="a-nested-object"),
    pytest.param({"enum": [1, "a"]}, id="an-untyped-enum"),
])
def test_a_model_shape_without_a_structural_schema_fails_loudly(prop: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"spec\.x"):
        generate._structural("x", prop, {})


def test_the_status_declares_exactly_what_the_controller_writes() -> None:
    """The core's keys, and the owner's that a sharded controller adds (core/shards.py)."""
    assert set(STATUS["properties"]) == set(MANAGED_STATUS_KEYS) | set(SHARD_STATUS_KEYS)


# --- compatible with Sympozium's CRD --------------------------------------------------------


@pytest.mark.parametrize("alias", sorted(UPSTREAM_SPEC["properties"]))
def test_sympozium_fields_are_declared_exactly_as_sympozium_declares_them(alias: str) -> None:
    """Same type, enum and default, and no keyword theirs lacks: ours accepts what theirs does.
    An enum may only grow (concurrencyPolicy gains BufferOne and BufferAll), their values
    first and meaning what they mean."""
    ours = {k: v for k, v in SPEC["properties"][alias].items() if k != "description"}
    theirs = {k: v for k, v in UPSTREAM_SPEC["properties"][alias].items() if k != "description"}
    if alias in EXTENDED_ENUMS:
        assert ours["enum"][:len(theirs["enum"])] == theirs["enum"]
        assert ours["enum"][len(theirs["enum"]):] == EXTENDED_ENUMS[alias]
        ours["enum"] = theirs["enum"]
    for keyword in ("type", "enum", "default"):
        assert ours.get(keyword) == theirs.get(keyword), keyword
    assert ours == theirs


def test_the_required_list_is_sympoziums() -> None:
    assert SPEC["required"] == UPSTREAM_SPEC["required"]


def test_only_the_documented_fields_are_added() -> None:
    assert set(SPEC["properties"]) - set(UPSTREAM_SPEC["properties"]) == ADDED_FIELDS
    for alias in ADDED_FIELDS:
        assert "Added by sympozium-schedule" in SPEC["properties"][alias]["description"]


@pytest.mark.parametrize("key", sorted(UPSTREAM_STATUS["properties"]))
def test_sympozium_status_fields_keep_their_shape(key: str) -> None:
    """Their shape, and their words but where ours say more (phase: Completed)."""
    ours, theirs = dict(STATUS["properties"][key]), dict(UPSTREAM_STATUS["properties"][key])
    if key == "phase":
        assert ours.pop("description") == theirs.pop("description").replace(
            "Suspended, Error", "Suspended, Completed, Error")
    assert ours == theirs


def test_the_root_is_sympoziums_but_for_the_name_rule() -> None:
    for key in ("apiVersion", "kind", "metadata"):
        assert SCHEMA["properties"][key] == UPSTREAM_SCHEMA["properties"][key]
    assert set(SCHEMA) - set(UPSTREAM_SCHEMA) == {"x-kubernetes-validations"}
    assert SCHEMA.get("required") == UPSTREAM_SCHEMA.get("required")


def test_names_group_scope_and_version_are_sympoziums() -> None:
    names = CRD["spec"]["names"]
    for key, value in UPSTREAM["spec"]["names"].items():
        assert names[key] == value
    assert CRD["metadata"]["name"] == UPSTREAM["metadata"]["name"] == "sympoziumschedules.sympozium.ai"
    for key in ("group", "scope"):
        assert CRD["spec"][key] == UPSTREAM["spec"][key]
    for key in ("name", "served", "storage", "subresources"):
        assert VERSION[key] == UPSTREAM_VERSION[key]
    assert len(CRD["spec"]["versions"]) == 1


def test_short_names_and_categories() -> None:
    assert CRD["spec"]["names"]["shortNames"] == ["symsched"]
    assert CRD["spec"]["names"]["categories"] == ["sympozium"]


def test_the_status_subresource() -> None:
    assert VERSION["subresources"] == {"status": {}}


def test_the_printer_columns_are_sympoziums_plus_next_run() -> None:
    columns = [(c["name"], c["jsonPath"]) for c in VERSION["additionalPrinterColumns"]]
    assert columns == [
        ("Instance", ".spec.instanceRef"), ("Schedule", ".spec.schedule"), ("Type", ".spec.type"),
        ("Phase", ".status.phase"), ("Last Run", ".status.lastRunTime"),
        ("Next Run", ".status.nextRunTime"), ("Age", ".metadata.creationTimestamp"),
    ]
    theirs = UPSTREAM_VERSION["additionalPrinterColumns"]
    assert [c for c in VERSION["additionalPrinterColumns"] if c["name"] != "Next Run"] == theirs


def test_next_run_is_a_string_column() -> None:
    """kubectl prints a date column as the age of the time: a future one reads "<invalid>"."""
    (column,) = [c for c in VERSION["additionalPrinterColumns"] if c["name"] == "Next Run"]
    assert column["type"] == "string"


# --- structural ------------------------------------------------------------------------------


def test_the_schema_is_structural() -> None:
    assert structural_problems(SCHEMA) == []


def test_every_spec_and_status_property_is_described() -> None:
    for part in (SPEC, STATUS):
        assert part["description"]
        for name, prop in part["properties"].items():
            assert prop.get("description"), name


def test_the_name_rule_is_at_the_root_and_well_formed() -> None:
    (rule,) = SCHEMA["x-kubernetes-validations"]
    assert rule == {"rule": "size(self.metadata.name) <= 63", "message": rule["message"]}
    # A rule's message must be one line; only a root rule may read metadata.name, and a
    # fieldPath must name a declared property (metadata declares none).
    assert "\n" not in rule["message"]
    assert rule["message"]
    assert "fieldPath" not in rule


def _rules(node: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        if "x-kubernetes-validations" in node:
            found.append(path or "<root>")
        for key, value in node.items():
            found += _rules(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            found += _rules(item, path)
    return found


def test_cel_rules_where_fields_depend_on_each_other() -> None:
    assert _rules(SCHEMA) == ["<root>", ".properties.spec",
                              ".properties.spec.properties.exclude.items"]
    for where in (SPEC, SPEC["properties"]["exclude"]["items"]):
        for rule in where["x-kubernetes-validations"]:
            assert set(rule) == {"rule", "message"}
            assert rule["message"]
            assert "\n" not in rule["message"]


# --- what it accepts -------------------------------------------------------------------------


def _documents(paths: list[Path]) -> list[Any]:
    params = []
    for path in paths:
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
                params.append(pytest.param(doc, id=f"{rel}#{index}"))
    return params


SAMPLES = sorted(manifests.path("samples").glob("sympoziumschedule*.yaml"))
# The objects `run --demo` applies, when the package has them.
DEMO = [p for p in [manifests.path("demo.yaml")] if p.exists()]
EXAMPLES = sorted(EXAMPLES_DIR.rglob("*.y*ml")) if EXAMPLES_DIR.is_dir() else []


def test_sympoziums_samples_are_there() -> None:
    assert len(SAMPLES) == 2


@pytest.mark.parametrize("doc", _documents(SAMPLES + DEMO + EXAMPLES))
def test_packaged_samples_and_examples_are_accepted(doc: dict[str, Any]) -> None:
    assert doc.get("apiVersion")
    assert doc.get("kind")
    assert (doc.get("metadata") or {}).get("name")
    kind = doc["kind"]
    if kind == Kind.SCHEDULE.value:
        assert OURS.errors(doc) == []
        ScheduleSpec.parse(OURS.defaulted(doc)["spec"])
    elif kind in SYMPOZIUM_CRDS:
        assert SYMPOZIUM_CRDS[kind].errors(doc) == []
    else:
        assert kind == "ConfigMap", f"no schema to check a {kind} against"


EVERY_FIELD = {
    "instanceRef": "alice", "schedule": "0 9 * * 1-5", "task": "Weekday standup notes.",
    "type": "sweep", "suspend": True, "concurrencyPolicy": "Replace", "includeMemory": False,
    "timeZone": "Europe/Berlin", "startingDeadlineSeconds": 300, "firstTick": "afterInterval",
    "successfulRunsHistoryLimit": 0, "failedRunsHistoryLimit": 10,
}


@pytest.mark.parametrize("obj", [
    pytest.param(schedule_obj(), id="minimal"),
    pytest.param(schedule_obj(EVERY_FIELD), id="every-field"),
    pytest.param(schedule_obj(schedule="@every 20s", type="heartbeat", firstTick="immediate"),
                 id="every-interval"),
    pytest.param(schedule_obj(schedule="@daily", timeZone="America/New_York"), id="macro-in-a-zone"),
    pytest.param(schedule_obj(type="heartbeat"), id="heartbeat"),
    pytest.param(schedule_obj(concurrencyPolicy="Allow"), id="allow"),
    pytest.param(schedule_obj(startingDeadlineSeconds=1), id="deadline-minimum"),
    pytest.param(schedule_obj(name="a" * 63), id="name-of-63"),
    pytest.param(schedule_obj(status={
        "phase": "Active", "observedGeneration": 2, "totalRuns": 4,
        "lastRunTime": "2026-03-02T09:00:00Z", "lastScheduleTime": "2026-03-02T09:00:00Z",
        "nextRunTime": "2026-03-02T09:30:00Z", "lastRunName": "alice-heartbeat-29541060",
        "active": [{"apiVersion": API_VERSION, "kind": "AgentRun", "name": "alice-heartbeat-29541060",
                    "namespace": "default"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled",
                        "message": "ok", "lastTransitionTime": "2026-03-01T00:00:00Z",
                        "observedGeneration": 2}],
    }), id="with-status"),
])
def test_valid_schedules_are_accepted_by_the_crd_and_the_model(obj: dict[str, Any]) -> None:
    assert OURS.errors(obj) == []
    ScheduleSpec.parse(OURS.defaulted(obj)["spec"])


@pytest.mark.parametrize("obj", [
    pytest.param(schedule_obj(), id="minimal"),
    pytest.param(schedule_obj(type="sweep", suspend=True, concurrencyPolicy="Allow",
                              includeMemory=False), id="every-sympozium-field"),
    pytest.param(schedule_obj(instanceRef="", schedule=""), id="empty-strings"),
    pytest.param(schedule_obj(status={"phase": "Whatever", "totalRuns": 0}), id="other-status"),
])
def test_what_sympoziums_crd_accepts_ours_accepts(obj: dict[str, Any]) -> None:
    assert THEIRS.errors(obj) == []
    assert OURS.errors(obj) == []


def test_defaults_are_the_models_defaults() -> None:
    minimal = schedule_obj()
    defaulted = OURS.defaulted(minimal)["spec"]
    assert defaulted == minimal["spec"] | {
        "type": "scheduled", "concurrencyPolicy": "Forbid", "includeMemory": True,
        "timeZone": "UTC", "firstTick": "immediate",
        "successfulRunsHistoryLimit": 3, "failedRunsHistoryLimit": 1,
    }
    assert ScheduleSpec.parse(defaulted) == ScheduleSpec.parse(minimal["spec"])


def test_sympoziums_defaults_are_applied_alike() -> None:
    minimal = schedule_obj()
    ours, theirs = OURS.defaulted(minimal)["spec"], THEIRS.defaulted(minimal)["spec"]
    assert {k: ours[k] for k in theirs} == theirs


# --- what it rejects -------------------------------------------------------------------------

INVALID = [
    pytest.param(schedule_obj(type="hourly"), "spec.type", id="type-hourly"),
    pytest.param(schedule_obj(concurrencyPolicy="Sometimes"), "spec.concurrencyPolicy",
                 id="concurrencyPolicy-Sometimes"),
    pytest.param(schedule_obj(firstTick="later"), "spec.firstTick", id="firstTick-later"),
    pytest.param(schedule_obj(suspend="yes"), "spec.suspend", id="suspend-yes"),
    pytest.param(schedule_obj(includeMemory="true"), "spec.includeMemory", id="includeMemory-string"),
    pytest.param(schedule_obj(task=42), "spec.task", id="task-number"),
    pytest.param(schedule_obj(startingDeadlineSeconds=0), "spec.startingDeadlineSeconds",
                 id="deadline-zero"),
    pytest.param(schedule_obj(startingDeadlineSeconds="60"), "spec.startingDeadlineSeconds",
                 id="deadline-string"),
    pytest.param(schedule_obj(successfulRunsHistoryLimit=-1), "spec.successfulRunsHistoryLimit",
                 id="successful-limit-negative"),
    pytest.param(schedule_obj(failedRunsHistoryLimit=-1), "spec.failedRunsHistoryLimit",
                 id="failed-limit-negative"),
    pytest.param(schedule_obj(failedRunsHistoryLimit=1.5), "spec.failedRunsHistoryLimit",
                 id="failed-limit-fraction"),
    pytest.param(schedule_obj(timeZone=""), "spec.timeZone", id="timeZone-empty"),
    pytest.param(without("instanceRef"), "spec.instanceRef", id="no-instanceRef"),
    pytest.param(without("schedule"), "spec.schedule", id="no-schedule"),
    pytest.param(without("task"), "spec.task", id="no-task"),
]


@pytest.mark.parametrize(("obj", "field"), INVALID)
def test_invalid_schedules_are_rejected_by_the_crd(obj: dict[str, Any], field: str) -> None:
    errors = OURS.errors(obj)
    assert errors, "accepted"
    parent, _, leaf = field.rpartition(".")
    assert all(e.startswith(f"{field}:") or (e.startswith(f"{parent}:") and repr(leaf) in e)
               for e in errors), errors


@pytest.mark.parametrize(("obj", "field"), INVALID)
def test_what_the_crd_rejects_the_model_rejects_too(obj: dict[str, Any], field: str) -> None:
    """The CRD is never stricter than the controller: no spec is refused by one only."""
    with pytest.raises(SpecError) as caught:
        ScheduleSpec.parse(OURS.defaulted(obj)["spec"])
    assert caught.value.field == field


@pytest.mark.parametrize("status", [
    pytest.param({"totalRuns": "3"}, id="totalRuns-string"),
    pytest.param({"lastRunTime": "yesterday"}, id="lastRunTime-not-a-time"),
    pytest.param({"active": {"name": "x"}}, id="active-not-a-list"),
    pytest.param({"conditions": [{"type": "Ready", "status": "Maybe", "reason": "X", "message": "",
                                  "lastTransitionTime": "2026-03-01T00:00:00Z"}]},
                 id="condition-status-Maybe"),
    pytest.param({"conditions": [{"type": "Ready", "status": "True", "reason": "",
                                  "message": "", "lastTransitionTime": "2026-03-01T00:00:00Z"}]},
                 id="condition-without-reason"),
])
def test_invalid_status_is_rejected(status: dict[str, Any]) -> None:
    assert OURS.errors(schedule_obj(status=status))


# --- the status the controller writes --------------------------------------------------------

_INSTANCE = {
    "apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
    "metadata": {"name": "alice", "namespace": "default", "uid": "uid-alice"},
    "spec": {"agents": {"default": {"model": "gpt-4o"}}},
}


def _stored(spec: dict[str, Any], *, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = schedule_obj(spec, status=status or {})
    obj["metadata"] |= {"uid": "uid-schedule", "generation": 1, "resourceVersion": "7",
                        "creationTimestamp": format_time(NOW - timedelta(days=1))}
    return obj


def _run(name: str, phase: str) -> RunView:
    return RunView(name=name, phase=phase, scheduled_time=NOW - timedelta(minutes=30),
                   creation=NOW - timedelta(minutes=30), owner_uids=("uid-schedule",))


@pytest.mark.parametrize(("spec", "runs"), [
    pytest.param({}, [], id="fired"),
    pytest.param({"concurrencyPolicy": "Forbid"}, [_run("alice-heartbeat-1", "Running")],
                 id="skipped-by-forbid"),
    pytest.param({"concurrencyPolicy": "Replace"}, [_run("alice-heartbeat-1", "Running")],
                 id="replaced"),
    pytest.param({"suspend": True}, [], id="suspended"),
    pytest.param({"schedule": "not a cron"}, [], id="invalid-schedule"),
    pytest.param({"timeZone": "Mars/Olympus"}, [], id="invalid-zone"),
    pytest.param({"startingDeadlineSeconds": 1}, [], id="deadline-missed"),
])
def test_the_status_the_core_writes_is_valid(spec: dict[str, Any], runs: list[RunView]) -> None:
    obj = _stored(spec)
    decision = reconcile(ScheduleView.of(obj), runs, copy.deepcopy(_INSTANCE), None, NOW)
    written = obj | {"status": decision.status}
    assert OURS.errors(written) == []
    # ...and again one round later, from the status just written.
    again = reconcile(ScheduleView.of(written), runs, copy.deepcopy(_INSTANCE), None,
                      NOW + timedelta(hours=1))
    assert OURS.errors(written | {"status": again.status}) == []
