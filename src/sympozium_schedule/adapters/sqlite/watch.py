"""Watches: following the change log, woken by commits instead of polling it.

A watch reads the change log from its cursor (an indexed range scan). When it
finds nothing it sleeps until a commit of this process wakes it, or the file
follower reports a commit of another process (inotify, read by the event loop);
the backed-off poll only covers a follower that could not start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from asyncinotify import Inotify, Mask

from sympozium_schedule.adapters.sqlite.codec import not_newer
from sympozium_schedule.adapters.sqlite.tx import assemble
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import (
    EventType,
    Expired,
    Known,
    Labels,
    Unavailable,
    WatchEvent,
    labels_match,
)

Events = list[WatchEvent]
Rows = list[Any]
Read = Callable[..., Rows]
# Wake-ups for another process's commits, at most one per this many seconds.
COALESCE = 0.02
# An idle watch's longest sleep while inotify reports every commit (its own commits
# wake it too): a safety net, not the way changes are seen. Without inotify, max_poll.
FOLLOWED_MAX_POLL = 30.0


class Pulse:
    """Wakes every waiter when this process commits."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.fired = 0  # how many times: a waiter that read before a fire does not sleep

    def fire(self) -> None:
        self.fired += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float, seen: int | None = None) -> None:
        """Until the next fire or ``timeout``; at once if it fired since ``seen``."""
        if seen is not None and seen != self.fired:
            return
        event = self._event
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
        # that lands just as the event fires (CPython gh-86296), and a stuck watch then
        # blocks shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


class Watches:
    """The watches of one store, each on its event loop."""

    def __init__(self, path: Path, read: Read, limit: Callable[[], int | None], *,
                 poll: float, max_poll: float, follow: bool):
        self.path = path
        self._read = read
        self._limit = limit
        self._poll = poll
        self._max_poll = max_poll
        self._follow = follow
        self._pulses: list[tuple[asyncio.AbstractEventLoop, Pulse]] = []
        self._followers: dict[asyncio.AbstractEventLoop, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        self._following: set[asyncio.AbstractEventLoop] = set()  # inotify watching for them
        self.closed = False

    def notify(self) -> None:
        """A commit of this process (called from the writer thread)."""
        for loop, pulse in list(self._pulses):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(pulse.fire)

    def close(self) -> None:
        self.closed = True
        for stop, task in self._followers.values():
            stop.set()
            task.cancel()
        self._followers.clear()
        for _loop, pulse in self._pulses:
            pulse.fire()

    async def watch(self, kind: Kind, *, resource_version: str, namespace: str | None = None,
                    labels: Labels | None = None, known: Known | None = None,
                    ) -> AsyncIterator[WatchEvent]:
        try:
            cursor = int(resource_version)
        except ValueError as exc:
            raise Expired(f"resourceVersion {resource_version!r} is not one of this store") from exc
        if self.closed:
            raise Unavailable("the store is closed")
        shown: set[tuple[str, str]] = set()  # objects this watch reported as selected
        pulse = Pulse()
        entry = (asyncio.get_running_loop(), pulse)
        self._pulses.append(entry)
        self._follow_other_processes()
        loop = asyncio.get_running_loop()
        wait = self._poll
        try:
            while True:
                if self.closed:
                    raise Unavailable("the store is closed")
                seen = pulse.fired  # a commit after this read wakes the wait below
                compacted = self._read("SELECT value FROM meta WHERE key='compacted'")[0][0]
                if cursor < compacted:
                    raise Expired(f"resourceVersion {cursor} is older than the change log")
                limit = self._limit()
                rows = self._read(
                    "SELECT rv, namespace, name, type, body FROM changes WHERE kind=? AND rv>? "
                    "AND rv<? ORDER BY rv LIMIT 5000",
                    (kind.value, cursor, limit if limit is not None else 1 << 62))
                if not rows:
                    # Idle: back off (commits here, and in other processes through the
                    # file watcher, wake it at once), so an idle scheduler costs ~nothing.
                    await pulse.wait(wait, seen)
                    cap = FOLLOWED_MAX_POLL if loop in self._following else self._max_poll
                    wait = min(wait * 2, max(cap, self._poll))
                    continue
                wait = self._poll
                cursor = rows[-1][0]
                for event in self._events(kind, rows, namespace, labels, known, shown):
                    yield event
        finally:
            self._pulses.remove(entry)

    def _follow_other_processes(self) -> None:
        """Wake this loop's watches when another process writes the store: its commits
        land in the WAL file, whose inotify events the event loop reads itself
        (asyncinotify: the descriptor is one more reader of the loop, no thread).

        Nothing wakes while nothing is written: watchfiles, used before, ran a thread
        that woke every ``step`` (20 ms) to look at its stop event, 83% of an idle
        process's samples. Commits in quick succession (a burst through the writer
        process) wake the watches at most once per ``COALESCE``: the kernel merges the
        WAL's identical unread events meanwhile."""
        loop = asyncio.get_running_loop()
        if not self._follow or loop in self._followers or self.closed:
            return
        stop = asyncio.Event()
        wal = self.path.name + "-wal"

        async def follow() -> None:
            # No inotify (or it fails): the backed-off poll remains.
            try:
                with contextlib.suppress(Exception), Inotify() as inotify:
                    inotify.add_watch(self.path.parent, Mask.MODIFY | Mask.CREATE)
                    self._following.add(loop)
                    await relay(inotify)
            finally:
                self._following.discard(loop)

        async def relay(inotify: Inotify) -> None:
            async for event in inotify:
                if stop.is_set():
                    return
                if event.name is None or event.name.name != wal:
                    continue
                for pulse_loop, pulse in list(self._pulses):
                    if pulse_loop is loop:
                        pulse.fire()
                await asyncio.sleep(COALESCE)

        self._followers[loop] = (stop, loop.create_task(follow()))

    def _events(self, kind: Kind, rows: Rows, namespace: str | None,
                labels: Labels | None, known: Known | None,
                shown: set[tuple[str, str]]) -> Events:
        """Coalesce a batch of changes into one event per object (its latest state),
        skipping what the caller already holds."""
        last: dict[tuple[str, str], tuple[int, str, str | None]] = {}
        for rv, ns, name, type_, body in rows:
            if namespace is not None and ns != namespace:
                continue
            last.pop((ns, name), None)
            last[(ns, name)] = (rv, type_, body)
        events: Events = []
        for (ns, name), (rv, type_, body) in last.items():
            if type_ == EventType.DELETED.value:
                obj = orjson.loads(body) if body else {
                    "kind": kind.value, "metadata": {"name": name, "namespace": ns}}
                change = EventType.DELETED
            else:
                if known is not None and not_newer(known(ns, name), rv):
                    continue
                found = self._read(
                    "SELECT body, status, rv FROM objects WHERE kind=? AND namespace=? AND name=?",
                    (kind.value, ns, name))
                if not found:
                    continue  # deleted after this batch was read: its DELETED row comes next
                obj = assemble(*found[0])
                change = EventType(type_)
            if labels_match(obj, labels):
                events.append(WatchEvent(change, obj))
                if change is EventType.DELETED:
                    shown.discard((ns, name))
                else:
                    shown.add((ns, name))
            elif change is not EventType.DELETED and (
                    (ns, name) in shown or (known is not None and known(ns, name))):
                # It left the selection: for this watch it is gone, as the API server says.
                shown.discard((ns, name))
                events.append(WatchEvent(EventType.DELETED, obj))
        return events
