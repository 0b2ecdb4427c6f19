"""Who is asking, and may they: the console's access checks.

Two implementations of :class:`Access`:

* :class:`TokenAccess` (embedded mode): one random token, generated at start into
  ``<data-dir>/console.token`` (owner-only) and printed with the address. Mutating
  requests need it as ``Authorization: Bearer <token>``; reads need it too unless
  the console listens on loopback only.
* :class:`KubernetesAccess` (Kubernetes mode): the bearer token is the person's own
  Kubernetes token, checked with a TokenReview, and every request is authorized
  with a SubjectAccessReview for the verb and resource it touches, so the console
  never lets anyone do what ``kubectl`` would not let them do. Answers are cached
  briefly (a page makes several requests at once); a revoked token or role stops
  working within the cache's lifetime.

No cookies are ever issued or read, so a cross-site page cannot ride on a
person's session (no CSRF surface); the server also refuses mutating requests
whose ``Origin`` is not its own.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sympozium_schedule.ports.access import Check, Principal, Review, Reviewer
from sympozium_schedule.runtime.api.errors import ApiError, forbidden, unauthorized

__all__ = ["Access", "Check", "KubernetesAccess", "Principal", "Review", "Reviewer", "TokenAccess"]

TOKEN_FILE = "console.token"


class Access(Protocol):
    mode: str

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal the token names; None without a token; :class:`ApiError`
        (401) for a token that is not valid."""
        ...

    async def authorize(self, who: Principal | None, check: Check) -> None:
        """Nothing when allowed; :class:`ApiError` (401 or 403) otherwise."""
        ...

    @property
    def reads_need_token(self) -> bool: ...


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent)."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


# --- embedded: one token ---------------------------------------------------------------------


def write_token(data_dir: Path) -> str:
    """A new random token in ``<data-dir>/console.token``, readable by the owner only.

    Written to a private temporary file and renamed over the old one, so the token
    is never readable by others, not even for a moment."""
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    tmp = data_dir / f".{TOKEN_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


class TokenAccess:
    """Embedded mode: whoever holds the token may do everything (it is their machine's
    scheduler, as the data directory is); without it, reads only, and only on loopback."""

    mode = "embedded"

    def __init__(self, token: str, *, reads_need_token: bool):
        if len(token) < 16:
            raise ValueError("a console token must be at least 16 characters")
        self._digest = hashlib.sha256(token.encode()).digest()
        self._reads_need_token = reads_need_token

    @property
    def reads_need_token(self) -> bool:
        return self._reads_need_token

    async def authenticate(self, token: str | None) -> Principal | None:
        if token is None:
            return None
        # Digests of equal length, compared in constant time: the token's length leaks nothing.
        if not secrets.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest):
            raise unauthorized("the token is not valid (see console.token in the data directory)")
        return Principal("console-token")

    async def authorize(self, who: Principal | None, check: Check) -> None:
        if who is not None:
            return
        if check.mutating:
            raise unauthorized(f"{check} needs the console token (Authorization: Bearer <token>; "
                               "it is in console.token in the data directory)")
        if self._reads_need_token:
            raise unauthorized("this console needs its token for reads too (it listens beyond "
                               "loopback); send Authorization: Bearer <token>")


# --- Kubernetes: TokenReview and SubjectAccessReview ----------------------------------------------


class _Ttl:
    """A small LRU with expiry: answers are reused for ``ttl`` seconds."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]):
        self.ttl, self.size, self.clock = ttl, size, clock
        self._items: OrderedDict[object, tuple[float, object]] = OrderedDict()

    def get(self, key: object) -> object | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[0] < self.clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return hit[1]

    def put(self, key: object, value: object) -> None:
        self._items[key] = (self.clock() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class KubernetesAccess:
    """Every request authenticated and authorized by the cluster, as kubectl's would be."""

    mode = "kubernetes"
    reads_need_token = True

    def __init__(self, reviewer: Reviewer, *, ttl: float = 10.0, size: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self._reviewer = reviewer
        self._tokens = _Ttl(ttl, size, clock)
        self._decisions = _Ttl(ttl, size, clock)
        self.reviews = 0  # API calls made (for tests of the cache)

    async def authenticate(self, token: str | None) -> Principal | None:
        if token is None:
            return None
        key = hashlib.sha256(token.encode()).digest()  # never keep the token itself
        cached = self._tokens.get(key)
        if not isinstance(cached, Review):
            try:
                cached = await self._reviewer.review_token(token)
            except ApiError:
                raise
            except Exception as exc:
                raise ApiError(503, f"cannot check the token with the Kubernetes API: {exc}",
                               reason="ServiceUnavailable") from exc
            self.reviews += 1
            self._tokens.put(key, cached)
        if not cached.authenticated or cached.user is None:
            raise unauthorized("the Kubernetes API did not accept this token"
                               + (f": {cached.error}" if cached.error else ""))
        return cached.user

    async def authorize(self, who: Principal | None, check: Check) -> None:
        if who is None:
            raise unauthorized("send your Kubernetes token: Authorization: Bearer <token> "
                               "(e.g. kubectl create token <serviceaccount>)")
        key = (who.key(), check)
        cached = self._decisions.get(key)
        if not isinstance(cached, tuple):
            try:
                cached = await self._reviewer.may(who, check)
            except Exception as exc:
                raise ApiError(503, f"cannot check access with the Kubernetes API: {exc}",
                               reason="ServiceUnavailable") from exc
            self.reviews += 1
            self._decisions.put(key, cached)
        allowed, reason = cached
        if not allowed:
            raise forbidden(f'user "{who.name}" may not {check}'
                            + (f" ({reason})" if reason else ""))
