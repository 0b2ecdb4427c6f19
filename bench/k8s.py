"""Kubernetes adapter: what the real controller asks of the API, against the emulator.

    python -m bench k8s [--repeats N] [--quick]

An :class:`~tests.k8s.emulator.ApiServer` (the tests' stricter kmock emulator: the
shipped CRDs, admission, watches, a request log) runs in this process, in a thread, on
a free port; the instance and the schedules are created through its API by a client of
our own (user ``bench``); the real ``sympozium-schedule run --kubernetes`` process talks
to it through a kubeconfig whose token is its own, so the request log tells its calls
apart. Every part gets a fresh emulator. Times come from the request log: each call's
arrival (``time.monotonic()`` in this process), placed on the wall clock with an offset
recorded per part (the emulator's creationTimestamps are whole seconds).

1. **API writes per fire** (target 2). 50 ``@every 2s`` schedules (concurrencyPolicy
   Allow, created in one burst), a window of 10 s starting 3 s after they are created.
   A fire is an AgentRun create (201) arriving in the window, keyed by (schedule,
   tick); its writes are the creates and the ``sympoziumschedules/status`` patches
   (``status.lastScheduleTime`` = its tick, wherever they land, so a fire cut by the
   window's end still counts whole) for that key. Also counted in the window: any other
   write (target 0), any read or watch (target 0), the Events written (``core/v1
   events`` create: a third write per fire, best effort and rate-limited by the
   recorder, 100 burst then 10/s overall, 10 per object then 1/min, and sharing the
   client's rate limit), the fire lag (AgentRun create arrival - tick) and the ticks
   missing between a schedule's first and last fire in the window. Run at the default
   client-side limit: 50 fires every 2 s is 50 writes/s, the whole default ``--kube-qps
   50`` before the Events, so the lag grows through the window (see docs/benchmarks.md).
2. **API calls while idle** (target 0). 1,000 schedules from a quiet mix (none due for
   minutes; ``firstTick: afterInterval``); the controller starts, writes each initial
   status, then it is settled once it has made no call for 5 s; then every call it makes
   over 60 s is counted, a watch counting when it is opened (the four informer watches
   opened at start-up are not calls of the window; a re-opened one would be). Once with
   ``--no-leader-election``; then, on the same emulator (statuses already written), a
   second process with leader election on (``--lease-namespace sympozium-schedule``):
   its Lease calls (get + update every 2 s, client-go's retry period) are their own
   figure, not a failure; every other call counts.
3. **Burst**: 1,000 ``* * * * *`` schedules (firstTick afterInterval, Allow) created
   within the minute before a boundary M far enough ahead for their initial status
   writes to finish and the token bucket to refill; then M. Run once at the default
   limit (``--kube-qps 50 --kube-burst 100``) and once at a high one (``--kube-qps 1000
   --kube-burst 2000``), each with a fresh emulator and controller. From M: the arrival
   of the last AgentRun create and of the last status patch for M; fires/s = schedules /
   the latter. Ticks lost: schedules without exactly one AgentRun for M, read from the
   emulator afterwards. Floors: at the default limit the rate limiter's own bound, 2
   writes per fire at Q requests/s after a full bucket of B: (2K - B)/Q seconds, so
   K / that fires/s (Q/2 sustained); at the high limit (where 2,000 writes fit in the
   bucket, so the limiter does not bind) the emulator's own throughput: right after, on a
   fresh emulator, a plain lightkube AsyncClient in another process creates K
   schedules (untimed), opens the two watches
   the informers that see these writes hold (schedules; runs by label), then makes the
   same 2K writes (the controller's own AgentRun and status-patch bodies, renamed; all K
   create-then-patch pairs at once, as ``write_groups`` sends them), timed from its first
   AgentRun create's arrival to its last patch's.

--quick: part 1 over a 4 s window; part 2 with 100 schedules, 2 s of quiet and 4 s
windows; part 3 with 100 schedules created within one second as ``@every 6s`` (the tick
is their creation second + 6 s: no minute boundary to wait for; the controller is
already running, so the lead only covers creating them and their initial status writes).

The emulator is used as the tests use it, with one change made here: kmock 0.8 keeps
every request it has served and, to route a new one, walks the whole history once per
reaction (11 of them), so each request costs time proportional to all the requests
before it (measured: 3 ms per create after 20 requests, 33 ms after 300). A burst of a
thousand fires would measure that. The bench keeps only the request being routed in
kmock's history (none of the emulator's reactions counts past requests); the emulator's
own request log (``ApiServer.calls``), its objects and its watches are untouched.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # tests.k8s.emulator lives in the repository, not in the package
    sys.path.insert(0, _ROOT)

from tests.k8s.emulator import ApiServer, Call, sympozium_emulator  # noqa: E402

from bench.common import (  # noqa: E402
    IMG_DIR,
    Figure,
    Options,
    Report,
    data_dir,
    free_port,
    instance_obj,
    main_for,
    percentile,
    program,
    quiet_schedules,
    schedule_obj,
)
from sympozium_schedule.core.model import (  # noqa: E402
    ANNOTATION_SCHEDULED_TIME,
    LABEL_SCHEDULE,
    format_time,
    parse_time,
)

NAME = "k8s"
DESCRIPTION = ("Kubernetes adapter against the API emulator: API writes per fire, API calls "
               "while idle, a burst under the client-side rate limit (real `run --kubernetes`)")

DEFAULT_LIMIT = (50.0, 100)  # run --kubernetes's defaults: --kube-qps 50 --kube-burst 100
HIGH_LIMIT = (1000.0, 2000)
LEASE_NAMESPACE = "sympozium-schedule"
SEEDER = "bench"  # the bench's own client; the controllers and the floor client have theirs
RUNS = "sympozium.ai/v1alpha1/agentruns"
STATUS = "sympoziumschedules/status"
FIRE_EVERY = 2  # part 1: @every 2s
TIMEOUT = 120.0


@dataclass(frozen=True)
class Size:
    fire_schedules: int
    fire_settle: float  # from creating them to the window's start
    fire_window: float
    idle_schedules: int
    idle_quiet: float  # no call for this long: settled
    idle_window: float
    burst: int
    burst_every: int | None  # quick: `@every N s`, one creation second; None: `* * * * *`


FULL = Size(fire_schedules=50, fire_settle=3.0, fire_window=10.0,
            idle_schedules=1000, idle_quiet=5.0, idle_window=60.0,
            burst=1000, burst_every=None)
QUICK = Size(fire_schedules=50, fire_settle=2.5, fire_window=4.0,
             idle_schedules=100, idle_quiet=2.0, idle_window=4.0,
             burst=100, burst_every=6)


# --- the emulator -------------------------------------------------------------------------------


def api_server() -> ApiServer:
    """The tests' emulator (the shipped CRDs, core/v1 ConfigMaps and Events, Leases), with
    kmock's request history bounded (see the module docstring); not started."""
    emulator = sympozium_emulator()
    # kmock appends each request to this list just before routing it, with no await in
    # between, and routes it by looking for it in the list: the last one is enough.
    emulator._requests = collections.deque(maxlen=1)
    return ApiServer(emulator)


def monotonic_offset() -> float:
    """``time.time() - time.monotonic()``: adds to a request-log arrival to give wall time
    (the tightest of five readings)."""
    best = (float("inf"), 0.0)
    for _ in range(5):
        before = time.time()
        mono = time.monotonic()
        after = time.time()
        best = min(best, (after - before, (before + after) / 2 - mono))
    return best[1]


def is_lease(call: Call) -> bool:
    return call.resource == "leases"


def wait_quiet(server: ApiServer, user: str, *, quiet: float, timeout: float = TIMEOUT,
               ignore: Callable[[Call], bool] | None = None) -> float:
    """Wait until ``user`` has made no call (but those ``ignore`` matches) for ``quiet``
    seconds; the monotonic arrival time of its last call."""
    deadline = time.monotonic() + timeout
    while True:
        last = max((c.at for c in server.calls(user=user) if not (ignore and ignore(c))), default=0.0)
        now = time.monotonic()
        if now - last >= quiet:
            return last
        if now > deadline:
            raise TimeoutError(f"{user} still calling the API after {timeout:g}s")
        time.sleep(0.1)


def tally(calls: Iterable[Call]) -> dict[str, int]:
    """``{"resource verb code": count}``, sorted."""
    counted = Counter(f"{c.resource} {c.verb} {c.code}" for c in calls)
    return dict(sorted(counted.items()))


# --- the controller -----------------------------------------------------------------------------


class Controller:
    """``sympozium-schedule run --kubernetes`` against the emulator, authenticating as
    ``user`` (also its leader-election identity, POD_NAME); JSON log lines to a file."""

    def __init__(self, server: ApiServer, directory: Path, user: str, *, qps: float, burst: int,
                 leader_election: bool = False):
        self.server = server
        self.user = user
        self.port = free_port()
        self.log_path = directory / f"{user}.log"
        kubeconfig = server.kubeconfig(directory / f"{user}.kubeconfig", user=user)
        election = ["--lease-namespace", LEASE_NAMESPACE] if leader_election else ["--no-leader-election"]
        self.args = [*program(), "run", "--kubernetes", "--kubeconfig", str(kubeconfig), *election,
                     "--metrics-port", str(self.port), "--kube-qps", f"{qps:g}",
                     "--kube-burst", str(burst), "--log-level", "warning", "--log-format", "json"]
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "EVENT_BUS_URL")}
        env |= {"POD_NAME": user, "PYTHONUNBUFFERED": "1"}
        self._log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env)

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def wait_for(self, path: str, timeout: float = 60.0) -> float:
        """Poll ``path`` until it answers 200; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.user} exited with {self.popen.returncode}:\n{self.log_tail()}")
            if self._get(path)[0] == 200:
                return time.monotonic()
            time.sleep(0.02)
        raise TimeoutError(f"{self.user}: {path} not 200 after {timeout:g}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for line in self._get("/metrics")[1].splitlines():
            if line.startswith("sympozium_schedule_") and "_created" not in line \
                    and "_bucket" not in line:
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def calls(self) -> list[Call]:
        return self.server.calls(user=self.user)

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


# --- reading fires off the request log ------------------------------------------------------------


def run_key(call: Call) -> tuple[str, str] | None:
    """(schedule, tick text) of an AgentRun create, from the body it sent."""
    meta = (call.body or {}).get("metadata") or {}
    schedule = (meta.get("labels") or {}).get(LABEL_SCHEDULE)
    tick = (meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME)
    return (schedule, tick) if schedule and tick else None


def patch_key(call: Call) -> tuple[str, str] | None:
    """(schedule, lastScheduleTime) of a status patch: the tick it records."""
    tick = ((call.body or {}).get("status") or {}).get("lastScheduleTime")
    return (call.name or "", tick) if tick else None


def is_create(call: Call) -> bool:
    return (call.resource, call.verb) == ("agentruns", "create")


def is_status(call: Call) -> bool:
    return (call.resource, call.verb) == (STATUS, "patch")


def is_event(call: Call) -> bool:
    return (call.resource, call.verb) == ("events", "create")


def tick_seconds(text: str) -> float:
    parsed = parse_time(text)
    assert parsed is not None, text
    return parsed.timestamp()


# --- 1. API writes per fire -----------------------------------------------------------------------


def writes_per_fire(size: Size, directory: Path) -> dict[str, Any]:
    qps, burst = DEFAULT_LIMIT
    with api_server() as server:
        api = server.api(user=SEEDER)
        ctl = Controller(server, directory, "controller-fires", qps=qps, burst=burst)
        try:
            api.create(instance_obj())
            ctl.wait_for("/readyz")
            for i in range(size.fire_schedules):
                api.create(schedule_obj(f"fire-{i:03d}", f"@every {FIRE_EVERY}s"))
            time.sleep(size.fire_settle)
            offset = monotonic_offset()
            began = time.monotonic()
            time.sleep(size.fire_window)
            ended = time.monotonic()

            def window() -> list[Call]:
                return [c for c in ctl.calls() if began <= c.at < ended]

            def unpatched() -> set[tuple[str, str]]:
                fires = {k for c in window() if is_create(c) and c.code == 201 and (k := run_key(c))}
                patched = {patch_key(c) for c in ctl.calls() if is_status(c) and c.at >= began}
                return fires - patched

            # The window's last fires: wait for their status patches (the lag is ~1-2 s here).
            drain = time.monotonic() + 20
            while unpatched() and time.monotonic() < drain:
                time.sleep(0.2)
            metrics = ctl.metrics()
        finally:
            ctl.stop()
            api.close()
        calls = ctl.calls()
    inside = [c for c in calls if began <= c.at < ended]
    fires = [c for c in inside if is_create(c) and c.code == 201 and run_key(c)]
    keys = {run_key(c) for c in fires}
    all_fire_keys = {run_key(c) for c in calls if is_create(c)}
    creates = Counter(run_key(c) for c in calls if is_create(c))
    patches = Counter(patch_key(c) for c in calls if is_status(c))
    fire_writes = sum(creates[k] + patches[k] for k in keys)
    missing_patch = sum(1 for k in keys if patches[k] == 0)
    # Writes in the window that are no fire's create or status patch (nor an Event).
    stray = [c for c in inside if c.write and not is_event(c) and not (
        (is_create(c) and run_key(c) in all_fire_keys)
        or (is_status(c) and patch_key(c) in all_fire_keys))]
    reads = [c for c in inside if not c.write]
    events = [c for c in inside if is_event(c)]
    lags = sorted(c.at + offset - tick_seconds(k[1]) for c in fires if (k := run_key(c)))
    ticks_by_schedule: dict[str, set[float]] = collections.defaultdict(set)
    for c in fires:
        schedule, tick = run_key(c) or ("", "")
        ticks_by_schedule[schedule].add(tick_seconds(tick))
    missing_ticks = sum(round((max(t) - min(t)) / FIRE_EVERY) + 1 - len(t)
                        for t in ticks_by_schedule.values())
    n = len(keys)
    result = {
        "schedules": size.fire_schedules, "window_s": round(ended - began, 2), "fires": n,
        "writes_per_fire": fire_writes / n if n else float("nan"),
        "creates_per_fire": sum(creates[k] for k in keys) / n if n else float("nan"),
        "patches_per_fire": sum(patches[k] for k in keys) / n if n else float("nan"),
        "fires_without_status_patch": missing_patch,
        "other_writes": len(stray), "reads": len(reads),
        "events": len(events), "events_per_fire": len(events) / n if n else float("nan"),
        "lag_p50_s": percentile(lags, 50), "lag_max_s": max(lags) if lags else float("nan"),
        "lag_first_s": lags[0] if lags else float("nan"),
        "missing_ticks": missing_ticks,
        "window_calls": tally(inside),
        "stray_calls": [f"{c.resource} {c.verb} {c.name} {c.code}" for c in stray[:20]],
        "metrics": metrics,
    }
    print(f"   writes per fire: {n} fires of {size.fire_schedules} x @every {FIRE_EVERY}s in "
          f"{result['window_s']} s: {result['writes_per_fire']:.3f} writes/fire "
          f"({result['creates_per_fire']:.2f} create + {result['patches_per_fire']:.2f} status patch), "
          f"other writes {len(stray)}, reads {len(reads)}, events {len(events)} "
          f"({result['events_per_fire']:.2f}/fire); lag p50 {result['lag_p50_s']:.2f} s max "
          f"{result['lag_max_s']:.2f} s; missing ticks {missing_ticks}", flush=True)
    return result


# --- 2. API calls while idle ----------------------------------------------------------------------


def idle(size: Size, directory: Path) -> dict[str, Any]:
    qps, burst = DEFAULT_LIMIT
    out: dict[str, Any] = {"schedules": size.idle_schedules}
    with api_server() as server:
        api = server.api(user=SEEDER)
        try:
            api.create(instance_obj())
            horizon = size.idle_window * 2 + 300  # both windows, start-ups and settling
            for obj, _ in quiet_schedules(size.idle_schedules, created=datetime.now(UTC),
                                          quiet_for=horizon):
                api.create(obj)
        finally:
            api.close()
        for leader_election in (False, True):
            row = "leader_election" if leader_election else "no_leader_election"
            user = "controller-le" if leader_election else "controller-idle"
            ctl = Controller(server, directory, user, qps=qps, burst=burst,
                             leader_election=leader_election)
            try:
                ready = ctl.wait_for("/readyz")
                if leader_election:
                    ctl.wait_for("/leaderz")
                settled_after = wait_quiet(server, user, quiet=size.idle_quiet,
                                           ignore=is_lease if leader_election else None)
                startup = ctl.calls()
                began = time.monotonic()
                time.sleep(size.idle_window)
                ended = time.monotonic()
                watches = server.open_watches(user)
            finally:
                ctl.stop()
            inside = [c for c in ctl.calls() if began <= c.at < ended]
            lease = [c for c in inside if is_lease(c)]
            other = [c for c in inside if not is_lease(c)]
            window = ended - began
            out[row] = {
                "startup_s": round(ready - ctl.started, 3),
                "startup_calls": tally(startup),
                "startup_writes": sum(1 for c in startup if c.write and not is_lease(c)),
                "settled_s": round(settled_after - ctl.started, 3),
                "window_s": round(window, 2), "calls": len(other), "lease_calls": len(lease),
                "lease_calls_per_s": len(lease) / window, "window_calls": tally(inside),
                "open_watches": watches,
            }
            print(f"   idle, {'leader election on' if leader_election else 'no leader election'}: "
                  f"{size.idle_schedules} schedules, {len(other)} calls in {window:.1f} s "
                  f"(+ {len(lease)} Lease calls: {tally(lease)}); {watches} watches open; "
                  f"start-up: {tally(startup)}", flush=True)
    return out


# --- 3. burst ---------------------------------------------------------------------------------------

# A plain client for the floor: lightkube's AsyncClient, as the store uses it, with nothing
# around it but two watches like the informers'. argv: server URL, token, spec file; prints
# its own elapsed seconds and the watch events it received.
FLOOR_CLIENT = r"""
import asyncio, copy, json, sys, time
from lightkube import AsyncClient, KubeConfig, operators
from lightkube.config.models import Cluster, User
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

url, token, path = sys.argv[1:4]
spec = json.loads(open(path).read())
ns, n = spec["namespace"], spec["n"]
Schedule = create_namespaced_resource("sympozium.ai", "v1alpha1", "SympoziumSchedule", "sympoziumschedules")
Run = create_namespaced_resource("sympozium.ai", "v1alpha1", "AgentRun", "agentruns")


async def main():
    config = KubeConfig.from_one(cluster=Cluster(server=url), user=User(token=token), namespace=ns)
    client = AsyncClient(config=config, trust_env=False, field_manager=token)

    def schedule(i):
        obj = copy.deepcopy(spec["schedule"])
        obj["metadata"] = {"name": f"floor-{i:05d}", "namespace": ns, "labels": obj["metadata"]["labels"]}
        return Schedule.from_dict(obj)

    created = [o.to_dict() for o in await asyncio.gather(*(client.create(schedule(i)) for i in range(n)))]
    # Watch what it writes, as the controller's informers do (all namespaces, runs by label),
    # so the emulator feeds the same streams and this process decodes the same events.
    since = str(max(int(o["metadata"]["resourceVersion"]) for o in created))
    seen = [0]

    async def follow(res, labels):
        async for _ in client.watch(res, namespace="*", labels=labels, resource_version=since):
            seen[0] += 1

    watches = [asyncio.create_task(follow(Schedule, None)),
               asyncio.create_task(follow(Run, {"sympozium.ai/schedule": operators.exists()}))]
    await asyncio.sleep(0.3)

    async def fire(obj):
        meta = obj["metadata"]
        run = copy.deepcopy(spec["run"])
        name = f"{meta['name']}-{spec['tick']}"
        run["metadata"]["name"], run["metadata"]["namespace"] = name, ns
        run["metadata"]["labels"]["sympozium.ai/schedule"] = meta["name"]
        for ref in run["metadata"].get("ownerReferences") or []:
            ref["name"], ref["uid"] = meta["name"], meta["uid"]
        run["spec"]["sessionKey"], run["spec"]["agentId"] = name, f"schedule-{meta['name']}"
        await client.create(Run.from_dict(run))
        status = copy.deepcopy(spec["status"])
        status["lastRunName"] = name
        for ref in status.get("active") or []:
            ref["name"], ref["namespace"] = name, ns
        await client.patch(Schedule.Status, meta["name"],
                           {"status": status, "metadata": {"resourceVersion": meta["resourceVersion"]}},
                           namespace=ns, patch_type=PatchType.MERGE)

    began = time.perf_counter()
    await asyncio.gather(*(fire(o) for o in created))
    elapsed = time.perf_counter() - began
    deadline = time.monotonic() + 30
    while seen[0] < 2 * n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    print(json.dumps({"elapsed_s": elapsed, "watch_events": seen[0],
                      "watch_events_s": time.perf_counter() - began}))
    for task in watches:
        task.cancel()
    await asyncio.gather(*watches, return_exceptions=True)
    await client.close()


asyncio.run(main())
"""


def _next_boundary(after: float) -> float:
    return (int(after) // 60 + 1) * 60.0


def emulator_floor(server: ApiServer, directory: Path, n: int, tick: int, run_body: dict[str, Any],
                   status_body: dict[str, Any], schedule: dict[str, Any]) -> dict[str, Any]:
    """The same 2n writes from a plain client in another process (nothing else calling):
    seconds from its first AgentRun create's arrival to its last status patch's."""
    spec = directory / "floor.json"
    spec.write_text(json.dumps({"namespace": "floor", "n": n, "tick": tick, "run": run_body,
                                "status": status_body, "schedule": schedule}))
    user = "floor"
    done = subprocess.run([sys.executable, "-c", FLOOR_CLIENT, server.url, user, str(spec)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"the floor client failed:\n{done.stderr[-3000:]}")
    calls = server.calls(user=user)
    creates = [c.at for c in calls if is_create(c) and c.code == 201]
    patches = [c.at for c in calls if is_status(c) and c.code == 200]
    if len(creates) != n or len(patches) != n:
        raise RuntimeError(f"the floor client made {len(creates)} creates and {len(patches)} "
                           f"patches of {n}: {tally(calls)}")
    first = min(creates)
    reported = json.loads(done.stdout.strip().splitlines()[-1])
    return {"runs_s": max(creates) - first, "statuses_s": max(patches) - first,
            "fires_per_s": n / (max(patches) - first), "client": reported}


def burst(size: Size, directory: Path, limit: tuple[float, int], *, floor: bool) -> dict[str, Any]:
    qps, tokens = limit
    k = size.burst
    with api_server() as server:
        api = server.api(user=SEEDER)
        ctl = Controller(server, directory, f"controller-burst-{qps:g}", qps=qps, burst=tokens)
        try:
            api.create(instance_obj())
            ctl.wait_for("/readyz")
            if size.burst_every is not None:
                time.sleep(1 - time.time() % 1 + 0.02)  # all created within one second
                expression = f"@every {size.burst_every}s"
                tick = None
            else:
                # Seeding (~150/s while the controller writes), the initial status writes
                # (one per schedule, at qps) and refilling the bucket must end before M;
                # and every schedule must be created after M - 60, so that M is its first tick.
                lead = k / 150 + k / qps + tokens / qps + 5
                tick = _next_boundary(time.time() + lead)
                time.sleep(max(0.0, tick - 59 - time.time()))
                expression = "* * * * *"
            seeded_at = time.time()
            for i in range(k):
                api.create(schedule_obj(f"burst-{i:05d}", expression))
            seeded_s = time.time() - seeded_at
            if tick is None:
                assert size.burst_every is not None
                stamps = {o["metadata"]["creationTimestamp"]
                          for o in server.objects("sympozium.ai/v1alpha1/sympoziumschedules")}
                if len(stamps) != 1:
                    raise RuntimeError(f"the schedules were created over {len(stamps)} seconds: "
                                       "the bench's client is too slow for one creation second")
                tick = tick_seconds(stamps.pop()) + size.burst_every
            tick_text = format_time(datetime.fromtimestamp(tick, UTC))

            def initial_done() -> bool:
                return sum(1 for c in ctl.calls() if is_status(c)) >= k

            deadline = time.time() + TIMEOUT
            while not initial_done():
                if time.time() > tick or time.time() > deadline:
                    raise RuntimeError(f"the initial status writes were not done by the tick: "
                                       f"{tally(ctl.calls())}; lengthen the lead")
                time.sleep(0.1)
            offset = monotonic_offset()
            initial_done_at = max(c.at for c in ctl.calls()) + offset
            # Wait for the burst: every run for the tick created and its status patched, or
            # the next tick (quick) or a minute's end (full).
            limit_at = tick + (size.burst_every - 0.5 if size.burst_every else 55)
            time.sleep(max(0.0, tick - time.time()))

            def counts() -> tuple[int, int]:
                calls = ctl.calls()
                return (sum(1 for c in calls if is_create(c) and c.code == 201
                            and (run_key(c) or ("", ""))[1] == tick_text),
                        sum(1 for c in calls if is_status(c) and c.code == 200
                            and (patch_key(c) or ("", ""))[1] == tick_text))

            while counts() < (k, k) and time.time() < limit_at:
                time.sleep(0.25)
            time.sleep(0.5)  # what the recorder still writes right after (Events)
            metrics = ctl.metrics()
        finally:
            ctl.stop()
            api.close()
        calls = ctl.calls()
        tick_mono = tick - offset
        creates = [c for c in calls if is_create(c) and (run_key(c) or ("", ""))[1] == tick_text]
        patches = [c for c in calls if is_status(c) and (patch_key(c) or ("", ""))[1] == tick_text]
        ok_creates = sorted(c.at - tick_mono for c in creates if c.code == 201)
        ok_patches = sorted(c.at - tick_mono for c in patches if c.code == 200)
        runs = [r for r in server.objects(RUNS)
                if (r["metadata"].get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME) == tick_text]
        per_schedule = Counter((r["metadata"].get("labels") or {}).get(LABEL_SCHEDULE) for r in runs)
        lost = k - sum(1 for i in range(k) if per_schedule.get(f"burst-{i:05d}") == 1)
        done_mono = tick_mono + (ok_patches[-1] if ok_patches else 0.0)
        during = [c for c in calls if tick_mono <= c.at <= done_mono]
        before = [c for c in calls if c.at < tick_mono]
        result: dict[str, Any] = {
            "qps": qps, "burst": tokens, "schedules": k, "expression": expression,
            "tick": tick_text, "seeded_s": round(seeded_s, 2),
            "initial_writes_done_before_tick_s": round(tick - initial_done_at, 2),
            "quiet_before_tick_s": round(tick_mono - max((c.at for c in before), default=0.0), 2),
            "first_run_s": ok_creates[0] if ok_creates else float("nan"),
            "runs_done_s": ok_creates[-1] if len(ok_creates) >= k else float("nan"),
            "statuses_done_s": ok_patches[-1] if len(ok_patches) >= k else float("nan"),
            "runs_created": len(ok_creates), "statuses_patched": len(ok_patches),
            "failed_writes": sum(1 for c in creates + patches if c.code not in (200, 201)),
            "lost": lost,
            "events_during": sum(1 for c in during if is_event(c)),
            "calls_during": tally(during),
            "bound_s": max(0.0, 2 * k - tokens) / qps, "bound_runs_s": max(0.0, k - tokens) / qps,
            "bound_fires_per_s": qps / 2,
            "offset": offset, "metrics": metrics,
            "_creates": ok_creates, "_patches": ok_patches,
            "_events": sorted(c.at - tick_mono for c in during if is_event(c)),
        }
        result["fires_per_s"] = k / result["statuses_done_s"]
        run_body = json.loads(json.dumps(creates[0].body)) if creates else None
        status_body = dict((patches[0].body or {}).get("status") or {}) if patches else None
    if floor and run_body and status_body:
        # A fresh emulator, so that it holds what this one held at the tick (K schedules).
        with api_server() as fresh:
            result["floor"] = emulator_floor(fresh, directory, k, int(tick), run_body, status_body,
                                             schedule_obj("template", expression))
    fl = result.get("floor")
    print(f"   burst of {k} at {_limit(limit)}: first run +{result['first_run_s']:.3f} s, "
          f"all runs +{result['runs_done_s']:.3f} s, all statuses +{result['statuses_done_s']:.3f} s "
          f"({result['fires_per_s']:.1f} fires/s; rate-limit bound {result['bound_s']:.2f} s, "
          f"{qps / 2:g} fires/s); lost {lost}; Events written meanwhile {result['events_during']}; "
          f"failed writes {result['failed_writes']}"
          + (f"; emulator floor (plain client, same writes) {fl['statuses_s']:.3f} s = "
             f"{fl['fires_per_s']:.0f} fires/s" if fl else ""), flush=True)
    return result


# --- the benchmark ------------------------------------------------------------------------------------


def one_repeat(options: Options, size: Size, index: int) -> dict[str, Any]:
    print(f"   repeat {index + 1}:", flush=True)
    with data_dir(options, NAME) as directory:
        return {
            "fires": writes_per_fire(size, directory),
            "idle": idle(size, directory),
            "burst_default": burst(size, directory, DEFAULT_LIMIT, floor=False),
            "burst_high": burst(size, directory, HIGH_LIMIT, floor=True),
        }


def _limit(limit: tuple[float, int]) -> str:
    return f"--kube-qps {limit[0]:g} --kube-burst {limit[1]}"


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs = [one_repeat(options, size, i) for i in range(options.repeats)]
    fires = [r["fires"] for r in runs]
    idle_off = [r["idle"]["no_leader_election"] for r in runs]
    idle_on = [r["idle"]["leader_election"] for r in runs]
    low = [r["burst_default"] for r in runs]
    high = [r["burst_high"] for r in runs]
    k = size.burst
    fire_load = f"{size.fire_schedules} x @every {FIRE_EVERY}s, {_limit(DEFAULT_LIMIT)}"
    idle_label = f"{size.idle_schedules} quiet schedules, {size.idle_window:g} s"
    dq, db = DEFAULT_LIMIT
    hq, hb = HIGH_LIMIT
    figures = [
        Figure("writes_per_fire", f"API writes per fire: AgentRun create + status patch ({fire_load})", "",
               [f["writes_per_fire"] for f in fires], target=2, gate="worst",
               floor=[2.0 for _ in fires], floor_label="one create + one status write"),
        Figure("fire_other_writes", "other writes in the window (no fire's create or patch, no Event)", "",
               [float(f["other_writes"]) for f in fires], target=0, gate="worst"),
        Figure("fire_reads", "reads and new watches in the window (a fire reads nothing)", "",
               [float(f["reads"]) for f in fires], target=0, gate="worst"),
        Figure("events_per_fire", "Events create per fire (3rd write: best effort, recorder-limited "
               "100 + 10/s, shares the qps)", "", [f["events_per_fire"] for f in fires]),
        Figure("fire_lag_max_s", f"fire lag, max in the window (create arrival - tick; {fire_load})", "s",
               [f["lag_max_s"] for f in fires]),
        Figure("fire_missing_ticks", "ticks missing between a schedule's fires in the window", "",
               [float(f["missing_ticks"]) for f in fires], target=0, gate="worst"),
        Figure("idle_calls", f"API calls while idle, no leader election ({idle_label}; watches open "
               "before the window excluded)", "", [float(i["calls"]) for i in idle_off], target=0,
               gate="worst"),
        Figure("idle_calls_le", f"API calls while idle, leader election on, Lease calls excluded "
               f"({idle_label})", "", [float(i["calls"]) for i in idle_on], target=0, gate="worst"),
        Figure("lease_calls_per_s", "Lease calls while idle, leader election on (get + update every 2 s "
               "expected: 1/s)", "/s", [i["lease_calls_per_s"] for i in idle_on]),
        Figure("open_watches", "watches open while idle (one per informer: schedules, runs, "
               "instances, memory ConfigMaps)", "", [float(i["open_watches"]) for i in idle_off]),
    ]
    for rows, limit, tag in ((low, DEFAULT_LIMIT, "default"), (high, HIGH_LIMIT, "high")):
        q, b = limit
        lim = _limit(limit)
        if tag == "default":
            floor_runs = [r["bound_runs_s"] for r in rows]
            runs_label = f"rate limit, creates first: ({k} - {b}) / {q:g} s"
            floor_s = [r["bound_s"] for r in rows]
            floor_rate = [k / r["bound_s"] if r["bound_s"] > 0 else q / 2 for r in rows]
            floor_label = f"rate limit: (2x{k} - {b}) / {q:g} s"
            rate_label = f"rate limit: {k} / that; sustained {q / 2:g}/s"
        else:
            floor_runs = [r["floor"]["runs_s"] for r in rows]
            runs_label = "emulator, plain client, same writes"
            floor_s = [r["floor"]["statuses_s"] for r in rows]
            floor_rate = [r["floor"]["fires_per_s"] for r in rows]
            floor_label = "emulator, plain client, same writes"
            rate_label = f"emulator, plain client (rate limit allows {q / 2:g}/s)"
        figures += [
            Figure(f"burst_runs_{tag}_s", f"burst of {k} at {lim}: all runs created (last create - tick)",
                   "s", [r["runs_done_s"] for r in rows], floor=floor_runs, floor_label=runs_label),
            Figure(f"burst_statuses_{tag}_s", f"burst of {k} at {lim}: all statuses patched", "s",
                   [r["statuses_done_s"] for r in rows], floor=floor_s, floor_label=floor_label),
            Figure(f"burst_rate_{tag}", f"burst of {k} at {lim}: fires per second", "/s",
                   [r["fires_per_s"] for r in rows], better="higher", floor=floor_rate,
                   floor_label=rate_label),
            Figure(f"burst_lost_{tag}", f"burst of {k} at {lim}: ticks lost", "",
                   [float(r["lost"]) for r in rows], target=0, gate="worst"),
            Figure(f"burst_events_{tag}", f"burst of {k} at {lim}: Events written during it", "",
                   [float(r["events_during"]) for r in rows]),
        ]
    if options.draw:
        draw(runs, size)
    public = [{part: ({k2: v for k2, v in body.items() if not k2.startswith("_")}
                      if isinstance(body, dict) else body) for part, body in r.items()} for r in runs]
    return Report(NAME, DESCRIPTION, {
        "emulator": "tests.k8s.emulator.ApiServer (StrictEmulator: shipped CRDs, admission, watches) "
                    "in the bench process; kmock's request history bounded to the request being routed",
        "command": "sympozium-schedule run --kubernetes --kubeconfig K --no-leader-election "
                   "--metrics-port P --kube-qps Q --kube-burst B --log-level warning --log-format json",
        "fires": {"schedules": size.fire_schedules, "schedule": f"@every {FIRE_EVERY}s",
                  "concurrencyPolicy": "Allow", "settle_s": size.fire_settle,
                  "window_s": size.fire_window, "limit": _limit(DEFAULT_LIMIT)},
        "idle": {"schedules": size.idle_schedules, "mix": "bench.common.quiet_schedules",
                 "quiet_s": size.idle_quiet, "window_s": size.idle_window,
                 "lease_namespace": LEASE_NAMESPACE, "limit": _limit(DEFAULT_LIMIT)},
        "burst": {"schedules": k, "schedule": (f"@every {size.burst_every}s, one creation second"
                                               if size.burst_every else "* * * * *"),
                  "firstTick": "afterInterval", "concurrencyPolicy": "Allow",
                  "limits": [_limit(DEFAULT_LIMIT), _limit(HIGH_LIMIT)],
                  "times": "request log arrivals (time.monotonic in the bench) + a recorded offset - tick",
                  "bound": f"max(0, 2K - B) / Q s; Q/2 fires/s ({dq / 2:g} and {hq / 2:g}; "
                           f"2K = {2 * k} vs B = {db} and {hb})"},
    }, figures, public)


def draw(runs: list[dict[str, Any]], size: Size) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, part, limit in ((axes[0], "burst_default", DEFAULT_LIMIT), (axes[1], "burst_high", HIGH_LIMIT)):
        q, b = limit
        for i, r in enumerate(runs):
            body = r[part]
            line, = ax.step(body["_creates"], range(1, len(body["_creates"]) + 1), where="post",
                            label=f"run {i + 1}: AgentRuns created")
            ax.step(body["_patches"], range(1, len(body["_patches"]) + 1), where="post", linestyle="--",
                    color=line.get_color(), label=f"run {i + 1}: statuses patched")
            ax.step(body["_events"], range(1, len(body["_events"]) + 1), where="post", linestyle=":",
                    color=line.get_color(), label=f"run {i + 1}: Events")
        bound = max(0.0, 2 * size.burst - b) / q
        if bound > 0:
            ax.plot([0, bound], [b / 2, size.burst], color="red", linestyle=":", linewidth=1,
                    label=f"rate-limit bound: {q / 2:g} fires/s after {b} burst")
        ax.set_xlim(left=-0.1)
        ax.set_xlabel("seconds after the tick")
        ax.set_ylabel("schedules")
        ax.set_title(f"{size.burst} due at once, {_limit(limit)}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG_DIR / "k8s.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
