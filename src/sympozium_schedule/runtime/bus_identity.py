"""Kubernetes mode's answer to "which agent run is this connection?" for the NATS
auth callout.

An agent run's bridge (the sidecar in the run's pod) connects presenting its pod's
ServiceAccount token (a projected token, bound to the pod). The callout asks the
API server (TokenReview) whose it is: a valid token bound to a pod names the pod,
and the AgentRun whose ``status.podName`` is that pod, in the token's namespace, is
the run. A finished run (Succeeded, Failed) gets nothing, so a credential stops
working when its run ends (a connection already open lasts until its user JWT
expires, ``ttl``; the bridge then reconnects and is asked again).

The operator configures the callout in Sympozium's NATS server and gives the
router the matching secrets in one file (:class:`CalloutConfig`, see
docs/security.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml

from sympozium_schedule.adapters.nats.callout import ConnectAttempt, Grant, Refused
from sympozium_schedule.adapters.nats.jwt import JwtError, Signer
from sympozium_schedule.adapters.nats.subjects import permissions
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.bus import RESULT_STREAM, Credential, RunSubjects
from sympozium_schedule.ports.store import Store, StoreError

log = structlog.get_logger("bus-identity")

POD_NAME = "authentication.kubernetes.io/pod-name"
FINISHED = ("Succeeded", "Failed")


class CalloutConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class CalloutConfig:
    """The file given to ``router --auth-callout`` (YAML or JSON), from a Secret:

    ``issuerSeed`` (the account nkey seed whose public key is the server's
    ``auth_callout.issuer``), ``account`` (where bridges are placed: the account
    of the router's streams), the callout's own login (``calloutUser`` and
    ``calloutPassword``, or ``calloutNkeySeed``; listed in ``auth_users``), and
    optionally ``audience`` (of the projected token the sidecar presents) and
    ``ttlSeconds`` (how long one authorization lasts; default 600)."""

    issuer_seed: str
    account: str
    login: Credential
    audience: str | None = None
    ttl: float = 600.0

    @classmethod
    def load(cls, path: Path) -> CalloutConfig:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CalloutConfigError(f"cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise CalloutConfigError("must be a mapping (issuerSeed, account, calloutUser, ...)")

        def text(key: str, *, required: bool = True) -> str | None:
            value = data.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value.strip():
                raise CalloutConfigError(f"{key}: a non-empty string is required")
            return value.strip()

        issuer = text("issuerSeed")
        assert issuer is not None
        try:
            Signer.from_seed(issuer)
        except JwtError as exc:
            raise CalloutConfigError(f"issuerSeed: {exc}") from exc
        seed = text("calloutNkeySeed", required=False)
        user = text("calloutUser", required=seed is None)
        login = (Credential(nkey_seed=seed) if seed is not None
                 else Credential(user=user, password=text("calloutPassword")))
        ttl = data.get("ttlSeconds", 600)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 10 <= ttl <= 86400:
            raise CalloutConfigError(f"ttlSeconds: {ttl!r}: a number of seconds from 10 to 86400")
        account = text("account")
        assert account is not None
        return cls(issuer, account, login, text("audience", required=False), float(ttl))


@dataclass(frozen=True, slots=True)
class Reviewed:
    """What the API server says a token is."""

    username: str
    extra: dict[str, list[str]]


Review = Callable[[str], Awaitable[Reviewed]]


def lightkube_review(client: Any, audience: str | None) -> Review:
    """TokenReview through a lightkube AsyncClient (needs ``create tokenreviews``)."""
    from lightkube.models.authentication_v1 import TokenReviewSpec
    from lightkube.resources.authentication_v1 import TokenReview

    async def review(token: str) -> Reviewed:
        try:
            result = await client.create(TokenReview(spec=TokenReviewSpec(
                token=token, audiences=[audience] if audience else None)))
        except Exception as exc:  # httpx / ApiError: the connection is refused, not crashed
            raise Refused(f"TokenReview failed: {type(exc).__name__}") from exc
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            raise Refused(f"the token is not valid: {(status.error if status else None) or 'unknown'}")
        return Reviewed(status.user.username or "", dict(status.user.extra or {}))

    return review


class ServiceAccountTokens:
    """The callout's authorizer in Kubernetes mode."""

    def __init__(self, store: Store, review: Review, *, ttl: float = 600.0,
                 result_stream: str = RESULT_STREAM):
        self.store = store
        self.review = review
        self.ttl = ttl
        self.result_stream = result_stream

    async def authorize(self, attempt: ConnectAttempt) -> Grant:
        token = attempt.token or attempt.password
        if not token:
            raise Refused("no credential presented")
        who = await self.review(token)
        parts = who.username.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            raise Refused(f"{who.username!r} is not a ServiceAccount")
        namespace = parts[2]
        pods = who.extra.get(POD_NAME) or []
        if len(pods) != 1:
            raise Refused("the token is not bound to a pod: mount a projected ServiceAccount token")
        try:
            runs = await self.store.list(Kind.AGENT_RUN, namespace=namespace)
        except StoreError as exc:
            raise Refused(f"cannot look up AgentRuns: {exc}") from exc
        found = [r for r in runs.items if ((r.get("status") or {}).get("podName")) == pods[0]]
        if len(found) != 1:
            raise Refused(f"pod {namespace}/{pods[0]} is not the pod of one AgentRun")
        run = found[0]
        phase = (run.get("status") or {}).get("phase")
        name = run["metadata"]["name"]
        if phase in FINISHED:
            raise Refused(f"AgentRun {namespace}/{name} has finished ({phase})")
        instance = str((run.get("spec") or {}).get("instanceRef") or "")
        if not instance:
            raise Refused(f"AgentRun {namespace}/{name} names no instance")
        subjects = RunSubjects(namespace, instance, name)
        log.info("bridge authorized", namespace=namespace, run=name, instance=instance)
        return Grant(f"bridge {namespace}/{name}", permissions(subjects, self.result_stream), self.ttl)
