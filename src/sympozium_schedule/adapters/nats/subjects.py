"""The subjects of self-scheduling, and what an agent run's bridge may touch.

Identity lives in the subject, where the server's permissions can pin it: a run's
bridge may publish only on ``sympozium.schedule.request.<ns>.<instance>.<run>``
and receive only ``sympozium.schedule.result.<ns>.<run>.<request>`` (plus the
replies to its own requests, under an inbox prefix of its own). The router reads
who asked from the subject the server let through, not from the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sympozium_schedule.adapters.nats.jwt import Permissions

REQUEST_PREFIX = "sympozium.schedule.request"
REQUEST_SUBJECTS = f"{REQUEST_PREFIX}.>"
# Sympozium's own bridge publishes here with the identity in the message: trusted
# only with --allow-unscoped-publishers.
LEGACY_SUBJECT = "sympozium.schedule.upsert"
LEGACY_TOPIC = "schedule.upsert"
RESULT_PREFIX = "sympozium.schedule.result"
RESULT_SUBJECTS = f"{RESULT_PREFIX}.>"
REQUEST_STREAM = "SYMPOZIUM_SCHEDULE_REQUESTS"
RESULT_STREAM = "SYMPOZIUM_SCHEDULE_RESULTS"
JS_API = "$JS.API"

_UNSAFE = re.compile(r"[.*>\s]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def token(text: str) -> str:
    """One subject token: no '.', '*', '>' or whitespace. Kubernetes names never
    contain '_', so mapping the others to '_' keeps distinct names distinct."""
    return _UNSAFE.sub("_", text) or "_"


def is_request_id(text: str) -> bool:
    return bool(_REQUEST_ID.match(text))


@dataclass(frozen=True, slots=True)
class RunSubjects:
    """Everything one agent run's bridge uses on the bus."""

    namespace: str
    instance: str
    run: str

    @property
    def request(self) -> str:
        return f"{REQUEST_PREFIX}.{token(self.namespace)}.{token(self.instance)}.{token(self.run)}"

    @property
    def answers(self) -> str:
        """The prefix of this run's answers (one subject per request under it)."""
        return f"{RESULT_PREFIX}.{token(self.namespace)}.{token(self.run)}"

    def answer(self, request_id: str) -> str:
        return f"{self.answers}.{request_id}"

    @property
    def inbox(self) -> str:
        """Replies to this bridge's own requests (JetStream acks, direct gets)."""
        return f"_INBOX_{token(self.namespace)}_{token(self.run)}"

    def direct_get(self, stream: str, request_id: str) -> str:
        """The last answer to one request, read without the JetStream API."""
        return f"{JS_API}.DIRECT.GET.{stream}.{self.answer(request_id)}"

    def permissions(self, result_stream: str = RESULT_STREAM) -> Permissions:
        return Permissions(
            publish=(self.request, f"{JS_API}.DIRECT.GET.{result_stream}.{self.answers}.>"),
            subscribe=(f"{self.answers}.>", f"{self.inbox}.>"))


@dataclass(frozen=True, slots=True)
class SubjectIdentity:
    namespace: str
    instance: str
    run: str


def parse_request_subject(subject: str) -> SubjectIdentity | None:
    """(namespace, instance, run) as tokens, or None for any other subject."""
    prefix = REQUEST_PREFIX + "."
    if not subject.startswith(prefix):
        return None
    parts = subject[len(prefix):].split(".")
    if len(parts) != 3 or not all(parts):
        return None
    return SubjectIdentity(*parts)
