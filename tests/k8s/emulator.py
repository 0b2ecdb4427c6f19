"""A stricter Kubernetes API for tests: kmock's emulator with the semantics the Kubernetes
adapter (lightkube) and the controller rely on, served over real HTTP.

kmock 0.8's ``KubernetesEmulator`` keeps objects in memory and streams their changes, but a
client that relies on the API's contract finds these gaps (each seen with lightkube in the
experiments this grew from):

- objects get no ``resourceVersion``, ``uid``, ``creationTimestamp`` or ``generation``; a
  list's resourceVersion is ``"..."``;
- create answers 200, and a duplicate name 409 with the reason ``Object Already Exists``
  (the store tells AlreadyExists from Conflict by the reason);
- no optimistic concurrency: a stale ``metadata.resourceVersion`` is accepted;
- no PUT (lightkube's ``replace``, the leader election's renewals);
- ``/status`` writes change the whole object, and main-resource writes change the status;
- label selectors are ignored on list and watch;
- a watch ignores its ``resourceVersion`` (replays everything as ADDED), never ends, never
  answers 410 Gone, and a DELETED event carries the last state's resourceVersion;
- no garbage collection of owned objects, no ``generateName``;
- error bodies are ``application/json; charset=utf-8``: lightkube builds an ``ApiError``
  only for exactly ``application/json``, so every error would surface as a bare HTTP error.

:class:`StrictEmulator` closes them, and answers what it does not emulate (JSON and
strategic patches, server-side apply, dry runs, collection deletes) with an error rather
than a silent approximation. Custom resources are admitted as the API server admits them:
unknown fields pruned, defaults applied, the CRD's schema validated (422 Invalid); CEL rules
(``x-kubernetes-validations``) are not evaluated and namespaces need not exist.

It also keeps what clients of a real API server meet: a write that changes nothing is no
write (same version, no event); finalizers hold a deletion; a watch with a selector sees an
object that starts or stops matching as ADDED or DELETED; ``timeoutSeconds`` ends a watch.
Faults are injected by :meth:`StrictEmulator.break_watches` (a clean end, or an in-stream
410), :meth:`~StrictEmulator.compact` (resuming from an old version is refused with 410)
and :meth:`~StrictEmulator.inject` (an error for matching calls, optionally after a
concurrent write, for a number of calls or a stretch of time).

Requests still go through kmock's DSL first, so a test may intercept one
(``emu[kmock.action.CREATE, kmock.resource(...)][:1] << 503``); the emulated API is the
fallback, and a write a reaction answered is not applied. Every request to a resource is
recorded as a :class:`Call` with the RBAC verb it needs, the token that made it, its status
code and, for a write, the body as sent.

:class:`ApiServer` runs an emulator on a free port in a thread with its own event loop, so
that real processes (``sympozium-schedule run --kubernetes --kubeconfig ...``) talk to it
over HTTP while a synchronous test drives it; :class:`Api` is the test's own client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import functools
import json
import re
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import aiohttp.web
import aiohttp.web_runner
import aiohttp.web_server
import attrs
import kmock
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from lightkube import ApiError, Client, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.types import PatchType

from sympozium_schedule import manifests
from sympozium_schedule.adapters.kubernetes.store import RESOURCES, Lease
from sympozium_schedule.core.model import Kind

T = TypeVar("T")
Obj = dict[str, Any]

ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
# Fields the API server owns: a client's value is ignored on create and kept on update.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
                 "deletionGracePeriodSeconds", "managedFields")
MERGE_PATCH = "application/merge-patch+json"
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphabet


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- errors ---------------------------------------------------------------------------------


def status_body(code: int, reason: str, message: str, details: Any = None) -> Obj:
    """A ``v1 Status`` as the API server sends for a failure."""
    body: Obj = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def api_error(code: int, reason: str, message: str, details: Any = None) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def expired(message: str) -> Obj:
    """The in-stream event that ends a watch whose resourceVersion is too old."""
    return {"type": "ERROR", "object": status_body(410, "Expired", message)}


# --- names, labels, selectors ------------------------------------------------------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def name_problems(name: object) -> list[str]:
    """What the API server says about a metadata.name (a DNS-1123 subdomain)."""
    if not isinstance(name, str) or not _SUBDOMAIN.fullmatch(name):
        return [f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must "
                "consist of lower case alphanumeric characters, '-' or '.'"]
    if len(name) > 253:
        return [f"metadata.name: Invalid value: {name!r}: must be no more than 253 characters"]
    return []


def label_problems(labels: object) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f"metadata.labels: Invalid value: {labels!r}: must be a map of strings"]
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix))) or not (
                0 < len(name) <= 63 and _QUALIFIED.fullmatch(name)):
            problems.append(f"metadata.labels: Invalid value: {key!r}: not a qualified name")
        if not isinstance(value, str) or len(value) > 63 or (value and not _QUALIFIED.fullmatch(value)):
            problems.append(f"metadata.labels: Invalid value: {value!r}: a valid label value must be "
                            "63 characters or less, alphanumerics, '-', '_' or '.'")
    return problems


_EXISTS = re.compile(r"\s*(!?)\s*([A-Za-z0-9./_-]+)\s*")
_EQUALS = re.compile(r"\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*")
_IN = re.compile(r"\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s*\(([^)]*)\)\s*")


def _terms(text: str) -> list[str]:
    """Split a selector on the commas that are not inside ``( )``."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    return [t for t in [*terms, current] if t.strip()]


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed label or field selector: ``(key, op, values)`` requirements, all of which
    must hold. Operators: exists, !exists, =, !=, in, notin (as the API server's)."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, text: str | None, *, fields: bool = False) -> Selector:
        requirements = []
        for term in _terms(text or ""):
            if m := _IN.fullmatch(term):
                key, op, values = m[1], m[2], frozenset(v.strip() for v in m[3].split(","))
            elif m := _EQUALS.fullmatch(term):
                key, op, values = m[1], "!=" if m[2] == "!=" else "=", frozenset({m[3]})
            elif m := _EXISTS.fullmatch(term):
                key, op, values = m[2], "!exists" if m[1] else "exists", frozenset()
            else:
                raise api_error(400, "BadRequest", f"unable to parse requirement: {term!r}")
            if fields and (op not in ("=", "!=") or key not in ("metadata.name", "metadata.namespace")):
                raise api_error(400, "BadRequest",
                                f'field label not supported: "{key}" (or operator {op})')
            requirements.append((key, op, values))
        return cls(tuple(requirements))

    def matches(self, values: Mapping[str, str]) -> bool:
        for key, op, wanted in self.requirements:
            present = key in values
            ok = {
                "exists": present,
                "!exists": not present,
                "=": present and values[key] in wanted,
                "in": present and values[key] in wanted,
                "!=": not present or values[key] not in wanted,
                "notin": not present or values[key] not in wanted,
            }[op]
            if not ok:
                return False
        return True


def _fields_of(obj: Obj) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    return {"metadata.name": meta.get("name") or "", "metadata.namespace": meta.get("namespace") or ""}


# --- schemas: prune, default, validate -----------------------------------------------------------

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


def _json_schema(node: Any) -> Any:
    """A structural schema as JSON Schema: extensions dropped, ``nullable`` as a null type."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


def _prune(schema: Obj, value: Any, *, root: bool = False) -> Any:
    """Drop what the structural schema does not declare, as the API server does silently
    (and nulls of fields that are not nullable)."""
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        out = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                out[key] = item
            elif key in props:
                if item is None and not props[key].get("nullable"):
                    continue
                out[key] = _prune(props[key], item)
            elif isinstance(extra, dict):
                out[key] = _prune(extra, item)
            elif keep_unknown:
                out[key] = item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(schema["items"], item) for item in value]
    return value


def _default(schema: Obj, value: Any) -> Any:
    if isinstance(value, dict):
        out = dict(value)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = _default(sub, out[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in out.keys() - (schema.get("properties") or {}).keys():
                out[key] = _default(extra, out[key])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_default(schema["items"], item) for item in value]
    return value


class Schema:
    """An openAPIV3Schema applied as the API server applies it: prune, default, validate."""

    def __init__(self, schema: Obj):
        self.schema = schema
        body = _json_schema(schema)
        body.get("properties", {}).pop("metadata", None)  # the server validates metadata itself
        self.validator = Draft202012Validator(body, format_checker=_FORMATS)

    def admit(self, obj: Obj) -> tuple[Obj, list[str]]:
        admitted = _default(self.schema, _prune(self.schema, obj, root=True))
        problems = sorted(
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in self.validator.iter_errors(admitted))
        return admitted, problems


def _object(**properties: Any) -> Obj:
    return {"type": "object", "properties": properties}


_STRING, _INT, _TIME = {"type": "string"}, {"type": "integer"}, {"type": "string", "format": "date-time"}
_STRINGS = {"type": "object", "additionalProperties": _STRING}
_REFERENCE = _object(apiVersion=_STRING, kind=_STRING, name=_STRING, namespace=_STRING, uid=_STRING,
                     resourceVersion=_STRING, fieldPath=_STRING)
# The built-in kinds the controller writes, as far as a typed decoder would keep and check them.
CORE_SCHEMAS: dict[str, Obj] = {
    "ConfigMap": _object(apiVersion=_STRING, kind=_STRING, metadata={"type": "object"},
                         data=_STRINGS, binaryData=_STRINGS, immutable={"type": "boolean"}),
    "Event": _object(
        apiVersion=_STRING, kind=_STRING, metadata={"type": "object"}, involvedObject=_REFERENCE,
        reason=_STRING, message=_STRING, type=_STRING, count=_INT, action=_STRING,
        source=_object(component=_STRING, host=_STRING), firstTimestamp=_TIME, lastTimestamp=_TIME,
        eventTime=_TIME | {"nullable": True}, related=_REFERENCE, reportingComponent=_STRING,
        reportingInstance=_STRING, series=_object(count=_INT, lastObservedTime=_TIME),
    ) | {"required": ["involvedObject"]},
    "Lease": _object(apiVersion=_STRING, kind=_STRING, metadata={"type": "object"}, spec=_object(
        holderIdentity=_STRING, leaseDurationSeconds=_INT, acquireTime=_TIME, renewTime=_TIME,
        leaseTransitions=_INT, strategy=_STRING, preferredHolder=_STRING)),
}


# --- resources --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceType:
    resource: kmock.resource
    kind: str
    namespaced: bool = True
    status: bool = False  # has the /status subresource
    custom: bool = False  # a CRD: generation counted, a PUT needs a resourceVersion
    schema: Schema | None = None

    @property
    def api_version(self) -> str:
        return f"{self.resource.group}/{self.resource.version}".lstrip("/")

    @property
    def qualified(self) -> str:
        """``agentruns.sympozium.ai`` (``configmaps`` in the core group), as in API messages."""
        group = self.resource.group
        return f"{self.resource.plural}.{group}" if group else str(self.resource.plural)


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change log a watch replays from: ``old`` is the state before."""

    rv: int
    resource: kmock.resource
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


@dataclass(slots=True)
class Call:
    """One request to a resource. ``rbac`` is what an RBAC rule has to allow for it."""

    user: str
    group: str
    resource: str  # plural, or plural/subresource
    verb: str  # get list watch create update patch delete deletecollection
    namespace: str | None
    name: str | None
    at: float  # time.monotonic() when it arrived
    code: int | None = None  # the HTTP status, once answered (a watch: when it ended)
    body: Any = None  # what a write sent, as sent (before defaults and pruning)

    @property
    def rbac(self) -> tuple[str, str, str, str | None, str | None]:
        return self.group, self.resource, self.verb, self.namespace, self.name

    @property
    def write(self) -> bool:
        return self.verb in ("create", "update", "patch", "delete", "deletecollection")


@dataclass(slots=True)
class Fault:
    """A failure injected for the next ``times`` calls that ``match`` (or, with ``until``, for
    every one until that ``time.monotonic()``): ``before`` runs first (say, another client's
    write, which is what a 409 Conflict means), then ``error`` is the answer and the request
    is not applied."""

    match: Callable[[Call], bool]
    error: kmock.KubernetesError
    times: int = 1
    before: Callable[[StrictEmulator], object] | None = None
    until: float | None = None
    hits: list[Call] = field(default_factory=list)

    def applies(self, call: Call) -> bool:
        active = call.at < self.until if self.until is not None else len(self.hits) < self.times
        return active and self.match(call)


@dataclass(frozen=True, slots=True)
class _Break:
    gone: bool  # end the stream with an ERROR 410 rather than a clean end


@dataclass(eq=False, slots=True)
class _Watcher:
    resource: kmock.resource
    namespace: str | None
    name: str | None
    labels: Selector
    fields: Selector
    user: str
    queue: asyncio.Queue[Change | _Break] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        return ((self.namespace is None or meta.get("namespace") == self.namespace)
                and (self.name is None or meta.get("name") == self.name)
                and self.labels.matches(meta.get("labels") or {})
                and self.fields.matches(_fields_of(obj)))

    def event(self, change: Change) -> Obj | None:
        """The change as this watch sees it: an object that starts or stops matching
        the selector arrives as ADDED or DELETED, as the API server's watch cache sends it."""
        was, now = self.matches(change.old), self.matches(change.obj)
        if change.type == "DELETED":
            kind = "DELETED" if was else None
        elif was and now:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif was:
            kind = "DELETED"
        else:
            kind = None
        return None if kind is None else {"type": kind, "object": change.obj}


def _verb(request: kmock.Request) -> str:
    method = request.method.value
    if method == "GET":
        return "watch" if request.params.get("watch") in ("true", "1") else (
            "get" if request.name else "list")
    if method == "DELETE":
        return "delete" if request.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _user(request: kmock.Request) -> str:
    for key, value in request.headers.items():
        if key.lower() == "authorization":
            return value.removeprefix("Bearer ").strip()
    return ""


def _header(request: kmock.Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), "")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _content(obj: Obj) -> Obj:
    """What makes two versions different: everything but the resourceVersion."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return obj | {"metadata": meta}


def _spec_part(obj: Obj) -> Obj:
    """What ``metadata.generation`` counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


# --- the emulator -----------------------------------------------------------------------------


@attrs.define(kw_only=True, eq=False)
class StrictEmulator(kmock.KubernetesEmulator):
    """kmock's emulator held to the API's contract (see the module docstring).

    State changes are synchronous functions run on the emulator's event loop, so each
    request's change is atomic without locks; watches are fed from the same change.
    """

    types: dict[kmock.resource, ResourceType] = attrs.field(factory=dict, init=False)
    # The last version issued. It starts above 0, as a cluster's etcd revision does: a list
    # of a fresh emulator must not answer "0", which in a watch means "from anywhere".
    resource_version: int = attrs.field(default=100, init=False)
    compacted: int = attrs.field(default=0, init=False)  # watching from below it: 410 Gone
    changes: list[Change] = attrs.field(factory=list, init=False)
    _calls: list[Call] = attrs.field(factory=list, init=False)
    _calls_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _uids: dict[str, tuple[kmock.resource, str | None, str]] = attrs.field(factory=dict, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock's own fallbacks (list, watch, fetch, create, patch, delete) call the
        # overridden _serve_* below; PUT and collection deletes have no kmock action.
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback[kmock.method.DELETE] << self._serve_unsupported

    # --- registration ---------------------------------------------------------------------

    def register(self, group_version: str, plural: str, kind: str, *, namespaced: bool = True,
                 status: bool = False, custom: bool = False, schema: Obj | Schema | None = None,
                 ) -> ResourceType:
        group, _, version = group_version.rpartition("/")
        resource = kmock.resource(group, version, plural)
        rtype = ResourceType(resource, kind, namespaced, status, custom,
                             Schema(schema) if isinstance(schema, dict) else schema)
        self.types[resource] = rtype
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=kind.lower(), verbs=set(ALL_VERBS),
            subresources={"status"} if status else set())
        return rtype

    def register_crd(self, crd: Obj, *, schema: Schema | None = None) -> ResourceType:
        """A resource from its CustomResourceDefinition (the storage version); ``schema``
        saves compiling its openAPIV3Schema again."""
        spec = crd["spec"]
        (version,) = [v for v in spec["versions"] if v.get("storage")]
        return self.register(
            f"{spec['group']}/{version['name']}", spec["names"]["plural"], spec["names"]["kind"],
            namespaced=spec["scope"] == "Namespaced",
            status="status" in (version.get("subresources") or {}), custom=True,
            schema=schema or version["schema"]["openAPIV3Schema"])

    # --- reading state (on the emulator's loop) ---------------------------------------------

    def current(self, resource: Any, namespace: str | None, name: str) -> Obj | None:
        """The stored object, or None."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def live(self, resource: Any = None) -> list[Obj]:
        """Every stored object (of one resource), in the API's order: namespace, name."""
        wanted = kmock.resource(resource) if resource is not None else None
        found = [(k, o.raw) for k, o in self._objects.items()
                 if not o.deleted and (wanted is None or k[0] == wanted)]
        return [obj for _, obj in sorted(found, key=lambda item: (item[0][1] or "", item[0][2]))]

    @property
    def calls(self) -> list[Call]:
        """Every request to a resource so far (a copy; safe from any thread)."""
        with self._calls_lock:
            return list(self._calls)

    def open_watches(self, user: str | None = None) -> int:
        return sum(1 for w in list(self._watchers) if user is None or w.user == user)

    # --- faults -----------------------------------------------------------------------------

    def break_watches(self, resource: Any = None, *, gone: bool = False) -> int:
        """End every open watch stream (of one resource): cleanly, as a dropped connection
        or an API server restart does, or with an in-stream ERROR 410 Gone. Returns how
        many streams it ended."""
        wanted = kmock.resource(resource) if resource is not None else None
        ended = 0
        for watcher in list(self._watchers):
            if wanted is None or watcher.resource == wanted:
                watcher.queue.put_nowait(_Break(gone))
                ended += 1
        return ended

    def inject(self, match: Callable[[Call], bool], error: kmock.KubernetesError, *, times: int = 1,
               before: Callable[[StrictEmulator], object] | None = None,
               seconds: float | None = None) -> Fault:
        """Fail the next ``times`` calls that ``match`` with ``error``, or all of them for the
        next ``seconds`` (an outage); see :class:`Fault`."""
        until = time.monotonic() + seconds if seconds is not None else None
        fault = Fault(match, error, times, before, until)
        self.faults.append(fault)
        return fault

    def _fail_if_injected(self, call: Call) -> None:
        for fault in self.faults:
            if fault.applies(call):
                fault.hits.append(call)
                if fault.before is not None:
                    fault.before(self)
                raise fault.error

    def write(self, resource: Any, namespace: str | None, name: str, patch: Obj, *,
              status: bool = False) -> Obj:
        """A merge patch applied as if another client sent it (with every rule, and the
        watch events), for faults that need a concurrent writer."""
        rtype = self.types[kmock.resource(resource)]
        stored = self.current(rtype.resource, namespace, name)
        if stored is None:
            raise self._not_found(rtype, name)
        return self._update(rtype, stored, merge_patch(stored, patch), status=status)

    def compact(self) -> None:
        """Make every resourceVersion older than the current one too old to watch from
        (410 Gone), as etcd's compaction does; watching from the current one still works
        (a relist's version must be watchable). The change log before it is dropped."""
        self.compacted = self.resource_version
        self.changes.clear()

    # --- request handling -------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock's own _handle applies writes itself (merging dicts); skip it: the fallbacks
        # below apply them with the API's rules. Discovery and the DSL stay kmock's.
        if request.resource is None or not request.resource.plural:
            return await super(kmock.KubernetesEmulator, self)._handle(request)
        call = Call(_user(request), request.resource.group or "",
                    request.resource.plural + (f"/{request.subresource}" if request.subresource else ""),
                    _verb(request), request.namespace, request.name, time.monotonic(),
                    body=request.data if request.method.value in ("POST", "PUT", "PATCH") else None)
        with self._calls_lock:
            self._calls.append(call)
        try:
            self._fail_if_injected(call)
            response = await super(kmock.KubernetesEmulator, self)._handle(request)
        except kmock.KubernetesError as exc:
            call.code = exc.status
            raise
        except Exception:
            call.code = 500
            raise
        call.code = response.status
        return response

    def _type(self, request: kmock.Request, verb: str) -> ResourceType:
        rtype = self.types.get(request.resource) if request.resource is not None else None
        if rtype is None or request.subresource not in (None, *(["status"] if rtype.status else [])):
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if rtype.namespaced and request.namespace is None and verb not in ("list", "watch"):
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if request.subresource and verb not in ("get", "update", "patch"):
            raise api_error(405, "MethodNotAllowed", f"{verb} is not allowed on {request.subresource}")
        if "dryRun" in request.params:
            raise api_error(400, "BadRequest", "dryRun is not emulated")
        return rtype

    def _not_found(self, rtype: ResourceType, name: str | None) -> kmock.KubernetesError:
        return api_error(404, "NotFound", f'{rtype.qualified} "{name}" not found',
                         {"name": name, "group": rtype.resource.group, "kind": rtype.resource.plural})

    def _conflict(self, rtype: ResourceType, name: str, why: str) -> kmock.KubernetesError:
        return api_error(409, "Conflict",
                         f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}',
                         {"name": name, "group": rtype.resource.group, "kind": rtype.resource.plural})

    def _invalid(self, rtype: ResourceType, name: str | None, problems: list[str]) -> kmock.KubernetesError:
        return api_error(422, "Invalid", f'{rtype.kind}.{rtype.resource.group} "{name}" is invalid: '
                         + "; ".join(problems),
                         {"name": name, "group": rtype.resource.group, "kind": rtype.kind,
                          "causes": [{"message": p} for p in problems]})

    def _stored(self, rtype: ResourceType, request: kmock.Request) -> Obj:
        found = self.current(rtype.resource, request.namespace, str(request.name))
        if found is None:
            raise self._not_found(rtype, request.name)
        return found

    def _body(self, rtype: ResourceType, request: kmock.Request, *, typed: bool = True) -> Obj:
        body = request.data
        if not isinstance(body, dict):
            raise api_error(400, "BadRequest", "the request body is not a JSON object")
        if typed and (body.get("apiVersion"), body.get("kind")) != (rtype.api_version, rtype.kind):
            raise api_error(400, "BadRequest",
                            f"the object is {body.get('apiVersion')}/{body.get('kind')}, "
                            f"not {rtype.api_version}/{rtype.kind} as the URL says")
        meta = body.get("metadata") or {}
        if rtype.namespaced and meta.get("namespace") not in (None, "", request.namespace):
            raise api_error(400, "BadRequest", "the namespace of the provided object does not match "
                                               "the namespace sent on the request")
        return copy.deepcopy(body)

    def _admit(self, rtype: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        problems = name_problems(meta.get("name")) + label_problems(meta.get("labels"))
        if rtype.schema is not None:
            obj, found = rtype.schema.admit(obj)
            problems += found
        if rtype.kind == "Event" and rtype.resource.group == "":
            involved = (obj.get("involvedObject") or {}).get("namespace")
            if involved not in (None, "", meta.get("namespace")):
                problems.append(f"involvedObject.namespace: Invalid value: {involved!r}: does not "
                                "match event.namespace")
        if problems:
            raise self._invalid(rtype, meta.get("name"), problems)
        return obj

    def _next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def _commit(self, rtype: ResourceType, change: str, obj: Obj, old: Obj | None) -> Obj:
        """Store one change, log it, and hand it to every open watch of the resource."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        key = (rtype.resource, meta.get("namespace"), meta["name"])
        if change == "DELETED":
            self._objects[key].delete()
            self._uids.pop(meta.get("uid"), None)
        elif key in self._objects:
            self._objects[key].create(obj)  # appends a version to the object's history
        else:
            self._objects[key] = obj
        if change != "DELETED":
            self._uids[meta["uid"]] = key
        entry = Change(int(meta["resourceVersion"]), rtype.resource, change, obj, old)
        self.changes.append(entry)
        for watcher in list(self._watchers):
            if watcher.resource == rtype.resource:
                watcher.queue.put_nowait(entry)
        return obj

    # --- writes -----------------------------------------------------------------------------

    def create(self, rtype: ResourceType, namespace: str | None, body: Obj) -> Obj:
        meta = dict(body.get("metadata") or {})
        if meta.get("resourceVersion"):
            raise api_error(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        name = meta.get("name")
        if not name:
            base = meta.get("generateName")
            if not base:
                raise self._invalid(rtype, None, ["metadata.name: Required value: name or "
                                                  "generateName is required"])
            name = base[:248] + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
        for key in SERVER_FIELDS:
            meta.pop(key, None)
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now_text())
        if rtype.namespaced:
            meta["namespace"] = namespace
        if rtype.custom:
            meta["generation"] = 1
        obj = body | {"metadata": meta}
        if rtype.status:
            obj.pop("status", None)  # written only through /status
        obj = self._admit(rtype, obj)
        if self.current(rtype.resource, namespace, name) is not None:
            raise api_error(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists',
                            {"name": name, "group": rtype.resource.group, "kind": rtype.resource.plural})
        obj["metadata"]["resourceVersion"] = self._next_rv()
        return self._commit(rtype, "ADDED", obj, None)

    def _preconditions(self, rtype: ResourceType, stored: Obj, meta: Mapping[str, Any]) -> None:
        have = stored["metadata"]
        if meta.get("uid") and meta["uid"] != have.get("uid"):
            raise self._conflict(rtype, have["name"], f"Precondition failed: UID in precondition: "
                                 f"{meta['uid']}, UID in object meta: {have.get('uid')}")
        if meta.get("resourceVersion") and meta["resourceVersion"] != have.get("resourceVersion"):
            raise self._conflict(rtype, have["name"], "the object has been modified; please apply "
                                 "your changes to the latest version and try again")

    def _update(self, rtype: ResourceType, stored: Obj, new: Obj, *, status: bool) -> Obj:
        """The common end of PUT and PATCH: ``new`` is the whole object the client asked for."""
        if status:
            # /status changes the status and nothing else.
            draft = copy.deepcopy(stored)
            if "status" in new:
                draft["status"] = new["status"]
            else:
                draft.pop("status", None)
            new = draft
        else:
            meta = dict(new.get("metadata") or {})
            for key in (*SERVER_FIELDS, "name", "namespace"):
                if key in stored["metadata"]:
                    meta[key] = stored["metadata"][key]
                else:
                    meta.pop(key, None)
            new = new | {"metadata": meta, "apiVersion": stored["apiVersion"], "kind": stored["kind"]}
            if rtype.status:  # the main resource cannot change the status
                if "status" in stored:
                    new["status"] = stored["status"]
                else:
                    new.pop("status", None)
        new = self._admit(rtype, new)
        if rtype.custom and _spec_part(new) != _spec_part(stored):
            new["metadata"]["generation"] = int(stored["metadata"].get("generation") or 0) + 1
        if _content(new) == _content(stored):
            return stored  # a no-op write is not a write: same version, no event
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rtype, new, stored)  # the last finalizer went: deleted now
        meta["resourceVersion"] = self._next_rv()
        return self._commit(rtype, "MODIFIED", new, stored)

    def replace(self, rtype: ResourceType, request: kmock.Request) -> Obj:
        body = self._body(rtype, request)
        meta = body.get("metadata") or {}
        if meta.get("name") != request.name:
            raise api_error(400, "BadRequest", f"the name of the object ({meta.get('name')}) does not "
                                               f"match the name on the URL ({request.name})")
        stored = self._stored(rtype, request)
        if not meta.get("resourceVersion") and rtype.custom:
            raise self._invalid(rtype, request.name, ["metadata.resourceVersion: Invalid value: 0x0: "
                                                      "must be specified for an update"])
        self._preconditions(rtype, stored, meta)
        return self._update(rtype, stored, body, status=request.subresource == "status")

    def patch(self, rtype: ResourceType, request: kmock.Request) -> Obj:
        kind = _header(request, "Content-Type").split(";")[0].strip()
        if kind != MERGE_PATCH:
            raise api_error(415, "UnsupportedMediaType",
                            f"the emulator applies {MERGE_PATCH} only, not {kind or 'no content type'}")
        body = self._body(rtype, request, typed=False)
        stored = self._stored(rtype, request)
        # A merge patch carrying metadata.resourceVersion (or uid) is conditional on it.
        self._preconditions(rtype, stored, body.get("metadata") or {})
        merged = merge_patch(stored, body)
        return self._update(rtype, stored, merged, status=request.subresource == "status")

    def delete(self, rtype: ResourceType, request: kmock.Request) -> Obj:
        stored = self._stored(rtype, request)
        options = request.data if isinstance(request.data, dict) else {}
        self._preconditions(rtype, stored, options.get("preconditions") or {})
        policy = request.params.get("propagationPolicy") or options.get("propagationPolicy")
        meta = stored["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return stored
            marked = copy.deepcopy(stored)
            marked["metadata"] |= {"deletionTimestamp": now_text(), "resourceVersion": self._next_rv()}
            return self._commit(rtype, "MODIFIED", marked, stored)
        self._remove(rtype, stored, stored, orphan=policy == "Orphan")
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                "details": {"name": meta["name"], "group": rtype.resource.group,
                            "kind": rtype.resource.plural, "uid": meta.get("uid")}}

    def _remove(self, rtype: ResourceType, final: Obj, old: Obj, *, orphan: bool = False) -> Obj:
        """Delete: the DELETED event carries the final state at a version of its own."""
        final = copy.deepcopy(final)
        final["metadata"]["resourceVersion"] = self._next_rv()
        self._commit(rtype, "DELETED", final, old)
        if not orphan:
            self._collect_garbage(final["metadata"]["uid"])
        return final

    def _collect_garbage(self, owner: str) -> None:
        """What the garbage collector does after an owner is deleted (here at once): each
        dependent loses the reference, and goes when none of its owners is left."""
        for key, holder in list(self._objects.items()):
            if holder.deleted:
                continue
            obj = holder.raw
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") == owner for ref in refs):
                continue
            rtype = self.types[key[0]]
            left = [ref for ref in refs if ref.get("uid") != owner]
            if any(ref.get("uid") in self._uids for ref in left):
                self._update(rtype, obj, obj | {"metadata": obj["metadata"] | {"ownerReferences": left}},
                             status=False)
            elif obj["metadata"].get("finalizers"):
                marked = copy.deepcopy(obj)
                marked["metadata"] |= {"deletionTimestamp": now_text(), "resourceVersion": self._next_rv()}
                self._commit(rtype, "MODIFIED", marked, obj)
            else:
                self._remove(rtype, obj, obj)

    # --- kmock's fallbacks: the emulated API ----------------------------------------------------

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        rtype = self._type(request, "create")
        if request.subresource or request.name:
            raise api_error(405, "MethodNotAllowed", "create takes the collection URL")
        obj = self.create(rtype, request.namespace, self._body(rtype, request))
        return kmock.Response(status=201, payload=obj)

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        return self._stored(self._type(request, "get"), request)

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:  # kmock: PATCH
        return self.patch(self._type(request, "patch"), request)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        if not request.name:
            raise api_error(405, "MethodNotAllowed", "PUT takes an object's URL")
        return self.replace(self._type(request, "update"), request)

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        return self.delete(self._type(request, "delete"), request)

    async def _serve_unsupported(self, request: kmock.Request) -> kmock.Payload:
        raise api_error(405, "MethodNotAllowed", f"{_verb(request)} is not emulated")

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        rtype = self._type(request, "list")
        labels = Selector.parse(request.params.get("labelSelector"))
        fields = Selector.parse(request.params.get("fieldSelector"), fields=True)
        items = [obj for obj in self.live(rtype.resource)
                 if (request.namespace is None or obj["metadata"].get("namespace") == request.namespace)
                 and labels.matches(obj["metadata"].get("labels") or {}) and fields.matches(_fields_of(obj))]
        return {"apiVersion": rtype.api_version, "kind": f"{rtype.kind}List",
                "metadata": {"resourceVersion": str(self.resource_version)}, "items": items}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        rtype = self._type(request, "watch")
        fields = Selector.parse(request.params.get("fieldSelector"), fields=True)
        watcher = _Watcher(rtype.resource, request.namespace, request.name,
                           Selector.parse(request.params.get("labelSelector")), fields, _user(request))
        since = request.params.get("resourceVersion") or "0"
        try:
            since_rv = int(since)
        except ValueError:
            raise api_error(400, "BadRequest", f"invalid resourceVersion {since!r}") from None
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        # The backlog and the subscription are taken in one synchronous step: no change can
        # fall between them.
        if since_rv == 0:  # "any version": the current state as ADDED events, then changes
            backlog = [{"type": "ADDED", "object": o} for o in self.live(rtype.resource)
                       if watcher.matches(o)]
        elif since_rv < self.compacted:
            backlog = [expired(f"too old resource version: {since_rv} ({self.compacted})")]
            watcher = None
        else:
            backlog = [e for c in self.changes if c.resource == rtype.resource and c.rv > since_rv
                       for e in [watcher.event(c)] if e is not None]
        if watcher is not None:
            self._watchers.add(watcher)
        try:
            yield b""  # the headers go now, as the API server sends them before any event
            for event in backlog:
                yield event
            if watcher is None:
                return
            async with asyncio.timeout(timeout):
                while True:
                    item = await watcher.queue.get()
                    if isinstance(item, _Break):
                        if item.gone:
                            yield expired("injected: the watch's resourceVersion is too old")
                        return
                    event = watcher.event(item)
                    if event is not None:
                        yield event
        except TimeoutError:
            return  # timeoutSeconds: the server ends the watch cleanly
        finally:
            if watcher is not None:
                self._watchers.discard(watcher)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # Exactly application/json (no charset): lightkube makes an ApiError of nothing else.
        if isinstance(exc, kmock.KubernetesError):
            body = status_body(exc.status, exc.reason or type(exc).__name__,
                               exc.message or repr(exc), exc.details)
        else:
            body = status_body(500, "InternalError", f"the emulator failed: {exc!r}",
                               {"causes": [{"message": traceback.format_exc()}]})
        return aiohttp.web.Response(body=json.dumps(body).encode(), status=body["code"],
                                    content_type="application/json")

    async def _stream_error(self, exc: Exception, raw_response: aiohttp.web.StreamResponse) -> None:
        code = exc.status if isinstance(exc, kmock.KubernetesError) else 500
        event = {"type": "ERROR", "object": status_body(code, "InternalError", repr(exc))}
        await raw_response.write(json.dumps(event).encode() + b"\n")


CRD_FILES = ("sympozium.ai_sympoziumschedules.yaml", "sympozium.ai_agentruns.yaml",
             "sympozium.ai_sympoziuminstances.yaml")


@functools.cache
def _shipped_crds() -> tuple[tuple[Obj, Schema], ...]:
    """The packaged CRDs, parsed and compiled once per process (a quarter second each time)."""
    loaded = [manifests.load_crd(f) for f in CRD_FILES]
    return tuple((crd, Schema(next(v for v in crd["spec"]["versions"] if v.get("storage"))
                              ["schema"]["openAPIV3Schema"])) for crd in loaded)


@functools.cache
def _core_schemas() -> dict[str, Schema]:
    return {kind: Schema(schema) for kind, schema in CORE_SCHEMAS.items()}


def sympozium_emulator() -> StrictEmulator:
    """An emulator serving what the controller uses: Sympozium's and this project's CRDs
    (as shipped), core/v1 ConfigMaps and Events, coordination.k8s.io/v1 Leases."""
    emulator = StrictEmulator()
    for crd, schema in _shipped_crds():
        emulator.register_crd(crd, schema=schema)
    core = _core_schemas()
    emulator.register("v1", "configmaps", "ConfigMap", schema=core["ConfigMap"])
    emulator.register("v1", "events", "Event", schema=core["Event"])
    emulator.register("coordination.k8s.io/v1", "leases", "Lease", schema=core["Lease"])
    return emulator


# --- on a port, in a thread -------------------------------------------------------------------


class FastShutdownServer(aiohttp.test_utils.RawTestServer):
    """aiohttp waits up to 60 s for open requests on shutdown; open watches are requests."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web_runner.ServerRunner:
        server = aiohttp.web_server.Server(self._handler, loop=self._loop, debug=debug, **kwargs)
        return aiohttp.web_runner.ServerRunner(server, debug=debug, shutdown_timeout=0.5, **kwargs)


def write_kubeconfig(path: Path, server: str, *, user: str, namespace: str = "default") -> Path:
    """A kubeconfig for ``server`` whose user authenticates with the bearer token ``user``
    (the emulator records it with each call, so the test can tell its clients apart)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": user, "user": {"token": user}}],
        "contexts": [{"name": "emulator",
                      "context": {"cluster": "emulator", "user": user, "namespace": namespace}}],
    }))
    return path


class ApiServer:
    """A :class:`StrictEmulator` on ``http://127.0.0.1:<free port>``, run by a thread with an
    event loop of its own. Its methods may be called from any thread: each runs on the
    emulator's loop and returns the result."""

    def __init__(self, emulator: StrictEmulator | None = None):
        self.emulator = emulator if emulator is not None else sympozium_emulator()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None

    def start(self, timeout: float = 10.0) -> ApiServer:
        self._thread = threading.Thread(target=self._main, name="kube-api-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"the emulator did not start within {timeout}s")
        if self._failure is not None:
            raise RuntimeError("the emulator failed to start") from self._failure
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(); a thread has no one else to tell
            self._failure = exc
        finally:
            self._started.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, server_cls=FastShutdownServer) as server:
            self.url = f"http://127.0.0.1:{server.port}"
            self._started.set()
            await self._stop.wait()
            self.emulator.break_watches()  # let open streams end before the server goes
            await asyncio.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the emulator did not stop within {timeout}s")

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, fn: Callable[[StrictEmulator], T], *, timeout: float = 10.0) -> T:
        """``fn(emulator)`` on the emulator's loop, between two requests."""
        assert self._loop is not None, "not started"

        async def call() -> T:
            return fn(self.emulator)

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return future.result(timeout)

    # --- thread-safe conveniences -------------------------------------------------------------

    def kubeconfig(self, path: Path, *, user: str, namespace: str = "default") -> Path:
        return write_kubeconfig(path, self.url, user=user, namespace=namespace)

    def api(self, *, user: str = "test") -> Api:
        return Api(self.url, user=user)

    def calls(self, *, user: str | None = None, since: int = 0) -> list[Call]:
        """Recorded calls (of one user), from position ``since`` (see :meth:`mark`) on."""
        return [c for c in self.emulator.calls[since:] if user is None or c.user == user]

    def mark(self) -> int:
        return len(self.emulator.calls)

    def break_watches(self, resource: Any = None, *, gone: bool = False) -> int:
        return self.run(lambda emu: emu.break_watches(resource, gone=gone))

    def compact(self) -> None:
        self.run(lambda emu: emu.compact())

    def inject(self, match: Callable[[Call], bool], error: kmock.KubernetesError, *, times: int = 1,
               before: Callable[[StrictEmulator], object] | None = None,
               seconds: float | None = None) -> Fault:
        return self.run(lambda emu: emu.inject(match, error, times=times, before=before, seconds=seconds))

    def open_watches(self, user: str | None = None) -> int:
        return self.run(lambda emu: emu.open_watches(user))

    def objects(self, resource: Any) -> list[Obj]:
        """Every stored object of a resource (copies)."""
        return self.run(lambda emu: copy.deepcopy(emu.live(resource)))


# --- the test's own client -------------------------------------------------------------------

PLURALS: dict[str, Any] = {
    "sympoziumschedules": RESOURCES[Kind.SCHEDULE],
    "agentruns": RESOURCES[Kind.AGENT_RUN],
    "sympoziuminstances": RESOURCES[Kind.INSTANCE],
    "configmaps": RESOURCES[Kind.CONFIG_MAP],
    "events": RESOURCES[Kind.EVENT],
    "leases": Lease,
}


class Api:
    """A synchronous client for the test itself (lightkube, plain dicts in and out), with
    its own token so its calls are told apart from the controller's."""

    def __init__(self, url: str, *, user: str = "test"):
        config = KubeConfig.from_one(cluster=Cluster(server=url), user=User(token=user),
                                     namespace="default")
        self.client = Client(config=config, trust_env=False, field_manager=user)

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _res(plural: str, *, status: bool = False) -> Any:
        res = PLURALS[plural]
        return res.Status if status else res

    def create(self, obj: Obj) -> Obj:
        created: Obj = self.client.create(self._res(_plural_of(obj)).from_dict(obj)).to_dict()
        return created

    def apply(self, *objs: Obj) -> list[Obj]:
        return [self.create(obj) for obj in objs]

    def get(self, plural: str, name: str, *, namespace: str) -> Obj | None:
        try:
            found: Obj = self.client.get(self._res(plural), name, namespace=namespace).to_dict()
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return found

    def list(self, plural: str, *, namespace: str | None = None,
             labels: Mapping[str, str | None] | None = None) -> list[Obj]:
        return [o.to_dict() for o in self.client.list(
            self._res(plural), namespace=namespace or "*", labels=dict(labels) if labels else None)]

    def patch(self, plural: str, name: str, patch: Obj, *, namespace: str, status: bool = False) -> Obj:
        patched: Obj = self.client.patch(self._res(plural, status=status), name, patch,
                                         namespace=namespace, patch_type=PatchType.MERGE).to_dict()
        return patched

    def replace(self, obj: Obj) -> Obj:
        replaced: Obj = self.client.replace(self._res(_plural_of(obj)).from_dict(obj)).to_dict()
        return replaced

    def delete(self, plural: str, name: str, *, namespace: str) -> bool:
        try:
            self.client.delete(self._res(plural), name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return True


def _plural_of(obj: Obj) -> str:
    return next(p for p, r in PLURALS.items() if r._api_info.resource.kind == obj["kind"])


def by_name(objs: Iterable[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs}
