"""Checking every manifest document before anything is written (reading them:
:mod:`.manifest_files`; Sympozium's kinds against its CRDs: :mod:`.crd_check`).

``apply`` is all or nothing: all documents are read and checked first, and
one error stops the apply before the store is opened. Each problem is one
line naming the source, the object, the field and the value.

What is an error and what a warning. A SympoziumSchedule is this project's
own kind: its spec is parsed by the core (strictly: unknown fields, wrong
types and bad enums are errors) and its schedule and time zone compiled, so
a schedule that is accepted can run. SympoziumInstance and AgentRun belong
to Sympozium; they are checked against Sympozium's CRD schemas, but only as
warnings, because Sympozium's own samples do not validate against them and
must still be accepted. Names, namespaces, labels and ConfigMap data are
checked as Kubernetes would (errors).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import orjson

from sympozium_schedule.adapters.sqlite.store import MAX_OBJECT_BYTES
from sympozium_schedule.cli.crd_check import crd_problems, join_path
from sympozium_schedule.cli.manifest_files import Source, parse
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import (
    Kind,
    ScheduleView,
    check_name,
    is_dns1123_label,
    is_dns1123_subdomain,
)
from sympozium_schedule.ports.store import Obj

APPLYABLE = (Kind.SCHEDULE, Kind.INSTANCE, Kind.AGENT_RUN, Kind.CONFIG_MAP, Kind.SECRET)

_CRD_FILES = {
    Kind.INSTANCE: "sympozium.ai_sympoziuminstances.yaml",
    Kind.AGENT_RUN: "sympozium.ai_agentruns.yaml",
}
_TOP_LEVEL = {
    Kind.SCHEDULE: frozenset({"apiVersion", "kind", "metadata", "spec", "status"}),
    Kind.CONFIG_MAP: frozenset({"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"}),
    Kind.SECRET: frozenset({"apiVersion", "kind", "metadata", "data", "stringData", "type",
                            "immutable"}),
}
HIDDEN = "<hidden>"  # a Secret's value in a message: never echoed
_META_FIELDS = frozenset({
    "name", "namespace", "labels", "annotations", "generateName", "uid", "resourceVersion",
    "generation", "creationTimestamp", "ownerReferences", "finalizers", "managedFields",
    "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
})
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")  # used with fullmatch
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass(frozen=True, slots=True)
class Document:
    """A checked object, ready to write: namespace filled in, resourceVersion dropped
    (apply says what the object should be, not which version it replaces)."""

    source: str
    kind: Kind
    namespace: str
    name: str
    obj: Obj

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.namespace}/{self.name}"


@dataclass(slots=True)
class Checked:
    documents: list[Document] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- checking ---------------------------------------------------------------------------------


def check(sources: Iterable[Source], *, namespace: str, now: datetime) -> Checked:
    """Parse and check every document; ``namespace`` is the default for objects
    without one. ``now`` anchors ``@every`` schedules while compiling them."""
    out = Checked()
    for source in sources:
        docs, errors = parse(source)
        out.errors.extend(errors)
        for raw in docs:
            if isinstance(raw, dict) and raw.get("kind") == "List" and raw.get("apiVersion") == "v1":
                items = raw.get("items")
                if not isinstance(items, list):
                    out.errors.append(f"{source.name}: List: items: must be a list of objects")
                    continue
                for item in items:
                    _check_one(source.name, item, namespace, now, out)
            else:
                _check_one(source.name, raw, namespace, now, out)
    return out


def _check_one(source: str, raw: object, default_ns: str, now: datetime, out: Checked) -> None:
    if not isinstance(raw, dict):
        out.errors.append(f"{source}: a document must be a mapping (an object), "
                          f"not {type(raw).__name__}: {_short(raw)}")
        return
    given = raw.get("metadata")
    meta: dict[str, Any] = given if isinstance(given, dict) else {}
    kind_text = raw.get("kind") or "<no kind>"
    ns = meta.get("namespace") or default_ns
    name = meta.get("name") or "<no name>"
    label = f"{kind_text} {ns}/{name}"
    try:
        kind = _kind(raw)
        if not _json_clean(raw):
            _json_only(raw, "")  # raises, naming the field
        _check_metadata(raw)
        warnings = _CHECKS[kind](raw, now)
    except SpecError as exc:
        if raw.get("kind") == Kind.SECRET.value and exc.field.startswith(("data", "stringData")):
            exc = SpecError(exc.field, HIDDEN, exc.detail)
        out.errors.append(f"{source}: {label}: {exc}")
        return
    out.warnings.extend(f"{source}: {label}: {w}" for w in warnings)
    # The document itself: it was read for this apply alone (no alias shares a part
    # of it) and holds JSON values only, so a copy would be the same.
    obj: Obj = raw
    obj["metadata"]["namespace"] = ns
    obj["metadata"].pop("resourceVersion", None)
    # The store's size limit, counted as the store counts it (its JSON, orjson's), so
    # an oversized object fails the whole apply up front instead of halfway through it.
    if len(orjson.dumps(obj)) > MAX_OBJECT_BYTES:
        out.errors.append(f"{source}: {label}: the object is larger than {MAX_OBJECT_BYTES} bytes")
        return
    out.documents.append(Document(source, kind, str(ns), str(name), obj))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KNOWN_KINDS = ", ".join(k.value for k in APPLYABLE)


def _kind(raw: dict[str, Any]) -> Kind:
    text = raw.get("kind")
    if text is None or text == "":
        raise SpecError("kind", text, "is required")
    known = _KNOWN_KINDS
    try:
        kind = Kind(text)
    except (ValueError, TypeError) as exc:
        raise SpecError("kind", text, f"unknown kind (known: {known})") from exc
    if kind not in APPLYABLE:
        raise SpecError("kind", text, f"Events are recorded by the scheduler, not applied "
                                      f"(known: {known})")
    api_version = raw.get("apiVersion")
    if api_version != kind.api_version:
        problem = "is required" if api_version is None else "unknown apiVersion"
        raise SpecError("apiVersion", api_version, f"{problem} ({kind.value} is {kind.api_version})")
    return kind


def _json_only(value: object, path: str) -> None:
    """What JSON (and so the store and the API server) can hold, nothing else."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(join_path(path, key), key,
                                "keys must be strings (quote the key: YAML reads yes/no/on/off "
                                "as booleans and digits as numbers)")
            _json_only(key, join_path(path, key))
            _json_only(item, join_path(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_only(item, join_path(path, i))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, value, "not a finite number")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SpecError(path, value, "text that is not valid Unicode (a lone surrogate)") from exc
    elif isinstance(value, int) and not isinstance(value, bool):
        if not _INT64[0] <= value <= _INT64[1]:
            raise SpecError(path, value, "an integer beyond 64 bits")
    elif not (value is None or isinstance(value, bool)):
        raise SpecError(path, value, f"not a JSON value ({type(value).__name__}); quote it")


def _json_clean(value: Any) -> bool:
    """Whether :func:`_json_only` finds nothing, without building a field path per value
    (that was a third of checking a large apply); on False, it says what and where."""
    kind = type(value)
    if kind is str:
        return value.isascii() or _encodable(value)
    if kind is dict:
        return all(type(key) is str and (key.isascii() or _encodable(key)) and _json_clean(item)
                   for key, item in value.items())
    if kind is list:
        return all(_json_clean(item) for item in value)
    if kind is int:
        return bool(_INT64[0] <= value <= _INT64[1])
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _top_level(raw: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise SpecError(key, raw[key], "unknown field")


def _qualified_name(key: str) -> bool:
    """A label or annotation key: an optional DNS subdomain prefix and a name."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):  # "/a": the prefix may not be empty
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


def _check_metadata(raw: dict[str, Any]) -> None:
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        raise SpecError("metadata", meta, "must be a mapping with at least a name")
    for key in meta:
        if key not in _META_FIELDS:
            raise SpecError(f"metadata.{key}", meta[key], "unknown field")
    check_name(meta.get("name"), field_path="metadata.name")
    namespace = meta.get("namespace")
    if namespace is not None and namespace != "" and (
            not isinstance(namespace, str) or not is_dns1123_label(namespace)):
        raise SpecError("metadata.namespace", namespace,
                        "must be a DNS-1123 label (lowercase letters, digits and '-', "
                        "at most 63 characters)")
    for section in ("labels", "annotations"):
        mapping = meta.get(section)
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise SpecError(f"metadata.{section}", mapping, "must be a mapping of strings to strings")
        for key, value in mapping.items():
            where = f"metadata.{section}.{key}"
            if not _qualified_name(key):
                raise SpecError(where, key, "not a valid key (an optional DNS prefix and '/', then "
                                            "at most 63 letters, digits, '-', '_' or '.')")
            if not isinstance(value, str):
                raise SpecError(where, value, "must be a string (quote it)")
            if section == "labels" and value and (
                    len(value) > 63 or not _QUALIFIED_NAME.fullmatch(value)):
                raise SpecError(where, value, "a label value is at most 63 letters, digits, "
                                              "'-', '_' or '.', starting and ending alphanumeric")
    owners = meta.get("ownerReferences")
    if owners is not None and not (isinstance(owners, list)
                                   and all(isinstance(o, dict) for o in owners)):
        raise SpecError("metadata.ownerReferences", owners, "must be a list of mappings")


def _check_schedule(raw: dict[str, Any], now: datetime) -> list[str]:
    _top_level(raw, _TOP_LEVEL[Kind.SCHEDULE])
    ScheduleView.of(raw).check()
    return []


def _check_configmap(raw: dict[str, Any], _now: datetime) -> list[str]:
    _top_level(raw, _TOP_LEVEL[Kind.CONFIG_MAP])
    for section in ("data", "binaryData"):
        mapping = raw.get(section)
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise SpecError(section, mapping, "must be a mapping of string keys to string values")
        for key, value in mapping.items():
            where = f"{section}.{key}"
            if len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
                raise SpecError(where, key, "a key is at most 253 letters, digits, '-', '_' or '.'")
            if not isinstance(value, str):
                raise SpecError(where, value, "must be a string (quote it)")
            if section == "binaryData":
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text
                    raise SpecError(where, value, "must be base64") from exc
    immutable = raw.get("immutable")
    if immutable is not None and not isinstance(immutable, bool):
        raise SpecError("immutable", immutable, "must be true or false")
    return []


def _check_secret(raw: dict[str, Any], _now: datetime) -> list[str]:
    """A v1 Secret (an agent's model key). ``stringData`` is folded into ``data``
    (base64) as the API server does; no message ever shows a value."""
    _top_level(raw, _TOP_LEVEL[Kind.SECRET])
    for section in ("data", "stringData"):
        mapping = raw.get(section)
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise SpecError(section, HIDDEN, "must be a mapping of string keys to string values")
        for key, value in mapping.items():
            where = f"{section}.{key}"
            if len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
                raise SpecError(where, key, "a key is at most 253 letters, digits, '-', '_' or '.'")
            if not isinstance(value, str):
                raise SpecError(where, HIDDEN, "must be a string (quote it)")
            if section == "data":
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise SpecError(where, HIDDEN, "must be base64 (or put the plain value "
                                                   "under stringData)") from exc
    kind = raw.get("type")
    if kind is not None and not isinstance(kind, str):
        raise SpecError("type", kind, "must be a string")
    plain = raw.pop("stringData", None) or {}
    data = dict(raw.get("data") or {})
    data |= {k: base64.b64encode(v.encode()).decode() for k, v in plain.items()}
    if data:
        raw["data"] = data
    raw.setdefault("type", "Opaque")
    return []


def _check_against_crd(raw: dict[str, Any], _now: datetime, *, kind: Kind) -> list[str]:
    return [str(problem) for problem in crd_problems(raw, _CRD_FILES[kind])]


_CHECKS: dict[Kind, Callable[[dict[str, Any], datetime], list[str]]] = {
    Kind.SCHEDULE: _check_schedule,
    Kind.CONFIG_MAP: _check_configmap,
    Kind.SECRET: _check_secret,
    Kind.INSTANCE: partial(_check_against_crd, kind=Kind.INSTANCE),
    Kind.AGENT_RUN: partial(_check_against_crd, kind=Kind.AGENT_RUN),
}


def missing_instances(documents: Sequence[Document], existing: set[tuple[str, str]]) -> list[str]:
    """Schedules pointing at an instance that is neither stored nor being applied:
    accepted (the instance may come later), but the schedule stays in Error until then."""
    known = existing | {(d.namespace, d.name) for d in documents if d.kind is Kind.INSTANCE}
    out = []
    for doc in documents:
        if doc.kind is not Kind.SCHEDULE:
            continue
        ref = doc.obj["spec"]["instanceRef"]
        if (doc.namespace, ref) not in known:
            out.append(f"{doc.source}: {doc.label}: spec.instanceRef: {ref!r}: SympoziumInstance not "
                       f"found in namespace {doc.namespace!r} (the schedule waits in phase Error "
                       "until it exists)")
    return out
