"""What a request's path and query say: the namespace, the name, the label selector,
the numbers, and from them the access checks a route declares.

Apart from the handlers because every group of routes reads a request the same way,
with the same messages, and the guard's checks must name the same namespace the
handler then reads; as :mod:`~.bodies` is for request bodies.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sympozium_schedule.core.model import is_dns1123_label, is_dns1123_subdomain
from sympozium_schedule.runtime.api.auth import Check
from sympozium_schedule.runtime.api.errors import bad_request

__all__ = [
    "EVENTS",
    "INSTANCES",
    "RUNS",
    "SCHEDULES",
    "int_param",
    "name_of",
    "namespace_of",
    "on",
    "scope",
    "selector",
]

# The resources a route's access checks name (Kubernetes' plural resource names).
SCHEDULES, RUNS, INSTANCES, EVENTS = "sympoziumschedules", "agentruns", "sympoziuminstances", "events"


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise bad_request(f"{name}: {value!r}: must be true or false", field=name)


def scope(request: web.Request) -> str | None:
    """The namespace asked for (default ``default``); None with ``allNamespaces=true``."""
    if _flag(request, "allNamespaces"):
        return None
    namespace = request.query.get("namespace") or "default"
    if not is_dns1123_label(namespace):
        raise bad_request(f"namespace: {namespace!r}: not a valid namespace (lowercase letters, "
                          "digits and '-', at most 63 characters)", field="namespace")
    return namespace


def namespace_of(request: web.Request) -> str:
    if _flag(request, "allNamespaces"):
        raise bad_request("allNamespaces: only lists span namespaces; name one with ?namespace=",
                          field="allNamespaces")
    found = scope(request)
    assert found is not None
    return found


def name_of(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_dns1123_subdomain(name):
        raise bad_request(f"name: {name!r}: not a valid object name", field="name")
    return name


def selector(request: web.Request) -> dict[str, str | None]:
    """``labelSelector``: ``key=value`` and ``key`` (present), comma-separated, as the CLI's -l."""
    labels: dict[str, str | None] = {}
    for part in (p.strip() for p in request.query.get("labelSelector", "").split(",")):
        if not part:
            continue
        if "!=" in part or part.startswith("!") or " in " in part or " notin " in part:
            raise bad_request(f"labelSelector: {part!r}: only key=value and key (present) are "
                              "supported", field="labelSelector")
        key, sep, want = part.partition("=")
        want = want[1:] if want.startswith("=") else want
        if not key.strip():
            raise bad_request(f"labelSelector: {part!r}: a selector needs a label key",
                              field="labelSelector")
        labels[key.strip()] = want.strip() if sep else None
    return labels


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise bad_request(f"{name}: {text!r}: must be a whole number from {low} to {high}", field=name)
    return value


def on(verb: str, resource: str, *, named: bool = False, group: str = "sympozium.ai"
       ) -> Any:
    def make(request: web.Request) -> Check:
        namespace = scope(request) if not named else namespace_of(request)
        return Check(verb, resource, group=group, namespace=namespace,
                     name=name_of(request) if named else None)

    return make

