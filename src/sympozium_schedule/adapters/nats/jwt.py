"""NATS JWTs for the auth callout: decode the server's request, sign our answer.

A NATS JWT is ``base64url(header).base64url(claims).base64url(ed25519 signature)``
with the header ``{"typ":"JWT","alg":"ed25519-nkey"}``, the signature made by an
nkey (``nkeys``, nats-io's own library, does the key encoding and signing).
Written here rather than taken from ``nats-jwt`` (PyPI): that package says of
itself that it is untested and in development, pins ``pytz<2025``, and has no
authorization request/response claims, which are the only ones we need.
Only what the callout exchange uses is here (ADR-26 of nats-architecture-and-design).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

import nkeys
import orjson

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class JwtError(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER_B64 = _b64(orjson.dumps(HEADER))


def new_user_seed() -> str:
    """A fresh user nkey seed (``SU...``): how the scheduler's own parts log in."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    """The public nkey (``U...``, ``A...``) of a seed."""
    try:
        public: bytes = nkeys.from_seed(seed.strip().encode()).public_key
    except Exception as exc:  # nkeys raises assorted errors for a bad seed
        raise JwtError(f"not an nkey seed: {type(exc).__name__}") from exc
    return public.decode()


def new_account_seed() -> str:
    """A fresh account nkey seed (``SA...``): the issuer the server trusts for callout answers."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT)
    return seed.decode()


@dataclass(frozen=True, slots=True)
class Signer:
    """An account key pair that signs user JWTs and authorization responses."""

    keys: Any  # nkeys.KeyPair (untyped library)
    public_key: str

    @classmethod
    def from_seed(cls, seed: str) -> Signer:
        try:
            keys = nkeys.from_seed(seed.strip().encode())
            public = keys.public_key.decode()
        except Exception as exc:  # nkeys raises assorted errors for a bad seed
            raise JwtError(f"not an nkey seed: {type(exc).__name__}") from exc
        if not public.startswith("A"):
            raise JwtError("the callout issuer must be an account nkey (a seed starting with SA)")
        return cls(keys, public)

    def encode(self, claims: dict[str, Any]) -> str:
        body = f"{_HEADER_B64}.{_b64(orjson.dumps(claims))}"
        return f"{body}.{_b64(self.keys.sign(body.encode()))}"


def decode(token: str | bytes) -> dict[str, Any]:
    """The claims of a JWT, unverified: the callout request arrives on a subject only
    the server can publish to (``$SYS.REQ.USER.AUTH`` in the callout account)."""
    text = token.decode() if isinstance(token, bytes) else token
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise JwtError(f"a JWT has 3 parts, this has {len(parts)}")
    try:
        claims = orjson.loads(_unb64(parts[1]))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise JwtError(f"undecodable JWT claims: {exc}") from exc
    if not isinstance(claims, dict):
        raise JwtError("JWT claims are not an object")
    return claims


def _jti(claims: dict[str, Any]) -> str:
    return base64.b32encode(hashlib.sha256(orjson.dumps(claims)).digest()).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def claims(self) -> dict[str, Any]:
        # An empty allow list would mean "everything": deny all explicitly instead.
        def side(allow: tuple[str, ...]) -> dict[str, Any]:
            return {"allow": list(allow)} if allow else {"deny": [">"]}

        return {"pub": side(self.publish), "sub": side(self.subscribe)}


def user_jwt(signer: Signer, *, user_nkey: str, account: str, name: str, permissions: Permissions,
             ttl: float, now: float | None = None) -> str:
    """A user JWT for the connection the server is asking about. In server-config
    mode ``aud`` names the account (by name) the user is placed in."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": signer.public_key, "sub": user_nkey, "aud": account, "name": name,
        "iat": issued, "exp": issued + max(1, int(ttl)),
        "nats": {**permissions.claims(), "type": "user", "version": 2},
    }
    claims["jti"] = _jti(claims)
    return signer.encode(claims)


def authorization_response(signer: Signer, *, user_nkey: str, server_id: str,
                           user: str | None = None, error: str | None = None,
                           now: float | None = None) -> str:
    """The callout's answer: a user JWT, or an error the server logs and refuses with."""
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user is not None:
        nats["jwt"] = user
    else:
        nats["error"] = error or "not authorized"
    claims: dict[str, Any] = {"iss": signer.public_key, "sub": user_nkey, "aud": server_id,
                              "iat": int(now if now is not None else time.time()), "nats": nats}
    claims["jti"] = _jti(claims)
    return signer.encode(claims)
