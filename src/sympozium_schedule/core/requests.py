"""Self-scheduling requests: what an agent may ask, and what the router makes of it.

An agent is not trusted. Its request (Sympozium's ``schedule-<id>.json``:
``name``, ``action``, ``schedule``, ``task`` plus optional fields) is checked
here field by field, and :func:`plan` turns a valid request into one store
operation or a rejection whose message a model can act on. The agent's
identity (instance, namespace, run) comes from the IPC bridge, never from the
request body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sympozium_schedule.core.cron import compile_schedule
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.fire_times import Schedule, shortest_gap, upcoming
from sympozium_schedule.core.model import (
    API_VERSION,
    LABEL_INSTANCE,
    LABEL_SOURCE,
    ConcurrencyPolicy,
    Kind,
    ScheduleSpec,
    ScheduleType,
    format_time,
    is_dns1123_label,
    spec_error_from,
)
from sympozium_schedule.core.naming import agent_schedule_name

Action = Literal["create", "update", "suspend", "resume", "delete"]
ACTIONS: tuple[str, ...] = ("create", "update", "suspend", "resume", "delete")
SOURCE_AGENT = "agent"
ANNOTATION_REQUESTED_BY = "sympozium.ai/requested-by-run"


@dataclass(frozen=True, slots=True)
class Limits:
    """Guardrails on what agents may schedule. Violations are rejected, never clamped."""

    max_schedules_per_instance: int = 10
    min_interval: timedelta = timedelta(minutes=5)
    max_task_bytes: int = 8 * 1024
    max_request_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking, as the IPC bridge of the agent's run vouches for it."""

    namespace: str
    instance: str
    run: str


class RequestError(ValueError):
    """A request that cannot be applied; the message is written for the agent."""


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              validate_by_alias=True, validate_by_name=False)

    name: str = Field(min_length=1)
    action: Action
    schedule: str | None = None
    task: str | None = None
    type: ScheduleType | None = None
    time_zone: str | None = Field(default=None, alias="timeZone")
    concurrency_policy: ConcurrencyPolicy | None = Field(default=None, alias="concurrencyPolicy")
    include_memory: bool | None = Field(default=None, alias="includeMemory")

    def changes(self) -> dict[str, Any]:
        """The spec fields this request sets (camelCase, as stored)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude={"name", "action"})


def parse_request(raw: object, limits: Limits) -> ScheduleRequest:
    """Validate a decoded request body; :class:`RequestError` names the problem."""
    if not isinstance(raw, dict):
        raise RequestError(f"the request must be a JSON object, not {type(raw).__name__}")
    try:
        request = ScheduleRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(str(spec_error_from(exc, prefix="request", source=raw))) from exc
    if not is_dns1123_label(request.name):
        raise RequestError(
            f"request.name: {request.name!r}: use lowercase letters, digits and '-' "
            "(a DNS-1123 label: no '/', '.', spaces or '..'), at most 63 characters")
    if request.action == "create" and (not request.schedule or request.task is None):
        raise RequestError("create needs both 'schedule' (a cron expression) and 'task'")
    if request.action == "update" and not request.changes():
        raise RequestError("update needs at least one field to change (schedule, task, type, "
                           "timeZone, concurrencyPolicy or includeMemory)")
    for field_name, text in (("task", request.task), ("schedule", request.schedule),
                             ("timeZone", request.time_zone)):
        if text is not None and not _is_unicode(text):
            raise RequestError(f"request.{field_name}: contains text that is not valid Unicode "
                               "(a lone surrogate); send UTF-8 text")
    if request.task is not None and len(request.task.encode()) > limits.max_task_bytes:
        raise RequestError(f"request.task is {len(request.task.encode())} bytes; the limit is "
                           f"{limits.max_task_bytes} bytes. Shorten the task.")
    return request


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_schedule(expression: str, time_zone: str, limits: Limits, now: datetime) -> Schedule:
    """The expression, compiled, if it parses and never fires more often than the floor
    allows."""
    try:
        compiled = compile_schedule(expression, time_zone=time_zone, anchor=now)
    except SpecError as exc:
        raise RequestError(f"{exc}") from exc
    gap = shortest_gap(compiled, now)
    if gap is not None and gap < limits.min_interval:
        raise RequestError(
            f"schedule {expression!r} fires every {_span(gap)}; agents may schedule at most "
            f"once every {_span(limits.min_interval)}. Choose a slower schedule.")
    return compiled


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the router will do: one store operation, or nothing and why."""

    op: Literal["create", "update", "delete", "noop", "reject"]
    name: str | None
    message: str
    object: dict[str, Any] | None = None


def _owned_by(obj: dict[str, Any], who: Identity) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    spec = obj.get("spec") or {}
    return (labels.get(LABEL_SOURCE) == SOURCE_AGENT and labels.get(LABEL_INSTANCE) == who.instance
            and spec.get("instanceRef") == who.instance)


def _summary(obj: dict[str, Any], now: datetime, *, new: bool = False,
             compiled: Schedule | None = None) -> str:
    """What will happen next. A new schedule with ``firstTick: immediate`` (the
    default) runs at once, then on its schedule; saying only the later time would
    tell the agent something that is not what happens. ``compiled``: the spec's
    schedule, when the caller compiled it already."""
    spec = obj.get("spec") or {}
    text = f"schedule {spec.get('schedule')!r}"
    if spec.get("suspend"):
        return text + " (suspended)"
    try:
        if compiled is None:
            compiled = compile_schedule(str(spec.get("schedule")),
                                        time_zone=spec.get("timeZone") or "UTC", anchor=now)
        nxt = upcoming(compiled, now, 1)
    except SpecError:
        return text
    if new and spec.get("firstTick", "immediate") == "immediate":
        text += ", first run now (firstTick: immediate)"
        if nxt:
            text += f", then next at {format_time(nxt[0])}"
    elif nxt:
        text += f", next run at {format_time(nxt[0])}"
    return text


def plan(request: ScheduleRequest, who: Identity, existing: dict[str, Any] | None,
         agent_schedules: Sequence[str], limits: Limits, now: datetime) -> Plan:
    """Decide what ``request`` does. ``existing`` is the stored schedule of that
    name (if any); ``agent_schedules`` the names of the instance's agent-created
    schedules (for the per-instance cap)."""
    name = agent_schedule_name(who.instance, request.name)
    if len(name) > 63:
        return Plan("reject", None, f"the schedule name {name!r} (instance name + '-' + name) is "
                    f"{len(name)} characters; the limit is 63. Use a shorter name.")
    if existing is not None and not _owned_by(existing, who):
        return Plan("reject", name, f"a schedule named {name!r} exists but was not created by "
                    "this agent; agents may only change their own schedules. Use another name.")
    if existing is None and request.action != "create":
        return Plan("reject", name, f"no schedule named {request.name!r} exists for this agent "
                    f"(looked for {name!r}); create it first")

    if request.action == "delete":
        return Plan("delete", name, f"deleted schedule {name!r}")
    if request.action in ("suspend", "resume"):
        assert existing is not None
        want = request.action == "suspend"
        if bool((existing.get("spec") or {}).get("suspend")) == want:
            return Plan("noop", name, f"schedule {name!r} is already "
                        f"{'suspended' if want else 'active'}; nothing changed")
        spec = dict(existing.get("spec") or {}) | {"suspend": want}
        obj = _with_spec(existing, spec)
        done_word = "suspended" if want else "resumed"
        return Plan("update", name, f"{done_word} schedule {name!r}: {_summary(obj, now)}", obj)

    changes = request.changes()
    if existing is None:
        if len([n for n in agent_schedules if n != name]) >= limits.max_schedules_per_instance:
            return Plan("reject", name, f"this agent already has {len(agent_schedules)} schedules; "
                        f"the limit is {limits.max_schedules_per_instance}. Delete one first.")
        spec = {"instanceRef": who.instance, "type": "heartbeat", "concurrencyPolicy": "Forbid",
                "includeMemory": True} | changes
    else:
        spec = dict(existing.get("spec") or {}) | changes
    try:
        ScheduleSpec.parse(spec)
        compiled = check_schedule(str(spec["schedule"]), str(spec.get("timeZone") or "UTC"),
                                  limits, now)
    except SpecError as exc:
        return Plan("reject", name, str(exc))
    except RequestError as exc:
        return Plan("reject", name, str(exc))
    if existing is None:
        obj = {
            "apiVersion": API_VERSION,
            "kind": Kind.SCHEDULE.value,
            "metadata": {
                "name": name,
                "namespace": who.namespace,
                "labels": {LABEL_INSTANCE: who.instance, LABEL_SOURCE: SOURCE_AGENT},
                "annotations": {ANNOTATION_REQUESTED_BY: who.run},
            },
            "spec": spec,
        }
        summary = _summary(obj, now, new=True, compiled=compiled)
        return Plan("create", name, f"created schedule {name!r}: {summary}", obj)
    if spec == (existing.get("spec") or {}):
        return Plan("noop", name, f"schedule {name!r} already has these settings; nothing changed")
    obj = _with_spec(existing, spec)
    verb = "updated" if request.action == "update" else "updated (it already existed)"
    return Plan("update", name, f"{verb} schedule {name!r}: {_summary(obj, now, compiled=compiled)}",
                obj)


def _with_spec(existing: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    obj = {k: v for k, v in existing.items() if k != "status"}
    obj["spec"] = spec
    return obj
