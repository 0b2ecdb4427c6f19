"""The router's streams: configured from :class:`~sympozium_schedule.ports.bus.BusLimits`,
created when missing, brought to the configuration when ours has drifted (an upgrade
applies new bounds), and a foreign stream (Sympozium's own ``sympozium`` stream
captures ``sympozium.>``) used as it is.

Answers may be stored in atomic batches (one acknowledgement for many, see
:mod:`.batching`): our answer stream allows them where the server can (2.12 on).
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import api
from nats.js.client import JetStreamContext

from sympozium_schedule.ports.bus import (
    LEGACY_SUBJECT,
    REQUEST_STREAM,
    REQUEST_SUBJECTS,
    RESULT_PREFIX,
    RESULT_STREAM,
    RESULT_SUBJECTS,
    BusLimits,
    BusUnavailable,
)

log = structlog.get_logger("nats")

# Compared with what the server holds; a difference is an update of the stream.
_RECONCILED = ("subjects", "max_age", "max_bytes", "max_msgs", "max_msg_size", "discard",
               "discard_new_per_subject", "max_msgs_per_subject", "allow_direct",
               "duplicate_window", "allow_atomic")


def why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def server_at_least(nc: Client, major: int, minor: int) -> bool:
    version = nc.connected_server_version
    try:
        return (version.major, version.minor) >= (major, minor)
    except (TypeError, ValueError, AttributeError):  # not connected yet, or an odd version
        return False


@dataclass(frozen=True, slots=True)
class Stream:
    """A stream found or made for a subject, and whether it takes atomic batches."""

    name: str
    atomic: bool


def request_stream_config(limits: BusLimits, *, legacy: bool = False) -> api.StreamConfig:
    return api.StreamConfig(
        name=REQUEST_STREAM, subjects=[REQUEST_SUBJECTS, *([LEGACY_SUBJECT] if legacy else [])],
        retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
        max_age=limits.request_max_age.total_seconds(), max_bytes=limits.request_max_bytes,
        max_msgs=limits.request_max_msgs, max_msg_size=limits.request_max_msg_size,
        max_msgs_per_subject=limits.requests_per_run, discard=api.DiscardPolicy.NEW,
        discard_new_per_subject=True, duplicate_window=limits.duplicate_window.total_seconds())


def result_stream_config(limits: BusLimits, *, atomic: bool) -> api.StreamConfig:
    return api.StreamConfig(
        name=RESULT_STREAM, subjects=[RESULT_SUBJECTS], retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE, max_age=limits.result_max_age.total_seconds(),
        max_bytes=limits.result_max_bytes, max_msgs=limits.result_max_msgs,
        max_msgs_per_subject=1, discard=api.DiscardPolicy.OLD, allow_direct=True,
        duplicate_window=limits.duplicate_window.total_seconds(),
        allow_atomic=True if atomic else None)


class Streams:
    """The streams of one connection, looked up once (again after :meth:`forget`)."""

    def __init__(self, nc: Client, js: JetStreamContext, limits: BusLimits):
        self._nc = nc
        self._js = js
        self.limits = limits
        self._found: dict[str, Stream] = {}

    def forget(self) -> None:
        self._found.clear()

    def known(self, subject: str) -> Stream | None:
        """The stream found earlier for ``subject``'s family, if any."""
        if subject.startswith(RESULT_PREFIX + "."):
            return self._found.get(RESULT_PREFIX)
        return None

    async def requests(self, *, legacy: bool = False) -> str:
        found = await self._ensure(REQUEST_SUBJECTS[:-1] + "x.y.z",
                                   request_stream_config(self.limits, legacy=legacy))
        return found.name

    async def results(self) -> str:
        atomic = server_at_least(self._nc, 2, 12)
        found = await self._ensure(f"{RESULT_PREFIX}.x.y.z",
                                   result_stream_config(self.limits, atomic=atomic))
        self._found[RESULT_PREFIX] = found
        return found.name

    async def _ensure(self, probe: str, config: api.StreamConfig) -> Stream:
        """The stream capturing ``probe``: a foreign one as it is, ours created or
        brought to ``config``."""
        if probe in self._found:
            return self._found[probe]
        assert config.name is not None
        try:
            try:
                name = await self._js.find_stream_name_by_subject(probe)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(config)
                name = config.name
            else:
                if name == config.name:
                    await self._reconcile(config)
            atomic = bool((await self._js.stream_info(name)).config.allow_atomic)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailable(f"JetStream unavailable: {why(exc)}") from exc
        found = Stream(name, atomic)
        self._found[probe] = found
        return found

    async def _reconcile(self, config: api.StreamConfig) -> None:
        assert config.name is not None
        current = (await self._js.stream_info(config.name)).config
        if current.retention != config.retention:
            # Retention cannot change in place. The old stream is from an older
            # version (limits retention): what it holds was applied or is stale.
            log.warning("recreating a stream with another retention", stream=config.name,
                        old=str(current.retention), new=str(config.retention))
            await self._js.delete_stream(config.name)
            await self._js.add_stream(config)
            return
        if any(getattr(current, k) != getattr(config, k) for k in _RECONCILED):
            await self._js.update_stream(config)
