"""Sympozium's own kinds (SympoziumInstance, AgentRun) checked against Sympozium's CRD
schemas, one problem per field (apply reports them as warnings)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sympozium_schedule.core.errors import SpecError


def join_path(path: str, key: object) -> str:
    """A field path as messages name it: ``spec.items[0].name``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _closed(node: Any) -> Any:
    """An openAPIV3Schema as JSON Schema, with every declared object closed.

    The API server silently drops fields a structural schema does not declare;
    closing the objects turns such a field into a warning here instead.
    """
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def _validator(filename: str) -> Any:
    # jsonschema costs a tenth of a second to import: only apply of a Sympozium kind pays it.
    from jsonschema import Draft202012Validator

    from sympozium_schedule.manifests import crd_schema

    return Draft202012Validator(_closed(crd_schema(filename)))


def crd_problems(obj: dict[str, Any], filename: str) -> list[SpecError]:
    """What Sympozium's CRD schema finds wrong with ``obj``, one problem per field."""
    problems: dict[str, SpecError] = {}
    for err in _validator(filename).iter_errors(obj):
        path = ""
        for part in err.absolute_path:
            path = join_path(path, part)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            declared = err.schema.get("properties") or {}
            for key in err.instance:
                if key not in declared:
                    where = join_path(path, key)
                    problems[where] = SpecError(
                        where, err.instance[key],
                        "unknown field (Sympozium's CRD does not declare it; a cluster drops it)")
        elif err.validator == "required" and isinstance(err.instance, dict):
            for key in err.validator_value:
                if key not in err.instance:
                    where = join_path(path, key)
                    problems[where] = SpecError(where, None, "is required by Sympozium's CRD")
        elif err.validator == "type":
            expected = err.validator_value
            shown = " or ".join(expected) if isinstance(expected, list) else expected
            problems[path] = SpecError(path, err.instance, f"must be of type {shown}")
        elif err.validator == "enum":
            allowed = ", ".join(repr(v) for v in err.validator_value)
            problems[path] = SpecError(path, err.instance, f"must be one of {allowed}")
        else:
            problems.setdefault(path, SpecError(path or "<root>", err.instance, err.message))
    return [problems[key] for key in sorted(problems)]
