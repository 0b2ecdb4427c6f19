"""The IPC bridge: an agent run's sidecar between its IPC folder and NATS.

A drop-in for Sympozium's own bridge on the schedule path (same flags and
environment). It connects with the run's own credential, which lets it publish
only on ``sympozium.schedule.request.<ns>.<instance>.<run>`` and receive only
that run's answers, so who is asking is vouched for by the server, not by the
message. Each request file is claimed under a fresh request id (see
:mod:`sympozium_schedule.adapters.ipc`), published in Sympozium's event
envelope, and archived once JetStream acknowledged it. Answers come back on a
plain subscription; any missed while disconnected are read with a direct get of
that one answer's subject (no JetStream API needed).

Never lost before an ack, never applied twice: a claimed request is resent with
its own id until acknowledged; JetStream's duplicate window and the router's
record of answered ids drop a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sympozium_schedule.adapters.ipc import (
    MAX_NAME_BYTES,
    SETTLE_SECONDS,
    Claimed,
    FolderUnusable,
    NotARequestFile,
    RequestRefused,
    ScheduleFolder,
    is_request,
)
from sympozium_schedule.adapters.nats.bus import NatsBroker
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.ports.bus import (
    RESULT_STREAM,
    Broker,
    BusConnection,
    BusUnavailable,
    Credential,
    PublishRefused,
    RunSubjects,
    envelope,
)

log = structlog.get_logger("bridge")

# How long a sent request's answer is looked for after a bridge restart.
ANSWER_HORIZON = 3600.0
CATCH_UP_EVERY = 2.0


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    ipc_path: Path
    agent_run_id: str
    instance: str
    namespace: str
    nats_url: str
    max_request_bytes: int = Limits().max_request_bytes
    # The run's credential for the bus: a secret, or a file re-read at each
    # (re)connect (a projected ServiceAccount token rotates). Neither: anonymous.
    token: str | None = None
    token_file: Path | None = None
    result_stream: str = RESULT_STREAM

    @property
    def subjects(self) -> RunSubjects:
        return RunSubjects(self.namespace, self.instance, self.agent_run_id)

    def credential(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip() or None
            except OSError as exc:
                log.warning("cannot read the bus token file", file=str(self.token_file), error=str(exc))
                return None
        return self.token


def answer(request_id: str, name: str, status: str, message: str) -> dict[str, Any]:
    return {"requestId": request_id, "requestFile": name, "status": status, "message": message,
            "schedule": None}


class Bridge:
    def __init__(self, settings: BridgeSettings, *, broker: Broker | None = None):
        self.settings = settings
        self.broker: Broker = broker or NatsBroker(settings.nats_url)
        self.subjects = settings.subjects
        self.folder: ScheduleFolder | None = None
        self.published = 0
        self.answered = 0
        self._queue: asyncio.Queue[str | Claimed] = asyncio.Queue()
        self._queued: set[str] = set()
        self._outstanding: dict[str, tuple[str, float]] = {}  # request id -> (name, sent at)
        self._bus: BusConnection | None = None
        self._catch_up = asyncio.Event()
        self._stop = asyncio.Event()
        self._watching = asyncio.Event()
        # Set once the folder is watched and requests are forwarded (for tests and
        # benchmarks, which would otherwise wait for a probe file to settle).
        self.ready = asyncio.Event()

    # --- the folder -----------------------------------------------------------------------

    def _enqueue(self, item: str | Claimed) -> None:
        if isinstance(item, Claimed):
            self._queue.put_nowait(item)
        elif item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    def _scan(self, *, settle: float | None = None) -> bool:
        """Queue what is waiting; True if some files were too fresh to take yet."""
        assert self.folder is not None
        names, young = (self.folder.pending() if settle is None
                        else self.folder.pending(settle=settle))
        for name in names:
            self._enqueue(name)
        return young

    async def _watch(self) -> None:
        """Queue request files as they are completed. A scan at start (and after the
        kernel dropped events) takes files left alone for a second; fresher ones are
        looked at again once they settle, in case their writer never closes them."""
        assert self.folder is not None
        arrivals = self.folder.watch()
        self._watching.set()
        for claimed in self.folder.unsent():
            self._enqueue(claimed)
        loop = asyncio.get_running_loop()
        rescan_at: float | None = loop.time()
        event: asyncio.Future[list[str] | None] = asyncio.ensure_future(arrivals.next())
        try:
            while True:
                if rescan_at is not None and loop.time() >= rescan_at:
                    rescan_at = loop.time() + SETTLE_SECONDS if self._scan() else None
                timeout = None if rescan_at is None else max(0.0, rescan_at - loop.time())
                done, _ = await asyncio.wait({event}, timeout=timeout)
                if not done:
                    continue
                try:
                    batch = event.result()
                except FolderUnusable as exc:
                    log.error("the bridge stops watching its folder", run=self.settings.agent_run_id,
                              error=str(exc))
                    return
                event = asyncio.ensure_future(arrivals.next())
                if batch is None:
                    rescan_at = loop.time()  # overflow: events were lost
                    continue
                for name in batch:
                    self._enqueue(name)
        finally:
            event.cancel()
            arrivals.close()

    # --- the bus --------------------------------------------------------------------------

    async def _connect(self, stop: asyncio.Event) -> BusConnection | None:
        settings = self.settings

        def credential() -> Credential:
            # Read afresh at each (re)connect: a projected ServiceAccount token rotates.
            return Credential(token=settings.credential())

        async def wake() -> None:
            self._catch_up.set()

        connect = asyncio.ensure_future(self.broker.connect_retrying(
            name=f"ipc-bridge-{settings.agent_run_id}",
            credential=credential if settings.token_file is not None else credential(),
            inbox_prefix=self.subjects.inbox, on_reconnect=wake, on_closed=wake))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({connect, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not connect.done():
            connect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connect
            return None
        bus = connect.result()
        while True:
            try:
                await bus.subscribe(f"{self.subjects.answers}.>", self._on_answer)
                return bus
            except BusUnavailable as exc:
                log.info("cannot subscribe to answers yet", error=str(exc))
                await asyncio.sleep(0.5)

    async def _on_answer(self, data: bytes, subject: str = "") -> None:
        try:
            result = json.loads(data)
            request_id = str(result["requestId"])
            claimed_name = Path(str(result.get("requestFile") or "")).name
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed answer", subject=subject)
            return
        known = self._outstanding.pop(request_id, None)
        name = known[0] if known is not None else claimed_name
        if not is_request(name):
            return
        self._write(name, result)

    def _write(self, name: str, result: dict[str, Any]) -> None:
        assert self.folder is not None
        try:
            if self.folder.write_result(name, result) is not None:
                self.answered += 1
        except OSError as exc:
            log.warning("could not write an answer", file=name, error=str(exc))

    async def _catch_up_loop(self) -> None:
        """Answers the subscription missed (published while disconnected, or before a
        restarted bridge subscribed): one direct get per request still waiting."""
        while True:
            # Asleep while nothing is awaited: woken by a reconnect or a closed connection.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._catch_up.wait(),
                                       CATCH_UP_EVERY if self._outstanding else None)
            self._catch_up.clear()
            bus = self._bus
            if bus is not None and not bus.usable:
                # nats-py gave up (e.g. the credential expired): connect afresh.
                log.info("bus connection closed; reconnecting", run=self.settings.agent_run_id)
                self._bus = None
                await bus.close()
                self._bus = await self._connect(self._stop)
                continue
            if bus is None or not self._outstanding:
                continue
            now = time.monotonic()
            for request_id, (_, sent) in list(self._outstanding.items()):
                if now - sent < 1.0:
                    continue  # the subscription gets it
                if now - sent > ANSWER_HORIZON:
                    self._outstanding.pop(request_id, None)
                    continue
                try:
                    data = await bus.direct_get(self.settings.result_stream,
                                                self.subjects.answer(request_id))
                except BusUnavailable:
                    break
                if data is not None:
                    await self._on_answer(data)

    # --- main loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None, *, drain_timeout: float = 10.0) -> None:
        """Forward requests until ``stop`` is set, then send what is still queued
        (for up to ``drain_timeout`` seconds) and return."""
        stop = stop or asyncio.Event()
        self._stop = stop
        blog = log.bind(run=self.settings.agent_run_id, instance=self.settings.instance)
        try:
            self.folder = ScheduleFolder(self.settings.ipc_path,
                                         max_bytes=self.settings.max_request_bytes)
        except (FolderUnusable, OSError) as exc:
            blog.error("bridge cannot use the IPC folder", error=str(exc))
            return
        blog.info("bridge watching", folder=str(self.folder.path))
        # Sent by an earlier bridge of this run: their answers may have come meanwhile.
        looked_for_since = time.monotonic() - 1.0  # due for a direct get at once
        for claimed in self.folder.recently_sent(within=ANSWER_HORIZON):
            self._outstanding[claimed.request_id] = (claimed.name, looked_for_since)
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._watch())]
        try:
            self._bus = await self._connect(stop)
            if self._bus is None:
                tasks[0].cancel()
                blog.warning("bridge stopped before NATS was reachable; requests left unsent",
                             pending=self._queue.qsize())
                return
            self._catch_up.set()
            tasks += [asyncio.create_task(self._publish_loop()),
                      asyncio.create_task(self._catch_up_loop())]
            await self._watching.wait()
            self.ready.set()
            await stop.wait()
            self._scan(settle=0.0)  # anything written just before the agent exited
            try:
                async with asyncio.timeout(drain_timeout):
                    await self._queue.join()
            except TimeoutError:
                blog.warning("bridge stopped with requests unsent", pending=self._queue.qsize())
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._bus is not None:
                await self._bus.close()
            self.folder.close()

    async def _publish_loop(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._forward(item)
            except Exception:  # one bad file must not stop the others
                log.exception("could not forward a request file", file=str(item))
            finally:
                self._queue.task_done()

    async def _forward(self, item: str | Claimed) -> None:
        folder = self.folder
        assert folder is not None
        if isinstance(item, str):
            # Before the claim: the same name written again from now on is queued again.
            self._queued.discard(item)
            claimed = folder.claim(item)
            if claimed is None:
                return  # taken already (a duplicate event)
        else:
            claimed = item
        if claimed.too_long:
            length = len(claimed.name.encode())
            self._reject(claimed, f"the file name is {length} bytes; the limit is {MAX_NAME_BYTES}. "
                                  "Use a shorter name.")
            return
        try:
            raw = folder.read(claimed)
        except FileNotFoundError:
            return
        except NotARequestFile as exc:
            self._reject(claimed, str(exc), drop=True)
            return
        except RequestRefused as exc:
            self._reject(claimed, str(exc))
            return
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._reject(claimed, f"the request file is not valid JSON ({exc}); write a JSON "
                                  'object like {"name": ..., "action": ..., ...}')
            return
        metadata = {
            "agentRunID": self.settings.agent_run_id,
            "instanceName": self.settings.instance,
            "namespace": self.settings.namespace,
            "requestId": claimed.request_id,
            "requestFile": claimed.name,
        }
        await self._publish(claimed, envelope(body, metadata))

    async def _publish(self, claimed: Claimed, payload: bytes) -> None:
        assert self.folder is not None
        delay = 0.05
        while True:
            bus = self._bus
            try:
                if bus is None:
                    raise BusUnavailable("not connected")
                await bus.publish(self.subjects.request, payload, msg_id=claimed.request_id)
                break
            except PublishRefused as exc:
                self._reject(claimed, f"the bus refused the request: {exc}. Try again later.")
                return
            except BusUnavailable as exc:
                log.info("publish failed, retrying", file=claimed.name, error=str(exc),
                         retry_in=round(delay, 2))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        self._outstanding[claimed.request_id] = (claimed.name, time.monotonic())
        self.folder.sent(claimed)
        self.published += 1
        log.debug("request published", file=claimed.name, request_id=claimed.request_id)

    def _reject(self, claimed: Claimed, message: str, *, drop: bool = False) -> None:
        assert self.folder is not None
        log.info("request rejected by the bridge", file=claimed.name, reason=message)
        self._write(claimed.name, answer(claimed.request_id, claimed.name, "rejected", message))
        if drop:
            self.folder.drop(claimed)
        else:
            self.folder.sent(claimed)
