"""Fewer round trips under load: what the router's concurrent handlers ask of one
stream in the same turn of the event loop goes to the server as one request.

* :class:`AtomicPublisher`: publishes to one stream as an atomic batch (nats-server
  2.12, ADR-50): the messages are sent without replies and the last one commits the
  batch and is acknowledged for all. All or nothing: a batch the server refuses (a
  limit, a duplicate message id) is published again one message at a time, so each
  caller gets its own verdict; a batch that times out fails every caller (retried
  by them, and harmless to store twice: a key put again, an answer replacing itself).
* :class:`LastValues`: reads the last message of many subjects of one stream with one
  batched direct get (``multi_last``, nats-server 2.11): the replies stream back on
  an inbox and end with an end-of-batch status.

A lone call (nothing else queued in that turn) goes out at once as a plain request,
so a single request waits no longer than before. nats-py has neither operation (its
stream config knows ``allow_atomic``, its client does not batch), hence this module;
both are a few headers over its core request and subscribe.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sympozium_schedule.ports.bus import BusUnavailable, PublishRefused

# JetStream's error codes for a publish over a stream's limits.
OVER_LIMIT = {10077: "the request queue is full", 10047: "the request queue is full",
              10054: "the request is too large for the bus", 10078: "the request queue is full"}
MAX_BATCH = 64
_BATCH_ID = "Nats-Batch-Id"
_BATCH_SEQUENCE = "Nats-Batch-Sequence"
_BATCH_COMMIT = "Nats-Batch-Commit"
_STATUS = "Status"
T = TypeVar("T")


class Refused(Exception):
    """The server answered a publish with an error (it stored nothing)."""

    def __init__(self, code: int, description: str):
        super().__init__(description)
        self.code = code
        self.description = description

    def as_bus_error(self, subject: str) -> Exception:
        reason = OVER_LIMIT.get(self.code)
        if reason is not None:
            return PublishRefused(f"{reason} ({self.description})")
        return BusUnavailable(f"publish to {subject} failed: {self.description}")


def parse_ack(data: bytes) -> bool:
    """A publish acknowledgement: True if stored as new, False if a duplicate; an
    error reply is :class:`Refused`."""
    try:
        ack = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Refused(0, f"not a publish acknowledgement: {data[:80]!r}") from exc
    error = ack.get("error") if isinstance(ack, dict) else None
    if isinstance(error, dict):
        raise Refused(int(error.get("err_code") or 0), str(error.get("description") or error))
    if not isinstance(ack, dict) or "stream" not in ack:
        raise Refused(0, f"not a publish acknowledgement: {data[:80]!r}")
    return not bool(ack.get("duplicate"))


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class _Queued:
    subject: str
    payload: bytes
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(slots=True)
class _Read:
    subject: str
    done: asyncio.Future[bytes | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class _Coalescer(abc.ABC, Generic[T]):
    """Calls queued in one turn of the loop, handed to ``_send`` together."""

    def __init__(self) -> None:
        self._queue: list[T] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _enqueue(self, item: T) -> None:
        self._queue.append(item)
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        queued, self._queue = self._queue, []
        for start in range(0, len(queued), MAX_BATCH):
            task = asyncio.ensure_future(self._send(queued[start:start + MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @abc.abstractmethod
    async def _send(self, items: Sequence[T]) -> None:
        """Send one batch and settle each item's future."""


def _settle(item: _Queued, error: Exception | None) -> None:
    if item.done.done():
        return
    if error is None:
        item.done.set_result(None)
    else:
        item.done.set_exception(error)


class AtomicPublisher(_Coalescer[_Queued]):
    """Publishes to one stream that allows atomic batches (see the module)."""

    def __init__(self, nc: Client, *, timeout: float = 2.0):
        super().__init__()
        self._nc = nc
        self._timeout = timeout
        self.batches = 0  # for tests: how many went out as one batch

    async def publish(self, subject: str, payload: bytes) -> None:
        item = _Queued(subject, payload)
        self._enqueue(item)
        await item.done

    async def _one(self, item: _Queued) -> None:
        try:
            reply = await self._nc.request(item.subject, item.payload, timeout=self._timeout)
            parse_ack(reply.data)
        except Refused as exc:
            _settle(item, exc.as_bus_error(item.subject))
        except (nats.errors.Error, TimeoutError) as exc:
            _settle(item, BusUnavailable(f"publish to {item.subject} failed: {_why(exc)}"))
        else:
            _settle(item, None)

    async def _send(self, items: Sequence[_Queued]) -> None:
        if len(items) == 1:
            await self._one(items[0])
            return
        batch = secrets.token_hex(8)
        try:
            for number, item in enumerate(items[:-1], 1):
                await self._nc.publish(item.subject, item.payload,
                                       headers={_BATCH_ID: batch, _BATCH_SEQUENCE: str(number)})
            last = items[-1]
            reply = await self._nc.request(
                last.subject, last.payload, timeout=self._timeout,
                headers={_BATCH_ID: batch, _BATCH_SEQUENCE: str(len(items)), _BATCH_COMMIT: "1"})
            parse_ack(reply.data)
        except Refused:
            # Nothing of the batch was stored: each alone, for a verdict of its own.
            await asyncio.gather(*(self._one(item) for item in items))
            return
        except (nats.errors.Error, TimeoutError) as exc:
            for item in items:
                _settle(item, BusUnavailable(f"publish to {item.subject} failed: {_why(exc)}"))
            return
        self.batches += 1
        for item in items:
            _settle(item, None)


class LastValues(_Coalescer[_Read]):
    """The last message of subjects of one stream, many per request (see the module).
    Deleted entries (a key-value delete or purge marker) read as None."""

    def __init__(self, nc: Client, stream: str, *, timeout: float = 2.0):
        super().__init__()
        self._nc = nc
        self._stream = stream
        self._timeout = timeout
        self._inbox: str | None = None
        self._sub: Subscription | None = None
        self._replies: dict[str, asyncio.Queue[Msg]] = {}
        self.batches = 0

    async def get(self, subject: str) -> bytes | None:
        read = _Read(subject)
        self._enqueue(read)
        return await read.done

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await sub.unsubscribe()

    async def _on_reply(self, msg: Msg) -> None:
        queue = self._replies.get(msg.subject)
        if queue is not None:
            queue.put_nowait(msg)

    async def _send(self, reads: Sequence[_Read]) -> None:
        try:
            values = await self._fetch([r.subject for r in reads])
        except (nats.errors.Error, TimeoutError, BusUnavailable) as exc:
            error = exc if isinstance(exc, BusUnavailable) else BusUnavailable(
                f"cannot read {self._stream}: {_why(exc)}")
            for read in reads:
                if not read.done.done():
                    read.done.set_exception(error)
            return
        for read in reads:
            if not read.done.done():
                read.done.set_result(values.get(read.subject))

    async def _fetch(self, subjects: list[str]) -> dict[str, bytes | None]:
        if self._inbox is None:
            inbox = self._nc.new_inbox()
            self._sub = await self._nc.subscribe(f"{inbox}.*", cb=self._on_reply)
            self._inbox = inbox
        reply_to = f"{self._inbox}.{secrets.token_hex(6)}"
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._replies[reply_to] = queue
        wanted = set(subjects)
        found: dict[str, bytes | None] = {}
        try:
            body = orjson.dumps({"multi_last": sorted(wanted), "batch": len(wanted)})
            await self._nc.publish(f"$JS.API.DIRECT.GET.{self._stream}", body, reply=reply_to)
            async with asyncio.timeout(self._timeout):
                while True:
                    msg = await queue.get()
                    headers = msg.headers or {}
                    status = headers.get(_STATUS)
                    if status is not None:
                        if status in ("204", "404"):  # end of batch; 404: none of them stored
                            break
                        raise BusUnavailable(f"cannot read {self._stream}: status {status} "
                                             f"{headers.get('Description', '')}".rstrip())
                    subject = headers.get("Nats-Subject", "")
                    deleted = headers.get("KV-Operation") in ("DEL", "PURGE")
                    if subject in wanted:
                        found[subject] = None if deleted else msg.data
        finally:
            self._replies.pop(reply_to, None)
        self.batches += 1
        return found
