"""What ``run --sandbox`` does on a kernel without Landlock (this machine has it, so
the kernel's answer is replaced; everything else is the real code path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from sympozium_schedule.runtime import app
from sympozium_schedule.runtime.app import AgentSandboxUnavailable, EmbeddedSettings, agent_sandbox
from sympozium_schedule.runtime.sandbox import Sandbox, landlock_abi


def test_this_kernel_has_landlock_with_scoping() -> None:
    assert landlock_abi() >= 6


def test_required_refuses_without_landlock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(app, "landlock_abi", lambda: 0)
    with pytest.raises(AgentSandboxUnavailable, match="this kernel has no Landlock, so agents cannot "
                                                      "be sandboxed; pass --sandbox best-effort"):
        agent_sandbox(EmbeddedSettings(data_dir=tmp_path))


@pytest.mark.parametrize(("mode", "abi", "says"), [
    pytest.param("best-effort", 0, "this kernel has no Landlock: agents run unsandboxed", id="best-effort"),
    pytest.param("off", 7, "agents run unsandboxed (--sandbox off)", id="off"),
])
def test_unsandboxed_modes_say_so_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str,
                                       abi: int, says: str) -> None:
    monkeypatch.setattr(app, "landlock_abi", lambda: abi)
    with structlog.testing.capture_logs() as logs:
        assert agent_sandbox(EmbeddedSettings(data_dir=tmp_path, sandbox=mode)) is None
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        next(entry["event"] for entry in logs if says in entry["event"])]


def test_required_with_landlock_builds_the_sandbox(tmp_path: Path) -> None:
    sandbox = agent_sandbox(EmbeddedSettings(data_dir=tmp_path / "data"))
    assert isinstance(sandbox, Sandbox)
    policy = sandbox.policy(read_write=[tmp_path / "data" / "runs" / "x"], command=("sh",),
                            path_env="/usr/bin:/bin")
    data = str((tmp_path / "data").resolve())
    assert not any(p == data or data.startswith(p + "/") for p in policy["read"]), policy["read"]
    assert "/etc" not in policy["read"]
    assert "/etc/passwd" in policy["read"]


def test_an_allowed_path_inside_the_data_directory_is_refused(tmp_path: Path) -> None:
    inside = tmp_path / "data" / "runs"
    inside.mkdir(parents=True)
    with pytest.raises(AgentSandboxUnavailable, match=r"--agent-allow-write: .* reaches the data "
                                                      r"directory"):
        agent_sandbox(EmbeddedSettings(data_dir=tmp_path / "data", agent_allow_write=(inside,)))
