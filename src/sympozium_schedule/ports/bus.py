"""The message bus: what the IPC bridge, the Schedule Router and the auth callout need
from it, and the subjects they speak on.

Two implementations: NATS JetStream (:mod:`sympozium_schedule.adapters.nats`) and an
in-memory bus (:mod:`sympozium_schedule.adapters.memory`), and one contract suite
(tests/bus/test_contract.py) runs against both. What only the real server can show
(who may connect and publish where, a stream deleted under a running router, limits
of a server restarted with an empty store) is tested against the real server alone.

Identity lives in the subject, where the server's permissions can pin it: a run's
bridge may publish only on ``sympozium.schedule.request.<ns>.<instance>.<run>`` and
receive only ``sympozium.schedule.result.<ns>.<run>.<request id>``. The router reads
who asked from the subject the bus let through, not from the message.

Contract: typing and pure functions only, no I/O (``envelope`` stamps the time it
is given, else the current one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Protocol

# --- subjects ---------------------------------------------------------------------------------

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
DEDUPE_BUCKET = "sympozium-schedule-requests"
ROUTER_DURABLE = "sympozium-schedule-router"
# The header naming one publication, for the bus's duplicate window.
MSG_ID = "Nats-Msg-Id"
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
        """Replies to this bridge's own requests (publish acks, direct gets)."""
        return f"_INBOX_{token(self.namespace)}_{token(self.run)}"

    def direct_get(self, stream: str, request_id: str) -> str:
        """The last answer to one request, read without the JetStream API."""
        return f"{JS_API}.DIRECT.GET.{stream}.{self.answer(request_id)}"


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


def result_subject(namespace: str, run: str) -> str:
    """The subject answers to unscoped (Sympozium-bridge) requests of a run go to."""
    return f"{RESULT_PREFIX}.{token(namespace)}.{token(run)}"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcards: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(want) == len(have)


def envelope(data: Any, metadata: Mapping[str, str], *, at: datetime | None = None) -> bytes:
    """Sympozium's eventbus.Event: {topic, timestamp, metadata, data}."""
    when = at if at is not None else datetime.now(UTC)
    return json.dumps({
        "topic": LEGACY_TOPIC,
        "timestamp": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "metadata": dict(metadata),
        "data": data,
    }).encode()


# --- errors, limits, credentials ----------------------------------------------------------------


class BusUnavailable(Exception):
    """The bus cannot be reached or did not acknowledge: retry later."""


class PublishRefused(Exception):
    """The bus refused to store the message (over a limit): retrying will not help soon."""


@dataclass(frozen=True, slots=True)
class BusLimits:
    """What the bus keeps, and for how long. Requests: a work queue (an applied
    request is deleted when acked), new ones refused when full, at most
    ``requests_per_run`` waiting per run. Answers: the newest kept, the oldest
    discarded. The router's record of applied requests outlives any request
    the stream can still hold, so nothing is applied twice."""

    request_max_age: timedelta = timedelta(days=1)
    request_max_bytes: int = 256 << 20
    request_max_msgs: int = 100_000
    request_max_msg_size: int = 160 << 10  # a 64 KiB request file, JSON-escaped, in its envelope
    requests_per_run: int = 100
    duplicate_window: timedelta = timedelta(minutes=10)
    result_max_age: timedelta = timedelta(days=1)
    result_max_bytes: int = 64 << 20
    result_max_msgs: int = 100_000
    dedupe_ttl: timedelta = timedelta(days=2)
    dedupe_max_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.dedupe_ttl <= self.request_max_age:
            raise ValueError("the dedupe record must outlive the requests it guards: "
                             f"dedupe_ttl {self.dedupe_ttl} <= request_max_age {self.request_max_age}")


@dataclass(frozen=True, slots=True)
class Credential:
    """How a connection proves who it is: an nkey seed (the scheduler's own parts in
    embedded mode), a user and password (a server you configured), or a token (an
    agent run's bridge)."""

    nkey_seed: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None


# A credential, or where to read it afresh at each (re)connect (a rotating token file).
CredentialSource = Credential | Callable[[], Credential]


# --- consuming ----------------------------------------------------------------------------------


class Disposition(Enum):
    ACK = "ack"    # handled (applied or answered)
    NAK = "nak"    # temporary trouble: deliver again later
    TERM = "term"  # malformed: never deliver again


@dataclass(frozen=True, slots=True)
class Delivery:
    data: bytes
    headers: dict[str, str]
    subject: str
    delivered: int
    stream_seq: int


# A delivery's verdict and, for NAK, the delay before it comes again (seconds).
Handler = Callable[[Delivery], Awaitable[tuple[Disposition, float]]]
# A message seen on a subject: (data, subject).
Callback = Callable[[bytes, str], Awaitable[None]]
# A request's body and headers -> the reply (None: no reply).
Responder = Callable[[bytes, Mapping[str, str]], Awaitable[bytes | None]]


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class KeyValue(Protocol):
    """The router's record of answered requests: a bucket whose entries outlive any
    request the stream can still hold (:class:`BusLimits`)."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...


class BusConnection(Protocol):
    """One connection to the bus. Every failure to reach it is :class:`BusUnavailable`."""

    @property
    def usable(self) -> bool:
        """False once the connection was given up (closed, or its credential expired)."""
        ...

    async def close(self) -> None: ...

    # --- what a bridge does (with its run's credential) -------------------------------------

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None,
                      timeout: float = 2.0) -> bool:
        """Store ``payload`` in the stream capturing ``subject`` and wait until it is.
        True if new, False if the stream already had a message with ``msg_id`` (a
        retried publish, within the duplicate window). :class:`PublishRefused` when a
        limit of the stream refuses it."""
        ...

    async def subscribe(self, subject: str, callback: Callback) -> Subscription:
        """Every message published on ``subject`` (wildcards allowed) from now on."""
        ...

    async def direct_get(self, stream: str, subject: str) -> bytes | None:
        """The last message ``stream`` holds on ``subject``, or None."""
        ...

    # --- what the callout does --------------------------------------------------------------

    async def serve(self, subject: str, responder: Responder) -> Subscription:
        """Answer requests on ``subject`` (a reply is sent when the responder returns one)."""
        ...

    async def request(self, subject: str, payload: bytes, *, timeout: float = 2.0) -> bytes:
        """Send a request and wait for its reply."""
        ...

    # --- what the router does (with its own login) ------------------------------------------

    async def publish_plain(self, subject: str, payload: bytes) -> None:
        """Send without storing (answers to an unscoped publisher)."""
        ...

    async def follow(self, subject: str, callback: Callable[[bytes], Awaitable[None]]
                     ) -> Subscription:
        """Every message on ``subject`` from the start of its stream, then new ones."""
        ...

    async def ensure_request_stream(self, *, legacy: bool = False) -> str:
        """The stream capturing requests (ours, created or brought to the limits, or a
        foreign one as it is): its name."""
        ...

    async def ensure_result_stream(self) -> str: ...

    def forget_streams(self) -> None:
        """Look the streams up again next time (after a server lost them)."""
        ...

    async def bucket(self, name: str = DEDUPE_BUCKET) -> KeyValue: ...

    async def consume(self, subjects: Sequence[str], durable: str, handler: Handler, *,
                      stream: str, batch: int = 64, concurrency: int = 64,
                      restore: Callable[[], Awaitable[str]] | None = None) -> None:
        """Deliver ``subjects`` through the durable consumer ``durable`` forever. Up to
        ``concurrency`` deliveries are handled at once, each started in stream order
        (ordering per key is the handler's business); the handler's verdict becomes
        ack, nak (after its delay) or term. Several consumers of one durable share its
        messages. ``restore`` re-creates the streams when the server lost them."""
        ...


class Broker(Protocol):
    """Where connections come from (a NATS server's URL, or an in-memory bus)."""

    async def connect(self, *, name: str, credential: CredentialSource | None = None,
                      inbox_prefix: str | None = None,
                      on_reconnect: Callable[[], Awaitable[None]] | None = None,
                      on_closed: Callable[[], Awaitable[None]] | None = None) -> BusConnection:
        """One connection, or :class:`BusUnavailable`. It reconnects by itself after
        a drop (``on_reconnect``) until it is given up (``on_closed``)."""
        ...

    async def connect_retrying(self, *, name: str, credential: CredentialSource | None = None,
                               inbox_prefix: str | None = None,
                               on_reconnect: Callable[[], Awaitable[None]] | None = None,
                               on_closed: Callable[[], Awaitable[None]] | None = None,
                               max_delay: float = 5.0) -> BusConnection:
        """As :meth:`connect`, retrying with backoff until it succeeds."""
        ...
