"""Errors as the API reports them: a status and one line a person can act on.

The body is JSON (``{"error": ..., "reason": ...}`` plus what helps, such as the
field at fault or the current resourceVersion of a conflicting object). A
client written for Sympozium's API, which reads an error's body as text, still
shows the line.
"""

from __future__ import annotations

from typing import Any

from sympozium_schedule.core.errors import SpecError


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, reason: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "reason": self.reason, **self.extra}


def bad_request(message: str, *, field: str | None = None) -> ApiError:
    return ApiError(400, message, reason="BadRequest", field=field)


def invalid(exc: SpecError) -> ApiError:
    """A field the core refused, with the message ``apply`` prints for it."""
    return ApiError(422, str(exc), reason="Invalid", field=exc.field)


def not_found(kind: str, name: str, namespace: str) -> ApiError:
    return ApiError(404, f'{kind} "{name}" not found in namespace "{namespace}"', reason="NotFound")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, reason="Unauthorized")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, reason="Forbidden")
