"""The NATS auth callout: every connection that is not one of the scheduler's own
is decided here, and gets the subjects of one agent run or nothing.

The server sends each such CONNECT to ``$SYS.REQ.USER.AUTH`` in the callout
account (a subject only the server can publish to there) as a JWT; we answer
with a user JWT signed by the issuer key the server trusts, naming the account
and the permissions, with an expiry. Authentication costs one round trip per
connection, nothing per message.

Who decides is pluggable (:data:`Authorizer`): :class:`RunTokens` for embedded
mode (a random secret per run, minted when the run's bridge starts, revoked when
it stops), a ServiceAccount-token check for Kubernetes (``runtime.bus_identity``).
A revoked run's live connections are disconnected through the system account.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from sympozium_schedule.adapters.nats import jwt
from sympozium_schedule.adapters.nats.subjects import permissions
from sympozium_schedule.ports.bus import Broker, BusConnection, BusUnavailable, Credential, RunSubjects

log = structlog.get_logger("nats-callout")

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"


@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    """What a client presented, as the server reports it."""

    server_id: str
    user_nkey: str
    cid: int
    host: str
    name: str
    token: str | None
    user: str | None
    password: str | None

    @classmethod
    def from_request(cls, claims: dict[str, Any]) -> ConnectAttempt:
        nats_claims = claims.get("nats") or {}
        opts = nats_claims.get("connect_opts") or {}
        info = nats_claims.get("client_info") or {}
        server = nats_claims.get("server_id") or {}
        user_nkey, server_id = nats_claims.get("user_nkey"), server.get("id")
        if not isinstance(user_nkey, str) or not isinstance(server_id, str):
            raise jwt.JwtError("an authorization request without user_nkey or server_id")

        def text(value: object) -> str | None:
            return value if isinstance(value, str) and value else None

        cid = info.get("id")
        return cls(server_id, user_nkey, cid if isinstance(cid, int) else 0,
                   str(info.get("host") or ""), str(opts.get("name") or ""),
                   text(opts.get("auth_token")), text(opts.get("user")), text(opts.get("pass")))


class Refused(Exception):
    """Not allowed to connect; the message goes to the server's log, not to the client."""


@dataclass(frozen=True, slots=True)
class Grant:
    name: str
    permissions: jwt.Permissions
    ttl: float
    # Set for grants that can be revoked: the connection is remembered under it.
    revocable_as: str | None = None


Authorizer = Callable[[ConnectAttempt], Awaitable[Grant]]


@dataclass(slots=True)
class Callout:
    signer: jwt.Signer
    account: str
    authorize: Authorizer
    granted: int = 0
    refused: int = 0
    _live: dict[str, set[tuple[str, int]]] = field(default_factory=dict)

    async def answer(self, request: bytes) -> bytes:
        """The signed response to one authorization request (a refusal on any doubt)."""
        claims = jwt.decode(request)
        attempt = ConnectAttempt.from_request(claims)
        try:
            grant = await self.authorize(attempt)
        except Refused as exc:
            self.refused += 1
            log.info("connection refused", host=attempt.host, name=attempt.name, reason=str(exc))
            return jwt.authorization_response(self.signer, user_nkey=attempt.user_nkey,
                                              server_id=attempt.server_id, error=str(exc)).encode()
        self.granted += 1
        if grant.revocable_as is not None:
            self._live.setdefault(grant.revocable_as, set()).add((attempt.server_id, attempt.cid))
        user = jwt.user_jwt(self.signer, user_nkey=attempt.user_nkey, account=self.account,
                            name=grant.name, permissions=grant.permissions, ttl=grant.ttl)
        return jwt.authorization_response(self.signer, user_nkey=attempt.user_nkey,
                                          server_id=attempt.server_id, user=user).encode()

    async def _on_request(self, data: bytes, headers: Mapping[str, str]) -> bytes | None:
        if headers.get("Nats-Server-Xkey"):
            log.error("the server encrypts callout requests (xkey); configure it without")
            return None
        try:
            return await self.answer(data)
        except jwt.JwtError as exc:
            log.warning("malformed authorization request ignored", error=str(exc))
        except Exception:
            log.exception("authorizer failed; the connection will time out")
        return None

    def forget(self, key: str) -> set[tuple[str, int]]:
        return self._live.pop(key, set())

    async def serve(self, broker: Broker, credential: Credential, *,
                    ready: asyncio.Event | None = None) -> None:
        """Answer authorization requests until cancelled (reconnecting as needed)."""
        bus = await broker.connect_retrying(name="sympozium-schedule-callout",
                                            credential=credential, max_delay=2.0)
        try:
            await bus.serve(AUTH_SUBJECT, self._on_request)
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        finally:
            await bus.close()


class Disconnector:
    """Closes a revoked run's live connections (the system account's KICK request)."""

    def __init__(self, broker: Broker, credential: Credential):
        self._broker, self._credential = broker, credential
        self._bus: BusConnection | None = None

    async def kick(self, connections: set[tuple[str, int]]) -> int:
        if not connections:
            return 0
        if self._bus is None or not self._bus.usable:
            self._bus = await self._broker.connect_retrying(
                name="sympozium-schedule-system", credential=self._credential, max_delay=2.0)
        kicked = 0
        for server_id, cid in connections:
            try:
                await self._bus.request(f"$SYS.REQ.SERVER.{server_id}.KICK",
                                        orjson.dumps({"cid": cid}), timeout=2.0)
                kicked += 1
            except BusUnavailable as exc:
                log.info("could not disconnect a revoked connection", cid=cid, error=str(exc))
        return kicked

    async def close(self) -> None:
        if self._bus is not None:
            await self._bus.close()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class RunTokens:
    """Embedded mode's credentials: one random secret per agent run, held only by
    the scheduler process that runs the run's bridge, valid until revoked."""

    def __init__(self, *, result_stream: str, ttl: float = 3600.0):
        self.result_stream = result_stream
        self.ttl = ttl
        self._runs: dict[bytes, RunSubjects] = {}
        self.callout: Callout | None = None
        self.disconnector: Disconnector | None = None

    def mint(self, run: RunSubjects) -> str:
        token = secrets.token_urlsafe(32)
        self._runs[_digest(token)] = run
        return token

    async def revoke(self, token: str) -> None:
        """The token stops working now: no new connection, live ones disconnected."""
        digest = _digest(token)
        if self._runs.pop(digest, None) is None or self.callout is None:
            return
        live = self.callout.forget(digest.hex())
        if self.disconnector is not None:
            await self.disconnector.kick(live)

    async def authorize(self, attempt: ConnectAttempt) -> Grant:
        if attempt.token is None:
            raise Refused("no credential presented")
        # Looked up by its SHA-256, so lookup timing tells nothing about the secret's bytes.
        digest = _digest(attempt.token)
        run = self._runs.get(digest)
        if run is None:
            raise Refused("unknown or revoked run credential")
        return Grant(f"bridge {run.namespace}/{run.run}", permissions(run, self.result_stream),
                     self.ttl, revocable_as=digest.hex())
