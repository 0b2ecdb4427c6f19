"""The spec of a SympoziumSchedule, parsed strictly (pydantic), and a parse error as
one :class:`~sympozium_schedule.core.errors.SpecError` naming the field and the value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.names import is_dns1123_subdomain

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
