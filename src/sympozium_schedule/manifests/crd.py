"""The SympoziumSchedule CustomResourceDefinition: names, printer columns and the
schema (``spec`` from :mod:`.crd_spec`, ``status`` from :mod:`.crd_status`), and
Sympozium's own CRDs as a standalone install applies them."""

from __future__ import annotations

from typing import Any

from sympozium_schedule import manifests
from sympozium_schedule.core.model import GROUP, VERSION, Kind
from sympozium_schedule.manifests.common import NAME, SYMPOZIUM_CRD_FILES, to_yaml
from sympozium_schedule.manifests.crd_spec import spec_schema, upstream_crd, upstream_schema
from sympozium_schedule.manifests.crd_status import status_schema

# The name is a label value on every AgentRun (sympozium.ai/schedule), so 63 characters at
# most. Only a rule at the root may read metadata.name; no fieldPath, since metadata
# declares no properties for one to point at.
NAME_RULE = {
    "rule": "size(self.metadata.name) <= 63",
    "message": "metadata.name must be at most 63 characters: it is used as a label value "
               "(sympozium.ai/schedule) on the schedule's AgentRuns",
}

# Sympozium's columns plus Next Run. Next Run is a string column: kubectl shows a date
# column as the time since it, and a time in the future as "<invalid>".
PRINTER_COLUMNS: tuple[dict[str, str], ...] = (
    {"jsonPath": ".spec.instanceRef", "name": "Instance", "type": "string"},
    {"jsonPath": ".spec.schedule", "name": "Schedule", "type": "string"},
    {"jsonPath": ".spec.type", "name": "Type", "type": "string"},
    {"jsonPath": ".status.phase", "name": "Phase", "type": "string"},
    {"jsonPath": ".status.lastRunTime", "name": "Last Run", "type": "date"},
    {"jsonPath": ".status.nextRunTime", "name": "Next Run", "type": "string"},
    {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
)


def open_api_schema() -> dict[str, Any]:
    root = upstream_schema()
    return {
        "description": (
            "SympoziumSchedule is the Schema for the sympoziumschedules API.\n"
            "It defines recurring tasks (heartbeats, scheduled jobs, sweeps) for a "
            "SympoziumInstance."),
        "properties": {
            # apiVersion, kind and metadata are the same for every kind: Sympozium's wording.
            "apiVersion": root["properties"]["apiVersion"],
            "kind": root["properties"]["kind"],
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "type": "object",
        "x-kubernetes-validations": [dict(NAME_RULE)],
    }


def crd() -> dict[str, Any]:
    """The SympoziumSchedule CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    names = upstream_crd()["spec"]["names"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names['plural']}.{GROUP}",
            "labels": {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "sympozium"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "categories": ["sympozium"],
                "kind": Kind.SCHEDULE.value,
                "listKind": f"{Kind.SCHEDULE.value}List",
                "plural": names["plural"],
                "shortNames": ["symsched"],
                "singular": names["singular"],
            },
            "scope": "Namespaced",
            "versions": [{
                "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                "name": VERSION,
                "schema": {"openAPIV3Schema": open_api_schema()},
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
            }],
        },
    }


def crd_yaml() -> str:
    return to_yaml([crd()])


CATEGORY = "sympozium"


def sympozium_crds() -> list[dict[str, Any]]:
    """Sympozium's AgentRun and SympoziumInstance CRDs, unchanged but for one addition: the
    category ``sympozium`` (theirs have none), so ``kubectl get sympozium`` lists runs and
    instances beside schedules. Only the standalone install applies these; where Sympozium
    is installed its own CRDs stay, and ``kubectl get sympozium`` lists schedules only."""
    crds = []
    for name in SYMPOZIUM_CRD_FILES:
        crd = manifests.load_crd(name)
        names = crd["spec"]["names"]
        names["categories"] = sorted({*names.get("categories", []), CATEGORY})
        crds.append(crd)
    return crds
