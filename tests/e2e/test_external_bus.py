"""`run --nats-url` on a NATS server of one's own that asks every client to log in:
the router logs in with `--nats-user`/`--nats-password-file` and, with
`--allow-unscoped-publishers`, applies what Sympozium's own bridge publishes on the
unscoped subject. A real nats-server and the real `run` process."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from sympozium_schedule.adapters.nats.server import find_binary
from sympozium_schedule.ports.bus import LEGACY_SUBJECT, LEGACY_TOPIC
from tests.e2e.conftest import Cli, Scheduler, instance_yaml, wait_for

ROUTER_PASSWORD = "router-secret"
PUBLISHER_PASSWORD = "publisher-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def guarded_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server with JetStream where every client logs in (two users)."""
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        "authorization { users: [\n"
        f'  {{ user: router, password: "{ROUTER_PASSWORD}" }},\n'
        f'  {{ user: publisher, password: "{PUBLISHER_PASSWORD}" }}\n'
        "] }\n")
    server = subprocess.Popen([find_binary(), "-c", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _accepts(port), timeout=20, what="the nats-server to listen")
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=15)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


async def _publish_unscoped(url: str, body: dict[str, object]) -> None:
    """What Sympozium's own bridge sends: the identity in the message's metadata."""
    client = await nats.connect(url, user="publisher", password=PUBLISHER_PASSWORD)
    try:
        envelope = {"topic": LEGACY_TOPIC, "timestamp": "2026-12-06T10:00:00Z",
                    "metadata": {"agentRunID": "alice-run-1", "instanceName": "alice",
                                 "namespace": "default", "requestId": "ext-1"},
                    "data": body}
        await client.jetstream().publish(LEGACY_SUBJECT, json.dumps(envelope).encode(),
                                         headers={"Nats-Msg-Id": "ext-1"})
    finally:
        await client.close()


def test_run_logs_its_router_in_and_applies_unscoped_requests(
        cli: Cli, scheduler: Scheduler, guarded_nats: str, tmp_path: Path) -> None:
    password = tmp_path / "router-password"
    password.write_text(ROUTER_PASSWORD + "\n")
    cli.apply_text(instance_yaml("alice"))
    process = scheduler.start("--no-runner", "--no-console", "--nats-url", guarded_nats,
                              "--nats-user", "router", "--nats-password-file", str(password),
                              "--allow-unscoped-publishers", flags=("--log-format", "json"))
    # The router made the request stream (it logged in) before anything is published.
    wait_for(lambda: "requests stream" in scheduler.tail() or _stream_exists(guarded_nats),
             timeout=30, what="the router's request stream")

    asyncio.run(_publish_unscoped(guarded_nats, {
        "name": "nightly", "action": "create", "schedule": "0 3 * * *", "task": "Tidy up."}))

    def stored() -> bool:
        got = cli("get", "schedules", "-o", "json")
        return got.code == 0 and any(item["metadata"]["name"] == "alice-nightly"
                                     for item in got.json()["items"])

    wait_for(stored, timeout=30, what=f"the agent's schedule; run's log:\n{scheduler.tail()}")
    schedule = cli.ok("get", "schedule", "alice-nightly", "-o", "json").json()
    assert schedule["spec"]["schedule"] == "0 3 * * *"
    assert schedule["spec"]["instanceRef"] == "alice"
    assert scheduler.stop(process) == 0


def _stream_exists(url: str) -> bool:
    async def look() -> bool:
        client = await nats.connect(url, user="publisher", password=PUBLISHER_PASSWORD)
        try:
            names = await client.jetstream().streams_info()
            return any(LEGACY_SUBJECT in (info.config.subjects or []) for info in names)
        finally:
            await client.close()

    return asyncio.run(look())


def test_a_wrong_router_password_is_said_and_nothing_is_applied(
        cli: Cli, scheduler: Scheduler, guarded_nats: str, tmp_path: Path) -> None:
    password = tmp_path / "router-password"
    password.write_text("not-the-password\n")
    cli.apply_text(instance_yaml("alice"))
    process = scheduler.start("--no-runner", "--no-console", "--nats-url", guarded_nats,
                              "--nats-user", "router", "--nats-password-file", str(password),
                              "--allow-unscoped-publishers", flags=("--log-format", "json"))

    wait_for(lambda: "uthorization" in scheduler.tail(), timeout=30,
             what="the refused login in run's log")
    assert process.poll() is None, "the scheduler keeps scheduling while the bus refuses it"
    assert not _stream_exists(guarded_nats)
    assert scheduler.stop(process) == 0
