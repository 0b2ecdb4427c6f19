"""Structural CRD schemas as the API server applies them, for jsonschema.

The API server defaults an object (``default``), then validates it; the
``x-kubernetes-*`` extensions steer pruning, merging and CEL, which jsonschema
does not model, so they are dropped. ``format: date-time`` is checked, as the
API server checks it; the integer formats are not (jsonschema knows none).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


def to_json_schema(node: Any) -> Any:
    """A structural schema as JSON Schema: extensions dropped, ``nullable`` as a null type."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with every missing defaulted property filled in, as the API server does it."""
    value = copy.deepcopy(value)
    _default(schema, value)
    return value


def _default(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(schema["items"], item)


class CrdValidator:
    """Defaults, then validates, one object against a CRD's openAPIV3Schema."""

    def __init__(self, crd: dict[str, Any]):
        self.schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        self._validator = Draft202012Validator(to_json_schema(self.schema), format_checker=FORMATS)

    def errors(self, obj: dict[str, Any]) -> list[str]:
        defaulted = apply_defaults(self.schema, obj)
        return sorted(
            f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in self._validator.iter_errors(defaulted))

    def defaulted(self, obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = apply_defaults(self.schema, obj)
        return out


# --- what makes a schema structural ------------------------------------------------------

_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
# Keywords the API server rejects in a structural schema (or that have no meaning there).
_FORBIDDEN = {"$ref", "$schema", "definitions", "dependencies", "additionalItems", "patternProperties",
              "id", "anyOf", "oneOf", "allOf", "not"}


def structural_problems(node: dict[str, Any], path: str = "") -> list[str]:
    """What keeps ``node`` from being a structural schema (the subset this project uses)."""
    problems: list[str] = []
    where = path or "<root>"
    if node.get("type") not in _TYPES:
        problems.append(f"{where}: type {node.get('type')!r} is not one of {sorted(_TYPES)}")
    problems += [f"{where}: {k} is not allowed" for k in sorted(_FORBIDDEN & set(node))]
    if node.get("uniqueItems"):
        problems.append(f"{where}: uniqueItems: true is not allowed")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties are exclusive")
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{where}: an array needs one items schema")
    if "default" in node:
        errors = list(Draft202012Validator(to_json_schema(node)).iter_errors(node["default"]))
        problems += [f"{where}: the default does not validate: {e.message}" for e in errors]
    for key, sub in (node.get("properties") or {}).items():
        if path == "" and key == "metadata":
            if set(sub) != {"type"} or sub["type"] != "object":
                problems.append("metadata: only `type: object` may be declared here")
            continue
        problems += structural_problems(sub, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{where}[]")
    return problems
