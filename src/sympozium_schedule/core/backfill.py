"""Backfill: the runs of a schedule's ticks in a past range, created at a measured pace.

A backfill is asked for with the ``sympozium.ai/backfill`` annotation (the CLI's
``backfill`` and the API write it; ``kubectl annotate`` works too):
``{"from": T1, "to": T2, "overlap": "BufferAll", "id": "..."}`` (``from`` and ``to``
included; ``overlap`` defaults to BufferAll: one run at a time, each started when the
schedule has no unfinished run). The controller adopts
it into ``status.backfill`` and takes one tick a step: each run is named as that
tick's run would be, so a tick whose run exists (it fired, or an earlier backfill
made it) creates nothing twice. Ticks that ``spec.exclude`` removes are skipped;
``startTime``, ``endTime``, ``maxRuns`` and jitter do not apply (a backfill is an
explicit request) and backfilled runs do not count towards ``maxRuns``.

The pace (``PACE``) bounds what a backfill costs: a year of minutely ticks is
525,600 runs, written at a few per second and pruned by the history limits as
they finish, instead of all at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sympozium_schedule.core.model import (
    ANNOTATION_BACKFILL,
    BUFFERING_POLICIES,
    CONCURRENCY_POLICIES,
    RunView,
    ScheduleSpec,
    ScheduleView,
    format_time,
    parse_time,
)
from sympozium_schedule.core.naming import run_name
from sympozium_schedule.core.runs import RunTemplate, build_agent_run
from sympozium_schedule.core.status import Note, StatusBuilder
from sympozium_schedule.core.timetable import Timetable

PACE = timedelta(milliseconds=200)  # one run a step: at most 5 runs a second per schedule
SCAN = 1000  # ticks looked at in one step before waiting for the next
MAX_RANGE = timedelta(days=366 * 10)


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    start: datetime
    end: datetime
    overlap: str


class BadRequest(ValueError):
    """An annotation that is not a backfill request: reported in status, never retried."""


def request_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_request(text: str) -> Request:
    """The request in the annotation ``text``; :class:`BadRequest` says what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"annotation {ANNOTATION_BACKFILL} is not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise BadRequest(f"annotation {ANNOTATION_BACKFILL} must be a JSON object")
    unknown = set(raw) - {"from", "to", "overlap", "id"}
    if unknown:
        raise BadRequest(f"backfill: unknown field(s) {', '.join(sorted(unknown))} "
                         "(known: from, to, overlap, id)")
    start, end = parse_time(raw.get("from")), parse_time(raw.get("to"))
    if start is None or end is None:
        raise BadRequest("backfill: from and to must be RFC 3339 times with an offset")
    if end <= start:
        raise BadRequest(f"backfill: to ({raw['to']}) must be after from ({raw['from']})")
    if end - start > MAX_RANGE:
        raise BadRequest("backfill: the range is longer than ten years")
    # One at a time by default: none skipped, and a backlog of agents never piles up.
    overlap = raw.get("overlap", "BufferAll")
    if overlap not in CONCURRENCY_POLICIES:
        raise BadRequest(f"backfill: overlap {overlap!r} must be one of "
                         f"{', '.join(CONCURRENCY_POLICIES)}")
    given = raw.get("id")
    rid = given if isinstance(given, str) and given else request_id(text)
    return Request(rid, start, end, str(overlap))


def adopt(text: str, now: datetime) -> dict[str, Any]:
    """``status.backfill`` for a newly seen request: Running, or Invalid and why. A range
    reaching past ``now`` is cut at ``now``: ticks to come are the schedule's business."""
    try:
        req = parse_request(text)
    except BadRequest as exc:
        return {"id": request_id(text), "state": "Invalid", "message": str(exc)}
    if req.start > now:
        return {"id": req.id, "state": "Invalid",
                "message": f"backfill: from ({format_time(req.start)}) is in the future; "
                           "ticks to come are the schedule's own"}
    end = min(req.end, now)
    return {"id": req.id, "state": "Running", "from": format_time(req.start),
            "to": format_time(end), "overlap": req.overlap, "next": format_time(req.start),
            "created": 0, "existing": 0, "skipped": 0}


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a running backfill: the tick to create (if any), the progress to
    write, when to take the next step (None: when a run finishes, or never)."""

    tick: datetime | None
    delete: tuple[str, ...]
    progress: dict[str, Any]
    wake: datetime | None


def step(progress: dict[str, Any], table: Timetable, schedule: str, runs: Sequence[RunView],
         active: Sequence[RunView], now: datetime) -> Step:
    """The next step of the backfill described by ``progress`` (a Running status.backfill)."""
    out = dict(progress)
    cursor = parse_time(progress.get("next"))
    end = parse_time(progress.get("to"))
    if cursor is None or end is None:
        out.update(state="Invalid", message="status.backfill lost its cursor; ask again")
        return Step(None, (), out, None)
    names = {r.name for r in runs}
    overlap = str(progress.get("overlap") or "Allow")
    # ``next`` is the first tick still to handle: the range includes ``from``.
    ticks = table.between(cursor - timedelta(microseconds=1), end)
    for looked, tick in enumerate(ticks, start=1):
        after = tick + timedelta(microseconds=1)
        if table.excluded_by(tick) is not None:
            out["skipped"] = int(out.get("skipped", 0)) + 1
        elif run_name(schedule, tick) in names:
            out["existing"] = int(out.get("existing", 0)) + 1
        elif active and overlap in BUFFERING_POLICIES:
            out["next"] = format_time(tick)
            return Step(None, (), out, None)  # wait: the run's end wakes the schedule
        elif active and overlap == "Forbid":
            out["skipped"] = int(out.get("skipped", 0)) + 1
        else:
            delete = tuple(r.name for r in active) if overlap == "Replace" else ()
            out["created"] = int(out.get("created", 0)) + 1
            out["next"] = format_time(after)
            return Step(tick, delete, out, now + PACE)
        out["next"] = format_time(after)
        if looked >= SCAN:
            return Step(None, (), out, now + PACE)
    out["state"] = "Completed"
    out["next"] = format_time(end)
    return Step(None, (), out, None)


@dataclass(frozen=True, slots=True)
class Extra:
    run: dict[str, Any] | None = None
    tick: datetime | None = None
    delete: tuple[str, ...] = ()
    wake: datetime | None = None


@dataclass(frozen=True, slots=True)
class Backfilling:
    """The backfill stage every decision of a schedule that can have runs goes through:
    adopt a new request, cancel a withdrawn one, or take the next step of a running one
    (only when the decision creates no run of its own)."""

    schedule: ScheduleView
    spec: ScheduleSpec
    table: Timetable
    template: RunTemplate
    memory: str | None
    mine: Sequence[RunView]
    active: Sequence[RunView]

    def advance(self, b: StatusBuilder, *, busy: bool, now: datetime) -> Extra:
        text = self.schedule.meta.annotations.get(ANNOTATION_BACKFILL)
        current = b.backfill or {}
        if text is not None and current.get("id") != _request_id(text):
            current = b.backfill = adopt(text, now)
            if current["state"] == "Invalid":
                b.notes.append(Note("Warning", "BackfillInvalid", str(current["message"])))
            else:
                b.notes.append(Note("Normal", "BackfillStarted",
                                    f"backfilling the ticks from {current['from']} to "
                                    f"{current['to']} (overlap: {current['overlap']})"))
        elif text is None and current.get("state") == "Running":
            current = b.backfill = current | {"state": "Cancelled"}
            b.notes.append(Note("Normal", "BackfillCancelled",
                                f"the {ANNOTATION_BACKFILL} annotation was removed"))
        if current.get("state") != "Running":
            return Extra()
        if busy:
            return Extra(wake=now + PACE)
        taken = step(current, self.table, self.schedule.meta.name, self.mine,
                              self.active, now)
        b.backfill = taken.progress
        if taken.progress.get("state") == "Completed":
            b.notes.append(Note("Normal", "BackfillCompleted", _summary(taken.progress)))
        if taken.tick is None:
            return Extra(wake=taken.wake)
        run = build_agent_run(self.schedule, self.spec, self.template, self.memory, taken.tick,
                              backfill=True)
        b.total_runs += 1
        return Extra(run, taken.tick, taken.delete, taken.wake)


def _request_id(text: str) -> str:
    try:
        return parse_request(text).id
    except BadRequest:
        return request_id(text)


def _summary(progress: dict[str, Any]) -> str:
    return (f"backfill of {progress.get('from')} to {progress.get('to')} done: "
            f"{progress.get('created', 0)} run(s) created, {progress.get('existing', 0)} "
            f"already there, {progress.get('skipped', 0)} tick(s) skipped")
