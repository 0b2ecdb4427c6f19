"""What an agent run's credential lets it touch on the NATS server: its own request
subject, its own answers (and the direct gets of them), replies under its own inbox
prefix. The subject scheme itself is the bus port's (:mod:`sympozium_schedule.ports.bus`),
named here too for the callers that speak NATS."""

from __future__ import annotations

from sympozium_schedule.adapters.nats.jwt import Permissions
from sympozium_schedule.ports.bus import (
    JS_API,
    LEGACY_SUBJECT,
    LEGACY_TOPIC,
    REQUEST_PREFIX,
    REQUEST_STREAM,
    REQUEST_SUBJECTS,
    RESULT_PREFIX,
    RESULT_STREAM,
    RESULT_SUBJECTS,
    RunSubjects,
    SubjectIdentity,
    is_request_id,
    parse_request_subject,
    token,
)

__all__ = [
    "JS_API", "LEGACY_SUBJECT", "LEGACY_TOPIC", "REQUEST_PREFIX", "REQUEST_STREAM",
    "REQUEST_SUBJECTS", "RESULT_PREFIX", "RESULT_STREAM", "RESULT_SUBJECTS", "RunSubjects",
    "SubjectIdentity", "is_request_id", "parse_request_subject", "permissions", "token",
]


def permissions(run: RunSubjects, result_stream: str = RESULT_STREAM) -> Permissions:
    """The user JWT's permissions for ``run``'s bridge, and nothing else."""
    return Permissions(
        publish=(run.request, f"{JS_API}.DIRECT.GET.{result_stream}.{run.answers}.>"),
        subscribe=(f"{run.answers}.>", f"{run.inbox}.>"))
