"""`run`'s console flags: bad values are one line and nothing starts; a taken port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.runtime.api import Console, ConsoleSettings
from sympozium_schedule.runtime.api.auth import TokenAccess

PROGRAM = (sys.executable, "-m", "sympozium_schedule.cli.main", "run")


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROGRAM, "--data-dir", str(tmp_path / "data"), "--no-runner", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "says"), [
    pytest.param(["--console-address", "nonsense"], "error: --console-address: 'nonsense': must be "
                 "HOST:PORT, [IPv6]:PORT or :PORT", id="no-port"),
    pytest.param(["--console-address", "127.0.0.1:99999"], "error: --console-address", id="port-range"),
    pytest.param(["--console-address", "::1:80"], "error: --console-address", id="bare-ipv6"),
    pytest.param(["--no-console", "--console-read-only"], "error: --no-console: True: "
                 "--console-read-only needs the console", id="no-console"),
])
def test_bad_console_flags_are_one_line_and_nothing_starts(tmp_path: Path, args: list[str],
                                                           says: str) -> None:
    done = run(tmp_path, *args)
    assert done.returncode == 2
    assert done.stderr.startswith(says)
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "store.db").exists()


def test_a_taken_console_address_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(tmp_path, "--console-address", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"the console cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_default_port_when_taken_falls_back_to_a_free_one(tmp_path: Path, api: Any) -> None:
    taken_port = int(api.url.rsplit(":", 1)[1])
    console = Console(api.store, ConsoleSettings(port=taken_port, port_fallback=True),
                      TokenAccess("x" * 32, reads_need_token=False))
    url = await console.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert int(url.rsplit(":", 1)[1]) != taken_port
    finally:
        await console.stop()
