"""The console's HTTP server: routes, the access checks every request passes, and start/stop.

Every ``/api/`` request goes through :meth:`Console._guard`, in this order:
the ``Host`` must be one this server answers to (a loopback console refuses
other names, which defeats DNS rebinding); a mutating request is refused in
read-only mode and when its ``Origin`` is another site's; the bearer token is
authenticated; then each :class:`~.auth.Check` the route declares is
authorized. Only then does the handler run.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from yarl import URL

from sympozium_schedule.ports.store import (
    AlreadyExists,
    Conflict,
    Invalid,
    NotFound,
    Store,
    StoreError,
    Unavailable,
)
from sympozium_schedule.runtime.api.auth import Access, Check, bearer
from sympozium_schedule.runtime.api.errors import ApiError, forbidden
from sympozium_schedule.runtime.api.settings import ConsoleSettings as ConsoleSettings
from sympozium_schedule.runtime.api.stream import Hub
from sympozium_schedule.runtime.clock import Clock, system_clock
from sympozium_schedule.runtime.informer import Informer

log = structlog.get_logger("console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Checks = Callable[[web.Request], list[Check]]
F = TypeVar("F", bound=Callable[..., Any])
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Who the request's token names (None: no token). aiohttp >= 3.12 types request keys.
_RequestKey = getattr(web, "RequestKey", None)
PRINCIPAL: Any = _RequestKey("principal", object) if _RequestKey is not None else "principal"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATIC = "static"
# A page served by this console may load only its own scripts and styles, and no
# other site may frame it.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def json_response(data: object, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error_response(exc: ApiError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="sympozium-schedule"'} if exc.status == 401 else None
    return json_response(exc.body(), status=exc.status, headers=headers)


def store_error(exc: StoreError) -> ApiError:
    """A store error that reached the guard (handlers map the ones they expect)."""
    text = str(exc)
    if isinstance(exc, NotFound):
        return ApiError(404, text, reason="NotFound")
    if isinstance(exc, AlreadyExists):
        return ApiError(409, text, reason="AlreadyExists")
    if isinstance(exc, Conflict):
        return ApiError(409, text, reason="Conflict")
    if isinstance(exc, Invalid):
        return ApiError(422, text, reason="Invalid")
    if isinstance(exc, Unavailable):
        return ApiError(503, text, reason="ServiceUnavailable")
    return ApiError(500, text, reason="InternalError")


def checks(*make: Callable[[web.Request], Check]) -> Callable[[F], F]:
    """Declare what a route touches; the guard authorizes each before the handler runs."""

    def mark(handler: F) -> F:
        handler.__dict__["console_checks"] = lambda request: [m(request) for m in make]
        return handler

    return mark


def public(handler: F) -> F:
    """A route anyone who can reach the server may call (the API description, the session)."""
    handler.__dict__["console_public"] = True
    return handler


class Console:
    def __init__(self, store: Store, settings: ConsoleSettings, access: Access, *,
                 data_dir: Path | None = None, informers: Iterable[Informer] = (),
                 clock: Clock = system_clock):
        from sympozium_schedule.runtime.api.routes import Routes

        self.store = store
        self.settings = settings
        self.access = access
        self.data_dir = data_dir
        self.clock = clock
        self.hub = Hub(queue_size=settings.queue_size, heartbeat=settings.heartbeat)
        self.hub.watch(informers)
        self.routes = Routes(self)
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._allowed_hosts: frozenset[str] | None = None

    # --- the application ------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=256 * 1024)
        self.routes.register(app.router)
        static = resources.files("sympozium_schedule.runtime.api") / STATIC
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", Path(str(static)), follow_symlinks=False,
                              append_version=False)
        app.on_response_prepare.append(self._headers)
        return app

    async def _index(self, _: web.Request) -> web.StreamResponse:
        page = resources.files("sympozium_schedule.runtime.api") / STATIC / "index.html"
        return web.Response(body=page.read_bytes(), content_type="text/html", charset="utf-8")

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.path.startswith("/static/") or request.path == "/":
            response.headers["Cache-Control"] = "no-cache"

    def _check_host(self, request: web.Request) -> None:
        if self._allowed_hosts is None:
            return
        try:
            host = URL(f"http://{request.host}").host or ""
        except ValueError:
            host = ""
        if host.strip("[]") not in self._allowed_hosts:
            raise ApiError(421, f"this console answers to {', '.join(sorted(self._allowed_hosts))}, "
                                f"not {request.host!r}", reason="MisdirectedRequest")

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser's cross-origin request (curl, the CLI, a script)
        own = f"{request.scheme}://{request.host}"
        if origin != own and origin not in self.settings.allowed_origins:
            raise forbidden(f"cross-origin request refused (Origin {origin!r} is not {own!r})")

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            self._check_host(request)
            if request.path.startswith("/api/"):
                route = request.match_info.route.handler
                is_public = getattr(route, "console_public", False)
                make: Checks | None = getattr(route, "console_checks", None)
                if request.method in MUTATING:
                    if self.settings.read_only:
                        raise forbidden("the console is read-only (started with --console-read-only)")
                    self._check_origin(request)
                if not is_public or request.headers.get("Authorization") is not None:
                    who = await self.access.authenticate(bearer(request.headers.get("Authorization")))
                    request[PRINCIPAL] = who
                    if not is_public:
                        wanted = make(request) if make is not None else []
                        if not wanted and who is None and (
                                self.access.reads_need_token or request.method in MUTATING):
                            await self.access.authorize(None, Check(
                                "create" if request.method in MUTATING else "get", "console"))
                        for check in wanted:
                            await self.access.authorize(who, check)
            return await handler(request)
        except ApiError as exc:
            return error_response(exc)
        except StoreError as exc:
            return error_response(store_error(exc))
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("console request failed", method=request.method, path=request.path)
            return error_response(ApiError(500, "internal error: see the scheduler's log",
                                           reason="InternalError"))

    # --- serving ----------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen; return the base URL. An address in use is an OSError for the caller."""
        settings = self.settings
        if is_loopback(settings.host):
            self._allowed_hosts = LOOPBACK_NAMES | {settings.host}
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            if not (settings.port_fallback and exc.errno == errno.EADDRINUSE):
                await self._runner.cleanup()
                raise OSError(exc.errno, f"the console cannot listen on {settings.host}:"
                                         f"{settings.port}: {exc.strerror}") from exc
            log.warning("console port in use, taking a free one", port=settings.port)
            site = web.TCPSite(self._runner, settings.host, 0)
            await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        port = server.sockets[0].getsockname()[1]
        shown = f"[{settings.host}]" if ":" in settings.host else settings.host
        if settings.host in ("0.0.0.0", "::"):
            shown = "localhost"
        self.url = f"http://{shown}:{port}"
        log.info("console listening", url=self.url, mode=self.access.mode,
                 read_only=settings.read_only)
        return self.url

    async def stop(self) -> None:
        self.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
