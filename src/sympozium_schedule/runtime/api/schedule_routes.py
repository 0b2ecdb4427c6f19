"""The schedule resource's routes: list, read, create, change, pause, backfill, delete
and trigger a schedule.

Apart from the other handlers because these are the ones that write: each keeps
Sympozium's paths and bodies, retries a change on a conflict and answers 409 with
what the object is now, rules that no read-only route needs to carry.
"""

from __future__ import annotations

from aiohttp import web

from sympozium_schedule.core.manual import TriggerRefused
from sympozium_schedule.core.model import Kind, format_time
from sympozium_schedule.ports.store import AlreadyExists, Conflict, NotFound, Ref
from sympozium_schedule.runtime import backfill_requests as backfills
from sympozium_schedule.runtime.api.bodies import (
    read_json,
    read_object,
    schedule_to_create,
    schedule_with_patch,
)
from sympozium_schedule.runtime.api.errors import ApiError, bad_request, not_found
from sympozium_schedule.runtime.api.handlers import SCHEDULE_KIND, Handlers, by_name
from sympozium_schedule.runtime.api.params import (
    RUNS,
    SCHEDULES,
    name_of,
    namespace_of,
    on,
    scope,
    selector,
)
from sympozium_schedule.runtime.api.server import PRINCIPAL, checks, json_response

__all__ = ["ScheduleRoutes"]

_PATCH_RETRIES = 5


class ScheduleRoutes(Handlers):
    async def _conflict(self, namespace: str, name: str, message: str) -> ApiError:
        """409 with what the object is now, so the client can decide again."""
        current = await self._schedule(namespace, name)
        meta = current["metadata"]
        return ApiError(409, message, reason="Conflict", resourceVersion=meta.get("resourceVersion"),
                        generation=meta.get("generation"))

    @checks(on("list", SCHEDULES))
    async def list_schedules(self, request: web.Request) -> web.StreamResponse:
        listing = await self.store.list(Kind.SCHEDULE, namespace=scope(request),
                                        labels=selector(request) or None)
        return json_response(by_name(listing.items))

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
