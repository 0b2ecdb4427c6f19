"""An RBAC authorizer over the install's rules, for tests: whether the install allows
one request, decided as the API server's RBAC authorizer decides it (the emulator and the
RBAC tests ask it; the real API server decides for itself)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sympozium_schedule.manifests.common import NAMESPACE
from sympozium_schedule.manifests.rbac import leader_election_rules, rbac_rules


def _matches(rule: Mapping[str, Any], *, verb: str, group: str, resource: str,
             name: str | None) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return value in values or "*" in values

    if not (has("verbs", verb) and has("apiGroups", group) and has("resources", resource)):
        return False
    names = rule.get("resourceNames")
    return not names or (name is not None and name in names)


def permits(*, verb: str, group: str, resource: str, namespace: str | None = None,
            name: str | None = None, install_namespace: str = NAMESPACE) -> bool:
    """Whether the install's RBAC allows one request, as the RBAC authorizer decides.

    ``resource`` is the plural, with ``/<subresource>`` when there is one
    (``sympoziumschedules/status``); ``namespace`` None is a cluster-wide request;
    ``name`` is the name in the URL (None for create, list and watch).
    """
    if any(_matches(r, verb=verb, group=group, resource=resource, name=name)
           for r in rbac_rules()):
        return True
    return namespace == install_namespace and any(
        _matches(r, verb=verb, group=group, resource=resource, name=name)
        for r in leader_election_rules())
