"""The REST API's handlers. Paths and bodies follow Sympozium's API (``/api/v1/schedules``,
``?namespace=``, a list is a JSON array of objects) and add what the console needs.
openapi.py describes each route; tests/console checks real responses against it."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sympozium_schedule.core.cron import compile_schedule, load_zone
from sympozium_schedule.core.cron_preview import DstNote, dst_notes, preview
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.fire_times import fires_between, upcoming
from sympozium_schedule.core.manual import TriggerRefused
from sympozium_schedule.core.model import (
    ANNOTATION_SCHEDULED_TIME,
    LABEL_SCHEDULE,
    Kind,
    ScheduleView,
    format_time,
    is_dns1123_label,
    is_dns1123_subdomain,
    parse_time,
)
from sympozium_schedule.ports.store import AlreadyExists, Conflict, NotFound, Obj, Ref
from sympozium_schedule.runtime import backfill_requests as backfills
from sympozium_schedule.runtime.api.auth import Check
from sympozium_schedule.runtime.api.bodies import (
    read_json,
    read_object,
    schedule_to_create,
    schedule_with_patch,
)
from sympozium_schedule.runtime.api.errors import ApiError, bad_request, invalid, not_found
from sympozium_schedule.runtime.api.server import PRINCIPAL, checks, json_response, public
from sympozium_schedule.runtime.paths import run_log, runs_dir

if TYPE_CHECKING:
    from sympozium_schedule.runtime.api.server import Console

SCHEDULES, RUNS, INSTANCES, EVENTS = "sympoziumschedules", "agentruns", "sympoziuminstances", "events"
SCHEDULE_KIND, RUN_KIND = "sympoziumschedule", "agentrun"
MAX_COUNT = 1000
MAX_TIMELINE_HOURS = 31 * 24
TIMELINE_BUDGET = 50_000  # fire times in one timeline answer, across all schedules
TIMELINE_PER_SCHEDULE = 1000
LOG_TAIL = 256 * 1024
_PATCH_RETRIES = 5


# --- reading the request -------------------------------------------------------------------------


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise bad_request(f"{name}: {value!r}: must be true or false", field=name)


def scope(request: web.Request) -> str | None:
    """The namespace asked for (default ``default``); None with ``allNamespaces=true``."""
    if _flag(request, "allNamespaces"):
        return None
    namespace = request.query.get("namespace") or "default"
    if not is_dns1123_label(namespace):
        raise bad_request(f"namespace: {namespace!r}: not a valid namespace (lowercase letters, "
                          "digits and '-', at most 63 characters)", field="namespace")
    return namespace


def namespace_of(request: web.Request) -> str:
    if _flag(request, "allNamespaces"):
        raise bad_request("allNamespaces: only lists span namespaces; name one with ?namespace=",
                          field="allNamespaces")
    found = scope(request)
    assert found is not None
    return found


def name_of(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_dns1123_subdomain(name):
        raise bad_request(f"name: {name!r}: not a valid object name", field="name")
    return name


def selector(request: web.Request) -> dict[str, str | None]:
    """``labelSelector``: ``key=value`` and ``key`` (present), comma-separated, as the CLI's -l."""
    labels: dict[str, str | None] = {}
    for part in (p.strip() for p in request.query.get("labelSelector", "").split(",")):
        if not part:
            continue
        if "!=" in part or part.startswith("!") or " in " in part or " notin " in part:
            raise bad_request(f"labelSelector: {part!r}: only key=value and key (present) are "
                              "supported", field="labelSelector")
        key, sep, want = part.partition("=")
        want = want[1:] if want.startswith("=") else want
        if not key.strip():
            raise bad_request(f"labelSelector: {part!r}: a selector needs a label key",
                              field="labelSelector")
        labels[key.strip()] = want.strip() if sep else None
    return labels


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise bad_request(f"{name}: {text!r}: must be a whole number from {low} to {high}", field=name)
    return value


def on(verb: str, resource: str, *, named: bool = False, group: str = "sympozium.ai"
       ) -> Any:
    def make(request: web.Request) -> Check:
        namespace = scope(request) if not named else namespace_of(request)
        return Check(verb, resource, group=group, namespace=namespace,
                     name=name_of(request) if named else None)

    return make


def _by_name(items: list[Obj]) -> list[Obj]:
    return sorted(items, key=lambda o: (str(o["metadata"].get("namespace")), str(o["metadata"]["name"])))


def _times(times: list[datetime] | tuple[datetime, ...], zone_name: str) -> list[dict[str, str]]:
    zone = load_zone(zone_name)
    return [{"utc": format_time(t), "local": t.astimezone(zone).isoformat()} for t in times]


def _notes(notes: list[DstNote] | tuple[DstNote, ...]) -> list[dict[str, Any]]:
    return [{"kind": n.kind, "at": format_time(n.transition), "date": n.date, "from": n.local_from,
             "to": n.local_to, "matches": list(n.matches), "fires": [format_time(f) for f in n.fires],
             "message": n.message} for n in notes]


def _is_event_for(event: Obj, schedule: Obj) -> bool:
    involved = event.get("involvedObject") or {}
    meta = schedule.get("metadata") or {}
    if involved.get("kind") != schedule.get("kind") or involved.get("name") != meta.get("name"):
        return False
    uid, event_uid = meta.get("uid"), involved.get("uid")
    return not uid or not event_uid or uid == event_uid


def _event_time(event: Obj) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def _run_order(run: Obj) -> tuple[str, str]:
    meta = run.get("metadata") or {}
    when = (meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME) or meta.get(
        "creationTimestamp") or ""
    return str(when), str(meta.get("name"))


class Routes:
    def __init__(self, console: Console):
        self.console = console
        self.store = console.store

    def register(self, router: web.UrlDispatcher) -> None:
        add = router.add_route
        add("GET", "/api/v1/schedules", self.list_schedules)
        add("POST", "/api/v1/schedules", self.create_schedule)
        add("GET", "/api/v1/schedules/{name}", self.get_schedule)
        add("PATCH", "/api/v1/schedules/{name}", self.patch_schedule)
        add("DELETE", "/api/v1/schedules/{name}", self.delete_schedule)
        add("POST", "/api/v1/schedules/{name}/suspend", self.suspend)
        add("POST", "/api/v1/schedules/{name}/backfill", self.backfill)
        add("POST", "/api/v1/schedules/{name}/resume", self.resume)
        add("POST", "/api/v1/schedules/{name}/trigger", self.trigger)
        add("GET", "/api/v1/schedules/{name}/next", self.next_times)
        add("GET", "/api/v1/schedules/{name}/events", self.events)
        add("GET", "/api/v1/runs", self.list_runs)
        add("GET", "/api/v1/runs/{name}", self.get_run)
        add("GET", "/api/v1/runs/{name}/logs", self.run_logs)
        add("GET", "/api/v1/instances", self.list_instances)
        add("GET", "/api/v1/preview", self.preview)
        add("GET", "/api/v1/timeline", self.timeline)
        add("GET", "/api/v1/stream", self.stream)
        add("GET", "/api/v1/session", self.session)
        add("GET", "/api/v1/openapi.json", self.openapi)

    def _now(self) -> datetime:
        return self.console.clock()

    async def _schedule(self, namespace: str, name: str) -> Obj:
        try:
            return await self.store.get(Ref(Kind.SCHEDULE, namespace, name))
        except NotFound as exc:
            raise not_found(SCHEDULE_KIND, name, namespace) from exc

    async def _conflict(self, namespace: str, name: str, message: str) -> ApiError:
        """409 with what the object is now, so the client can decide again."""
        current = await self._schedule(namespace, name)
        meta = current["metadata"]
        return ApiError(409, message, reason="Conflict", resourceVersion=meta.get("resourceVersion"),
                        generation=meta.get("generation"))

    # --- schedules ----------------------------------------------------------------------------

    @checks(on("list", SCHEDULES))
    async def list_schedules(self, request: web.Request) -> web.StreamResponse:
        listing = await self.store.list(Kind.SCHEDULE, namespace=scope(request),
                                        labels=selector(request) or None)
        return json_response(_by_name(listing.items))

    @checks(on("get", SCHEDULES, named=True))
    async def get_schedule(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self._schedule(namespace_of(request), name_of(request)))

    @checks(on("create", SCHEDULES))
    async def create_schedule(self, request: web.Request) -> web.StreamResponse:
        namespace = namespace_of(request)
        obj = schedule_to_create(read_json(await request.read()), namespace=namespace, now=self._now())
        try:
            created = await self.store.create(obj)
        except AlreadyExists as exc:
            name = obj["metadata"].get("name", "")
            raise await self._conflict(
                namespace, name, f'{SCHEDULE_KIND} "{name}" already exists in namespace '
                                 f'"{namespace}"') from exc
        headers = {}
        instance = created["spec"]["instanceRef"]
        try:
            await self.store.get(Ref(Kind.INSTANCE, namespace, instance))
        except NotFound:
            # As apply warns: accepted (the instance may come later), but it waits in Error.
            headers["Warning"] = (f'299 - "SympoziumInstance {instance!r} not found in namespace '
                                  f'{namespace!r}: the schedule waits in phase Error until it exists"')
        return json_response(created, status=201, headers=headers)

    async def _patch(self, request: web.Request, body: object) -> web.StreamResponse:
        namespace, name = namespace_of(request), name_of(request)
        for _ in range(_PATCH_RETRIES):
            current = await self._schedule(namespace, name)
            updated, expected = schedule_with_patch(current, body, now=self._now())
            updated["metadata"]["resourceVersion"] = expected or current["metadata"].get(
                "resourceVersion")
            try:
                return json_response(await self.store.update(updated))
            except Conflict as exc:
                if expected is not None:
                    raise await self._conflict(
                        namespace, name, f'{SCHEDULE_KIND} "{name}" changed since resourceVersion '
                                         f'{expected}: read it again and retry') from exc
                continue  # no precondition given: merge onto the newer object
            except NotFound as exc:
                raise not_found(SCHEDULE_KIND, name, namespace) from exc
        raise await self._conflict(namespace, name, f'{SCHEDULE_KIND} "{name}" keeps changing; retry')

    @checks(on("patch", SCHEDULES, named=True))
    async def patch_schedule(self, request: web.Request) -> web.StreamResponse:
        return await self._patch(request, read_json(await request.read()))

    @checks(on("patch", SCHEDULES, named=True))
    async def suspend(self, request: web.Request) -> web.StreamResponse:
        body = read_object(await request.read(), optional=True)
        unknown = set(body) - {"note"}
        if unknown:
            raise bad_request(f"{sorted(unknown)[0]}: unknown field (known: note)", field="note")
        note = body.get("note")
        if note is not None and (not isinstance(note, str) or not note.strip() or len(note) > 1024):
            raise bad_request("note: must be a string of 1 to 1024 characters", field="note")
        who = request.get(PRINCIPAL)
        return await self._patch(request, {
            "suspend": True, "suspendReason": note,
            "suspendedBy": f"{who.name} (console)" if who is not None else "console"})

    @checks(on("patch", SCHEDULES, named=True))
    async def resume(self, request: web.Request) -> web.StreamResponse:
        return await self._patch(request, {"suspend": False, "suspendedBy": None,
                                           "suspendReason": None})

    @checks(on("patch", SCHEDULES, named=True))
    async def backfill(self, request: web.Request) -> web.StreamResponse:
        """Ask for a backfill: the annotation the controller adopts (as `backfill` does)."""
        body = read_object(await request.read())
        unknown = set(body) - {"from", "to", "overlap"}
        if unknown:
            raise bad_request(f"{sorted(unknown)[0]}: unknown field (known: from, to, overlap)",
                              field=sorted(unknown)[0])
        try:
            text, asked = backfills.check(body.get("from"), body.get("to"),
                                          body.get("overlap", "BufferAll"), now=self.console.clock())
        except backfills.Refused as exc:
            raise bad_request(str(exc), field="from") from exc
        namespace, name = namespace_of(request), name_of(request)
        try:
            await backfills.ask(self.store, namespace, name, text)
        except NotFound as exc:
            raise not_found(SCHEDULE_KIND, name, namespace) from exc
        except backfills.KeptChanging as exc:
            raise ApiError(409, str(exc), reason="Conflict") from exc
        return json_response({"id": asked.id, "from": format_time(asked.start),
                              "to": format_time(min(asked.end, self.console.clock())),
                              "overlap": asked.overlap}, status=202)

    @checks(on("delete", SCHEDULES, named=True))
    async def delete_schedule(self, request: web.Request) -> web.StreamResponse:
        namespace, name = namespace_of(request), name_of(request)
        try:
            await self.store.delete(Ref(Kind.SCHEDULE, namespace, name))
        except NotFound as exc:
            raise not_found(SCHEDULE_KIND, name, namespace) from exc
        return web.Response(status=204)

    @checks(on("get", SCHEDULES, named=True), on("create", RUNS))
    async def trigger(self, request: web.Request) -> web.StreamResponse:
        from sympozium_schedule.runtime.controller import trigger_now

        namespace, name = namespace_of(request), name_of(request)
        try:
            decision = await trigger_now(self.store, namespace, name, clock=self.console.clock)
        except NotFound as exc:
            raise not_found(SCHEDULE_KIND, name, namespace) from exc
        except TriggerRefused as exc:
            raise ApiError(409, f"cannot trigger {namespace}/{name}: {exc}",
                           reason="TriggerRefused") from exc
        assert decision.create is not None and decision.tick is not None
        return json_response({"name": decision.create["metadata"]["name"], "namespace": namespace,
                              "schedule": name, "scheduledTime": format_time(decision.tick)},
                             status=201)

    @checks(on("get", SCHEDULES, named=True))
    async def next_times(self, request: web.Request) -> web.StreamResponse:
        count = _int(request, "count", 5, 1, MAX_COUNT)
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

    @checks(on("get", SCHEDULES, named=True), on("list", EVENTS, group=""))
    async def events(self, request: web.Request) -> web.StreamResponse:
        namespace = namespace_of(request)
        obj = await self._schedule(namespace, name_of(request))
        listing = await self.store.list(Kind.EVENT, namespace=namespace)
        mine = sorted((e for e in listing.items if _is_event_for(e, obj)), key=_event_time)
        return json_response(mine)

    # --- runs and instances ---------------------------------------------------------------------

    @checks(on("list", RUNS))
    async def list_runs(self, request: web.Request) -> web.StreamResponse:
        labels = selector(request)
        schedule = request.query.get("schedule")
        if schedule is not None:
            if not is_dns1123_subdomain(schedule):
                raise bad_request(f"schedule: {schedule!r}: not a valid name", field="schedule")
            labels[LABEL_SCHEDULE] = schedule
        listing = await self.store.list(Kind.AGENT_RUN, namespace=scope(request), labels=labels or None)
        return json_response(sorted(listing.items, key=_run_order, reverse=True))

    @checks(on("get", RUNS, named=True))
    async def get_run(self, request: web.Request) -> web.StreamResponse:
        namespace, name = namespace_of(request), name_of(request)
        try:
            return json_response(await self.store.get(Ref(Kind.AGENT_RUN, namespace, name)))
        except NotFound as exc:
            raise not_found(RUN_KIND, name, namespace) from exc

    @checks(on("get", RUNS, named=True))
    async def run_logs(self, request: web.Request) -> web.StreamResponse:
        namespace, name = namespace_of(request), name_of(request)
        tail = _int(request, "tailBytes", LOG_TAIL, 1, 16 * 1024 * 1024)
        try:
            await self.store.get(Ref(Kind.AGENT_RUN, namespace, name))
        except NotFound as exc:
            raise not_found(RUN_KIND, name, namespace) from exc
        data_dir = self.console.data_dir
        if data_dir is None:
            raise ApiError(404, "this scheduler does not run agents itself (Kubernetes mode): "
                                "read the run's pod logs with kubectl logs", reason="NoLogs")
        path = run_log(data_dir, namespace, name)
        if path.parent.parent.parent != runs_dir(data_dir):
            raise bad_request(f"name: {name!r}: not a valid object name", field="name")
        text = _read_tail(path, tail)
        if text is None:
            raise ApiError(404, f'{RUN_KIND} "{name}" has no log yet (it has not started, or ran '
                                "elsewhere)", reason="NoLogs")
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    @checks(on("list", INSTANCES))
    async def list_instances(self, request: web.Request) -> web.StreamResponse:
        listing = await self.store.list(Kind.INSTANCE, namespace=scope(request),
                                        labels=selector(request) or None)
        return json_response(_by_name(listing.items))

    # --- the console's own views ------------------------------------------------------------------

    async def preview(self, request: web.Request) -> web.StreamResponse:
        """The cron editor's preview: next fire times and daylight-saving notes."""
        expression = request.query.get("schedule", "")
        zone = request.query.get("timeZone") or "UTC"
        count = _int(request, "count", 5, 1, MAX_COUNT)
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
        hours = _int(request, "hours", 24, 1, MAX_TIMELINE_HOURS)
        listing = await self.store.list(Kind.SCHEDULE, namespace=scope(request),
                                        labels=selector(request) or None)
        items = _by_name(listing.items)
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


def _read_tail(path: os.PathLike[str], size: int) -> str | None:
    """The last ``size`` bytes of a log, as text. The agent can write to its run folder and
    so could put a symlink where its log was: never follow one, read regular files only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ApiError(403, f"the run's log cannot be read safely ({exc.strerror})",
                       reason="Forbidden") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ApiError(403, "the run's log is not a regular file", reason="Forbidden")
        start = max(0, info.st_size - size)
        os.lseek(fd, start, os.SEEK_SET)
        data = os.read(fd, size)
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    if start > 0:
        text = f"[... the first {start} bytes are left out ...]\n" + text.split("\n", 1)[-1]
    return text
