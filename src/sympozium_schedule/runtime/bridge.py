"""The IPC bridge: an agent run's sidecar between its IPC folder and NATS.

A drop-in for Sympozium's own bridge on the schedule path: it takes the same
flags and environment, publishes each request file to
``sympozium.schedule.upsert`` in Sympozium's event envelope with the run's
identity in the metadata (never taken from the request body), and only then
archives the file. Unlike Sympozium's fire-and-forget path, it also follows the
router's answers and writes ``<request>.result.json`` back for the agent.

At most once per file after an ack, never lost before one: a file is archived
only after JetStream acknowledged it; the message id is derived from the
run and the file name, so a publish retried after a lost ack (or after a
crash between ack and archive) is recognised by JetStream as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sympozium_schedule.adapters.ipc import RequestTooLarge, ScheduleFolder
from sympozium_schedule.adapters.nats.bus import (
    UPSERT_SUBJECT,
    Bus,
    BusUnavailable,
    envelope,
    result_subject,
)
from sympozium_schedule.core.requests import Limits

log = structlog.get_logger("bridge")


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    ipc_path: Path
    agent_run_id: str
    instance: str
    namespace: str
    nats_url: str
    max_request_bytes: int = Limits().max_request_bytes


def request_id(settings: BridgeSettings, filename: str) -> str:
    return f"{settings.namespace}/{settings.agent_run_id}/{Path(filename).stem}"


def rejected(settings: BridgeSettings, filename: str, message: str) -> dict[str, Any]:
    return {"requestId": request_id(settings, filename), "requestFile": Path(filename).name,
            "status": "rejected", "message": message, "schedule": None}


class Bridge:
    def __init__(self, settings: BridgeSettings):
        self.settings = settings
        self.folder = ScheduleFolder(settings.ipc_path, max_bytes=settings.max_request_bytes)
        self.published = 0
        self._queue: asyncio.Queue[Path] = asyncio.Queue()
        self._queued: set[str] = set()
        self._bus: Bus | None = None

    def _enqueue(self, path: Path) -> None:
        if path.name not in self._queued:
            self._queued.add(path.name)
            self._queue.put_nowait(path)

    async def run(self, stop: asyncio.Event | None = None, *, drain_timeout: float = 10.0) -> None:
        """Forward requests until ``stop`` is set, then send what is still queued
        (for up to ``drain_timeout`` seconds) and return."""
        stop = stop or asyncio.Event()
        watching = asyncio.Event()
        blog = log.bind(run=self.settings.agent_run_id, instance=self.settings.instance)
        blog.info("bridge watching", folder=str(self.folder.dir))
        watcher = asyncio.create_task(self._watch(watching))
        publisher: asyncio.Task[None] | None = None
        try:
            connect = asyncio.create_task(Bus.connect_retrying(
                self.settings.nats_url, name=f"ipc-bridge-{self.settings.agent_run_id}"))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({connect, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not connect.done():
                await asyncio.wait({connect}, timeout=drain_timeout)
            if not connect.done():
                connect.cancel()
                self._scan()
                blog.warning("bridge stopped before NATS was reachable; requests left unsent",
                             pending=self._queue.qsize())
                return
            stopped.cancel()
            self._bus = connect.result()
            await self._follow_results()
            publisher = asyncio.create_task(self._publish_loop())
            await stop.wait()
            self._scan()  # anything written just before the agent exited
            try:
                async with asyncio.timeout(drain_timeout):
                    await self._queue.join()
            except TimeoutError:
                blog.warning("bridge stopped with requests unsent", pending=self._queue.qsize())
        finally:
            watching.set()
            for task in (watcher, publisher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._bus is not None:
                await self._bus.close()

    def _scan(self) -> None:
        for path in self.folder.pending():
            self._enqueue(path)

    async def _watch(self, stop: asyncio.Event) -> None:
        """Queue request files as they appear. The folder is scanned after the
        watcher starts and every few seconds, so a file written while the watcher
        was starting (or an event the kernel dropped) is still picked up."""
        self._scan()
        arrivals = self.folder.arrivals(stop)

        async def rescan() -> None:
            while True:
                await asyncio.sleep(0.5)
                self._scan()
                await asyncio.sleep(4.5)

        rescanner = asyncio.create_task(rescan())
        try:
            async for paths in arrivals:
                for path in paths:
                    self._enqueue(path)
        finally:
            rescanner.cancel()

    async def _follow_results(self) -> None:
        assert self._bus is not None
        subject = result_subject(self.settings.namespace, self.settings.agent_run_id)
        delay = 0.1
        while True:
            try:
                await self._bus.ensure_result_stream()
                await self._bus.follow(subject, self._on_result)
                return
            except BusUnavailable as exc:
                log.info("cannot follow results yet", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_result(self, data: bytes) -> None:
        try:
            result = json.loads(data)
            name = Path(str(result["requestFile"])).name
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed result message")
            return
        if not name or name.startswith("."):
            return
        self.folder.write_result(name, result)

    async def _publish_loop(self) -> None:
        while True:
            path = await self._queue.get()
            try:
                await self._publish_file(path)
            except Exception:  # one bad file must not stop the others
                log.exception("could not forward a request file", file=path.name)
            finally:
                self._queued.discard(path.name)
                self._queue.task_done()

    async def _publish_file(self, path: Path) -> None:
        assert self._bus is not None
        try:
            raw = self.folder.read(path)
        except FileNotFoundError:
            return  # archived already (a duplicate notification)
        except RequestTooLarge as exc:
            self._answer_locally(path, f"{exc}. Send a shorter request.")
            return
        except OSError as exc:
            self._answer_locally(path, f"the request file could not be read: {exc}")
            return
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._answer_locally(path, f"the request file is not valid JSON ({exc}); write a JSON "
                                       'object like {"name": ..., "action": ..., ...}')
            return
        metadata = {
            "agentRunID": self.settings.agent_run_id,
            "instanceName": self.settings.instance,
            "namespace": self.settings.namespace,
            "requestId": request_id(self.settings, path.name),
            "requestFile": path.name,
        }
        payload = envelope(body, metadata)
        delay = 0.05
        while True:
            try:
                await self._bus.ensure_request_stream()
                await self._bus.publish(UPSERT_SUBJECT, payload, msg_id=metadata["requestId"])
                break
            except BusUnavailable as exc:
                log.info("publish failed, retrying", file=path.name, error=str(exc),
                         retry_in=round(delay, 2))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        self.folder.archive(path)
        self.published += 1
        log.debug("request published", file=path.name)

    def _answer_locally(self, path: Path, message: str) -> None:
        log.info("request rejected by the bridge", file=path.name, reason=message)
        self.folder.write_result(path.name, rejected(self.settings, path.name, message))
        self.folder.archive(path)
