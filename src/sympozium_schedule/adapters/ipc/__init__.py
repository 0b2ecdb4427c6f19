"""The agent's IPC folder: request files in ``<ipc>/schedules``, answers back out.

Everything in the folder was written by the agent, so everything is hostile:

- The folder is opened once and every access is relative to its descriptor with
  ``O_NOFOLLOW``: a symlink (request, ``.sent``, a temporary name) is never
  followed, and a file that is not a regular file with one link is refused.
- A request is read only once it is complete: when renamed into place
  (``IN_MOVED_TO``) or closed after writing (``IN_CLOSE_WRITE``), as inotify
  reports; a rescan (start, queue overflow) takes only files left alone for a
  second.
- A request is first claimed: renamed to ``.outbox/<id>~<name>`` under a fresh
  unpredictable request id, so the same name written again is a new request with
  its own id and answer, and a crash between claim and publish resends the same
  id (which JetStream and the router recognise). After the bus acknowledged it,
  it moves to ``.sent/``.
- Answers are written under a random name created exclusively, then renamed
  over ``<request>.result.json``: never through a planted symlink, never half.

Requests are ``*.json`` except answers (``*.result.json``) and hidden files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from asyncinotify import Inotify, Mask

log = structlog.get_logger("ipc")

RESULT_SUFFIX = ".result.json"
SENT_DIR = ".sent"
OUTBOX_DIR = ".outbox"
SCHEDULES = "schedules"
# A file modified less than this long ago may still be being written: a rescan
# leaves it for its IN_CLOSE_WRITE.
SETTLE_SECONDS = 1.0
MAX_NAME_BYTES = 232  # leaves room for "<request id>~" in .outbox and .sent
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# CREATE only for entries that will never be closed after writing (symlinks, pipes,
# directories, hard links): they are refused, and the agent is told so.
_WATCH = Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.CREATE | Mask.ONLYDIR | Mask.EXCL_UNLINK


class RequestRefused(Exception):
    """A request file the bridge answers itself, without the bus."""


class RequestTooLarge(RequestRefused):
    def __init__(self, size: int, limit: int):
        super().__init__(f"the request file is {size} bytes; the limit is {limit} bytes. "
                         "Send a shorter request.")


class NotARequestFile(RequestRefused):
    """A symlink, directory, pipe or hard link where a request file should be:
    refused, and the entry removed (the entry only: nothing it points to)."""


class FolderUnusable(Exception):
    """The schedules folder itself cannot be used safely (e.g. it is a symlink)."""


def is_request(name: str) -> bool:
    return name.endswith(".json") and not name.endswith(RESULT_SUFFIX) and not name.startswith(".")


def result_name(request_name: str) -> str:
    """``<request>.result.json``; a request name too long to take the suffix keeps a
    prefix and a hash of the rest (an agent naming files like that must list the folder)."""
    name = request_name.removesuffix(".json") + RESULT_SUFFIX
    if len(name.encode()) <= 255:
        return name
    digest = hashlib.sha256(request_name.encode()).hexdigest()[:16]
    return request_name[:150] + "-" + digest + RESULT_SUFFIX


def new_request_id() -> str:
    """Unpredictable and unique per request; a valid subject token."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A request taken out of the agent's hands: ``.outbox/<request_id>~<name>``."""

    request_id: str
    name: str
    # Set when the name is too long to keep: the entry holds a hash of it instead.
    too_long: bool = False

    @property
    def entry(self) -> str:
        if self.too_long:
            return f"{self.request_id}~{hashlib.sha256(self.name.encode()).hexdigest()[:32]}.json"
        return f"{self.request_id}~{self.name}"

    @classmethod
    def parse(cls, entry: str) -> Claimed | None:
        request_id, sep, name = entry.partition("~")
        if not sep or not request_id or not is_request(name):
            return None
        return cls(request_id, name)


def _open_dir(name: str, parent: int, *, create: bool) -> int:
    """A real directory under ``parent``: a symlink or file in its place is removed
    (only the entry: nothing is followed) and a directory made instead."""
    for _ in range(3):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not create:
                raise
            os.unlink(name, dir_fd=parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent)
    raise FolderUnusable(f"{name} keeps being replaced")


class Arrivals:
    """Names of request files completed in the folder (closed after writing, or
    renamed into place), as inotify reports them; None when events were lost."""

    def __init__(self, fd: int, path: Path):
        self.path = path
        self._fd = fd
        self._inotify = Inotify(cache_size=64)
        # The descriptor's /proc link resolves to the very directory we opened.
        self._inotify.add_watch(f"/proc/self/fd/{fd}", _WATCH)

    async def next(self) -> list[str] | None:
        event = await self._inotify.get()
        if Mask.Q_OVERFLOW in event.mask:
            return None
        if Mask.IGNORED in event.mask:
            raise FolderUnusable(f"{self.path} was removed")
        name = str(event.name) if event.name is not None else ""
        if not is_request(name):
            return []
        if Mask.CREATE in event.mask and Mask.ISDIR not in event.mask:
            try:
                info = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
            except OSError:
                return []
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                return []  # being written: its IN_CLOSE_WRITE will come
        return [name]

    def close(self) -> None:
        self._inotify.close()


class ScheduleFolder:
    """One run's ``schedules`` folder, held by descriptor for the bridge's life."""

    def __init__(self, ipc_path: Path, *, max_bytes: int):
        self.path = ipc_path / SCHEDULES
        self.max_bytes = max_bytes
        ipc_path.mkdir(parents=True, exist_ok=True)
        parent = os.open(ipc_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(SCHEDULES, 0o755, dir_fd=parent)
            try:
                self.fd = os.open(SCHEDULES, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise FolderUnusable(f"{self.path} is not a directory (a symlink?): {exc}") from exc
        finally:
            os.close(parent)
        self._sent = -1
        self._outbox = -1

    def close(self) -> None:
        for fd in (self._sent, self._outbox, self.fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._sent = self._outbox = self.fd = -1

    def _sub(self, which: str) -> int:
        """``.sent`` / ``.outbox``, held by descriptor: the agent putting a symlink in
        their place later changes nothing, since the descriptor names the directory
        we made. If the agent removed that directory, a new one is made."""
        current = self._sent if which == SENT_DIR else self._outbox
        if current >= 0:
            if os.fstat(current).st_nlink > 0:
                return current
            os.close(current)  # removed: renames into it would fail
        fd = _open_dir(which, self.fd, create=True)
        if which == SENT_DIR:
            self._sent = fd
        else:
            self._outbox = fd
        return fd

    # --- finding requests ---------------------------------------------------------------------

    def pending(self, *, settle: float = SETTLE_SECONDS) -> tuple[list[str], bool]:
        """Request names left alone for ``settle`` seconds, oldest name first, and
        whether younger ones were skipped (look again later)."""
        ready, young = [], False
        cutoff = time.time() - settle
        with os.scandir(self.fd) as entries:
            for entry in entries:
                if not is_request(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_mtime > cutoff:
                    young = True
                else:
                    ready.append(entry.name)
        return sorted(ready), young

    def unsent(self) -> list[Claimed]:
        """Requests claimed but not acknowledged by the bus (a bridge stopped between)."""
        claimed = []
        with os.scandir(self._sub(OUTBOX_DIR)) as entries:
            for entry in entries:
                parsed = Claimed.parse(entry.name)
                if parsed is not None:
                    claimed.append(parsed)
        return sorted(claimed, key=lambda c: c.name)

    def recently_sent(self, *, within: float, limit: int = 256) -> list[Claimed]:
        """Requests sent within ``within`` seconds, newest first (their answers may be due)."""
        found: list[tuple[float, Claimed]] = []
        cutoff = time.time() - within
        with os.scandir(self._sub(SENT_DIR)) as entries:
            for entry in entries:
                parsed = Claimed.parse(entry.name)
                if parsed is None:
                    continue
                with contextlib.suppress(OSError):
                    changed = entry.stat(follow_symlinks=False).st_ctime
                    if changed >= cutoff:
                        found.append((changed, parsed))
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [claimed for _, claimed in found[:limit]]

    def watch(self) -> Arrivals:
        """Start reporting completed request files (before a scan, so none falls between)."""
        return Arrivals(self.fd, self.path)

    # --- taking a request ---------------------------------------------------------------------

    def claim(self, name: str) -> Claimed | None:
        """Move ``name`` out of the agent's way under a new request id (None: gone).
        A name too long to archive is claimed under a hash and must be refused."""
        claimed = Claimed(new_request_id(), name, too_long=len(name.encode()) > MAX_NAME_BYTES)
        try:
            os.rename(name, claimed.entry, src_dir_fd=self.fd, dst_dir_fd=self._sub(OUTBOX_DIR))
        except FileNotFoundError:
            return None
        return claimed

    def read(self, claimed: Claimed) -> bytes:
        """The claimed request's bytes: a regular file with one link, at most max_bytes."""
        outbox = self._sub(OUTBOX_DIR)
        try:
            fd = os.open(claimed.entry, _READ_FLAGS, dir_fd=outbox)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise NotARequestFile("the request is not a regular file (a symlink, a directory "
                                     "or a pipe); write the JSON into a file of its own") from exc
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotARequestFile("the request is not a regular file (a symlink, a directory "
                                      "or a pipe); write the JSON into a file of its own")
            if info.st_nlink != 1:
                raise NotARequestFile("the request file has other hard links; write a new file")
            if info.st_size > self.max_bytes:
                raise RequestTooLarge(info.st_size, self.max_bytes)
            data = os.read(fd, self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise RequestTooLarge(len(data), self.max_bytes)
            return data
        finally:
            os.close(fd)

    def sent(self, claimed: Claimed) -> None:
        """Acknowledged by the bus (or answered by the bridge): archive it."""
        try:
            os.rename(claimed.entry, claimed.entry, src_dir_fd=self._sub(OUTBOX_DIR),
                      dst_dir_fd=self._sub(SENT_DIR))
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            self._remove(claimed.entry, self._sub(OUTBOX_DIR))

    def drop(self, claimed: Claimed) -> None:
        """A claimed entry that is not a request (symlink, pipe, directory): removed,
        the entry only, so nothing outside the folder is touched."""
        self._remove(claimed.entry, self._sub(OUTBOX_DIR))

    @staticmethod
    def _remove(entry: str, parent: int) -> None:
        try:
            os.unlink(entry, dir_fd=parent)
        except IsADirectoryError:
            with contextlib.suppress(OSError):
                os.rmdir(entry, dir_fd=parent)
        except (FileNotFoundError, PermissionError):
            pass

    # --- answers ------------------------------------------------------------------------------

    def write_result(self, request_name: str, result: dict[str, Any]) -> str | None:
        """Atomically: an exclusive random temporary name, then a rename over
        ``<request>.result.json`` (replacing whatever entry is there, a symlink
        included, without following it). Returns the name written, None if the
        name is a directory the agent put in the way."""
        final = result_name(Path(request_name).name)
        tmp = f".result-{secrets.token_hex(12)}.tmp"
        fd = os.open(tmp, _CREATE_FLAGS, 0o644, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(result, option=orjson.OPT_INDENT_2))
            os.rename(tmp, final, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                log.info("an answer could not be written: its name is a directory", file=final)
                return None
            raise
        return final

