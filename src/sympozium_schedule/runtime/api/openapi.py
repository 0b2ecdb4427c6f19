"""The OpenAPI 3.1 description of the console's API, served at ``/api/v1/openapi.json``.

Written here by hand next to the handlers (routes.py's table and the *_routes.py
modules); tests/console validates the document with openapi-spec-validator and checks
every response the API tests get against it with openapi-core, so the two cannot
drift apart silently.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sympozium_schedule.core.model import API_VERSION, CONCURRENCY_POLICIES

J = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _ok(schema: dict[str, Any], description: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {J: {"schema": schema}}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request (bad JSON, an unknown field, a bad query parameter)",
            401: "No token, or a token that is not valid", 403: "Not allowed (RBAC, read-only "
            "mode, a cross-origin request)", 404: "No such object", 409: "Conflict: the name is "
            "taken, the object changed since the resourceVersion sent, or the policy refuses "
            "a trigger", 421: "A Host this console does not answer to",
            422: "The object is invalid: the one-line message `apply` prints",
            503: "The store or the Kubernetes API cannot be reached"}
    return {str(c): {"description": text[c], "content": {J: {"schema": _ref("Error")}}}
            for c in codes}


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


STR = {"type": "string"}
NAMESPACE = _param("namespace", "query", STR, "The namespace (default: default).")
ALL = _param("allNamespaces", "query", {"type": "string", "enum": ["true", "false", "1", "0"]},
             "List across every namespace (lists only).")
SELECTOR = _param("labelSelector", "query", STR,
                  "Label selector: key=value and key (present), comma-separated.")
NAME = _param("name", "path", STR, "The object's name.")
COUNT = _param("count", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
               "How many fire times (default 5).")
WRITE: list[dict[str, list[str]]] = [{"bearerAuth": []}]
READ: list[dict[str, list[str]]] = [{"bearerAuth": []}, {}]

_META = {"type": "object", "properties": {
    "name": STR, "generateName": STR, "namespace": STR, "uid": STR, "resourceVersion": STR,
    "generation": {"type": "integer"}, "creationTimestamp": STR,
    "labels": {"type": "object", "additionalProperties": STR},
    "annotations": {"type": "object", "additionalProperties": STR},
    "ownerReferences": _array({"type": "object"}),
}, "required": ["name"]}

_SPEC_PROPS: dict[str, Any] = {
    "instanceRef": {"type": "string", "description": "The SympoziumInstance (agent) the runs are for."},
    "schedule": {"type": "string", "description": "Cron (5 fields), a macro, or @every <duration>."},
    "task": STR,
    "type": {"type": "string", "enum": ["heartbeat", "scheduled", "sweep"]},
    "suspend": {"type": "boolean"},
    "concurrencyPolicy": {"type": "string", "enum": list(CONCURRENCY_POLICIES)},
    "includeMemory": {"type": "boolean"},
    "timeZone": {"type": "string", "description": "IANA zone (default UTC)."},
    "startingDeadlineSeconds": {"type": "integer", "minimum": 1},
    "firstTick": {"type": "string", "enum": ["immediate", "afterInterval"]},
    "successfulRunsHistoryLimit": {"type": "integer", "minimum": 0},
    "failedRunsHistoryLimit": {"type": "integer", "minimum": 0},
    "schedules": _array({"type": "object", "required": ["schedule"], "properties": {
        "schedule": STR, "timeZone": STR}}),
    "exclude": _array({"type": "object", "properties": {
        "schedule": STR, "timeZone": STR, "start": STR, "end": STR}}),
    "jitter": {"type": "string", "description": "Up to this delay per fire, e.g. 30s."},
    "startTime": {"type": "string", "format": "date-time"},
    "endTime": {"type": "string", "format": "date-time"},
    "maxRuns": {"type": "integer", "minimum": 1},
    "pauseOnFailure": {"type": "boolean"},
    "suspendedBy": STR,
    "suspendReason": STR,
}


def _request_props(*, nullable: bool) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for key, schema in _SPEC_PROPS.items():
        entry = dict(schema)
        if key in ("type", "concurrencyPolicy"):
            entry["enum"] = [*schema["enum"], ""]  # Sympozium: empty means the default
        if nullable and key not in ("schedule", "task", "instanceRef"):
            entry = {"anyOf": [entry, {"type": "null"}]}
        props[key] = entry
    props["agentRef"] = {"type": "string", "description": "Sympozium's name for instanceRef."}
    props["labels"] = {"type": "object", "additionalProperties": STR}
    return props


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "reason"], "properties": {
        "error": {"type": "string", "description": "One line, as the CLI prints it."},
        "reason": STR, "field": STR, "resourceVersion": STR, "generation": {"type": "integer"}}},
    "ObjectMeta": _META,
    "Condition": {"type": "object", "required": ["type", "status"], "properties": {
        "type": STR, "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": STR, "message": STR, "lastTransitionTime": STR,
        "observedGeneration": {"type": "integer"}}},
    "ScheduleSpec": {"type": "object", "properties": _SPEC_PROPS,
                     "description": "As stored: an object another writer made may be invalid "
                                    "(its status then says why)."},
    "ScheduleStatus": {"type": "object", "properties": {
        "phase": STR, "lastRunTime": STR, "lastScheduleTime": STR, "nextRunTime": STR,
        "lastRunName": STR, "totalRuns": {"type": "integer"}, "observedGeneration": {"type": "integer"},
        "active": _array({"type": "object"}), "conditions": _array(_ref("Condition"))}},
    "Schedule": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                 "properties": {"apiVersion": {"const": API_VERSION},
                                "kind": {"const": "SympoziumSchedule"},
                                "metadata": _ref("ObjectMeta"), "spec": _ref("ScheduleSpec"),
                                "status": _ref("ScheduleStatus")}},
    "AgentRun": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                 "properties": {"apiVersion": {"const": API_VERSION}, "kind": {"const": "AgentRun"},
                                "metadata": _ref("ObjectMeta"), "spec": {"type": "object"},
                                "status": {"type": "object", "properties": {
                                    "phase": STR, "startedAt": STR, "completedAt": STR,
                                    "result": STR, "error": STR, "exitCode": {"type": "integer"}}}}},
    "Instance": {"type": "object", "required": ["kind", "metadata"], "properties": {
        "kind": {"const": "SympoziumInstance"}, "metadata": _ref("ObjectMeta"),
        "spec": {"type": "object"}, "status": {"type": "object"}}},
    "Event": {"type": "object", "required": ["kind", "reason"], "properties": {
        "kind": {"const": "Event"}, "type": STR, "reason": STR, "message": STR,
        "firstTimestamp": STR, "lastTimestamp": STR, "involvedObject": {"type": "object"}}},
    "CreateScheduleRequest": {
        "type": "object", "additionalProperties": False, "required": ["schedule", "task"],
        "anyOf": [{"required": ["agentRef"]}, {"required": ["instanceRef"]}],
        "properties": {"name": STR, **_request_props(nullable=False)}},
    "PatchScheduleRequest": {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {"resourceVersion": {"type": "string", "description":
                                           "Apply only if the object is still at this version."},
                       **_request_props(nullable=True)}},
    "FireTime": {"type": "object", "required": ["utc", "local"], "properties": {
        "utc": STR, "local": {"type": "string", "description": "In the schedule's zone."}}},
    "DstNote": {"type": "object", "required": ["kind", "at", "message"], "properties": {
        "kind": {"type": "string", "enum": ["gap", "repeat"]}, "at": STR, "date": STR,
        "from": STR, "to": STR, "matches": _array(STR), "fires": _array(STR), "message": STR}},
    "FireTimes": {"type": "object", "required": ["schedule", "timeZone", "times", "notes"],
                  "properties": {"schedule": STR, "timeZone": STR, "suspended": {"type": "boolean"},
                                 "times": _array(_ref("FireTime")), "notes": _array(_ref("DstNote"))}},
    "SuspendRequest": {"type": "object", "properties": {
        "note": {"type": "string", "minLength": 1, "maxLength": 1024,
                 "description": "Why (kept as spec.suspendReason, with who, until resume)."}}},
    "BackfillRequest": {"type": "object", "required": ["from", "to"], "properties": {
        "from": {"type": "string", "format": "date-time"},
        "to": {"type": "string", "format": "date-time"},
        "overlap": {"type": "string", "enum": list(CONCURRENCY_POLICIES)}}},
    "BackfillAccepted": {"type": "object", "required": ["id", "from", "to", "overlap"],
                         "properties": {"id": STR, "from": STR, "to": STR, "overlap": STR}},
    "TriggerResult": {"type": "object", "required": ["name", "namespace", "schedule", "scheduledTime"],
                      "properties": {"name": STR, "namespace": STR, "schedule": STR,
                                     "scheduledTime": STR}},
    "Timeline": {"type": "object", "required": ["from", "to", "hours", "schedules"], "properties": {
        "from": STR, "to": STR, "hours": {"type": "integer"},
        "schedules": _array({"type": "object", "required": ["namespace", "name", "times", "truncated"],
                             "properties": {"namespace": STR, "name": STR,
                                            "phase": {"type": ["string", "null"]},
                                            "timeZone": STR, "suspended": {"type": "boolean"},
                                            "schedule": STR, "times": _array(STR),
                                            "truncated": {"type": "boolean"}, "error": STR}})}},
    "Session": {"type": "object", "required": ["mode", "readOnly", "readsNeedToken", "authenticated"],
                "properties": {"mode": {"type": "string", "enum": ["embedded", "kubernetes"]},
                               "readOnly": {"type": "boolean"}, "readsNeedToken": {"type": "boolean"},
                               "authenticated": {"type": "boolean"},
                               "user": {"type": ["string", "null"]}, "logs": {"type": "boolean"}}},
}


def _op(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: str | None = None, security: list[dict[str, list[str]]] | None = None,
        errors: tuple[int, ...] = (400, 401, 403, 421, 503),
        body_required: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": responses | _errors(*errors),
                          "security": security if security is not None else READ}
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {J: {"schema": _ref(body)}}}
    return op


def _paths() -> dict[str, Any]:
    one = [NAME, NAMESPACE]
    named_errors = (400, 401, 403, 404, 421, 503)
    write_errors = (400, 401, 403, 404, 409, 421, 422, 503)
    return {
        "/api/v1/schedules": {
            "get": _op("List schedules (a JSON array, as Sympozium's API returns them)",
                       _ok(_array(_ref("Schedule")), "The schedules, by namespace and name"),
                       params=[NAMESPACE, ALL, SELECTOR]),
            "post": _op("Create a schedule from Sympozium's request body",
                        _ok(_ref("Schedule"), "Created", "201"), params=[NAMESPACE],
                        body="CreateScheduleRequest", security=WRITE,
                        errors=(400, 401, 403, 409, 421, 422, 503)),
        },
        "/api/v1/schedules/{name}": {
            "get": _op("Get a schedule", _ok(_ref("Schedule"), "The schedule"), params=one,
                       errors=named_errors),
            "patch": _op("Change some fields of a schedule (Sympozium's PATCH body)",
                         _ok(_ref("Schedule"), "The schedule after the change"), params=one,
                         body="PatchScheduleRequest", security=WRITE, errors=write_errors),
            "delete": _op("Delete a schedule (its runs go with it)",
                          {"204": {"description": "Deleted"}}, params=one, security=WRITE,
                          errors=named_errors),
        },
        "/api/v1/schedules/{name}/suspend": {
            "post": _op("Suspend: no tick fires until resumed (an optional note says why)",
                        _ok(_ref("Schedule"), "Suspended"), params=one, security=WRITE,
                        errors=write_errors, body="SuspendRequest", body_required=False)},
        "/api/v1/schedules/{name}/resume": {
            "post": _op("Resume (ticks from the pause are not replayed; the note goes)",
                        _ok(_ref("Schedule"), "Resumed"), params=one, security=WRITE,
                        errors=write_errors)},
        "/api/v1/schedules/{name}/backfill": {
            "post": _op("Run the ticks of a past range, at a bounded pace (progress in "
                        "status.backfill)", _ok(_ref("BackfillAccepted"), "Asked for", "202"),
                        params=one, body="BackfillRequest", security=WRITE,
                        errors=write_errors)},
        "/api/v1/schedules/{name}/trigger": {
            "post": _op("Start a run now, outside the cron (the concurrency policy applies)",
                        _ok(_ref("TriggerResult"), "The run was created", "201"), params=one,
                        security=WRITE, errors=write_errors)},
        "/api/v1/schedules/{name}/next": {
            "get": _op("The next fire times, and daylight-saving notes for the coming year",
                       _ok(_ref("FireTimes"), "Fire times in UTC and the schedule's zone"),
                       params=[*one, COUNT], errors=(400, 401, 403, 404, 421, 422, 503))},
        "/api/v1/schedules/{name}/events": {
            "get": _op("The Events recorded about a schedule, oldest first",
                       _ok(_array(_ref("Event")), "Events"), params=one, errors=named_errors)},
        "/api/v1/runs": {
            "get": _op("List AgentRuns, newest first", _ok(_array(_ref("AgentRun")), "Runs"),
                       params=[NAMESPACE, ALL, SELECTOR, _param(
                           "schedule", "query", STR, "Only the runs of this schedule.")])},
        "/api/v1/runs/{name}": {
            "get": _op("Get an AgentRun", _ok(_ref("AgentRun"), "The run"), params=one,
                       errors=named_errors)},
        "/api/v1/runs/{name}/logs": {
            "get": _op("What the agent printed (embedded mode: the local runner keeps it)",
                       {"200": {"description": "The end of the log",
                                "content": {"text/plain": {"schema": STR}}}},
                       params=[*one, _param("tailBytes", "query", {"type": "integer", "minimum": 1},
                                            "At most this many bytes from the end (default 256 KiB).")],
                       errors=named_errors)},
        "/api/v1/instances": {
            "get": _op("List SympoziumInstances (agents)", _ok(_array(_ref("Instance")), "Instances"),
                       params=[NAMESPACE, ALL, SELECTOR])},
        "/api/v1/preview": {
            "get": _op("Preview an expression as a cron editor types it",
                       _ok(_ref("FireTimes"), "Fire times and daylight-saving notes"),
                       params=[_param("schedule", "query", STR, "The expression.", required=True),
                               _param("timeZone", "query", STR, "IANA zone (default UTC)."), COUNT,
                               _param("after", "query", STR, "RFC 3339 time (default now).")],
                       errors=(400, 401, 421, 422))},
        "/api/v1/timeline": {
            "get": _op("Every schedule's fire times in the coming hours (bounded per schedule)",
                       _ok(_ref("Timeline"), "Fire times per schedule"),
                       params=[NAMESPACE, ALL, SELECTOR, _param(
                           "hours", "query", {"type": "integer", "minimum": 1, "maximum": 744},
                           "The window (default 24).")])},
        "/api/v1/stream": {
            "get": _op("Server-sent events: schedule, run and instance changes as they happen",
                       {"200": {"description": "event: schedule|run|instance; data: {type, object}",
                                "content": {"text/event-stream": {"schema": STR}}}},
                       params=[NAMESPACE, ALL])},
        "/api/v1/session": {
            "get": _op("What this console is and who the token names", _ok(_ref("Session"), "Session"),
                       errors=(401, 421))},
        "/api/v1/openapi.json": {
            "get": _op("This document", _ok({"type": "object"}, "OpenAPI 3.1"), security=[{}],
                       errors=(421,))},
    }


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "sympozium-schedule console API", "version": "v1",
                 "description": "Schedules, runs and instances of sympozium-schedule; the "
                                "schedule endpoints accept Sympozium's own request bodies."},
        "paths": _paths(),
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description":
                           "Embedded: the token in <data-dir>/console.token. Kubernetes: your "
                           "own Kubernetes token (TokenReview + SubjectAccessReview)."}}},
    }
