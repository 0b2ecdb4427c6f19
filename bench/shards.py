"""Replicas that share the work (``run --kubernetes --shards N``) on a real kube-apiserver.

    python -m bench shards [--repeats N] [--quick]

The throughput that N replicas on N machines would reach cannot be measured on one 2-core
machine, so it is modelled from what can be measured here, each in every repeat:

1. **Cost per fire**: one replica (no leader election, one namespace) at a client limit far
   above what it can use (``--kube-qps 5000 --kube-burst 5000``), a burst of 1,000
   ``* * * * *`` due at one minute boundary. CPU seconds of the replica's process, and of
   kube-apiserver and etcd together, from 1 s before the tick to the last status patch
   (the audit log's), less their idle rate measured over the 5 s before; divided by the
   fires. And the requests per fire.
2. **A burst at the default limit** (``--kube-qps 50 --kube-burst 100``) with one leader
   (``--shards 1``, as today) and with three replicas sharing 6 shards: 1,000 due at one
   boundary, tick to the last status patch of any replica. The client-side limiter, not the
   CPU, bounds this, so three replicas on this machine show the gain a cluster would see.
3. **Leases while idle**: the three replicas with nothing due, 60 s: their requests a minute
   (each a list and its member and shard Leases' renewals every 2 s) against the one
   leader's renewal.

The model (docs/benchmarks.md): N replicas, each on a core of its own, fire at most
min(Q / r, 1 / c) each, where Q is the client limit, r the requests per fire and c the
replica's CPU seconds per fire; the API server adds a per fire and, given P cores, caps the
cluster at P / a. Drawn in docs/img/shards.png with the measured points.

--quick: bursts of 100, a 10 s idle window.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import Figure, Options, Report, data_dir, instance_obj, main_for, schedule_obj
from bench.k8s import (
    DEFAULT_LIMIT,
    INSTALL_NAMESPACE,
    Controller,
    ControlPlane,
    clear,
    key,
    plane_for,
    seed,
    settle,
    wait_for,
)

NAME = "shards"
DESCRIPTION = ("replicas sharing the work on a real kube-apiserver: cost per fire (replica, API "
               "server), a burst at the default limit with 1 and 3 replicas, Leases while idle")
SHARDS = 6
REPLICAS = 3
HIGH_LIMIT = ("--kube-qps", "5000", "--kube-burst", "5000")
BASE = "sympozium-schedule"


@dataclass(frozen=True)
class Size:
    burst: int
    idle_window: float


FULL = Size(1000, 60.0)
QUICK = Size(100, 10.0)


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _server_pids(plane: ControlPlane) -> list[int]:
    return [plane._procs[name].pid for name in ("kube-apiserver", "etcd")]


def _tick(lead: float = 50.0) -> float:
    tick = (time.time() // 60 + 1) * 60
    return tick + 60 if tick - time.time() < lead else tick


def _clear_leases(plane: ControlPlane) -> None:
    api = plane.api()
    for lease in api.list("leases", namespace=INSTALL_NAMESPACE):
        name = lease["metadata"]["name"]
        if name == BASE or name.startswith(f"{BASE}-"):
            api.delete("leases", name, namespace=INSTALL_NAMESPACE)


def _burst_calls(controllers: list[Controller], tick: float) -> list[Any]:
    return sorted((c for ctl in controllers for c in ctl.calls() if c.at >= tick and c.verb != "watch"),
                  key=lambda c: c.at)


def _done(calls: list[Any]) -> float:
    patches = [c.at for c in calls if key(c) == "patch sympoziumschedules/status"
               and (c.body or {}).get("status", {}).get("lastRunTime")]
    return max(patches) if patches else float("nan")


# --- 1. cost per fire -------------------------------------------------------------------------------


def cost(plane: ControlPlane, size: Size, directory: Path) -> dict[str, Any]:
    api, ns = plane.api(), plane.namespace("bench-cost")
    ctl = Controller(plane, directory, "cost", namespace=ns, extra=HIGH_LIMIT)
    servers = _server_pids(plane)
    try:
        ctl.wait()
        seed(api, ns, [instance_obj()])
        tick = _tick()
        time.sleep(max(0.0, tick - 58 - time.time()))
        seed(api, ns, [schedule_obj(f"c-{i:05d}", "* * * * *") for i in range(size.burst)])
        time.sleep(max(0.0, tick - 6 - time.time()))
        base_at, base_replica, base_server = time.time(), _cpu([ctl.proc.pid]), _cpu(servers)
        time.sleep(max(0.0, tick - 1 - time.time()))
        at, replica0, server0 = time.time(), _cpu([ctl.proc.pid]), _cpu(servers)
        idle_replica = (replica0 - base_replica) / (at - base_at)
        idle_server = (server0 - base_server) / (at - base_at)
        wait_for(lambda: time.time() > tick + 1, "the tick", timeout=120)
        settle(ctl, quiet=3.0)
        end, replica1, server1 = time.time(), _cpu([ctl.proc.pid]), _cpu(servers)
        calls = _burst_calls([ctl], tick)
    finally:
        ctl.stop()
        clear(api, ns)
    done = _done(calls)
    fires = sum(1 for c in calls if key(c) == "create agentruns" and c.code == 201)
    during = [c for c in calls if c.at <= done]
    replica = replica1 - replica0 - idle_replica * (end - at)
    server = server1 - server0 - idle_server * (end - at)
    return {"fires": fires, "done_s": done - tick, "fires_per_s": fires / (done - tick),
            "replica_cpu_ms_per_fire": 1000 * replica / fires,
            "server_cpu_ms_per_fire": 1000 * server / fires,
            "requests_per_fire": len(during) / fires,
            "writes_per_fire": sum(1 for c in during if key(c) in (
                "create agentruns", "patch sympoziumschedules/status")) / fires,
            "by_request": dict(Counter(key(c) for c in during)),
            "idle_cpu_percent": {"replica": 100 * idle_replica, "server": 100 * idle_server}}


# --- 2. a burst at the default limit, 1 and 3 replicas ---------------------------------------------------


def _held(ctl: Controller) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{ctl.port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("sympozium_schedule_shards_held "):
                return int(float(line.split()[1]))
    return 0


def start_replicas(plane: ControlPlane, directory: Path, replicas: int, tag: str) -> list[Controller]:
    _clear_leases(plane)
    extra = ("--shards", str(SHARDS)) if replicas > 1 else ()
    controllers = [Controller(plane, directory, f"{tag}-{i}", leader_election=True, extra=extra)
                   for i in range(replicas)]
    for ctl in controllers:
        ctl.wait()
    if replicas > 1:
        wait_for(lambda: sorted(_held(c) for c in controllers) == [SHARDS // replicas] * replicas,
                 "the shards shared out", timeout=120)
    else:
        controllers[0].wait("/leaderz")
    return controllers


def burst(plane: ControlPlane, size: Size, directory: Path, replicas: int, index: int) -> dict[str, Any]:
    api, ns = plane.api(), plane.namespace(f"bench-shards-{replicas}")
    controllers: list[Controller] = []
    try:
        controllers = start_replicas(plane, directory, replicas, f"r{replicas}-{index}")
        seed(api, ns, [instance_obj()])
        tick = _tick()
        time.sleep(max(0.0, tick - 58 - time.time()))
        seed(api, ns, [schedule_obj(f"b-{i:05d}", "* * * * *") for i in range(size.burst)])
        wait_for(lambda: time.time() > tick + 1, "the tick", timeout=120)
        for ctl in controllers:
            settle(ctl, quiet=3.0)
        calls = _burst_calls(controllers, tick)
        runs = [r for r in api.list("agentruns", namespace=ns)
                if r["metadata"]["name"].endswith(f"-{int(tick)}")]
    finally:
        for ctl in controllers:
            ctl.stop()
        clear(api, ns)
        _clear_leases(plane)
    done = _done(calls)
    per_schedule = Counter(r["metadata"]["labels"]["sympozium.ai/schedule"] for r in runs)
    by_user = Counter(c.user.rsplit(":", 1)[-1] for c in calls
                      if key(c) == "create agentruns" and c.code == 201)
    q, b = DEFAULT_LIMIT
    per_replica_bound = [max(0.0, sum(1 for c in calls if c.user == ctl.user and c.at <= done) - b) / q
                         for ctl in controllers]
    return {"replicas": replicas, "done_s": done - tick, "fires_per_s": size.burst / (done - tick),
            "lost_or_doubled": size.burst - sum(1 for n in per_schedule.values() if n == 1),
            "fires_by_replica": dict(by_user), "bound_s": max(per_replica_bound),
            "lease_requests": sum(1 for c in calls if c.resource == "leases" and c.at <= done)}


# --- 3. Leases while idle ---------------------------------------------------------------------------


def idle(plane: ControlPlane, size: Size, directory: Path, replicas: int, index: int) -> dict[str, Any]:
    controllers: list[Controller] = []
    servers = _server_pids(plane)
    try:
        controllers = start_replicas(plane, directory, replicas, f"i{replicas}-{index}")
        time.sleep(5.0)
        mark, start, cpu0 = plane.audit.mark(), time.time(), _cpu(servers)
        time.sleep(size.idle_window)
        cpu = _cpu(servers) - cpu0
        calls = [c for ctl in controllers for c in ctl.calls(since=mark)
                 if c.verb != "watch" and c.at < start + size.idle_window]
    finally:
        for ctl in controllers:
            ctl.stop()
        _clear_leases(plane)
    minutes = size.idle_window / 60
    return {"replicas": replicas, "per_minute": len(calls) / minutes,
            "by_request": {k: n / minutes for k, n in Counter(key(c) for c in calls).items()},
            "server_cpu_percent": 100 * cpu / size.idle_window}


# --- the report ------------------------------------------------------------------------------------


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs: list[dict[str, Any]] = []
    with plane_for(options) as plane, data_dir(options, NAME) as directory:
        for i in range(options.repeats):
            one: dict[str, Any] = {"cost": cost(plane, size, directory)}
            print(f"   repeat {i + 1} cost: {one['cost']}", flush=True)
            for replicas in ((1, REPLICAS) if i % 2 == 0 else (REPLICAS, 1)):
                one[f"burst_{replicas}"] = burst(plane, size, directory, replicas, i)
                print(f"   repeat {i + 1} burst, {replicas} replica(s): {one[f'burst_{replicas}']}",
                      flush=True)
            one[f"idle_{REPLICAS}"] = idle(plane, size, directory, REPLICAS, i)
            one["idle_1"] = idle(plane, size, directory, 1, i)
            print(f"   repeat {i + 1} idle: {one[f'idle_{REPLICAS}']} / {one['idle_1']}", flush=True)
            runs.append(one)
    costs = [r["cost"] for r in runs]
    one_r = [r["burst_1"] for r in runs]
    many = [r[f"burst_{REPLICAS}"] for r in runs]
    q, _ = DEFAULT_LIMIT
    figures = [
        Figure("replica_cpu_ms_per_fire", f"one replica's CPU per fire (burst of {size.burst}, "
               "--kube-qps 5000)", "ms", [c["replica_cpu_ms_per_fire"] for c in costs]),
        Figure("server_cpu_ms_per_fire", "kube-apiserver + etcd CPU per fire (same burst)", "ms",
               [c["server_cpu_ms_per_fire"] for c in costs]),
        Figure("requests_per_fire", "requests per fire (same burst)", "",
               [c["requests_per_fire"] for c in costs]),
        Figure("one_replica_fires_per_s", "one replica at --kube-qps 5000: fires/s (this machine's "
               "2 cores shared with the API server)", "/s", [c["fires_per_s"] for c in costs]),
        Figure("burst_1_s", f"burst of {size.burst} at the default limit, 1 replica (--shards 1)", "s",
               [b["done_s"] for b in one_r], floor=[b["bound_s"] for b in one_r],
               floor_label="the limiter's bound"),
        Figure(f"burst_{REPLICAS}_s", f"the same, {REPLICAS} replicas sharing {SHARDS} shards", "s",
               [b["done_s"] for b in many], floor=[b["bound_s"] for b in many],
               floor_label="the busiest replica's limiter bound"),
        Figure("speedup", f"{REPLICAS} replicas / 1: fires/s at the default limit", "x",
               [m["fires_per_s"] / o["fires_per_s"] for m, o in zip(many, one_r, strict=True)],
               target=None),
        Figure("lost_or_doubled", "bursts: ticks lost or doubled", "",
               [float(b["lost_or_doubled"]) for b in one_r + many], target=0, gate="worst"),
        Figure("idle_requests_3", f"{REPLICAS} sharded replicas idle: requests a minute", "/min",
               [r[f"idle_{REPLICAS}"]["per_minute"] for r in runs],
               floor=[r["idle_1"]["per_minute"] for r in runs], floor_label="one leader"),
    ]
    if options.draw:
        draw(runs, q)
    return Report(NAME, DESCRIPTION, {
        "server": "kube-apiserver + etcd from KUBEBUILDER_ASSETS (tests/kube/controlplane.py): RBAC, "
                  "an audit log of every request (bodies of writes), etcd --unsafe-no-fsync",
        "command": "sympozium-schedule run --kubernetes --kubeconfig K --metrics-port P --log-level "
                   f"warning [--shards {SHARDS}] as ServiceAccounts bound to the shipped roles",
        "cost": "CPU of the process(es) from tick - 1 s to the last status patch, less the idle rate "
                "over the 5 s before, / fires",
        "shards": SHARDS, "replicas": REPLICAS, "burst": size.burst,
    }, figures, runs)


def model(c_ms: float, a_ms: float, requests: float, *, replicas: int, qps: float | None,
          server_cores: float) -> float:
    """Fires/s of ``replicas`` replicas, each on a core of its own."""
    per_replica = 1000 / c_ms if qps is None else min(qps / requests, 1000 / c_ms)
    return min(replicas * per_replica, server_cores * 1000 / a_ms)


def draw(runs: list[dict[str, Any]], qps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import IMG_DIR

    c = statistics.median(r["cost"]["replica_cpu_ms_per_fire"] for r in runs)
    a = statistics.median(r["cost"]["server_cpu_ms_per_fire"] for r in runs)
    writes = 2.0  # a create and a status patch; Events take tokens only when no fire waits
    xs = list(range(1, 9))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for qps_, cores, style, label in (
            (qps, 8, "-", f"--kube-qps {qps:g} (default), API server on 8 cores"),
            (None, 8, "--", "no client limit, API server on 8 cores"),
            (None, 4, ":", "no client limit, API server on 4 cores")):
        ax.plot(xs, [model(c, a, writes, replicas=n, qps=qps_, server_cores=cores) for n in xs],
                style, label=label)
    for replicas in (1, REPLICAS):
        measured = [r[f"burst_{replicas}"]["fires_per_s"] for r in runs]
        ax.scatter([replicas] * len(measured), measured, color="black", zorder=3,
                   label="measured here, default limit" if replicas == 1 else None)
    ax.set_xlabel("replicas (one core each)")
    ax.set_ylabel("fires per second")
    ax.set_yscale("log")
    ax.set_title(f"model: replica {c:.1f} ms CPU/fire, API server {a:.1f} ms/fire, "
                 f"{writes:g} requests/fire", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG_DIR / "shards.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
