"""The bus flags of the router, `run` and the bridge: a bad value is one `error:` line naming the
flag, exit status 2, and nothing started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sympozium_schedule.adapters.nats.jwt import new_account_seed

PROGRAM = (sys.executable, "-m", "sympozium_schedule.cli.main")


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "SYMPOZIUM_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    return subprocess.run([*PROGRAM, *args], capture_output=True, text=True, timeout=60, env=env,
                          check=False)


@pytest.mark.parametrize(("args", "says"), [
    pytest.param(("router", "--auth-callout", "{missing}"), "--auth-callout: ", id="callout-missing"),
    pytest.param(("router", "--auth-callout", "{bad}"), "issuerSeed: a non-empty string", id="callout-bad"),
    pytest.param(("router", "--nats-url", "nats://127.0.0.1:9", "--auth-callout", "{callout}"),
                 "needs --kubernetes", id="callout-without-kubernetes"),
    pytest.param(("router", "--nats-password-file", "{good}"), "needs --nats-user", id="password-no-user"),
    pytest.param(("router", "--nats-user", "u", "--nats-nkey-file", "{good}"), "not both",
                 id="user-and-nkey"),
    pytest.param(("router", "--nats-nkey-file", "{empty}"), "--nats-nkey-file: ", id="empty-nkey"),
    pytest.param(("run", "--auth-callout", "{callout}"), "needs --kubernetes and --nats-url",
                 id="run-callout-embedded"),
    pytest.param(("run", "--kubernetes", "--auth-callout", "{callout}"),
                 "needs --kubernetes and --nats-url", id="run-callout-without-bus"),
    pytest.param(("run", "--nats-user", "router"), "a login on a NATS server given with --nats-url",
                 id="run-login-without-bus"),
    pytest.param(("run", "--nats-url", "nats://127.0.0.1:9", "--nats-password-file", "{good}"),
                 "needs --nats-user", id="run-password-no-user"),
    pytest.param(("run", "--kubernetes", "--nats-url", "nats://127.0.0.1:9", "--auth-callout",
                  "{bad}"), "issuerSeed: a non-empty string", id="run-callout-bad"),
    pytest.param(("bridge", "--agent-run-id", "r", "--instance", "i", "--token-file", "{missing}"),
                 "--token-file: ", id="token-file-missing"),
])
def test_a_bad_bus_flag_is_one_error_line(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    (tmp_path / "bad.yaml").write_text("account: SCHEDULE\n")
    (tmp_path / "good").write_text("secret\n")
    (tmp_path / "empty").write_text("")
    (tmp_path / "callout.yaml").write_text(yaml.safe_dump({
        "issuerSeed": new_account_seed(), "account": "SCHEDULE", "calloutUser": "callout",
        "calloutPassword": "pw"}))
    files = {"missing": str(tmp_path / "missing"), "bad": str(tmp_path / "bad.yaml"),
             "good": str(tmp_path / "good"), "empty": str(tmp_path / "empty"),
             "callout": str(tmp_path / "callout.yaml")}

    done = run(*(a.format(**files) for a in args), tmp_path=tmp_path)

    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert says in lines[0], done.stderr


def test_the_router_will_not_join_the_server_run_started(tmp_path: Path) -> None:
    """That server admits only run's own parts (and run has its router already)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "nats.url").write_text("nats://127.0.0.1:4222\n")

    done = run("router", "--data-dir", str(data), tmp_path=tmp_path)

    assert done.returncode == 2
    assert "its router already runs inside `run`" in done.stderr
