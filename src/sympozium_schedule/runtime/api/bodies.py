"""Request bodies: Sympozium's schedule API, read strictly and validated by the core.

Sympozium's ``POST /api/v1/schedules`` takes ``name``, ``agentRef`` (formerly
``instanceRef``), ``schedule``, ``task``, ``type``, ``suspend`` and
``concurrencyPolicy``; its ``PATCH`` takes any of ``schedule``, ``task``, ``type``,
``suspend`` and ``concurrencyPolicy``. Both are accepted here as they are, with
``includeMemory`` and every field this project adds to the spec (``timeZone``, the
history limits, jitter, the time window, ``maxRuns``, ``schedules``, ``exclude``, ...)
besides. As in
Sympozium, an empty ``type`` or ``concurrencyPolicy`` means "the default" and a
missing ``name`` makes one from the instance's. Unlike Go's decoder, an unknown
field is an error (a typo must not silently fall back to a default), and the
schedule object is checked exactly as ``apply`` checks it, with its messages.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import API_VERSION, Kind, ScheduleSpec, ScheduleView, check_name
from sympozium_schedule.runtime.api.errors import ApiError, bad_request, invalid

# Request field -> spec field: every field of the spec under its own name (so a field the
# CRD gains is accepted at once), and Sympozium's agentRef for instanceRef.
SPEC_FIELDS = {(f.alias or name): (f.alias or name) for name, f in ScheduleSpec.model_fields.items()}
SPEC_FIELDS["agentRef"] = "instanceRef"
_EMPTY_MEANS_DEFAULT = ("type", "concurrencyPolicy")
CREATE_FIELDS = frozenset({"name", "labels", *SPEC_FIELDS})
PATCH_FIELDS = frozenset({"resourceVersion", "labels", *SPEC_FIELDS})
GENERATED_SUFFIX = 5  # characters the store adds to a generateName
MAX_NAME = 63


def _known(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            raise bad_request(f"{key}: unknown field (known: {', '.join(sorted(allowed))})",
                              field=key)


def _spec_changes(body: dict[str, Any]) -> dict[str, Any]:
    """The spec fields a body sets; ``null`` (PATCH) removes an optional one."""
    agent, instance = body.get("agentRef"), body.get("instanceRef")
    if agent is not None and instance is not None and agent != instance:
        raise bad_request(f"agentRef {agent!r} and instanceRef {instance!r} disagree: send one",
                          field="agentRef")
    changes: dict[str, Any] = {}
    for key, target in SPEC_FIELDS.items():
        if key not in body:
            continue
        value = body[key]
        if key in _EMPTY_MEANS_DEFAULT and value == "":
            value = None
        if target == "instanceRef" and value is None:
            continue
        changes[target] = value
    return changes


def _labels(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise bad_request("labels: must be an object of strings to strings", field="labels")
    return dict(value)


def check_schedule(obj: dict[str, Any], now: datetime) -> ScheduleSpec:
    """What ``apply`` checks for a SympoziumSchedule, with its messages (422)."""
    try:
        return _check(obj, now)
    except SpecError as exc:
        raise invalid(exc) from exc


def _check(obj: dict[str, Any], now: datetime) -> ScheduleSpec:
    meta = obj["metadata"]
    if meta.get("name"):
        check_name(meta["name"], field_path="metadata.name")
    view = ScheduleView.of(obj)
    if view.spec is None:
        assert view.spec_error is not None
        if view.spec_error.field != "metadata.name" or meta.get("name"):
            raise view.spec_error
        # A name still to be generated: check the rest under a name that passes.
        view = ScheduleView.of(obj | {"metadata": meta | {"name": "generated"}})
    return view.check()


def schedule_to_create(body: object, *, namespace: str, now: datetime) -> dict[str, Any]:
    """The SympoziumSchedule a POST body asks for, checked."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    _known(body, CREATE_FIELDS)
    spec = {k: v for k, v in _spec_changes(body).items() if v is not None}
    for required in ("instanceRef", "schedule", "task"):
        value = spec.get(required)
        if value is None or value == "":
            shown = "agentRef (or instanceRef)" if required == "instanceRef" else required
            raise invalid(SpecError(f"spec.{required}", value, f"is required: send {shown}"))
    meta: dict[str, Any] = {"namespace": namespace}
    name = body.get("name")
    if name is None or name == "":
        prefix = f"{spec['instanceRef']}-schedule-" if isinstance(spec["instanceRef"], str) else ""
        if len(prefix) + GENERATED_SUFFIX > MAX_NAME:
            raise invalid(SpecError("metadata.name", None, "is required when agentRef is longer "
                                    f"than {MAX_NAME - GENERATED_SUFFIX - len('-schedule-')} "
                                    "characters (a generated name would be too long)"))
        meta["generateName"] = prefix
    else:
        meta["name"] = name
    if "labels" in body:
        meta["labels"] = _labels(body["labels"])
    obj = {"apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value, "metadata": meta, "spec": spec}
    check_schedule(obj, now)
    return obj


def schedule_with_patch(current: dict[str, Any], body: object, *, now: datetime
                        ) -> tuple[dict[str, Any], str | None]:
    """``current`` with a PATCH body applied, checked, and the resourceVersion the
    body names as its precondition (None: none)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    _known(body, PATCH_FIELDS)
    if not body:
        raise bad_request("the body names no field to change")
    expected = body.get("resourceVersion")
    if expected is not None and not isinstance(expected, str):
        raise bad_request("resourceVersion: must be a string", field="resourceVersion")
    updated = {k: copy.deepcopy(v) for k, v in current.items() if k != "status"}
    spec = dict(updated.get("spec") or {})
    for key, value in _spec_changes(body).items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    updated["spec"] = spec
    meta = dict(updated.get("metadata") or {})
    if "labels" in body:
        meta["labels"] = _labels(body["labels"])
    meta.pop("resourceVersion", None)
    updated["metadata"] = meta
    check_schedule(updated, now)
    return updated, expected


def read_json(raw: bytes) -> object:
    import orjson

    if not raw.strip():
        raise bad_request("the body is empty: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON ({exc})") from exc


def read_object(raw: bytes, *, optional: bool = False) -> dict[str, Any]:
    """A JSON object body (``optional``: an empty body is ``{}``)."""
    if optional and not raw.strip():
        return {}
    body = read_json(raw)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


__all__ = ["ApiError", "check_schedule", "read_json", "read_object", "schedule_to_create",
           "schedule_with_patch"]
