"""Self-scheduling: an agent's request file to a stored schedule, and one router's throughput.

    python -m bench selfsched [--repeats N] [--quick] [--profile]

Everything real, in this process as the tests assemble it: a ``nats-server``
(EmbeddedNats), a Schedule Router on a SQLiteStore, one IPC bridge on a temporary
IPC folder, with the shipped guardrails (Limits()).

The bus is configured as `run` ships it: the server authenticates every connection
(the auth callout, served in this process as `run` serves it), the bridge connects
with its run's own credential and publishes on its run's subject, the router with its
own login.

Latency: requests written one at a time with ``agents.schedule_task.write_request``
(a temporary name, then the rename), each after the previous one was answered: 10
creates, then updates of those schedules, each with a task text of its own. Stored
time: from the moment write_request returned (the rename is its last step) until a
``store.watch`` on SympoziumSchedules in this process delivers the object carrying that
task (the store wakes its watches on commit, so this adds well under a millisecond).
The answer file (the bridge writes it from the router's result message) is timed too, and
so is the request's arrival on the bus (a plain subscription of this process to the
request subjects: the bridge's share of the path).

Throughput: N request envelopes, as bridges of N/20 agents (20 requests each: 10
creates, then 10 updates; the instances interleaved, all in one namespace) would send
them on their runs' subjects, are published to JetStream while no router runs; then one
router starts and the time from its readiness until it has handled all N is measured.
The router is one on its own (as the ``router`` command runs it: its directory watches
instances and agent schedules itself; inside ``run`` it shares the controller's caches
instead). The CPU of this process and of its event-loop thread during the drain, and
of the nats-server, are reported per request.

Floors, same server, same run: a bare JetStream round trip, publish (with its ack) to
a stream of our own -> a pull consumer (fetch, as the router fetches) receives it,
one at a time; and draining N pre-published messages of the same size with fetch(64)
and an ack each.

--quick: 30 latency requests, 300 for throughput. --profile: pyinstrument over the
throughput drain (this process), summary printed and saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from nats.js import api

from bench.common import (
    Figure,
    Options,
    Report,
    data_dir,
    main_for,
    summary,
)
from sympozium_schedule.adapters.nats.bus import NatsBus
from sympozium_schedule.adapters.nats.callout import RunTokens
from sympozium_schedule.adapters.nats.server import BusAuth, EmbeddedNats
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.agents.schedule_task import result_path, write_request
from sympozium_schedule.core.model import API_VERSION, Kind
from sympozium_schedule.ports.bus import REQUEST_SUBJECTS, RESULT_STREAM, Credential, RunSubjects, envelope
from sympozium_schedule.runtime.app import serve_callout
from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
from sympozium_schedule.runtime.router import Router, RouterSettings

NAME = "selfsched"
DESCRIPTION = "self-scheduling: request file -> stored schedule, and router throughput"
NAMESPACE = "default"
# Issue 13's targets.
TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0
TARGET_RATE = 2000.0
PER_AGENT = 20
TIMEOUT = 30.0
FLOOR_STREAM = "BENCH_FLOOR"
FLOOR_SUBJECT = "bench.floor"


@dataclass(frozen=True)
class Size:
    latency: int
    throughput: int


FULL = Size(latency=200, throughput=2000)
QUICK = Size(latency=30, throughput=300)


async def until(check: Any, *, what: str, timeout: float = TIMEOUT, interval: float = 0.002) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def add_instance(store: SQLiteStore, name: str) -> None:
    await store.create({"apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
                        "metadata": {"name": name, "namespace": NAMESPACE},
                        "spec": {"agents": {"default": {"model": "gpt-4o"}}}})


def request(i: int, prefix: str) -> dict[str, Any]:
    """The i-th request of one agent: 10 creates, then updates of those 10."""
    body: dict[str, Any] = {"name": f"{prefix}-{i % 10}", "action": "create" if i < 10 else "update",
                            "task": f"{prefix} request {i}: check the cluster and report."}
    if i < 10:
        body["schedule"] = "@every 1h"
    return body


class Stored:
    """When each task text first appeared in a stored schedule (a watch in this process)."""

    def __init__(self, store: SQLiteStore):
        self.store = store
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Stored:
        version = str(self.store.revision())
        self._task = asyncio.create_task(self._watch(version))
        return self

    async def _watch(self, version: str) -> None:
        async for event in self.store.watch(Kind.SCHEDULE, resource_version=version):
            task = (event.object.get("spec") or {}).get("task")
            if isinstance(task, str):
                self.seen.setdefault(task, time.perf_counter())

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def start_bridge(ipc: Path, url: str, instance: str, stop: asyncio.Event,
                       tokens: RunTokens) -> asyncio.Task[None]:
    run = f"{instance}-run-1"
    token = tokens.mint(RunSubjects(NAMESPACE, instance, run))
    (ipc / "schedules").mkdir(parents=True, exist_ok=True)  # as the runner prepares it
    bridge = Bridge(BridgeSettings(ipc_path=ipc, agent_run_id=run, instance=instance,
                                   namespace=NAMESPACE, nats_url=url, token=token))
    task = asyncio.create_task(bridge.run(stop))
    await until(lambda: bridge.ready.is_set() or task.done(), what="the bridge to be ready")
    # A file it answers by itself (not JSON) proves its watcher and publisher run (as
    # the self-scheduling tests do).
    probe = ipc / "schedules" / "probe.json"
    probe.parent.mkdir(parents=True, exist_ok=True)
    tmp = probe.with_name(".probe.json.tmp")
    tmp.write_bytes(b"not json")
    tmp.replace(probe)
    await until(lambda: result_path(probe).exists(), what="the bridge to answer its probe",
                interval=0.01)
    return task


async def latency(store: SQLiteStore, bus: NatsBus, ipc: Path,
                  n: int) -> tuple[list[float], list[float], list[float]]:
    """(rename -> stored ms, rename -> answer file ms, rename -> in JetStream ms) for ``n``
    sequential requests. The last splits the path at the bridge: JetStream's own receive
    timestamp of the request (same machine, same wall clock)."""
    stored_ms, answered_ms, published_ms = [], [], []
    on_bus: dict[str, float] = {}

    async def arrived(data: bytes, subject: str) -> None:
        on_bus.setdefault(json.loads(data)["data"]["task"], time.perf_counter())

    sub = await bus.subscribe(REQUEST_SUBJECTS, arrived)
    async with Stored(store) as stored:
        for i in range(n):
            body = request(i, "lat")
            path = write_request(ipc, body)
            renamed = time.perf_counter()
            await until(lambda b=body: b["task"] in stored.seen, what=f"request {i} stored")
            answer = result_path(path)
            await until(answer.exists, what=f"request {i} answered")
            answered = time.perf_counter()
            result = json.loads(answer.read_text())
            if result.get("status") != "accepted":
                raise RuntimeError(f"request {i} was not accepted: {result}")
            stored_ms.append((stored.seen[body["task"]] - renamed) * 1000)
            answered_ms.append((answered - renamed) * 1000)
            # The benchmark's own subscription may be served after the answer came back;
            # on a loaded machine it has (rarely) never seen one at all: then that sample
            # of the bridge's share is left out, and counted.
            with contextlib.suppress(TimeoutError):
                await until(lambda b=body: b["task"] in on_bus, what=f"request {i} on the bus",
                            timeout=2.0)
            if body["task"] in on_bus:
                published_ms.append((on_bus[body["task"]] - renamed) * 1000)
    await sub.unsubscribe()
    return stored_ms, answered_ms, published_ms


async def floor_latency(bus: NatsBus, n: int, size: int) -> list[float]:
    """Bare JetStream: publish (ack awaited) -> a pull consumer's fetch returns it, one at a time."""
    await bus.js.add_stream(api.StreamConfig(name=FLOOR_STREAM, subjects=[f"{FLOOR_SUBJECT}.>"]))
    sub = await bus.js.pull_subscribe(f"{FLOOR_SUBJECT}.lat", durable="floor-lat", stream=FLOOR_STREAM)
    received: dict[int, float] = {}
    payload = b"x" * size

    async def consume() -> None:
        while True:
            try:
                msgs = await sub.fetch(64, timeout=1.0)
            except TimeoutError:
                continue
            for msg in msgs:
                received[int((msg.headers or {})["seq"])] = time.perf_counter()
                await msg.ack()

    consumer = asyncio.create_task(consume())
    lags = []
    try:
        for i in range(n):
            began = time.perf_counter()
            await bus.js.publish(f"{FLOOR_SUBJECT}.lat", payload, headers={"seq": str(i)})
            await until(lambda i=i: i in received, what=f"floor message {i}", interval=0.0005)
            lags.append((received[i] - began) * 1000)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await sub.unsubscribe()
    return lags


async def floor_drain(bus: NatsBus, n: int, size: int) -> float:
    """Seconds to fetch (64 at a time) and ack ``n`` pre-published messages."""
    payload = b"x" * size
    await asyncio.gather(*(bus.js.publish(f"{FLOOR_SUBJECT}.tp", payload) for _ in range(n)))
    sub = await bus.js.pull_subscribe(f"{FLOOR_SUBJECT}.tp", durable="floor-tp", stream=FLOOR_STREAM)
    began = time.perf_counter()
    done = 0
    while done < n:
        msgs = await sub.fetch(64, timeout=5.0)
        await asyncio.gather(*(m.ack() for m in msgs))
        done += len(msgs)
    elapsed = time.perf_counter() - began
    await sub.unsubscribe()
    return elapsed


def envelopes(n: int) -> tuple[list[tuple[str, bytes, str]], list[str]]:
    """``n`` (subject, envelope, request id) from n/20 agents, interleaved; and the
    instances they need."""
    agents = max(1, n // PER_AGENT)
    instances = [f"agent-{a:04d}" for a in range(agents)]
    out = []
    for i in range(n):
        instance = instances[i % agents]
        k = i // agents
        run = f"{instance}-run-1"
        file = f"schedule-tp-{i:06d}.json"
        meta = {"agentRunID": run, "instanceName": instance, "namespace": NAMESPACE,
                "requestId": f"tp-{i:06d}", "requestFile": file}
        out.append((RunSubjects(NAMESPACE, instance, run).request, envelope(request(k, "tp"), meta),
                    meta["requestId"]))
    return out, instances


async def one_repeat_async(options: Options, size: Size, root: Path) -> dict[str, Any]:
    auth = BusAuth.generate()
    nats = EmbeddedNats(root / "nats", auth=auth)
    url = await nats.start()
    tokens = RunTokens(result_stream=RESULT_STREAM)
    router_login = Credential(nkey_seed=auth.router_seed)
    store = SQLiteStore(root / "store.db")
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(serve_callout(url, auth, tokens))]
    bus = await NatsBus.connect(url, name="bench", credential=router_login)
    profile = None
    try:
        await add_instance(store, "alice")
        router = Router(store, RouterSettings(nats_url=url, credential=router_login))
        router_task = asyncio.create_task(router.run())
        tasks.append(router_task)
        await until(router.ready.is_set, what="the router")
        ipc = root / "ipc"
        tasks.append(await start_bridge(ipc, url, "alice", stop, tokens))

        stored_ms, answered_ms, published_ms = await latency(store, bus, ipc, size.latency)
        sample_size = len(envelopes(1)[0][0][1])
        floor_ms = await floor_latency(bus, size.latency, sample_size)

        # Throughput: stop the router, queue N requests, start one router, time the drain.
        router_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await router_task
        batch, instances = envelopes(size.throughput)
        for name in instances:
            await add_instance(store, name)
        await asyncio.gather(*(bus.publish(subject, data, msg_id=rid, timeout=10.0)
                               for subject, data, rid in batch))
        router = Router(store, RouterSettings(nats_url=url, credential=router_login))
        profiler = _pyinstrument() if options.profile else None
        tasks.append(asyncio.create_task(router.run()))
        await until(router.ready.is_set, what="the second router")
        server = psutil.Process(nats.pid) if nats.pid is not None else None
        server_cpu = _cpu(server)
        cpu, loop_cpu = time.process_time(), time.thread_time()
        began = time.perf_counter()
        progress: list[tuple[float, int]] = []

        def drained() -> bool:
            progress.append((time.perf_counter() - began, router.handled))
            return router.handled >= size.throughput

        await until(drained, what="the router to drain", timeout=600, interval=0.005)
        drain = time.perf_counter() - began
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
        server_cpu = _cpu(server) - server_cpu
        if profiler is not None:
            profiler.stop()
            profile = profiler.output_text(unicode=False, color=False, show_all=False)
        accepted = sum(s.value for metric in router.metrics.router_requests.collect()
                       for s in metric.samples
                       if s.name.endswith("_total") and s.labels.get("outcome") == "accepted")
        floor_drain_s = await floor_drain(bus, size.throughput, sample_size)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.close()
        await store.close()
        await nats.stop()
    return {"stored_ms": stored_ms, "answered_ms": answered_ms, "published_ms": published_ms,
            "floor_ms": floor_ms,
            "drain_s": drain, "accepted": accepted, "floor_drain_s": floor_drain_s,
            "envelope_bytes": sample_size, "profile": profile,
            "quarters": _quarter_rates(progress, size.throughput),
            "cpu_s": cpu, "loop_cpu_s": loop_cpu, "server_cpu_s": server_cpu}


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def _quarter_rates(progress: list[tuple[float, int]], n: int) -> list[float]:
    """Requests/s within each quarter of the drain (by requests handled): whether the
    cost of a request grows with the schedules already stored."""
    rates, start_t, start_n = [], 0.0, 0
    for q in (1, 2, 3, 4):
        mark = n * q // 4
        t = next((t for t, handled in progress if handled >= mark), progress[-1][0])
        count = max(mark - start_n, 0)
        rates.append(round(count / (t - start_t), 1) if t > start_t else float("nan"))
        start_t, start_n = t, mark
    return rates


def _pyinstrument() -> Any:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    return profiler


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    from sympozium_schedule.runtime.logs import configure

    configure("json", "warning")  # the router logs every request at info
    with data_dir(options, NAME) as root:
        raw = asyncio.run(one_repeat_async(options, size, root))
    stored, answered, floor = summary(raw["stored_ms"]), summary(raw["answered_ms"]), summary(raw["floor_ms"])
    published = summary(raw["published_ms"])
    rate = size.throughput / raw["drain_s"]
    floor_rate = size.throughput / raw["floor_drain_s"]
    print(f"   repeat {index + 1}: rename->stored p50 {stored['p50']:.1f} ms p99 {stored['p99']:.1f} ms "
          f"(in JetStream p50 {published['p50']:.1f} ms, answered p50 {answered['p50']:.1f} ms); "
          f"floor round trip p50 {floor['p50']:.2f} ms p99 "
          f"{floor['p99']:.2f} ms; router {rate:.0f} req/s ({raw['accepted']:.0f} of "
          f"{size.throughput} accepted; by quarter of the drain {raw['quarters']}; CPU "
          f"{raw['cpu_s'] * 1000 / size.throughput:.2f} ms a request, of which the event loop "
          f"{raw['loop_cpu_s'] * 1000 / size.throughput:.2f}, nats-server "
          f"{raw['server_cpu_s'] * 1000 / size.throughput:.2f}), floor drain "
          f"{floor_rate:.0f} msg/s", flush=True)
    if raw["profile"]:
        print(raw["profile"])
    return {"stored_ms": stored, "published_ms": published, "answered_ms": answered,
            "floor_ms": floor, "rate": round(rate, 1),
            "floor_rate": round(floor_rate, 1), "accepted": raw["accepted"],
            "rate_by_quarter": raw["quarters"],
            "cpu_ms_per_request": round(raw["cpu_s"] * 1000 / size.throughput, 3),
            "loop_cpu_ms_per_request": round(raw["loop_cpu_s"] * 1000 / size.throughput, 3),
            "server_cpu_ms_per_request": round(raw["server_cpu_s"] * 1000 / size.throughput, 3),
            "busy_share": round(raw["loop_cpu_s"] / raw["drain_s"], 3),
            "arrivals_missed": len(raw["stored_ms"]) - len(raw["published_ms"]),
            "envelope_bytes": raw["envelope_bytes"], "profile": raw["profile"]}


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    figures = [
        Figure("stored_p50_ms", "rename -> schedule stored p50", "ms",
               [r["stored_ms"]["p50"] for r in runs], target=TARGET_P50_MS,
               floor=[r["floor_ms"]["p50"] for r in runs], floor_label="JetStream round trip p50"),
        Figure("stored_p99_ms", "rename -> schedule stored p99", "ms",
               [r["stored_ms"]["p99"] for r in runs], target=TARGET_P99_MS,
               floor=[r["floor_ms"]["p99"] for r in runs], floor_label="JetStream round trip p99"),
        Figure("published_p50_ms", "  of which rename -> on the bus (bridge) p50", "ms",
               [r["published_ms"]["p50"] for r in runs]),
        Figure("answered_p50_ms", "rename -> answer file p50", "ms",
               [r["answered_ms"]["p50"] for r in runs]),
        Figure("router_rate", "one router, requests/s", "/s", [r["rate"] for r in runs],
               target=TARGET_RATE, better="higher", floor=[r["floor_rate"] for r in runs],
               floor_label="JetStream fetch+ack drain"),
        Figure("router_cpu_ms", "  router CPU a request (process)", "ms",
               [r["cpu_ms_per_request"] for r in runs]),
        Figure("server_cpu_ms", "  nats-server CPU a request", "ms",
               [r["server_cpu_ms_per_request"] for r in runs]),
        Figure("rejected", "requests not accepted (throughput)", "",
               [float(size.throughput - r["accepted"]) for r in runs], target=0, gate="worst"),
    ]
    return Report(NAME, DESCRIPTION, {
        "latency_requests": size.latency, "throughput_requests": size.throughput,
        "agents_for_throughput": max(1, size.throughput // PER_AGENT),
        "limits": "shipped defaults (10 schedules per instance, 5 min, 8 KiB)",
        "stored": "write_request returned -> store.watch event with that task, same process",
    }, figures, runs)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
