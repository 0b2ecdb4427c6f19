"""Typed views of the Kubernetes-shaped objects the scheduler reads: a schedule (its
spec parsed, its timetable compiled, its status read leniently) and a run, reduced to
what scheduling needs. Built once per reconcile; status goes back as a dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.names import (
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_TRIGGER,
    EPOCH,
    SUCCEEDED_PHASE,
    UNFINISHED_PHASES,
    parse_time,
)
from sympozium_schedule.core.spec import ScheduleSpec, is_label_value

if TYPE_CHECKING:
    from sympozium_schedule.core.timetable import Timetable

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
