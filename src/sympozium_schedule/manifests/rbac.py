"""The install's RBAC rules: exactly the requests the Kubernetes store makes for the
controller and the router, and the leader election's Lease."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sympozium_schedule.core.model import GROUP
from sympozium_schedule.core.shards import lease_names
from sympozium_schedule.manifests.common import LEASE_NAME

_VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")


def _rule(group: str, resource: str, verbs: Iterable[str], *,
          names: Sequence[str] = ()) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": [group], "resources": [resource]}
    if names:
        rule["resourceNames"] = list(names)
    rule["verbs"] = sorted(set(verbs), key=_VERB_ORDER.index)
    return rule


def rbac_rules() -> list[dict[str, Any]]:
    """The ClusterRole's rules: exactly the requests KubernetesStore makes for the controller
    and the router, in any namespace (lightkube: replace is PUT = update, patch is patch)."""
    return [
        # controller: informer (list, watch) and refresh (get); router: its directory's informer
        # of agent schedules (list, watch), get (after a conflict, or a name its cache lacks),
        # create, update, and delete (a get first checks the uid: lightkube sends no precondition).
        _rule(GROUP, "sympoziumschedules", ["get", "list", "watch", "create", "update", "delete"]),
        # controller: the status, as one merge patch with a resourceVersion precondition.
        _rule(GROUP, "sympoziumschedules/status", ["patch"]),
        # controller: its runs' owner references carry blockOwnerDeletion (so a foreground
        # delete of a schedule waits for its runs), which the API server allows only to who
        # may update the owner's finalizers (OwnerReferencesPermissionEnforcement, on in
        # OpenShift). The CronJob controller's role has the same grant for its Jobs.
        _rule(GROUP, "sympoziumschedules/finalizers", ["update"]),
        # controller: informer; create per tick, get when the name is taken (AlreadyExists),
        # delete for Replace and the history limits.
        _rule(GROUP, "agentruns", ["get", "list", "watch", "create", "delete"]),
        # controller and the router's directory: informer; router: get (does the requester
        # exist? asked when its cache lacks the instance).
        _rule(GROUP, "sympoziuminstances", ["get", "list", "watch"]),
        # controller: the informer of memory ConfigMaps (label-selected; RBAC cannot narrow
        # by label).
        _rule("", "configmaps", ["list", "watch"]),
        # controller: Events, created only (never patched into a series); the console: a
        # schedule's Events, listed in its namespace for a person kubectl would let list them.
        _rule("", "events", ["create", "list"]),
    ]


def leader_election_rules(lease_name: str = LEASE_NAME) -> list[dict[str, Any]]:
    """The Role's rules in the controller's namespace. A create request names no object, so
    it cannot be narrowed by resourceNames; get and update (renewal is a PUT) can: the one
    leader's Lease and, for --shards, every shard and member Lease (core/shards.py). List:
    a sharded replica reads all of them in one request a round."""
    return [
        _rule("coordination.k8s.io", "leases", ["list", "create"]),
        _rule("coordination.k8s.io", "leases", ["get", "update"],
              names=[lease_name, *lease_names(lease_name)]),
    ]
