"""JSON merge patches (RFC 7386), the shape Kubernetes status patches take.

Hand-written because it is a dozen lines and both store adapters need the
exact same semantics (a ``None`` value removes a key; lists are replaced).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` applied; neither argument is modified."""
    if not isinstance(patch, Mapping):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def diff_patch(old: Mapping[str, Any], new: Mapping[str, Any],
               keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new`` (top level only; values replaced whole).

    With ``keys``, only those keys are compared: a writer patches the fields it
    owns and leaves the rest of the object to others.
    """
    names = keys if keys is not None else tuple(set(old) | set(new))
    patch: dict[str, Any] = {}
    for key in names:
        if key in new:
            if old.get(key) != new[key]:
                patch[key] = new[key]
        elif key in old:
            patch[key] = None
    return patch
