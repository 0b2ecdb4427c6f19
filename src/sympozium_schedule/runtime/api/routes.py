"""The REST API's route table. Paths and bodies follow Sympozium's API (``/api/v1/schedules``,
``?namespace=``, a list is a JSON array of objects) and add what the console needs.
openapi.py describes each route; tests/console checks real responses against it.

The handlers live in groups by what they do (:mod:`~.schedule_routes`,
:mod:`~.fire_routes`, :mod:`~.record_routes`); the table stays here, in one place and
in one order, beside the few routes about the console itself (its stream, session
and API description)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from sympozium_schedule.runtime.api.fire_routes import FireRoutes
from sympozium_schedule.runtime.api.params import RUNS, SCHEDULES, on, scope
from sympozium_schedule.runtime.api.record_routes import RecordRoutes
from sympozium_schedule.runtime.api.schedule_routes import ScheduleRoutes
from sympozium_schedule.runtime.api.server import PRINCIPAL, checks, json_response, public

if TYPE_CHECKING:
    from sympozium_schedule.runtime.api.server import Console

__all__ = ["Routes"]


class Routes:
    def __init__(self, console: Console):
        self.console = console
        self.schedules = ScheduleRoutes(console)
        self.fires = FireRoutes(console)
        self.records = RecordRoutes(console)

    def register(self, router: web.UrlDispatcher) -> None:
        add = router.add_route
        s, f, r = self.schedules, self.fires, self.records
        add("GET", "/api/v1/schedules", s.list_schedules)
        add("POST", "/api/v1/schedules", s.create_schedule)
        add("GET", "/api/v1/schedules/{name}", s.get_schedule)
        add("PATCH", "/api/v1/schedules/{name}", s.patch_schedule)
        add("DELETE", "/api/v1/schedules/{name}", s.delete_schedule)
        add("POST", "/api/v1/schedules/{name}/suspend", s.suspend)
        add("POST", "/api/v1/schedules/{name}/backfill", s.backfill)
        add("POST", "/api/v1/schedules/{name}/resume", s.resume)
        add("POST", "/api/v1/schedules/{name}/trigger", s.trigger)
        add("GET", "/api/v1/schedules/{name}/next", f.next_times)
        add("GET", "/api/v1/schedules/{name}/events", r.events)
        add("GET", "/api/v1/runs", r.list_runs)
        add("GET", "/api/v1/runs/{name}", r.get_run)
        add("GET", "/api/v1/runs/{name}/logs", r.run_logs)
        add("GET", "/api/v1/instances", r.list_instances)
        add("GET", "/api/v1/preview", f.preview)
        add("GET", "/api/v1/timeline", f.timeline)
        add("GET", "/api/v1/stream", self.stream)
        add("GET", "/api/v1/session", self.session)
        add("GET", "/api/v1/openapi.json", self.openapi)

    # --- the console itself -----------------------------------------------------------------------

    @checks(on("watch", SCHEDULES), on("watch", RUNS))
    async def stream(self, request: web.Request) -> web.StreamResponse:
        return await self.console.hub.serve(request, scope(request), {
            "mode": self.console.access.mode, "readOnly": self.console.settings.read_only})

    @public
    async def session(self, request: web.Request) -> web.StreamResponse:
        who = request.get(PRINCIPAL)
        return json_response({
            "mode": self.console.access.mode,
            "readOnly": self.console.settings.read_only,
            "readsNeedToken": self.console.access.reads_need_token,
            "authenticated": who is not None,
            "user": who.name if who is not None else None,
            "logs": self.console.data_dir is not None,
        })

    @public
    async def openapi(self, _: web.Request) -> web.StreamResponse:
        from sympozium_schedule.runtime.api.openapi import document

        return json_response(document())
