"""A request message, read: who asks (from the subject the bus vouched for), which
request it is, what it asks, and where its answer goes; and the answer's shape. No I/O but the one lookup
an unscoped message may need (the namespace of its instance), done by the caller.

A message no retry can make sense of is :class:`Malformed` (terminated, never
redelivered). Metadata on a scoped subject may repeat the identity; if it names
anyone else, the request is refused (answered, nothing applied).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import orjson

from sympozium_schedule.core.model import is_dns1123_label
from sympozium_schedule.core.requests import Identity
from sympozium_schedule.ports.bus import (
    LEGACY_SUBJECT,
    MSG_ID,
    Delivery,
    RunSubjects,
    is_request_id,
    parse_request_subject,
    result_subject,
    token,
)


class Malformed(Exception):
    """A message that no retry can make sense of."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The parts of a message that need no I/O: enough to know whose turn it is."""

    metadata: dict[str, Any]
    namespace: str
    instance: str
    run: str
    data: Any
    scoped: bool

    @property
    def order_key(self) -> tuple[str, str]:
        return (self.namespace, self.instance)


@dataclass(frozen=True, slots=True)
class Request:
    who: Identity
    request_id: str
    request_file: str
    data: Any
    answer_subject: str
    dedupe_key: str
    # Why the request is refused before it is even parsed (identity disagreement).
    refusal: str | None = None


def text(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value else None


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def envelope_of(delivery: Delivery) -> Envelope:
    try:
        # json, not orjson: orjson refuses a lone surrogate and NaN and reads an integer
        # beyond 64 bits as a float, and agents' requests are read as they always were.
        env = json.loads(delivery.data)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from exc
    if not isinstance(env, dict):
        raise Malformed("not an event envelope")
    meta = env.get("metadata")
    scope = parse_request_subject(delivery.subject)
    if scope is not None:
        # The bus vouches for the subject; the metadata may only agree with it.
        meta = meta if isinstance(meta, dict) else {}
        return Envelope(meta, scope.namespace, text(meta, "instanceName") or scope.instance,
                        text(meta, "agentRunID") or scope.run, env.get("data"), True)
    if delivery.subject != LEGACY_SUBJECT:
        raise Malformed(f"not a request subject: {delivery.subject}")
    if not isinstance(meta, dict):
        raise Malformed("not an event envelope with metadata")
    run, instance = text(meta, "agentRunID"), text(meta, "instanceName")
    if run is None or instance is None:
        raise Malformed("metadata lacks agentRunID or instanceName: nobody to answer")
    return Envelope(meta, text(meta, "namespace") or "", instance, run, env.get("data"), False)


@dataclass(frozen=True, slots=True)
class Forgery:
    """Metadata that names someone other than the subject's identity."""

    field: str
    claimed: str
    message: str


def scoped_request(envelope: Envelope, delivery: Delivery) -> tuple[Request, Forgery | None]:
    scope = parse_request_subject(delivery.subject)
    assert scope is not None
    if not is_dns1123_label(scope.namespace):
        raise Malformed(f"subject namespace {scope.namespace!r} is not a namespace name")
    meta = envelope.metadata
    forgery = None
    for key, claimed, vouched in (("namespace", text(meta, "namespace"), scope.namespace),
                                  ("instanceName", envelope.instance, scope.instance),
                                  ("agentRunID", envelope.run, scope.run)):
        if claimed is not None and token(claimed) != vouched:
            forgery = Forgery(key, claimed, (
                f"metadata.{key} {claimed!r} is not the identity this run's bus credential "
                f"carries ({vouched!r}); identity comes from the bus, not from the message"))
            break
    if forgery is not None:
        instance, run = scope.instance, scope.run
    else:
        instance, run = envelope.instance, envelope.run
    who = Identity(scope.namespace, instance, run)
    request_id = text(meta, "requestId") or delivery.headers.get(MSG_ID) or ""
    if not is_request_id(request_id):
        request_id = f"seq-{delivery.stream_seq}" if not request_id else digest(request_id)[:32]
    request = Request(who, request_id, text(meta, "requestFile") or "", envelope.data,
                      RunSubjects(who.namespace, who.instance, who.run).answer(request_id),
                      digest(f"{who.namespace}/{who.instance}/{who.run}/{request_id}"),
                      forgery.message if forgery is not None else None)
    return request, forgery


def unscoped_request(envelope: Envelope, delivery: Delivery, namespace: str) -> Request:
    """Sympozium's own bridge: the identity in the message (believed only with
    ``allow_unscoped_publishers``); ``namespace`` found by the caller when absent."""
    if not is_dns1123_label(namespace):
        raise Malformed(f"metadata.namespace {namespace!r} is not a namespace name")
    meta, run, instance = envelope.metadata, envelope.run, envelope.instance
    # The bridge's request id names the request; the message id only names one
    # publication of it (another bridge, or a republish, may pick another).
    request_id = (meta.get("requestId") or delivery.headers.get(MSG_ID)
                  or f"{namespace}/{run}/seq-{delivery.stream_seq}")
    request_file = meta.get("requestFile")
    return Request(Identity(namespace, instance, run), str(request_id),
                   request_file if isinstance(request_file, str) else "", envelope.data,
                   result_subject(namespace, run), digest(f"unscoped/{request_id}"))


def answer(request: Request, status: str, message: str,
           schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    """The answer an agent gets (its ``<request>.result.json``)."""
    summary = None
    if schedule is not None:
        meta, spec = schedule.get("metadata") or {}, schedule.get("spec") or {}
        summary = {"name": meta.get("name"), "namespace": meta.get("namespace")} | {
            k: spec.get(k) for k in ("schedule", "task", "type", "suspend", "timeZone",
                                     "concurrencyPolicy", "includeMemory") if k in spec}
    return {"requestId": request.request_id, "requestFile": request.request_file,
            "status": status, "message": message, "schedule": summary}


def encode(result: dict[str, Any]) -> bytes:
    """An answer as it is recorded and sent."""
    try:
        return orjson.dumps(result)
    except TypeError:  # text orjson will not write (a lone surrogate in a file name): as before
        return json.dumps(result).encode()
