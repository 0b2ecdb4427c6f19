"""What the scheduler leaves behind, for the console: a schedule's events, the runs and
their logs, and the instances.

Apart from the other handlers because these only read what exists, and one of them
reads a file the agent could write to (its log), which needs care no other route does.
"""

from __future__ import annotations

import os
import stat

from aiohttp import web

from sympozium_schedule.core.model import (
    ANNOTATION_SCHEDULED_TIME,
    LABEL_SCHEDULE,
    Kind,
    is_dns1123_subdomain,
)
from sympozium_schedule.ports.store import NotFound, Obj, Ref
from sympozium_schedule.runtime.api.errors import ApiError, bad_request, not_found
from sympozium_schedule.runtime.api.handlers import RUN_KIND, Handlers, by_name
from sympozium_schedule.runtime.api.params import (
    EVENTS,
    INSTANCES,
    RUNS,
    SCHEDULES,
    int_param,
    name_of,
    namespace_of,
    on,
    scope,
    selector,
)
from sympozium_schedule.runtime.api.server import checks, json_response
from sympozium_schedule.runtime.paths import run_log, runs_dir

__all__ = ["RecordRoutes"]

LOG_TAIL = 256 * 1024


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


class RecordRoutes(Handlers):
    @checks(on("get", SCHEDULES, named=True), on("list", EVENTS, group=""))
    async def events(self, request: web.Request) -> web.StreamResponse:
        namespace = namespace_of(request)
        obj = await self._schedule(namespace, name_of(request))
        listing = await self.store.list(Kind.EVENT, namespace=namespace)
        mine = sorted((e for e in listing.items if _is_event_for(e, obj)), key=_event_time)
        return json_response(mine)

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
        tail = int_param(request, "tailBytes", LOG_TAIL, 1, 16 * 1024 * 1024)
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
        return json_response(by_name(listing.items))


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
