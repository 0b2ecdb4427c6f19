"""The self-scheduling path, assembled for real: a ``nats-server`` process with the
shipped authentication (the auth callout, served here as ``run`` serves it), the Schedule
Router and one IPC bridge per agent (in-process tasks, each with its run's own
credential), a SQLite store on ``tmp_path``.

A module marked ``memory_bus`` (the router's and the bridge's logic: actions,
guardrails, scope, idempotency, the IPC folder) runs on the in-memory bus instead,
which tests/bus holds to NATS's behaviour; what only a real server can show (who may
connect and publish where, bounds, faults, malformed traffic on the wire) stays on
the real one.

Every test gets its own store, router and bridges (and in-memory bus). The NATS
server is one per module (test_faults overrides ``shared_nats`` to start one per
test, which it stops and kills); after each test its streams, the router's durable
and the key-value bucket are deleted, so nothing (not even JetStream's duplicate
window) carries over. Nothing sleeps for a fixed time: :func:`eventually` polls.
Test modules run in a module-scoped event loop (``pytestmark``), the shared
server's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
import pytest_asyncio
from nats.js import api

from sympozium_schedule.adapters.ipc import new_request_id
from sympozium_schedule.adapters.memory import MemoryBroker
from sympozium_schedule.adapters.nats.bus import NatsBroker, NatsBus
from sympozium_schedule.adapters.nats.callout import RunTokens
from sympozium_schedule.adapters.nats.server import BusAuth, EmbeddedNats
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.agents.schedule_task import result_path, schedule_task, write_request
from sympozium_schedule.core.model import API_VERSION, LABEL_INSTANCE, Kind
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.ports.bus import (
    DEDUPE_BUCKET,
    REQUEST_STREAM,
    REQUEST_SUBJECTS,
    RESULT_STREAM,
    ROUTER_DURABLE,
    BusConnection,
    Credential,
    RunSubjects,
    envelope,
)
from sympozium_schedule.ports.store import NotFound, Obj, Ref
from sympozium_schedule.runtime.app import serve_callout
from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
from sympozium_schedule.runtime.router import Router, RouterSettings
from tests import support

NAMESPACE = "default"
# Generous for a loaded 2-core machine; a passing test never waits anywhere near this.
TIMEOUT = 20.0
RESULT_KEYS = {"requestId", "requestFile", "status", "message", "schedule"}
PROBE = "bridge-probe.json"
STOP_GRACE = 2.0  # a router stops in milliseconds when nothing is wrong
TEARDOWN_GRACE = 0.5

Snapshot = dict[tuple[str, str, str], Obj]


eventually = functools.partial(support.eventually, timeout=TIMEOUT)


def write_atomically(path: Path, content: bytes) -> Path:
    """As a well-behaved writer does: a hidden name, then a rename (the bridge reads a
    file as soon as it appears, so a slow plain write could be read half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return path


def read_result(request_file: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(result_path(request_file).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


class Agent:
    """One agent run: its IPC folder and the bridge sidecar watching it."""

    def __init__(self, instance: str, run: str, ipc: Path, bridge: Bridge, task: asyncio.Task[None]):
        self.instance = instance
        self.run = run
        self.ipc = ipc
        self.bridge = bridge
        self.task = task

    @property
    def subjects(self) -> RunSubjects:
        return RunSubjects(NAMESPACE, self.instance, self.run)

    @property
    def folder(self) -> Path:
        return self.ipc / "schedules"

    async def ask(self, *, wait: float = TIMEOUT, **arguments: Any) -> dict[str, Any]:
        """The schedule_task tool as a model calls it. It blocks while it waits for the
        answer, so it runs in a thread and the bridge and router keep going."""
        call = functools.partial(schedule_task, ipc_path=self.ipc, wait=wait, **arguments)
        answer: dict[str, Any] = await asyncio.to_thread(call)
        return answer

    def submit(self, body: dict[str, Any]) -> Path:
        """A request written the way the tool writes it, without waiting."""
        return write_request(self.ipc, body)

    def drop(self, name: str, content: bytes | str) -> Path:
        """A raw request file (for input the tool would refuse to write)."""
        data = content.encode() if isinstance(content, str) else content
        return write_atomically(self.folder / name, data)

    async def answer(self, request_file: Path, *, timeout: float = TIMEOUT) -> dict[str, Any]:
        result: dict[str, Any] = await eventually(
            lambda: read_result(request_file), what=f"an answer to {request_file.name}",
            timeout=timeout)
        return result

    def metadata(self, request_file: str, request_id: str | None = None) -> dict[str, str]:
        """The envelope metadata this agent's bridge would send for ``request_file``."""
        return {"agentRunID": self.run, "instanceName": self.instance, "namespace": NAMESPACE,
                "requestId": request_id or new_request_id(), "requestFile": request_file}

    def pending_files(self) -> list[str]:
        """Request files the bridge has not taken (published or answered) yet."""
        return sorted(p.name for p in self.folder.iterdir()
                      if p.is_file() and not p.name.startswith(".")
                      and not p.name.endswith(".result.json"))

    def sent_files(self) -> list[str]:
        """Request file names archived in ``.sent/`` (as ``<request id>~<name>``)."""
        sent = self.folder / ".sent"
        return sorted(p.name.split("~", 1)[1] for p in sent.iterdir()) if sent.is_dir() else []


class SecureNats:
    """A NATS server configured as ``run`` configures it, and the callout ``run`` serves."""

    def __init__(self, root: Path):
        self.root = root
        self.auth = BusAuth.generate()
        self.tokens = RunTokens(result_stream=RESULT_STREAM)
        self.server = EmbeddedNats(root, auth=self.auth)
        self.url = ""
        self._callout: asyncio.Task[None] | None = None

    async def start(self, *, port: int = -1) -> str:
        self.server = EmbeddedNats(self.root, port=port, auth=self.auth)
        self.url = await self.server.start()
        if self._callout is None:
            self._callout = asyncio.create_task(serve_callout(self.url, self.auth, self.tokens))
        return self.url

    async def stop(self, *, kill: bool = False) -> None:
        process = self.server._process  # EmbeddedNats only offers the clean stop
        if kill and process is not None and process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        await self.server.stop()

    async def close(self) -> None:
        if self._callout is not None:
            self._callout.cancel()
            await asyncio.gather(self._callout, return_exceptions=True)
            self._callout = None
        await self.server.stop()

    async def connect(self, name: str) -> NatsBus:
        """A connection of the scheduler's own (the router's login)."""
        return await NatsBus.connect(self.url, name=name,
                                     credential=Credential(nkey_seed=self.auth.router_seed))

    async def connect_as(self, run: RunSubjects, name: str = "as-agent") -> NatsBus:
        """A connection with a credential of ``run``'s own, as its bridge holds."""
        token = self.tokens.mint(run)
        return await NatsBus.connect(self.url, name=name, credential=Credential(token=token),
                                     inbox_prefix=run.inbox)


class System:
    """The bus (a NATS server, or in memory), the store, the router and the agents'
    bridges of one test."""

    def __init__(self, root: Path, limits: Limits, *, shared: SecureNats | None = None,
                 memory: MemoryBroker | None = None):
        self.root = root
        self.limits = limits
        self.shared = shared is not None
        self.memory = memory
        self.nats = shared or SecureNats(root / "nats")
        self.store = SQLiteStore(root / "store.db")
        self.routers: list[tuple[Router, asyncio.Task[None]]] = []
        self.agents: list[Agent] = []
        self._bus: BusConnection | None = None
        self._agent_buses: dict[str, BusConnection] = {}

    # --- NATS -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.nats.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def start_nats(self, *, port: int = -1) -> None:
        assert not self.shared, "the NATS server is shared: override shared_nats (see test_faults)"
        await self.nats.start(port=port)

    async def stop_nats(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash), then wait for the exit."""
        assert not self.shared, "the NATS server is shared: override shared_nats (see test_faults)"
        await self.nats.stop(kill=kill)
        await self._close_buses()

    async def restart_nats(self) -> None:
        """The same port and the same JetStream directory, as a restarted pod would have."""
        await self.start_nats(port=self.port)

    @property
    def broker(self) -> MemoryBroker | NatsBroker:
        """Where the router and the bridges connect."""
        return self.memory if self.memory is not None else NatsBroker(self.url)

    async def bus(self) -> NatsBus:
        """A trusted connection of the test's own to the NATS server, for inspection."""
        assert self.memory is None, "the in-memory bus has no server: use port_bus()"
        if self._bus is None:
            self._bus = await self.nats.connect("selfsched-test")
        assert isinstance(self._bus, NatsBus)
        return self._bus

    async def port_bus(self) -> BusConnection:
        """A trusted connection of the test's own, on whichever bus this test has."""
        if self.memory is not None:
            if self._bus is None:
                self._bus = await self.memory.connect(name="selfsched-test")
            return self._bus
        return await self.bus()

    async def agent_bus(self, agent: Agent) -> BusConnection:
        """A connection holding ``agent``'s run credential (a second one, as a copy of
        its sidecar's token would give; in memory, any connection)."""
        if agent.run not in self._agent_buses:
            self._agent_buses[agent.run] = (
                await self.memory.connect(name="as-agent") if self.memory is not None
                else await self.nats.connect_as(agent.subjects))
        return self._agent_buses[agent.run]

    async def publish_raw(self, agent: Agent, payload: bytes, *, msg_id: str | None = None) -> bool:
        """Publish straight to ``agent``'s request subject with its credential, bypassing
        its bridge. True if the bus stored it as new."""
        bus = await self.agent_bus(agent)
        return await bus.publish(agent.subjects.request, payload, msg_id=msg_id, timeout=5.0)

    async def publish_request(self, agent: Agent, body: Any, *, request_file: str,
                              request_id: str | None = None, msg_id: str | None = None,
                              **meta: Any) -> bool:
        """An envelope as ``agent``'s bridge would build it (``meta`` overrides fields)."""
        metadata = agent.metadata(request_file, request_id) | meta
        return await self.publish_raw(agent, envelope(body, metadata),
                                      msg_id=metadata["requestId"] if msg_id is None else msg_id)

    async def consumer(self) -> api.ConsumerInfo:
        bus = await self.bus()
        info: api.ConsumerInfo = await bus.js.consumer_info(REQUEST_STREAM, ROUTER_DURABLE)
        return info

    async def pending(self) -> tuple[int, int]:
        """The router's durable: (waiting to be delivered, delivered and not yet acked)."""
        if self.memory is not None:
            return self.memory.pending(REQUEST_STREAM, ROUTER_DURABLE)
        info = await self.consumer()
        return info.num_pending or 0, info.num_ack_pending or 0

    async def drained(self) -> api.ConsumerInfo | None:
        """Wait until the router's durable has nothing left to deliver or to ack (the
        durable's info on NATS)."""
        await eventually(lambda: self._idle(), what="the router's consumer to drain")
        return await self.consumer() if self.memory is None else None

    async def _idle(self) -> bool:
        return await self.pending() == (0, 0)

    async def published_answers(self, agent: Agent, request_files: list[str]) -> list[dict[str, Any]]:
        """The router's answers to ``request_files`` as the result stream holds them (what
        the bridge turns into result files), read by a subscription of the test's own."""
        bus = await self.port_bus()
        answers: dict[str, list[dict[str, Any]]] = {}

        async def collect(data: bytes) -> None:
            answer = json.loads(data)
            answers.setdefault(answer["requestFile"], []).append(answer)

        sub = await bus.follow(f"{agent.subjects.answers}.>", collect)
        try:
            await eventually(lambda: set(request_files) <= set(answers),
                             what=f"answers to all {len(request_files)} requests in the result stream")
            assert await self._answers_stored() == len(answers), "one answer per request, no more"
        finally:
            await sub.unsubscribe()
        assert all(len(a) == 1 for a in answers.values()), answers
        return [answers[name][0] for name in request_files]

    async def _answers_stored(self) -> int:
        if self.memory is not None:
            return len(self.memory.streams[RESULT_STREAM].messages)
        return int((await (await self.bus()).js.stream_info(RESULT_STREAM)).state.messages)

    async def prepare_consumer(self, *, ack_wait: float) -> None:
        """Create the router's durable before the router does, with a shorter ack_wait.

        The router binds to an existing durable as it finds it. The shipped 30 s
        ack_wait is how long a delivery left unacknowledged by a dying router (or a
        NATS crash) waits before it is redelivered; the fault tests shorten it so they
        finish in seconds. What they check (nothing lost, nothing applied twice) does not
        depend on it."""
        bus = await self.bus()
        stream = await bus.ensure_request_stream()
        await bus.js.add_consumer(stream, api.ConsumerConfig(
            durable_name=ROUTER_DURABLE, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ack_wait,
            max_ack_pending=4096, deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=REQUEST_SUBJECTS))

    async def _close_buses(self) -> None:
        buses = [b for b in (self._bus, *self._agent_buses.values()) if b is not None]
        self._bus, self._agent_buses = None, {}
        for bus in buses:
            await bus.close()

    # --- router -----------------------------------------------------------------------------

    async def start_router(self, **settings: Any) -> Router:
        """A Router on the shipped durable (one more, if some already run)."""
        router = Router(self.store, RouterSettings(
            nats_url=self.url if self.memory is None else "memory", limits=self.limits,
            credential=Credential(nkey_seed=self.nats.auth.router_seed), **settings),
            broker=self.memory)  # None: the router's own connection to the server, with its limits
        task = asyncio.create_task(router.run(), name="router")
        self.routers.append((router, task))
        await eventually(lambda: router.ready.is_set() or task.done(), what="the router to be ready")
        self.check_router()
        return router

    @property
    def router(self) -> Router | None:
        """The router started last."""
        return self.routers[-1][0] if self.routers else None

    def check_router(self) -> None:
        """The router task is still running (a malformed message must not end it)."""
        assert self.routers, "no router"
        task = self.routers[-1][1]
        if task.done():
            raise AssertionError(f"the router stopped: {task!r}")

    async def stop_routers(self, *, grace: float = STOP_GRACE) -> list[bool]:
        """Cancel every router, all at once; for each, whether it ended within ``grace``."""
        routers, self.routers = self.routers, []
        return list(await asyncio.gather(*(_stop(router, task, grace) for router, task in routers)))

    # --- agents -----------------------------------------------------------------------------

    async def add_instance(self, name: str) -> Obj:
        return await self.store.create({
            "apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"agents": {"default": {"model": "gpt-4o"}}},
        })

    async def add_agent(self, instance: str, *, run: str | None = None) -> Agent:
        run = run or f"{instance}-run-1"
        ipc = self.root / "runs" / run / "ipc"
        (ipc / "schedules").mkdir(parents=True, exist_ok=True)  # as the runner prepares it
        token = self.nats.tokens.mint(RunSubjects(NAMESPACE, instance, run))
        bridge = Bridge(BridgeSettings(ipc_path=ipc, agent_run_id=run, instance=instance,
                                       namespace=NAMESPACE,
                                       nats_url=self.url if self.memory is None else "memory",
                                       max_request_bytes=self.limits.max_request_bytes,
                                       token=token), broker=self.broker)
        agent = Agent(instance, run, ipc, bridge, asyncio.create_task(bridge.run(), name=run))
        self.agents.append(agent)
        await eventually(lambda: bridge.ready.is_set() or agent.task.done(),
                         what=f"{run}'s bridge to watch and forward")
        # A file it answers by itself (not JSON) proves that its watcher and its publish
        # loop both run; then the probe is cleared away.
        probe = agent.drop(PROBE, b"probe")
        await agent.answer(probe)
        result_path(probe).unlink()
        for sent in (agent.folder / ".sent").glob(f"*~{PROBE}"):
            sent.unlink()
        return agent

    # --- the store --------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Every object of every kind, resourceVersion included."""
        objects: Snapshot = {}
        for kind in Kind:
            for obj in (await self.store.list(kind)).items:
                meta = obj["metadata"]
                objects[(kind.value, meta["namespace"], meta["name"])] = obj
        return objects

    async def schedule(self, name: str) -> Obj | None:
        try:
            return await self.store.get(Ref(Kind.SCHEDULE, NAMESPACE, name))
        except NotFound:
            return None

    async def schedule_names(self) -> list[str]:
        return [o["metadata"]["name"] for o in (await self.store.list(Kind.SCHEDULE)).items]

    async def create_by_hand(self, name: str, *, instance: str = "alice", **spec: Any) -> Obj:
        """A schedule a person applied: no ``sympozium.ai/source: agent`` label."""
        return await self.store.create({
            "apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {LABEL_INSTANCE: instance}},
            "spec": {"instanceRef": instance, "schedule": "0 3 * * *", "task": "nightly report",
                     "type": "scheduled"} | spec,
        })

    # --- teardown ---------------------------------------------------------------------------

    async def close(self) -> None:
        try:
            tasks = [a.task for a in self.agents]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop_routers(grace=TEARDOWN_GRACE)
        finally:
            try:
                if self.shared:
                    await self._forget_jetstream()
            finally:
                await self._close_buses()
                if not self.shared and self.memory is None:
                    await self.nats.close()
                await self.store.close()

    async def _forget_jetstream(self) -> None:
        """Leave the shared server as the next test expects to find it: empty."""
        bus = await self.bus()
        for stream in (REQUEST_STREAM, RESULT_STREAM, f"KV_{DEDUPE_BUCKET}"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await bus.js.delete_stream(stream)


async def _stop(router: Router, task: asyncio.Task[None], grace: float) -> bool:
    """Cancel a router task; True if it ended within ``grace`` seconds.

    If it did not (see test_routers_stop_promptly_after_idling), it is cancelled
    again, which cuts its connection's drain short, and the connection is closed
    here so that no reconnecting client outlives the test."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=grace)
        stuck = router._bus
        if isinstance(stuck, NatsBus):
            await stuck.nc.close()
        elif stuck is not None:
            await stuck.close()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise AssertionError("the router failed") from task.exception()
    return bool(done)


@pytest.fixture
def limits() -> Limits:
    """Override (``pytest.mark.parametrize("limits", ...)``) for other guardrails."""
    return Limits()


@pytest.fixture
def ack_wait() -> float | None:
    """None: the router creates its durable as shipped. A number: see prepare_consumer."""
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "memory_bus: the module's tests run on the in-memory bus "
                                       "(no NATS server is started)")


def in_memory(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("memory_bus") is not None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_nats(tmp_path_factory: pytest.TempPathFactory,
                      request: pytest.FixtureRequest) -> AsyncIterator[SecureNats | None]:
    if in_memory(request):
        yield None
        return
    server = SecureNats(tmp_path_factory.mktemp("nats"))
    try:
        await server.start()
        yield server
    finally:
        await server.close()


@pytest.fixture
def router_settings() -> dict[str, Any]:
    """Override for a router configured otherwise (e.g. allow_unscoped_publishers)."""
    return {}


@pytest_asyncio.fixture(loop_scope="module")
async def system(tmp_path: Path, limits: Limits, ack_wait: float | None,
                 shared_nats: SecureNats | None, router_settings: dict[str, Any],
                 request: pytest.FixtureRequest) -> AsyncIterator[System]:
    memory = MemoryBroker() if in_memory(request) else None
    system = System(tmp_path, limits, shared=shared_nats, memory=memory)
    try:
        if shared_nats is None and memory is None:
            await system.start_nats()
        await system.add_instance("alice")
        await system.add_instance("bob")
        if ack_wait is not None:
            await system.prepare_consumer(ack_wait=ack_wait)
        await system.start_router(**router_settings)
        yield system
    finally:
        await system.close()


@pytest_asyncio.fixture(loop_scope="module")
async def alice(system: System) -> Agent:
    return await system.add_agent("alice")


@pytest_asyncio.fixture(loop_scope="module")
async def bob(system: System) -> Agent:
    return await system.add_agent("bob")


def assert_answer(answer: dict[str, Any], status: str, *fragments: str) -> None:
    """The result file's shape, its status, and words the agent can act on."""
    assert set(answer) == RESULT_KEYS, answer
    assert answer["status"] == status, answer
    for fragment in fragments:
        assert fragment in answer["message"], answer["message"]

