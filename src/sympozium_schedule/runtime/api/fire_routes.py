"""When schedules fire, for the console: a schedule's next fire times, the cron editor's
preview and the timeline across schedules, with the daylight-saving notes.

Apart from the other handlers because these compute rather than read: each compiles
an expression and walks its fire times, so each is bounded (counts, hours, a budget
across schedules) and each says times the same way, in UTC and in the schedule's zone.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from sympozium_schedule.core.cron import compile_schedule, load_zone
from sympozium_schedule.core.cron_preview import DstNote, dst_notes, preview
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.fire_times import fires_between, upcoming
from sympozium_schedule.core.model import Kind, ScheduleView, format_time, parse_time
from sympozium_schedule.runtime.api.errors import bad_request, invalid
from sympozium_schedule.runtime.api.handlers import Handlers, by_name
from sympozium_schedule.runtime.api.params import (
    SCHEDULES,
    int_param,
    name_of,
    namespace_of,
    on,
    scope,
    selector,
)
from sympozium_schedule.runtime.api.server import checks, json_response

__all__ = ["FireRoutes"]

MAX_COUNT = 1000
MAX_TIMELINE_HOURS = 31 * 24
TIMELINE_BUDGET = 50_000  # fire times in one timeline answer, across all schedules
TIMELINE_PER_SCHEDULE = 1000


def _times(times: list[datetime] | tuple[datetime, ...], zone_name: str) -> list[dict[str, str]]:
    zone = load_zone(zone_name)
    return [{"utc": format_time(t), "local": t.astimezone(zone).isoformat()} for t in times]


def _notes(notes: list[DstNote] | tuple[DstNote, ...]) -> list[dict[str, Any]]:
    return [{"kind": n.kind, "at": format_time(n.transition), "date": n.date, "from": n.local_from,
             "to": n.local_to, "matches": list(n.matches), "fires": [format_time(f) for f in n.fires],
             "message": n.message} for n in notes]


class FireRoutes(Handlers):
    @checks(on("get", SCHEDULES, named=True))
    async def next_times(self, request: web.Request) -> web.StreamResponse:
        count = int_param(request, "count", 5, 1, MAX_COUNT)
        obj = await self._schedule(namespace_of(request), name_of(request))
        view = ScheduleView.of(obj)
        now = self._now()
        if view.spec is None:
            assert view.spec_error is not None
            raise invalid(view.spec_error)
        spec = view.spec
        try:
            compiled = compile_schedule(spec.schedule, time_zone=spec.time_zone,
                                        anchor=view.meta.creation or now)
        except SpecError as exc:
            raise invalid(exc) from exc
        times = upcoming(compiled, now, count)
        notes = dst_notes(compiled, now, now + timedelta(days=366), zone_name=spec.time_zone)
        return json_response({"schedule": spec.schedule, "timeZone": spec.time_zone,
                              "suspended": spec.suspend, "times": _times(times, spec.time_zone),
                              "notes": _notes(notes)})

    async def preview(self, request: web.Request) -> web.StreamResponse:
        """The cron editor's preview: next fire times and daylight-saving notes."""
        expression = request.query.get("schedule", "")
        zone = request.query.get("timeZone") or "UTC"
        count = int_param(request, "count", 5, 1, MAX_COUNT)
        now = self._now()
        after = now
        if request.query.get("after"):
            parsed = parse_time(request.query["after"])
            if parsed is None:
                raise bad_request(f"after: {request.query['after']!r}: not an RFC 3339 time with "
                                  "an offset (e.g. 2026-03-08T09:00:00Z)", field="after")
            after = parsed
        try:
            result = preview(expression, time_zone=zone, after=after, count=count)
        except SpecError as exc:
            raise invalid(exc) from exc
        return json_response({"schedule": expression, "timeZone": zone,
                              "times": _times(result.times, zone), "notes": _notes(result.notes)})

    @checks(on("list", SCHEDULES))
    async def timeline(self, request: web.Request) -> web.StreamResponse:
        hours = int_param(request, "hours", 24, 1, MAX_TIMELINE_HOURS)
        listing = await self.store.list(Kind.SCHEDULE, namespace=scope(request),
                                        labels=selector(request) or None)
        items = by_name(listing.items)
        start = self._now()
        end = start + timedelta(hours=hours)
        per = max(1, min(TIMELINE_PER_SCHEDULE, TIMELINE_BUDGET // max(1, len(items))))
        rows = []
        for obj in items:
            view = ScheduleView.of(obj)
            row: dict[str, Any] = {"namespace": view.meta.namespace, "name": view.meta.name,
                                   "phase": (obj.get("status") or {}).get("phase"),
                                   "times": [], "truncated": False}
            if view.spec is None:
                row |= {"error": str(view.spec_error), "timeZone": "UTC", "suspended": False}
            else:
                row |= {"timeZone": view.spec.time_zone, "suspended": view.spec.suspend,
                        "schedule": view.spec.schedule}
                try:
                    compiled = compile_schedule(view.spec.schedule, time_zone=view.spec.time_zone,
                                                anchor=view.meta.creation or start)
                    times, cut = fires_between(compiled, start, end, limit=per)
                    row |= {"times": [format_time(t) for t in times], "truncated": cut}
                except SpecError as exc:
                    row["error"] = str(exc)
            rows.append(row)
        return json_response({"from": format_time(start), "to": format_time(end), "hours": hours,
                              "schedules": rows})
