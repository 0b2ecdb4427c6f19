"""Errors the core raises: each names the field and the value at fault."""

from __future__ import annotations


class SpecError(ValueError):
    """A permanent error in user input: report it, do not retry.

    ``field`` is a dotted path (``spec.schedule``), ``value`` what was given,
    ``reason`` a short machine-friendly CamelCase word used as a condition reason.
    """

    def __init__(self, field: str, value: object, message: str, *, reason: str = "InvalidSpec"):
        self.field = field
        self.value = value
        self.reason = reason
        self.detail = message
        super().__init__(f"{field}: {_show(value)}: {message}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
