"""The SympoziumSchedule CRD's ``spec`` schema, generated from the core's
:class:`~sympozium_schedule.core.model.ScheduleSpec` (values, enums, defaults) and
Sympozium's own CRD (the keywords of the fields that are Sympozium's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sympozium_schedule import manifests
from sympozium_schedule.core.model import ScheduleSpec
from sympozium_schedule.manifests.common import UPSTREAM_CRD_FILE

# Every ScheduleSpec field needs one (generation fails otherwise); Sympozium's fields keep
# Sympozium's wording where our behaviour is theirs.
SPEC_DESCRIPTIONS: dict[str, str] = {
    "instanceRef": (
        "InstanceRef is the name of the SympoziumInstance this schedule belongs to.\n"
        "It must be in the schedule's namespace and at most 63 characters long\n"
        "(it is used as a label value)."),
    "schedule": (
        'Schedule is when to run: a five-field cron expression (e.g. "0 * * * *")\n'
        "evaluated in timeZone; one of the macros @hourly, @daily, @midnight, @weekly,\n"
        '@monthly, @yearly, @annually; or "@every <duration>" (e.g. "@every 30m",\n'
        '"@every 1h30m"), counted from the schedule\'s creation.'),
    "task": "Task is the task description sent to the agent on each trigger.",
    "type": "Type categorises the schedule: heartbeat, scheduled, or sweep.",
    "suspend": (
        "Suspend pauses scheduling when true. Ticks that pass while suspended are\n"
        "not run on resume."),
    "concurrencyPolicy": (
        "ConcurrencyPolicy controls what happens when a trigger fires while\n"
        "the previous run is still active: Forbid skips the tick, Allow starts\n"
        "another run, Replace deletes the unfinished run and starts a new one."),
    "includeMemory": "IncludeMemory injects the instance's MEMORY.md as context for each run.",
    "timeZone": (
        'TimeZone is the IANA time zone (e.g. "Europe/Berlin") a cron schedule is\n'
        "evaluated in; wall-clock times skipped or repeated by a DST change fire once.\n"
        "Added by sympozium-schedule."),
    "startingDeadlineSeconds": (
        "StartingDeadlineSeconds skips a tick that cannot start within this many\n"
        "seconds of its scheduled time (after a controller outage, say). Unset: a\n"
        "missed tick is caught up however late (at most one catch-up run).\n"
        "Added by sympozium-schedule."),
    "firstTick": (
        "FirstTick says whether a new schedule runs once at creation (immediate) or\n"
        "waits for its first scheduled time (afterInterval).\n"
        "Added by sympozium-schedule."),
    "successfulRunsHistoryLimit": (
        "SuccessfulRunsHistoryLimit is how many succeeded AgentRuns of this schedule\n"
        "are kept; older ones are deleted. Added by sympozium-schedule."),
    "failedRunsHistoryLimit": (
        "FailedRunsHistoryLimit is how many finished, not succeeded AgentRuns of this\n"
        "schedule are kept; older ones are deleted. Added by sympozium-schedule."),
    "schedules": (
        "Schedules are more expressions the schedule fires on, merged with schedule into\n"
        "one stream of ticks (a tick two expressions share fires once). Each may name its\n"
        "own timeZone (default: spec.timeZone). Added by sympozium-schedule."),
    "exclude": (
        "Exclude lists ticks that are skipped (recorded with reason Excluded): a cron\n"
        "expression (every tick in a minute it matches, e.g. \"* * 25 12 *\" for Christmas\n"
        "Day) or a range from start to end (dates YYYY-MM-DD, whole days in the timeZone\n"
        "with the end day included, or RFC 3339 times, the end excluded).\n"
        "Added by sympozium-schedule."),
    "jitter": (
        "Jitter delays each fire by up to this long (e.g. 30s), by an amount derived from\n"
        "the schedule and the tick, so a restart or a second replica plans the same\n"
        "instant. It must be shorter than the shortest time between two ticks and at\n"
        "most 1h. The run's scheduled-time annotation keeps the tick; status.nextFireTime\n"
        "shows the planned fire time. Added by sympozium-schedule."),
    "startTime": (
        "StartTime: no tick before this time fires (RFC 3339). With firstTick: immediate,\n"
        "the first run is at startTime when the schedule is created earlier.\n"
        "Added by sympozium-schedule."),
    "endTime": (
        "EndTime: no tick after this time fires (RFC 3339); once it has passed the\n"
        "schedule is Completed. Added by sympozium-schedule."),
    "maxRuns": (
        "MaxRuns completes the schedule after its ticks have created this many runs\n"
        "(manual triggers and backfills do not count): phase Completed, no further fires,\n"
        "nothing deleted. status.remainingRuns counts down. Added by sympozium-schedule."),
    "pauseOnFailure": (
        "PauseOnFailure suspends the schedule when one of its runs fails, naming the run\n"
        "in suspendReason; resume by setting suspend to false. Added by sympozium-schedule."),
    "suspendedBy": (
        "SuspendedBy says who suspended the schedule (set with suspend by the CLI, the\n"
        "API and pauseOnFailure; cleared on resume). Added by sympozium-schedule."),
    "suspendReason": (
        "SuspendReason says why the schedule is suspended (kept until resume).\n"
        "Added by sympozium-schedule."),
}

# The fields of the list entries above, by model name.
NESTED_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "CronEntry": {
        "": "One more expression the schedule fires on.",
        "schedule": "Schedule is a cron expression, a macro or @every <duration>.",
        "timeZone": "TimeZone is the IANA zone it is evaluated in (default: spec.timeZone).",
    },
    "ExcludeEntry": {
        "": "Ticks to skip: a cron expression, or a range from start to end.",
        "schedule": "Schedule excludes every tick in a minute this cron expression matches.",
        "timeZone": "TimeZone is the zone of schedule and of dates (default: spec.timeZone).",
        "start": "Start is a date (YYYY-MM-DD) or an RFC 3339 time: the first excluded.",
        "end": "End is a date (included) or an RFC 3339 time (excluded).",
    },
}

# What the server checks beyond the types: rules that span fields (CEL).
SPEC_RULES = (
    {"rule": "!has(self.startTime) || !has(self.endTime) || "
             "timestamp(self.endTime) > timestamp(self.startTime)",
     "message": "spec.endTime must be after spec.startTime"},
)
EXCLUDE_RULES = (
    {"rule": "has(self.schedule) ? !has(self.start) && !has(self.end) : "
             "has(self.start) && has(self.end)",
     "message": "an exclude entry is either a schedule, or both start and end"},
)

# The JSON Schema keywords a model constraint may become; anything else in the model's
# schema (a union, a map) has no structural equivalent here and fails loudly.
_CARRIED = ("type", "format", "enum", "default", "minimum", "maximum", "minLength", "maxLength",
            "pattern", "maxItems")
# Dropped without a loss: a structural schema prunes unknown fields by itself.
_IGNORED = ("title", "description", "additionalProperties")


def _structural(name: str, prop: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """One property of ScheduleSpec's JSON Schema as a structural CRD schema (lists of
    nested models included, their fields described by NESTED_DESCRIPTIONS)."""
    out = {k: v for k, v in prop.items() if k not in _IGNORED}
    if "anyOf" in out:
        # ``int | None``: optional is the CRD's way to say None, so the null branch goes.
        branches = [b for b in out.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"spec.{name}: a union has no structural schema")
        out = dict(branches[0]) | out
        if out.get("default", 0) is None:
            del out["default"]
    if out.get("type") == "array" and "items" in out:
        items = out.pop("items")
        ref = items.get("$ref", "")
        model = ref.rsplit("/", 1)[-1]
        if not ref or model not in defs or model not in NESTED_DESCRIPTIONS:
            raise ValueError(f"spec.{name}: a list of {items} has no description")
        if out.pop("default", None) not in (None, []):
            raise ValueError(f"spec.{name}: a list default other than empty")
        carried = {k: out[k] for k in _CARRIED if k in out}
        return carried | {"items": _nested(f"{name}[]", model, defs)}
    unknown = set(out) - set(_CARRIED)
    if unknown or "type" not in out:
        raise ValueError(f"spec.{name}: cannot express {sorted(unknown) or 'an untyped field'} "
                         "in a structural schema")
    return {k: out[k] for k in _CARRIED if k in out}


def _nested(path: str, model: str, defs: Mapping[str, Any]) -> dict[str, Any]:
    schema = defs[model]
    words = NESTED_DESCRIPTIONS[model]
    properties = {}
    for field, prop in schema["properties"].items():
        if field not in words:
            raise ValueError(f"spec.{path}.{field} has no description: add it to "
                             "NESTED_DESCRIPTIONS")
        properties[field] = {"description": words[field],
                             **_structural(f"{path}.{field}", prop, defs)}
    out: dict[str, Any] = {"description": words[""], "properties": properties, "type": "object"}
    if schema.get("required"):
        out["required"] = sorted(schema["required"])
    if model == "ExcludeEntry":
        out["x-kubernetes-validations"] = [dict(r) for r in EXCLUDE_RULES]
    return out


def upstream_crd() -> dict[str, Any]:
    return manifests.load_crd(UPSTREAM_CRD_FILE)


def upstream_schema() -> dict[str, Any]:
    schema: dict[str, Any] = upstream_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def sympozium_fields() -> dict[str, dict[str, Any]]:
    """Sympozium's own spec fields, as its CRD declares them."""
    fields: dict[str, dict[str, Any]] = upstream_schema()["properties"]["spec"]["properties"]
    return fields


def spec_schema() -> dict[str, Any]:
    """``spec`` from ScheduleSpec: values from the model, keywords of Sympozium's fields from
    Sympozium's CRD (so ``suspend`` gets no default and ``instanceRef`` no minLength: theirs
    have none, and ours must accept whatever theirs accepts; the controller still reports
    such a spec as invalid in the Ready condition)."""
    model = ScheduleSpec.model_json_schema(by_alias=True, mode="validation")
    defs = model.get("$defs", {})
    theirs = sympozium_fields()
    properties: dict[str, Any] = {}
    for name, prop in model["properties"].items():
        if name not in SPEC_DESCRIPTIONS:
            raise ValueError(f"spec.{name} has no description: add it to SPEC_DESCRIPTIONS")
        schema = _structural(name, prop, defs)
        if name in theirs:
            schema = {k: v for k, v in schema.items() if k in theirs[name]}
        properties[name] = {"description": SPEC_DESCRIPTIONS[name], **schema}
    return {
        "description": (
            "SympoziumScheduleSpec defines a recurring task for a SympoziumInstance.\n"
            "Sympozium's fields, plus the fields marked \"Added by sympozium-schedule\"\n"
            "(time zone, deadline, first tick, history limits, several expressions,\n"
            "exclusions, jitter, a time window, a run limit, buffered overlap, pause notes)."),
        "properties": dict(sorted(properties.items())),
        "required": sorted(model.get("required", [])),
        "type": "object",
        "x-kubernetes-validations": [dict(r) for r in SPEC_RULES],
    }
