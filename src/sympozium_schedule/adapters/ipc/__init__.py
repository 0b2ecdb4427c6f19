"""The agent's IPC folder: request files in ``<ipc>/schedules``, results back out.

Requests are any ``*.json`` in the folder except results (``*.result.json``)
and hidden files (the schedule_task tool writes ``.schedule-<id>.json.tmp``
then renames, so a request is never seen half-written). A published request
moves to ``schedules/.sent/`` so a restarted bridge does not send it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

RESULT_SUFFIX = ".result.json"
SENT_DIR = ".sent"


class RequestTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        super().__init__(f"the request file is {size} bytes; the limit is {limit} bytes")


def is_request(path: Path) -> bool:
    name = path.name
    return (name.endswith(".json") and not name.endswith(RESULT_SUFFIX)
            and not name.startswith("."))


_MAX_NAME = 255  # bytes, as most file systems count


def result_name(request_name: str) -> str:
    """``<request>.result.json``; a request name too long to take the suffix keeps a
    prefix and a hash of the rest (an agent naming files like that must list the folder)."""
    name = request_name.removesuffix(".json") + RESULT_SUFFIX
    if len(name.encode()) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(request_name.encode()).hexdigest()[:16]
    return request_name[:150] + "-" + digest + RESULT_SUFFIX


class ScheduleFolder:
    def __init__(self, ipc_path: Path, *, max_bytes: int):
        self.dir = ipc_path / "schedules"
        self.sent = self.dir / SENT_DIR
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)

    def pending(self) -> list[Path]:
        """Request files waiting to be sent, oldest name first."""
        return sorted(p for p in self.dir.iterdir() if p.is_file() and is_request(p))

    async def arrivals(self, stop: asyncio.Event) -> AsyncIterator[list[Path]]:
        """New or rewritten request files as they appear. ``step=10`` makes
        watchfiles hand over a change ~10 ms after it settles (its default of 50 ms
        plus grouping added ~100 ms to every request)."""
        async for changes in awatch(self.dir, step=10, debounce=200, recursive=False,
                                    stop_event=stop, watch_filter=None):
            paths = sorted({Path(p) for change, p in changes
                            if change in (Change.added, Change.modified) and is_request(Path(p))})
            if paths:
                yield paths

    def read(self, path: Path) -> bytes:
        size = path.stat().st_size
        if size > self.max_bytes:
            raise RequestTooLarge(size, self.max_bytes)
        with path.open("rb") as handle:
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise RequestTooLarge(len(data), self.max_bytes)
        return data

    def archive(self, path: Path) -> None:
        self.sent.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, self.sent / path.name)

    def write_result(self, request_name: str, result: dict[str, Any]) -> Path:
        """Atomically (temporary name, then rename), so the agent never reads half."""
        final = self.dir / result_name(Path(request_name).name)
        tmp = self.dir / f".{hashlib.sha256(final.name.encode()).hexdigest()[:16]}.result.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, final)
        return final
