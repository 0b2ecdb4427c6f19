"""Typed views of the Kubernetes-shaped objects the scheduler reads and writes.

Objects travel through the stores as plain JSON dicts, exactly as the
Kubernetes API would hold them; the core parses what it needs into frozen
views once per reconcile and writes status back as a dict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sympozium_schedule.core.errors import SpecError

if TYPE_CHECKING:
    from sympozium_schedule.core.timetable import Timetable

GROUP = "sympozium.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_INSTANCE = "sympozium.ai/instance"
LABEL_SCHEDULE = "sympozium.ai/schedule"
LABEL_TYPE = "sympozium.ai/type"
LABEL_SOURCE = "sympozium.ai/source"
ANNOTATION_SCHEDULED_TIME = "sympozium.ai/scheduled-time"
ANNOTATION_TRIGGER = "sympozium.ai/trigger"
ANNOTATION_BACKFILL = "sympozium.ai/backfill"
ANNOTATION_PROVIDER = "sympozium.ai/provider"

MEMORY_SUFFIX = "-memory"
MEMORY_KEY = "MEMORY.md"


class Kind(StrEnum):
    SCHEDULE = "SympoziumSchedule"
    INSTANCE = "SympoziumInstance"
    AGENT_RUN = "AgentRun"
    CONFIG_MAP = "ConfigMap"
    EVENT = "Event"
    # An agent's model key (an instance's authRefs name it), kept in the embedded store.
    SECRET = "Secret"

    @property
    def api_version(self) -> str:
        return "v1" if self in (Kind.CONFIG_MAP, Kind.EVENT, Kind.SECRET) else API_VERSION


# Phases in which a run still occupies its schedule (Forbid waits for them).
# An empty phase means the run was created and nobody has picked it up yet.
UNFINISHED_PHASES = frozenset({"", "Pending", "Running", "Serving", "PostRunning", "AwaitingDelegate"})
SUCCEEDED_PHASE = "Succeeded"

# Used with fullmatch: "$" would also match before a trailing newline ("hb\n").
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


def check_name(value: object, *, field_path: str, max_length: int = 253) -> str:
    """A valid object name, or a :class:`SpecError` naming ``field_path``."""
    if not isinstance(value, str) or not value:
        raise SpecError(field_path, value, "a name is required (a non-empty string)")
    if len(value) > max_length:
        raise SpecError(field_path, value, f"must be at most {max_length} characters")
    if not is_dns1123_subdomain(value):
        raise SpecError(
            field_path, value,
            "must be lowercase letters, digits, '-' and '.', starting and ending "
            "with a letter or digit (DNS-1123)",
        )
    return value


# --- time ---------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; sub-second digits only when present.

    Cached: a burst formats the same few instants (its tick, the next one) for
    every schedule that fires."""
    utc = t if t.tzinfo is UTC else t.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat() + "Z"


def parse_time(value: object) -> datetime | None:
    """An aware datetime from RFC 3339 text; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


# --- SympoziumSchedule --------------------------------------------------------------------

ScheduleType = Literal["heartbeat", "scheduled", "sweep"]
ConcurrencyPolicy = Literal["Forbid", "Allow", "Replace", "BufferOne", "BufferAll"]
CONCURRENCY_POLICIES: tuple[str, ...] = ("Forbid", "Allow", "Replace", "BufferOne", "BufferAll")
BUFFERING_POLICIES = ("BufferOne", "BufferAll")
FirstTick = Literal["immediate", "afterInterval"]

# A date, or an RFC 3339 time (the timetable parses it; the pattern lets the API server say so).
_DATE_OR_TIME = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
                 r"(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?$")
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, validate_by_alias=True,
                     validate_by_name=False)


class CronEntry(BaseModel):
    """One entry of ``spec.schedules``: another expression, in its own zone if given."""

    model_config = _STRICT

    schedule: str = Field(min_length=1)
    time_zone: str | None = Field(default=None, alias="timeZone", min_length=1)


class ExcludeEntry(BaseModel):
    """One entry of ``spec.exclude``: a cron expression whose minutes are excluded, or a
    range from ``start`` to ``end`` (dates, whole days in the zone, or RFC 3339 instants)."""

    model_config = _STRICT

    schedule: str | None = Field(default=None, min_length=1)
    time_zone: str | None = Field(default=None, alias="timeZone", min_length=1)
    start: str | None = Field(default=None, pattern=_DATE_OR_TIME)
    end: str | None = Field(default=None, pattern=_DATE_OR_TIME)


class ScheduleSpec(BaseModel):
    """The spec of a SympoziumSchedule: Sympozium's fields plus documented additions.

    Strict: ``suspend: "yes"`` is an error, not a truthy string; unknown fields
    are errors so a typo (``concurencyPolicy``) cannot silently fall back to a
    default.
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, validate_by_alias=True, validate_by_name=False,
    )

    instance_ref: str = Field(alias="instanceRef", min_length=1)
    schedule: str = Field(min_length=1)
    task: str
    type: ScheduleType = "scheduled"
    suspend: bool = False
    concurrency_policy: ConcurrencyPolicy = Field(default="Forbid", alias="concurrencyPolicy")
    include_memory: bool = Field(default=True, alias="includeMemory")
    time_zone: str = Field(default="UTC", alias="timeZone", min_length=1)
    starting_deadline_seconds: int | None = Field(
        default=None, alias="startingDeadlineSeconds", ge=1
    )
    first_tick: FirstTick = Field(default="immediate", alias="firstTick")
    successful_runs_history_limit: int = Field(
        default=3, alias="successfulRunsHistoryLimit", ge=0
    )
    failed_runs_history_limit: int = Field(default=1, alias="failedRunsHistoryLimit", ge=0)
    # Richer schedules (all optional; absent, a schedule means what Sympozium's CRD says).
    schedules: list[CronEntry] = Field(default_factory=list, max_length=20)
    exclude: list[ExcludeEntry] = Field(default_factory=list, max_length=100)
    jitter: str | None = Field(default=None, min_length=1, max_length=32,
                               pattern=r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$")
    start_time: str | None = Field(default=None, alias="startTime",
                                   json_schema_extra={"format": "date-time"})
    end_time: str | None = Field(default=None, alias="endTime",
                                 json_schema_extra={"format": "date-time"})
    max_runs: int | None = Field(default=None, alias="maxRuns", ge=1)
    # Optional rather than defaulted: the API server would write a default into every object.
    pause_on_failure: bool | None = Field(default=None, alias="pauseOnFailure")
    suspended_by: str | None = Field(default=None, alias="suspendedBy", max_length=256)
    suspend_reason: str | None = Field(default=None, alias="suspendReason", max_length=1024)

    @classmethod
    def parse(cls, raw: object) -> ScheduleSpec:
        """Validate ``raw``; the first problem becomes a SpecError naming ``spec.<field>``."""
        if not isinstance(raw, dict):
            raise SpecError("spec", raw, "must be a mapping")
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            raise spec_error_from(exc, prefix="spec", source=raw) from exc
        if not is_label_value(spec.instance_ref):
            raise SpecError(
                "spec.instanceRef", spec.instance_ref,
                "must be a valid object name of at most 63 characters",
            )
        return spec


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and is_dns1123_subdomain(value)


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    """``spec.exclude[1].start`` from pydantic's ``("exclude", 1, "start")``."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def spec_error_from(exc: ValidationError, *, prefix: str, source: dict[str, Any]) -> SpecError:
    """The first pydantic error as a one-line SpecError naming field and value.

    A required field that is missing next to an unknown one is most often a typo
    (``schedul:``): the message names both, so the author sees which line to fix."""
    errors = exc.errors()
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    path = _path(prefix, err["loc"])
    kind = err["type"]
    value: object = err.get("input")
    if kind == "missing":
        unknown = [_path(prefix, e["loc"]) for e in errors
                   if e["type"] == "extra_forbidden" and len(e["loc"]) == len(loc)
                   and [str(p) for p in e["loc"][:-1]] == loc[:-1]]
        if unknown:
            return SpecError(path, None, f"is required, and {', '.join(unknown)} is not a known "
                                         "field (misspelled?)")
        return SpecError(path, None, "is required")
    if kind == "extra_forbidden":
        return SpecError(path, value, "unknown field")
    message = err["msg"]
    if kind == "literal_error":
        message = message.replace("Input should be", "must be one of")
    return SpecError(path, value, message[:1].lower() + message[1:])


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        return out

    @classmethod
    def from_dict(cls, raw: object) -> Condition | None:
        if not isinstance(raw, dict):
            return None
        status = raw.get("status")
        if status not in ("True", "False", "Unknown"):
            return None
        gen = raw.get("observedGeneration")
        return cls(
            type=str(raw.get("type", "")),
            status=status,
            reason=str(raw.get("reason", "")),
            message=str(raw.get("message", "")),
            last_transition_time=str(raw.get("lastTransitionTime", "")),
            observed_generation=gen if isinstance(gen, int) else None,
        )


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """Status as read back: lenient, since another writer may have put anything there."""

    phase: str | None = None
    last_run_time: datetime | None = None
    last_schedule_time: datetime | None = None
    next_run_time: datetime | None = None
    last_run_name: str | None = None
    total_runs: int = 0
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    active: tuple[dict[str, Any], ...] = ()
    # Richer schedules: ticks waiting for a run to finish (BufferOne/BufferAll), runs its
    # ticks created while maxRuns is set, the newest failed run seen (pauseOnFailure).
    buffered: tuple[datetime, ...] = ()
    scheduled_runs: int | None = None
    last_failed_run: str | None = None
    backfill: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: object) -> ScheduleStatus:
        if not isinstance(raw, dict):
            return cls()
        total = raw.get("totalRuns")
        gen = raw.get("observedGeneration")
        conds = raw.get("conditions")
        active = raw.get("active")
        phase = raw.get("phase")
        last_name = raw.get("lastRunName")
        buffered = raw.get("buffered")
        scheduled = raw.get("scheduledRuns")
        failed = raw.get("lastFailedRun")
        backfill = raw.get("backfill")
        return cls(
            phase=phase if isinstance(phase, str) else None,
            last_run_time=parse_time(raw.get("lastRunTime")),
            last_schedule_time=parse_time(raw.get("lastScheduleTime")),
            next_run_time=parse_time(raw.get("nextRunTime")),
            last_run_name=last_name if isinstance(last_name, str) else None,
            total_runs=total if isinstance(total, int) and total >= 0 else 0,
            observed_generation=gen if isinstance(gen, int) else None,
            conditions=tuple(
                c for c in (Condition.from_dict(x) for x in conds or []) if c is not None
            ) if isinstance(conds, list) else (),
            active=tuple(a for a in active if isinstance(a, dict))
            if isinstance(active, list) else (),
            buffered=tuple(t for t in (parse_time(x) for x in buffered) if t is not None)
            if isinstance(buffered, list) else (),
            scheduled_runs=scheduled if isinstance(scheduled, int) and scheduled >= 0 else None,
            last_failed_run=failed if isinstance(failed, str) and failed else None,
            backfill=backfill if isinstance(backfill, dict) else None,
        )

    def condition(self, type_: str) -> Condition | None:
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None


@dataclass(frozen=True, slots=True)
class ObjectView:
    """The metadata every kind shares."""

    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    creation: datetime | None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner_uids: tuple[str, ...] = ()

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectView:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        owners = meta.get("ownerReferences") or []
        gen = meta.get("generation")
        return cls(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=gen if isinstance(gen, int) else 1,
            resource_version=str(meta.get("resourceVersion") or ""),
            creation=parse_time(meta.get("creationTimestamp")),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            annotations={str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, dict) else {},
            owner_uids=tuple(
                str(o.get("uid")) for o in owners if isinstance(o, dict) and o.get("uid")
            ) if isinstance(owners, list) else (),
        )


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A SympoziumSchedule as the core sees it: the spec parsed or the reason it is not,
    and its timetable compiled (or the timing field at fault)."""

    meta: ObjectView
    spec: ScheduleSpec | None
    spec_error: SpecError | None
    status: ScheduleStatus
    timetable: Timetable | SpecError | None = None

    @classmethod
    def of(cls, obj: dict[str, Any], *, previous: ScheduleView | None = None) -> ScheduleView:
        """Parse ``obj``. With ``previous`` (an earlier view of the same object), the
        spec is reused when the generation says it has not changed: a status write,
        the common change, then costs no validation of the spec."""
        meta = ObjectView.of(obj)
        if (previous is not None and previous.meta.uid == meta.uid
                and previous.meta.generation == meta.generation and meta.uid):
            return cls(meta, previous.spec, previous.spec_error,
                       ScheduleStatus.from_dict(obj.get("status")), previous.timetable)
        spec: ScheduleSpec | None = None
        error: SpecError | None = None
        try:
            spec = ScheduleSpec.parse(obj.get("spec"))
            if not is_label_value(meta.name):
                raise SpecError(
                    "metadata.name", meta.name,
                    "a schedule name must be at most 63 characters (it is used as a label value)",
                )
        except SpecError as exc:
            spec, error = None, exc
        timetable: Timetable | SpecError | None = None
        if spec is not None:
            # Imported here: the timetable is built from this module's types.
            from sympozium_schedule.core.timetable import compile_timetable

            try:
                timetable = compile_timetable(
                    spec, anchor=meta.creation or EPOCH,
                    seed=meta.uid or f"{meta.namespace}/{meta.name}")
            except SpecError as exc:
                timetable = exc
        return cls(meta, spec, error, ScheduleStatus.from_dict(obj.get("status")), timetable)

    def check(self) -> ScheduleSpec:
        """The spec, or the :class:`SpecError` of the first field at fault, the timing
        fields included (what ``apply`` and the API refuse before storing)."""
        if self.spec is None:
            assert self.spec_error is not None
            raise self.spec_error
        if isinstance(self.timetable, SpecError):
            raise self.timetable
        return self.spec


@dataclass(frozen=True, slots=True)
class RunView:
    """An AgentRun, reduced to what scheduling needs."""

    name: str
    phase: str
    scheduled_time: datetime | None
    creation: datetime | None
    owner_uids: tuple[str, ...]
    # Not a tick's fire: "manual" (trigger) or "backfill"; "" for a scheduled run.
    trigger: str = ""
    error: str = ""

    @property
    def manual(self) -> bool:
        return self.trigger == "manual"

    @property
    def out_of_band(self) -> bool:
        """Created outside the tick stream (a trigger or a backfill): it neither
        consumes nor records a tick."""
        return self.trigger != ""

    @property
    def finished(self) -> bool:
        return self.phase not in UNFINISHED_PHASES

    @property
    def succeeded(self) -> bool:
        return self.phase == SUCCEEDED_PHASE

    @property
    def order_key(self) -> datetime:
        return self.scheduled_time or self.creation or datetime.min.replace(tzinfo=UTC)

    @classmethod
    def of(cls, obj: dict[str, Any]) -> RunView:
        meta = ObjectView.of(obj)
        status = obj.get("status") or {}
        phase = status.get("phase") if isinstance(status, dict) else None
        error = status.get("error") if isinstance(status, dict) else None
        trigger = meta.annotations.get(ANNOTATION_TRIGGER, "")
        return cls(
            name=meta.name,
            phase=phase if isinstance(phase, str) else "",
            scheduled_time=parse_time(meta.annotations.get(ANNOTATION_SCHEDULED_TIME)),
            creation=meta.creation,
            owner_uids=meta.owner_uids,
            trigger=trigger if trigger in ("manual", "backfill") else "",
            error=error if isinstance(error, str) else "",
        )


def memory_configmap_name(instance: str) -> str:
    return f"{instance}{MEMORY_SUFFIX}"
