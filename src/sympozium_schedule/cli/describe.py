"""``describe schedule``: everything about one schedule a person needs at once.

The spec as the scheduler reads it (defaults filled in), the status, the
conditions, the recent runs and Events, and the next fire times computed the
way the controller computes them (the schedule's zone, its creation time as
the ``@every`` anchor). An invalid schedule says why instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sympozium_schedule.cli.render import (
    NONE,
    age,
    event_time,
    relative,
    run_duration,
    run_outcome,
    stamp,
    table,
)
from sympozium_schedule.core.cron import load_zone
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import (
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_TRIGGER,
    RunView,
    ScheduleView,
)
from sympozium_schedule.ports.store import Obj

RECENT_RUNS = 10
RECENT_EVENTS = 10
NEXT_TIMES = 5


def _fields(pairs: Sequence[tuple[str, object]], indent: str = "") -> list[str]:
    width = max(len(k) for k, _ in pairs) + 2
    return [f"{indent}{(k + ':').ljust(width)}{v}" for k, v in pairs]


def _indented(text: str) -> list[str]:
    return ["  " + line if line else line for line in text.rstrip("\n").splitlines()]


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _spec_pairs(view: ScheduleView, raw: dict[str, Any]) -> tuple[list[tuple[str, object]], list[str]]:
    """The spec as the scheduler reads it (defaults filled in), and the task's lines."""
    spec = view.spec
    if spec is None:
        return [("Instance", raw.get("instanceRef", NONE)), ("Schedule", raw.get("schedule", NONE)),
                ("Spec Error", view.spec_error)], []
    deadline = spec.starting_deadline_seconds
    pairs: list[tuple[str, object]] = [
        ("Instance", spec.instance_ref),
        ("Schedule", spec.schedule),
        ("Time Zone", spec.time_zone),
        ("Type", spec.type),
        ("Suspend", str(spec.suspend).lower()),
        ("Concurrency Policy", spec.concurrency_policy),
        ("First Tick", spec.first_tick),
        ("Include Memory", str(spec.include_memory).lower()),
        ("Starting Deadline", f"{deadline}s" if deadline is not None else NONE),
        ("History Limits", f"{spec.successful_runs_history_limit} succeeded, "
                           f"{spec.failed_runs_history_limit} failed"),
    ]
    pairs += _richer_pairs(view)
    return pairs, ["Task:", *("  " + line for line in (spec.task.rstrip("\n").splitlines() or [""]))]


def _richer_pairs(view: ScheduleView) -> list[tuple[str, object]]:
    """The fields sympozium-schedule adds beyond Sympozium's, when they are set."""
    spec = view.spec
    assert spec is not None
    pairs: list[tuple[str, object]] = []
    for entry in spec.schedules:
        pairs.append(("Also On", f"{entry.schedule} ({entry.time_zone or spec.time_zone})"))
    for rule in spec.exclude:
        what = rule.schedule or f"{rule.start} to {rule.end}"
        pairs.append(("Excluded", f"{what} ({rule.time_zone or spec.time_zone})"))
    if spec.jitter:
        pairs.append(("Jitter", f"up to {spec.jitter}"))
    if spec.start_time or spec.end_time:
        pairs.append(("Window", f"{spec.start_time or 'any time'} to {spec.end_time or 'no end'}"))
    if spec.max_runs is not None:
        pairs.append(("Max Runs", spec.max_runs))
    if spec.pause_on_failure:
        pairs.append(("Pause On Failure", "true"))
    if spec.suspend and (spec.suspended_by or spec.suspend_reason):
        pairs.append(("Suspended By", spec.suspended_by or NONE))
        pairs.append(("Suspend Reason", spec.suspend_reason or NONE))
    return pairs


def _status_lines(status: dict[str, Any], now: datetime) -> list[str]:
    active = [str(a.get("name")) for a in status.get("active") or [] if isinstance(a, dict)]
    last_run = stamp(status.get("lastRunTime"), now)
    if status.get("lastRunName"):
        last_run = f"{status['lastRunName']} at {last_run}"
    pairs: list[tuple[str, object]] = [
        ("Phase", status.get("phase") or NONE),
        ("Last Run", last_run),
        ("Last Tick Handled", stamp(status.get("lastScheduleTime"), now)),
        ("Next Run", stamp(status.get("nextRunTime"), now)),
        ("Total Runs", status.get("totalRuns", 0)),
        ("Active Runs", ", ".join(active) if active else NONE),
    ]
    if status.get("nextFireTime"):
        pairs.insert(4, ("Next Fire (jitter)", stamp(status.get("nextFireTime"), now)))
    if "remainingRuns" in status:
        pairs.append(("Remaining Runs", status["remainingRuns"]))
    if status.get("buffered"):
        pairs.append(("Waiting Ticks", ", ".join(str(t) for t in status["buffered"])))
    if status.get("lastFailedRun"):
        pairs.append(("Last Failed Run", status["lastFailedRun"]))
    backfill = _mapping(status.get("backfill"))
    if backfill:
        if backfill.get("state") == "Invalid":
            text = f"Invalid: {backfill.get('message')}"
        else:
            text = (f"{backfill.get('state')}: {backfill.get('from')} to {backfill.get('to')} "
                    f"(overlap {backfill.get('overlap')}), {backfill.get('created', 0)} created, "
                    f"{backfill.get('existing', 0)} already there, {backfill.get('skipped', 0)} "
                    "skipped")
        pairs.append(("Backfill", text))
    return ["Status:", *_fields(pairs, "  ")]


def _conditions(status: dict[str, Any], now: datetime) -> list[str]:
    conds = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if not conds:
        return ["Conditions:  <none>"]
    rows = [[str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason", "")),
             relative(c.get("lastTransitionTime"), now), str(c.get("message", ""))] for c in conds]
    return ["Conditions:", *_indented(table(
        ("TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"), rows))]


def _runs(runs: Sequence[Obj], now: datetime) -> list[str]:
    if not runs:
        return ["Recent Runs:  <none>"]
    recent = sorted(runs, key=lambda r: RunView.of(r).order_key, reverse=True)[:RECENT_RUNS]
    rows = []
    for run in recent:
        meta = _mapping(run.get("metadata"))
        annotations = _mapping(meta.get("annotations"))
        scheduled = str(annotations.get(ANNOTATION_SCHEDULED_TIME) or NONE)
        if annotations.get(ANNOTATION_TRIGGER) in ("manual", "backfill"):
            scheduled += f" ({annotations[ANNOTATION_TRIGGER]})"
        rows.append([str(meta.get("name", "")), str(_mapping(run.get("status")).get("phase") or NONE),
                     scheduled, run_duration(run, now), run_outcome(run, 80),
                     age(meta.get("creationTimestamp"), now)])
    title = f"Recent Runs (newest {len(recent)} of {len(runs)}):" if len(runs) > len(recent) \
        else "Recent Runs:"
    lines = [title, *_indented(table(("NAME", "PHASE", "SCHEDULED", "DURATION", "RESULT", "AGE"),
                                     rows))]
    failed = [r for r in recent if _mapping(r.get("status")).get("phase") == "Failed"]
    if failed:
        run = failed[0]
        error = str(_mapping(run.get("status")).get("error") or NONE).strip()
        lines.append(f"Last Failure:  {_mapping(run.get('metadata')).get('name')}: "
                     f"{' '.join(error.split())[:500]}")
    return lines


def _events(events: Sequence[Obj], now: datetime) -> list[str]:
    if not events:
        return ["Events:  <none>"]
    recent = sorted(events, key=event_time)[-RECENT_EVENTS:]
    rows = [[age(event_time(e), now), str(e.get("type", "")), str(e.get("reason", "")),
             str(e.get("message", ""))] for e in recent]
    return ["Events:", *_indented(table(("LAST SEEN", "TYPE", "REASON", "MESSAGE"), rows))]


def _next_times(view: ScheduleView, now: datetime) -> list[str]:
    """The next ticks of the whole timetable (every spec, bounds), each with its planned
    fire time when jittered and marked when an exclusion skips it."""
    spec, table = view.spec, view.timetable
    if spec is None:
        return [f"Next Fire Times:  none: the schedule is invalid: {view.spec_error}"]
    if isinstance(table, SpecError) or table is None:
        return [f"Next Fire Times:  none: {table}"]
    zone = load_zone(spec.time_zone)
    times = list(itertools.islice(table.between(now, datetime.max.replace(tzinfo=UTC)),
                                  NEXT_TIMES))
    title = f"Next Fire Times ({spec.time_zone})"
    if spec.suspend:
        title += ", while suspended none of them fires"
    if not times:
        return [f"{title}:  none: the schedule never fires again"]
    lines = []
    for tick in times:
        line = "  " + tick.astimezone(zone).isoformat()
        if table.excluded_by(tick) is not None:
            line += "  (excluded)"
        elif table.jitter:
            line += f"  (fires at {table.fire_time(tick).astimezone(zone).isoformat()})"
        lines.append(line)
    return [f"{title}:", *lines]


def is_event_for(event: Obj, schedule: Obj, runs: Sequence[str] = ()) -> bool:
    """Events about this schedule (this incarnation of it when the uid is known), and
    about its runs (a failed run is a Warning Event on the AgentRun)."""
    involved = _mapping(event.get("involvedObject"))
    meta = _mapping(schedule.get("metadata"))
    if involved.get("kind") == "AgentRun" and involved.get("name") in runs:
        return True
    if involved.get("kind") != schedule.get("kind") or involved.get("name") != meta.get("name"):
        return False
    uid, event_uid = meta.get("uid"), involved.get("uid")
    return not uid or not event_uid or uid == event_uid


def describe_schedule(obj: Obj, runs: Sequence[Obj], events: Sequence[Obj], now: datetime) -> str:
    view = ScheduleView.of(obj)
    meta = _mapping(obj.get("metadata"))
    labels = _mapping(meta.get("labels"))
    head: list[tuple[str, object]] = [
        ("Name", view.meta.name),
        ("Namespace", view.meta.namespace),
        ("Labels", ", ".join(f"{k}={v}" for k, v in labels.items()) or NONE),
        ("Created", stamp(meta.get("creationTimestamp"), now)),
    ]
    spec_pairs, task = _spec_pairs(view, _mapping(obj.get("spec")))
    run_names = [str(_mapping(r.get("metadata")).get("name")) for r in runs]
    sections = [
        _fields(head + spec_pairs) + task,
        _status_lines(_mapping(obj.get("status")), now),
        _conditions(_mapping(obj.get("status")), now),
        _runs(runs, now),
        _events([e for e in events if is_event_for(e, obj, run_names)], now),
        _next_times(view, now),
    ]
    return "\n".join("\n".join(lines) for lines in sections) + "\n"
