"""Shared builders for the core tests: fixed instants, objects as the store holds them,
and the reference CRD schemas as JSON Schema validators."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from sympozium_schedule.core.model import API_VERSION, format_time

# The packaged CRDs: Sympozium's AgentRun and SympoziumInstance unchanged, and this
# project's SympoziumSchedule (which declares every status field the core writes).
REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "src" / "sympozium_schedule" / "manifests"
CRD_DIR = MANIFESTS / "crds"
SAMPLES_DIR = MANIFESTS / "samples"

NAMESPACE = "default"
SCHEDULE_UID = "7d5a7c1e-0000-4000-8000-000000000001"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
        ) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def at(text: str) -> datetime:
    """An instant from ISO text with an explicit offset, e.g. ``2026-03-08T03:00:00-04:00``."""
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None, text
    return parsed


# --- objects ----------------------------------------------------------------------------


def instance(name: str = "alice", *, model: str | None = "gpt-4o", **spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", None)
    default: dict[str, Any] = dict(spec.pop("default", {}))
    if model is not None:
        default["model"] = model
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "SympoziumInstance",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
        "spec": {"agents": {"default": default}, **spec},
    }
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    return obj


def schedule(
    *,
    name: str = "hb",
    created: datetime,
    generation: int = 1,
    uid: str = SCHEDULE_UID,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A SympoziumSchedule; ``spec`` keys are the CRD's camelCase names."""
    full: dict[str, Any] = {"instanceRef": "alice", "schedule": "0 * * * *", "task": "Check in."}
    full.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "SympoziumSchedule",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "generation": generation,
            "creationTimestamp": format_time(created),
        },
        "spec": full,
        "status": status or {},
    }


def agent_run(
    name: str, *, phase: str | None, tick: datetime, owner_uid: str = SCHEDULE_UID,
) -> dict[str, Any]:
    """A stored AgentRun as another writer (Sympozium's run controller) left it."""
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "AgentRun",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"sympozium.ai/scheduled-time": format_time(tick)},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "SympoziumSchedule",
                                 "name": "hb", "uid": owner_uid, "controller": True}],
            "creationTimestamp": format_time(tick),
        },
        "spec": {},
    }
    if phase is not None:
        obj["status"] = {"phase": phase}
    return obj


# --- CRD schemas ------------------------------------------------------------------------


def _as_json_schema(node: Any) -> Any:
    """An openAPIV3Schema as JSON Schema, with every declared object closed.

    The API server prunes fields a structural schema does not declare, silently:
    a field the core writes that the CRD lacks would be lost without an error.
    Closing the objects (``additionalProperties: false``) turns that into a failure.
    """
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(filename: str, *, closed: bool = True) -> Draft202012Validator:
    crd = yaml.safe_load((CRD_DIR / filename).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = version["schema"]["openAPIV3Schema"]
    schema = _as_json_schema(schema) if closed else schema
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def crd_errors(obj: dict[str, Any], filename: str, *, closed: bool = True) -> list[str]:
    validator = crd_validator(filename, closed=closed)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)]


def schedule_status_errors(status: dict[str, Any]) -> list[str]:
    """Problems this project's SympoziumSchedule CRD finds in ``status``, closed: a field
    the core writes that the CRD does not declare would be pruned by the API server."""
    obj = {"apiVersion": API_VERSION, "kind": "SympoziumSchedule", "status": status}
    return crd_errors(obj, "sympozium.ai_sympoziumschedules.yaml")


def load_sample(filename: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SAMPLES_DIR / filename).read_text())
    return loaded
