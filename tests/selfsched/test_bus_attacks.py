"""Attacks on the bus (issue 9), each against the real nats-server configured as `run`
configures it: who may connect, what a run's credential may publish, read and ask of
JetStream, and what becomes of a credential when its run ends.

"A credential of alice's run" is what her bridge holds (in Kubernetes, the sidecar's
token in her pod); the agent process itself is given none (see test_hostile_agent).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client

from sympozium_schedule.adapters.nats.bus import DEDUPE_BUCKET, ROUTER_DURABLE, envelope
from sympozium_schedule.adapters.nats.jwt import new_user_seed
from sympozium_schedule.adapters.nats.subjects import (
    LEGACY_SUBJECT,
    REQUEST_STREAM,
    RESULT_STREAM,
    RunSubjects,
)
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.runtime.app import bridge_for
from tests.selfsched.conftest import NAMESPACE, TIMEOUT, Agent, System, assert_answer, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOURLY: dict[str, Any] = {"schedule": "@hourly", "task": "check the cluster"}
# How long to listen for something that must not arrive. The positive control in
# each test (bob's own answer arriving) shows the listening was long enough.
QUIET = 0.5


class Client_:
    """A raw nats-py connection that records the errors the server sends it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None

    async def connect(self, url: str, **options: Any) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False,
                                     connect_timeout=3, **options)
        return self.nc

    def violated(self, subject: str) -> bool:
        return any("permissions violation" in e and subject.lower() in e for e in self.errors)


@pytest_asyncio.fixture(loop_scope="module")
async def raw() -> AsyncIterator[Client_]:
    client = Client_()
    try:
        yield client
    finally:
        if client.nc is not None and not client.nc.is_closed:
            await client.nc.close()


async def as_run(system: System, raw: Client_, run: RunSubjects) -> Client:
    token = system.nats.tokens.mint(run)
    return await raw.connect(system.url, token=token, inbox_prefix=run.inbox)


# --- nothing unauthenticated connects -------------------------------------------------------


@pytest.mark.parametrize("credential", [
    pytest.param({}, id="none"),
    pytest.param({"token": "guessed-token"}, id="unknown-token"),
    pytest.param({"nkeys_seed_str": new_user_seed()}, id="an-nkey-not-in-the-config"),
    pytest.param({"user": "alice", "password": "alice"}, id="made-up-user"),
])
async def test_a_connection_without_a_valid_credential_is_refused(
        system: System, raw: Client_, credential: dict[str, str]) -> None:
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await raw.connect(system.url, **credential)


# --- identity -------------------------------------------------------------------------------


async def test_a_run_credential_cannot_publish_as_another_instance(
        system: System, raw: Client_, alice: Agent, bob: Agent) -> None:
    nc = await as_run(system, raw, alice.subjects)
    before = await system.snapshot()

    forged = (bob.subjects.request, LEGACY_SUBJECT, f"{alice.subjects.request}.more",
              RunSubjects(NAMESPACE, "alice", "another-run").request)
    for subject in forged:
        await nc.publish(subject, envelope({"name": "planted", "action": "create", **HOURLY},
                                           bob.metadata("x.json")))
    await nc.flush()

    await eventually(lambda: all(raw.violated(s) for s in forged), what="a violation for each")
    assert_answer(await bob.ask(name="own", action="create", **HOURLY), "accepted")
    after = await system.snapshot()
    assert set(after) - set(before) == {("SympoziumSchedule", NAMESPACE, "bob-own")}


@pytest.mark.parametrize("claims", [
    pytest.param({"instanceName": "bob"}, id="instance"),
    pytest.param({"agentRunID": "bob-run-1"}, id="run"),
    pytest.param({"namespace": "kube-system"}, id="namespace"),
])
async def test_metadata_naming_someone_else_is_refused_on_ones_own_subject(
        system: System, alice: Agent, bob: Agent, claims: dict[str, str]) -> None:
    await bob.ask(name="report", action="create", **HOURLY)
    before = await system.snapshot()

    await system.publish_request(alice, {"name": "report", "action": "update", "task": "hijacked"},
                                 request_file="forged.json", request_id="forged-1", **claims)
    answer = await alice.answer(alice.folder / "forged.json")

    assert_answer(answer, "rejected", f"metadata.{next(iter(claims))}",
                  "identity comes from the bus, not from the message")
    assert await system.snapshot() == before


async def test_the_router_takes_the_run_from_the_subject(system: System, alice: Agent) -> None:
    await system.publish_request(alice, {"name": "mine", "action": "create", **HOURLY},
                                 request_file="mine.json", request_id="m-1")
    answer = await alice.answer(alice.folder / "mine.json")

    assert_answer(answer, "accepted", "created schedule 'alice-mine'")
    stored = await system.schedule("alice-mine")
    assert stored is not None
    assert stored["metadata"]["labels"]["sympozium.ai/instance"] == "alice"


# --- eavesdropping --------------------------------------------------------------------------


async def test_a_run_credential_cannot_read_other_runs_answers(
        system: System, raw: Client_, alice: Agent, bob: Agent) -> None:
    nc = await as_run(system, raw, alice.subjects)
    overheard: list[bytes] = []

    async def listen(msg: Any) -> None:
        overheard.append(msg.data)

    wide = ("sympozium.schedule.result.>", f"{bob.subjects.answers}.>", ">",
            f"{bob.subjects.inbox}.>", "_INBOX.>")
    for subject in wide:
        await nc.subscribe(subject, cb=listen)
    await nc.flush()

    answer = await bob.ask(name="secret", action="create", **HOURLY)
    await asyncio.sleep(QUIET)

    assert_answer(answer, "accepted")
    assert overheard == []
    for subject in wide:
        assert raw.violated(subject), (subject, raw.errors)


async def test_a_run_credential_cannot_direct_get_another_runs_answer(
        system: System, raw: Client_, alice: Agent, bob: Agent) -> None:
    request = bob.submit({"name": "secret", "action": "create", **HOURLY})
    answer = await bob.answer(request)
    nc = await as_run(system, raw, alice.subjects)
    js = nc.jetstream(timeout=1.0)

    stolen = f"$JS.API.DIRECT.GET.{RESULT_STREAM}.{bob.subjects.answer(answer['requestId'])}"
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await js.get_msg(RESULT_STREAM, subject=bob.subjects.answer(answer["requestId"]), direct=True)
    assert raw.violated(stolen)


async def test_a_run_reads_its_own_missed_answer_by_direct_get(
        system: System, raw: Client_, alice: Agent) -> None:
    """What a reconnecting bridge does: no JetStream API, one answer's subject."""
    request = alice.submit({"name": "mine", "action": "create", **HOURLY})
    answer = await alice.answer(request)
    nc = await as_run(system, raw, alice.subjects)

    msg = await nc.jetstream(timeout=2.0).get_msg(
        RESULT_STREAM, subject=alice.subjects.answer(answer["requestId"]), direct=True)

    assert json.loads(msg.data) == answer


# --- JetStream API misuse -------------------------------------------------------------------


@pytest.mark.parametrize("misuse", [
    pytest.param(lambda js: js.delete_consumer(REQUEST_STREAM, ROUTER_DURABLE), id="delete-consumer"),
    pytest.param(lambda js: js.purge_stream(REQUEST_STREAM), id="purge-stream"),
    pytest.param(lambda js: js.delete_stream(RESULT_STREAM), id="delete-results"),
    pytest.param(lambda js: js.delete_key_value(DEDUPE_BUCKET), id="delete-dedupe-bucket"),
    pytest.param(lambda js: js.stream_info(REQUEST_STREAM), id="stream-info"),
    pytest.param(lambda js: js.add_stream(name="MINE", subjects=["mine.>"]), id="add-stream"),
    pytest.param(lambda js: js.get_msg(REQUEST_STREAM, seq=1), id="read-requests"),
])
async def test_a_run_credential_has_no_jetstream_api(
        system: System, raw: Client_, alice: Agent, misuse: Any) -> None:
    first = alice.submit({"name": "kept", "action": "create", **HOURLY})
    assert_answer(await alice.answer(first), "accepted")
    nc = await as_run(system, raw, alice.subjects)

    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await misuse(nc.jetstream(timeout=1.0))

    assert any("permissions violation" in e and "$js.api" in e for e in raw.errors), raw.errors
    info = await system.consumer()
    assert info.name == ROUTER_DURABLE
    assert_answer(await alice.ask(name="after", action="create", **HOURLY), "accepted")


# --- credentials end with their run ---------------------------------------------------------


async def test_a_revoked_credential_is_disconnected_and_refused(system: System, raw: Client_) -> None:
    run = RunSubjects(NAMESPACE, "alice", "alice-run-9")
    token = system.nats.tokens.mint(run)
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await raw.connect(system.url, token=token, closed_cb=on_closed)
    assert nc.is_connected

    await system.nats.tokens.revoke(token)

    await asyncio.wait_for(closed.wait(), TIMEOUT)
    again = type(raw)()
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await again.connect(system.url, token=token)


async def test_the_runner_s_bridge_credential_ends_with_the_run(system: System, tmp_path: Any) -> None:
    """``bridge_for`` (what `run` gives the runner) mints a token when a run's bridge
    starts and revokes it when the bridge stops."""
    tokens = system.nats.tokens
    start = bridge_for(system.url, Limits(), tokens)
    run = {"metadata": {"name": "alice-run-7", "namespace": NAMESPACE}, "spec": {"instanceRef": "alice"}}
    before = len(tokens._runs)
    stop = asyncio.Event()
    ipc = tmp_path / "ipc"
    (ipc / "schedules").mkdir(parents=True)
    task = asyncio.create_task(start(run, ipc, stop))
    await eventually(lambda: len(tokens._runs) == before + 1, what="a token minted for the run")
    (token,) = [t for t, r in tokens._runs.items() if r.run == "alice-run-7"]
    assert tokens._runs[token] == RunSubjects(NAMESPACE, "alice", "alice-run-7")

    stop.set()
    await asyncio.wait_for(task, TIMEOUT)

    assert token not in tokens._runs
    assert len(tokens._runs) == before


async def test_a_bridge_outlives_its_authorizations_expiry(system: System) -> None:
    """The server disconnects a connection whose user JWT expired, and nats-py does not
    come back from that by itself: the bridge connects afresh (and is authorized again
    while its run lasts)."""
    tokens = system.nats.tokens
    shipped, tokens.ttl = tokens.ttl, 2.0
    try:
        agent = await system.add_agent("alice", run="alice-run-short")
    finally:
        tokens.ttl = shipped
    first = agent.bridge._bus
    assert first is not None

    await eventually(lambda: agent.bridge._bus not in (None, first), what="a fresh connection")
    answer = await agent.ask(name="later", action="create", **HOURLY)

    assert_answer(answer, "accepted", "created schedule 'alice-later'")
