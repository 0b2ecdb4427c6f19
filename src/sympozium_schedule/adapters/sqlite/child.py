"""The writer as a process of its own (``SQLiteStore(writer="process")``, what ``run`` uses).

Why: in one process the writer thread and the event loop take turns for the
GIL, so a burst costs the sum of both. Here the engine runs in a child
process (``python -m sympozium_schedule.adapters.sqlite.child``, which imports
only the standard library and orjson), and the scheduler's process only
prepares each write and reads its result: the two run side by side.

The pipe carries frames: a 4-byte big-endian length, then a pickle. Requests,
``(id, op, now)`` (``now``: the caller's clock when the store was given one,
else None and the child reads its own); answers, ``([(id, outcome), ...],
revision)``, one frame per transaction. The child dies with its parent
(PR_SET_PDEATHSIG), and exits when its input ends; if it dies, every write in
flight fails as Unavailable and the next write starts a new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sympozium_schedule.adapters.sqlite.engine import Engine, Outcome
from sympozium_schedule.adapters.sqlite.writer import MAX_BATCH, Clock, Pending, Writer

_LENGTH = struct.Struct(">I")


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)) + payload)


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    payload = stream.read(size)
    return payload if len(payload) == size else None


class ProcessWriter(Writer):
    def __init__(self, path: Path, on_commit: Callable[[], None], *, keep_changes: int,
                 event_ttl: timedelta, clock: Clock | None = None):
        super().__init__(on_commit)
        self._path = path
        self._keep = keep_changes
        self._ttl = event_ttl
        self._clock = clock
        self._child: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, Pending] = {}
        self._outbox: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._stopped = False

    # --- the child -------------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the child and its two pipe threads (from the caller's thread: the
        child's PR_SET_PDEATHSIG follows the thread that started it)."""
        child = subprocess.Popen(
            [sys.executable, "-m", "sympozium_schedule.adapters.sqlite.child", str(self._path),
             str(self._keep), str(self._ttl.total_seconds()), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        # (Buffered both ways: a raw pipe may read or write only part of a frame.)
        threading.Thread(target=self._send_loop, args=(child,), name="sqlite-writer-send",
                         daemon=True).start()
        threading.Thread(target=self._receive_loop, args=(child,), name="sqlite-writer-receive",
                         daemon=True).start()
        return child

    def start(self) -> None:
        """Start the child now, before the first write needs it.

        Started at the first write instead, the first fire after a restart waited for a
        Python start and the engine's imports (~0.2-0.4 s on an idle machine, over a
        second on a loaded one), while every later fire took ~15 ms."""
        with self._start_lock:
            if not self._stopped and (self._child is None or self._child.poll() is not None):
                self._child = self._spawn()

    def _send(self, pending: Pending) -> None:
        with self._start_lock:
            if self._stopped:
                self._settle([pending], [(False, ("Unavailable", "the store is closed"))], None)
                return
            if self._child is None or self._child.poll() is not None:
                self._child = self._spawn()
            self._pending[pending.ident] = pending
        self._outbox.put(pending)

    def _send_loop(self, child: subprocess.Popen[bytes]) -> None:
        stdin = child.stdin
        assert stdin is not None
        with contextlib.suppress(OSError, ValueError):
            while True:
                first = self._outbox.get()
                if first is None:
                    break
                batch = [first]
                with contextlib.suppress(queue.Empty):
                    while len(batch) < MAX_BATCH:
                        item = self._outbox.get_nowait()
                        if item is None:
                            self._outbox.put(None)
                            break
                        batch.append(item)
                now = self._clock().timestamp() if self._clock is not None else None
                frames = []
                for pending in batch:
                    try:
                        payload = pickle.dumps((pending.ident, pending.op, now), protocol=5)
                    except Exception as exc:  # not picklable: not storable either
                        self._fail([pending], ("Invalid", f"the object cannot be stored: {exc}"))
                        continue
                    frames.append(_LENGTH.pack(len(payload)) + payload)
                stdin.write(b"".join(frames))
                stdin.flush()
        with contextlib.suppress(OSError):
            stdin.close()

    def _receive_loop(self, child: subprocess.Popen[bytes]) -> None:
        stdout = child.stdout
        assert stdout is not None
        try:
            while (frame := _read_frame(stdout)) is not None:
                answers, revision = pickle.loads(frame)
                batch, outcomes = [], []
                with self._start_lock:
                    for ident, outcome in answers:
                        pending = self._pending.pop(ident, None)
                        if pending is not None:
                            batch.append(pending)
                            outcomes.append(outcome)
                self._settle(batch, outcomes, revision)
        finally:
            child.wait()
            with self._start_lock:
                lost = [p for p in self._pending.values()]
                self._pending.clear()
                if self._child is child:
                    self._child = None
            if lost:
                self._fail(lost, ("Unavailable", "the store's writer process ended "
                                                 f"(exit status {child.returncode})"))

    def _fail(self, batch: list[Pending], error: tuple[str, str]) -> None:
        with self._start_lock:
            for pending in batch:
                self._pending.pop(pending.ident, None)
        self._settle(batch, [(False, error)] * len(batch), None)

    def stop(self) -> None:
        with self._start_lock:
            self._stopped = True
            child = self._child
        self._outbox.put(None)
        if child is not None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# --- the child process ---------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the scheduler dies, even by SIGKILL: a transaction in progress is
    rolled back by SQLite, as it would be had the writer been a thread of it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


def main(argv: list[str]) -> int:
    path, keep, ttl, parent = Path(argv[0]), int(argv[1]), float(argv[2]), int(argv[3])
    # Ctrl-C reaches the terminal's whole process group: the scheduler stops on it and ends
    # this writer by closing its stdin once the last write is answered. Interrupted here,
    # it died mid-read with a traceback in the user's terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    engine = Engine(path, keep_changes=keep, event_ttl=timedelta(seconds=ttl))
    inbox: queue.SimpleQueue[tuple[int, Any, float | None] | None] = queue.SimpleQueue()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def read() -> None:
        try:
            while (frame := _read_frame(stdin)) is not None:
                inbox.put(pickle.loads(frame))
        except Exception as exc:  # a frame it cannot read: say so, and end
            print(f"sqlite writer: cannot read a request: {exc!r}", file=sys.stderr, flush=True)
        inbox.put(None)

    threading.Thread(target=read, name="requests", daemon=True).start()
    try:
        while True:
            first = inbox.get()
            if first is None:
                return 0
            batch = [first]
            ending = False
            with contextlib.suppress(queue.Empty):
                while len(batch) < MAX_BATCH:
                    item = inbox.get_nowait()
                    if item is None:
                        ending = True
                        break
                    batch.append(item)
            given = batch[0][2]
            now = datetime.fromtimestamp(given, UTC) if given is not None else datetime.now(UTC)
            outcomes: list[Outcome]
            outcomes, revision = engine.commit([op for _, op, _ in batch], now)
            answer = pickle.dumps(([(ident, o) for (ident, _, _), o in
                                    zip(batch, outcomes, strict=True)], revision), protocol=5)
            _write_frame(stdout, answer)
            stdout.flush()
            if ending:
                return 0
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
