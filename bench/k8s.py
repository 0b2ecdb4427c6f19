"""Kubernetes mode on a real kube-apiserver: what the real controller asks of the API.

    python -m bench k8s [--repeats N] [--quick]

The control plane is the tests' (tests/kube/controlplane.py): etcd and kube-apiserver from
``KUBEBUILDER_ASSETS`` (else ``../shared/kube``), TLS, RBAC, the shipped install applied with
``kubectl apply``, an audit log, and here the API server's default ``--min-request-timeout``
(1800 s: a watch lives 30-60 min, as in clusters) and etcd's default progress notifications.
The real ``sympozium-schedule run --kubernetes`` runs as the shipped ServiceAccount (a second
replica as another ServiceAccount bound to the same roles). Every count and time comes from the
audit log: each request's user, verb, resource and arrival (``requestReceivedTimestamp``,
microseconds, this machine's clock, so comparable with the ticks). Each part has a namespace of
its own.

1. **Requests per fire**, by verb and resource: 20 ``@every 2s`` schedules (Allow: 10 fires/s,
   20 writes/s, within the default 50 requests/s), a window of 10 s from 3 s after their
   creation; a fire is an AgentRun create in the window, matched with its status patch (the
   one naming its run as ``lastRunName``, even if it lands just after the window); Events
   created in the window count per fire; every other request in the window is counted apart
   (target 0). Floor: 2 (one create, one status patch) + the Events the recorder wrote.
2. **Idle**, leader election on as shipped: 1,000 schedules with nothing due, the controller
   started, settled (its initial status writes done), then every request it makes over 10
   minutes, counted per minute (median and spread over the minutes) and in total by verb and
   resource: the Lease renewals, and any watch re-opened or relist. Floor: one Lease update
   per retry period (2 s): 30 a minute.
3. **Burst**: 1,000 ``* * * * *`` schedules (afterInterval, Allow) due at one minute boundary
   M, at the default client limit (``--kube-qps 50 --kube-burst 100``). From M to the last
   status patch for M. Floor: the token bucket's own bound for the requests the controller
   made meanwhile (creates, patches and Events): (N - B) / Q seconds. Lost or doubled ticks:
   schedules without exactly one AgentRun for M.
4. **Fail-over**: two replicas with leader election, a ``@every 20s`` schedule; the leader is
   SIGKILLed 1 s before a tick, so that tick falls in the gap. Measured: SIGKILL to the first
   run the standby creates; the floor is when the Lease expired (its last renewal + 15 s).
   Runs per tick over the whole part (target: exactly one each, none lost).

--quick: 10 schedules and a 4 s window; idle 100 schedules over 30 s; a burst of 100;
fail-over as in full.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # tests.kube lives in the repository, not in the package
    sys.path.insert(0, _ROOT)

from tests.kube.controlplane import (  # noqa: E402
    INSTALL_NAMESPACE,
    SERVICE_ACCOUNT,
    Api,
    ApiError,
    Call,
    ControlPlane,
    find_assets,
)

from bench.common import (  # noqa: E402
    Figure,
    Options,
    Report,
    data_dir,
    free_port,
    instance_obj,
    main_for,
    program,
    quiet_schedules,
    schedule_obj,
)
from sympozium_schedule.core.model import parse_time  # noqa: E402

NAME = "k8s"
DESCRIPTION = ("Kubernetes mode on a real kube-apiserver: requests per fire, requests while idle "
               "(10 min, leader election on), a burst at the default rate limit, fail-over")
DEFAULT_LIMIT = (50.0, 100)  # run --kubernetes's defaults
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0
TIMEOUT = 180.0
FIRE_EVERY = 2


@dataclass(frozen=True)
class Size:
    fire_schedules: int
    fire_window: float
    idle_schedules: int
    idle_minutes: float
    burst: int


FULL = Size(20, 10.0, 1000, 10.0, 1000)
QUICK = Size(10, 4.0, 100, 0.5, 100)


def key(call: Call) -> str:
    return f"{call.verb} {call.resource}"


class Controller:
    """``run --kubernetes`` as a ServiceAccount bound to the shipped roles."""

    def __init__(self, plane: ControlPlane, directory: Path, user: str = SERVICE_ACCOUNT, *,
                 leader_election: bool = False, namespace: str | None = None,
                 extra: tuple[str, ...] = ()):
        self.plane = plane
        self.user = f"system:serviceaccount:{INSTALL_NAMESPACE}:{user}"
        self.port = free_port()
        token = plane.service_account_token() if user == SERVICE_ACCOUNT else _token(plane, user)
        config = plane.kubeconfig(directory / f"{user}.kubeconfig", token=token)
        args = [*program(), "run", "--kubernetes", "--kubeconfig", str(config), "--metrics-port",
                str(self.port), "--log-level", "warning", "--log-format", "json"]
        args += [] if leader_election else ["--no-leader-election"]
        args += ["-n", namespace] if namespace else []
        args += list(extra)
        self.log = (directory / f"{user}.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={"PATH": "/usr/bin:/bin", "POD_NAME": user})

    def get(self, path: str) -> int:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def wait(self, path: str = "/readyz", timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.get(path) != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the controller is not {path} (exit {self.proc.poll()})")
            time.sleep(0.1)

    def calls(self, since: int = 0) -> list[Call]:
        return self.plane.audit.calls(user=self.user, since=since)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _token(plane: ControlPlane, user: str) -> str:
    api = plane.api()
    subject = [{"kind": "ServiceAccount", "name": user, "namespace": INSTALL_NAMESPACE}]
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    for path, obj in (
        (f"/api/v1/namespaces/{INSTALL_NAMESPACE}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": user}}),
        (f"{rbac}/clusterrolebindings", {"apiVersion": "rbac.authorization.k8s.io/v1",
         "kind": "ClusterRoleBinding", "metadata": {"name": f"bench-{user}"}, "subjects": subject,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": SERVICE_ACCOUNT}}),
        (f"{rbac}/namespaces/{INSTALL_NAMESPACE}/rolebindings", {"apiVersion": "rbac.authorization.k8s.io/v1",
         "kind": "RoleBinding", "metadata": {"name": f"bench-{user}"}, "subjects": subject,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": f"{SERVICE_ACCOUNT}-leader-election"}}),
    ):
        with contextlib.suppress(ApiError):
            api.request("POST", path, obj)
    answer = api.request("POST", f"/api/v1/namespaces/{INSTALL_NAMESPACE}/serviceaccounts/{user}/token",
                         {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    return str(answer["status"]["token"])


def clear(api: Api, namespace: str) -> None:
    """A part's schedules go when it ends: the next part's controller watches every namespace."""
    api.delete_all("sympoziumschedules", namespace=namespace)
    api.delete_all("agentruns", namespace=namespace)


def seed(api: Api, namespace: str, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create objects in ``namespace``, eight requests at a time."""
    for obj in objs:
        obj["metadata"]["namespace"] = namespace
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(api.create, objs))


def wait_for(check: Any, what: str, timeout: float = TIMEOUT, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
    return value


def settle(ctl: Controller, quiet: float = 3.0) -> None:
    """Until the controller has made no request but watches and Lease renewals for ``quiet`` s."""
    def quiet_now() -> bool:
        busy = [c for c in ctl.calls() if c.verb != "watch" and c.resource != "leases"]
        return not busy or time.time() - busy[-1].at > quiet
    wait_for(quiet_now, "the controller to settle")


# --- 1. requests per fire --------------------------------------------------------------------------


def per_fire(plane: ControlPlane, size: Size, directory: Path) -> dict[str, Any]:
    api, ns = plane.api(), plane.namespace("bench-fires")
    ctl = Controller(plane, directory, leader_election=False, namespace=ns)
    try:
        ctl.wait()
        seed(api, ns, [instance_obj()])
        seed(api, ns, [schedule_obj(f"fire-{i:03d}", f"@every {FIRE_EVERY}s")
                       for i in range(size.fire_schedules)])
        time.sleep(3.0)
        mark, start = plane.audit.mark(), time.time()
        time.sleep(size.fire_window + 3.0)  # the fires of the window, and their status patches
        calls = [c for c in ctl.calls(since=mark) if c.verb != "watch"]
    finally:
        ctl.stop()
        clear(api, ns)
    end = start + size.fire_window
    window = [c for c in calls if c.at < end]
    creates = [c for c in window if key(c) == "create agentruns" and c.code == 201]
    names = {str(c.body["metadata"]["name"]) for c in creates}
    patches = [c for c in calls if key(c) == "patch sympoziumschedules/status"
               and (c.body or {}).get("status", {}).get("lastRunName") in names]
    events = [c for c in window if key(c) == "create events"]
    matched = {id(c) for c in creates} | {id(c) for c in patches} | {id(c) for c in events}
    others = Counter(key(c) for c in window if id(c) not in matched)
    fires = len(creates)
    return {"fires": fires, "by_request": dict(Counter(key(c) for c in window)),
            "writes_per_fire": (len(creates) + len(patches)) / fires,
            "events_per_fire": len(events) / fires,
            "requests_per_fire": (len(creates) + len(patches) + len(events)) / fires,
            "other_requests": dict(others), "other": sum(others.values()),
            "reads": sum(n for k, n in others.items() if k.split()[0] in ("get", "list")),
            "lag_max_s": max((c.at - _tick(c) for c in creates), default=float("nan"))}


def _tick(call: Call) -> float:
    name = str((call.body or {}).get("metadata", {}).get("name", ""))
    return float(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else call.at


# --- 2. idle ---------------------------------------------------------------------------------------


def idle(plane: ControlPlane, size: Size, directory: Path) -> dict[str, Any]:
    api, ns = plane.api(), plane.namespace("bench-idle")
    api.delete("leases", SERVICE_ACCOUNT, namespace=INSTALL_NAMESPACE)
    seed(api, ns, [instance_obj()])
    window_s = size.idle_minutes * 60
    from datetime import UTC, datetime

    quiet = quiet_schedules(size.idle_schedules, created=datetime.now(UTC), quiet_for=window_s + 300)
    seed(api, ns, [obj for obj, _ in quiet])
    ctl = Controller(plane, directory, leader_election=True)
    try:
        ctl.wait()
        ctl.wait("/leaderz")
        settle(ctl)
        mark, start = plane.audit.mark(), time.time()
        time.sleep(window_s)
        calls = [c for c in ctl.calls(since=mark) if c.at < start + window_s]
    finally:
        ctl.stop()
        clear(api, ns)
    minutes = max(1, round(size.idle_minutes)) if size.idle_minutes >= 1 else 1
    per_minute = [0.0] * minutes
    span = window_s / minutes
    for c in calls:
        per_minute[min(minutes - 1, int((c.at - start) // span))] += 1
    by_request = Counter(key(c) for c in calls)
    return {"window_s": window_s, "total": len(calls), "by_request": dict(by_request),
            "per_minute": [v * 60 / span for v in per_minute],
            "lease": sum(n for k, n in by_request.items() if k.endswith("leases")),
            "other": sum(n for k, n in by_request.items() if not k.endswith("leases"))}


# --- 3. burst --------------------------------------------------------------------------------------


def burst(plane: ControlPlane, size: Size, directory: Path) -> dict[str, Any]:
    api, ns = plane.api(), plane.namespace("bench-burst")
    q, b = DEFAULT_LIMIT
    ctl = Controller(plane, directory, leader_election=False, namespace=ns)
    try:
        ctl.wait()
        seed(api, ns, [instance_obj()])
        k = size.burst
        # Created within the minute before a boundary far enough ahead for the initial
        # status writes (1,000 patches at 50/s) and a refilled bucket.
        tick = (time.time() // 60 + 1) * 60
        if tick - time.time() < 45:
            tick += 60
        time.sleep(max(0.0, tick - 58 - time.time()))
        seed(api, ns, [schedule_obj(f"b-{i:05d}", "* * * * *") for i in range(k)])
        wait_for(lambda: time.time() > tick + 1, "the tick", timeout=120)
        settle(ctl, quiet=3.0)
        calls = [c for c in ctl.calls() if c.at >= tick and c.verb != "watch"]
        runs = [r for r in api.list("agentruns", namespace=ns)
                if r["metadata"]["name"].endswith(f"-{int(tick)}")]
    finally:
        ctl.stop()
        clear(api, ns)
    creates = [c for c in calls if key(c) == "create agentruns"]
    patches = [c for c in calls if key(c) == "patch sympoziumschedules/status"
               and (c.body or {}).get("status", {}).get("lastRunTime")]
    done = max(c.at for c in patches) if patches else float("nan")
    during = [c for c in calls if c.at <= done]
    by_request = Counter(key(c) for c in during)
    per_schedule = Counter(r["metadata"]["labels"]["sympozium.ai/schedule"] for r in runs)
    lost = k - sum(1 for n in per_schedule.values() if n == 1)
    bound = max(0.0, len(during) - b) / q
    runs_done = max(c.at for c in creates) - tick if creates else float("nan")
    return {"schedules": k, "runs_done_s": runs_done,
            "statuses_done_s": done - tick, "requests_during": len(during), "by_request": dict(by_request),
            "bound_s": bound, "fires_per_s": k / (done - tick), "lost": lost,
            "requests_per_fire": len(during) / k,
            "_creates": sorted(c.at - tick for c in creates),
            "_patches": sorted(c.at - tick for c in patches),
            "_events": sorted(c.at - tick for c in during if key(c) == "create events")}


# --- 4. fail-over ----------------------------------------------------------------------------------


def failover(plane: ControlPlane, directory: Path) -> dict[str, Any]:
    api, ns = plane.api(), plane.namespace("bench-failover")
    api.delete("leases", SERVICE_ACCOUNT, namespace=INSTALL_NAMESPACE)
    a = Controller(plane, directory, "replica-a", leader_election=True)
    b = None
    try:
        a.wait("/leaderz")
        b = Controller(plane, directory, "replica-b", leader_election=True)
        b.wait()
        seed(api, ns, [instance_obj()])
        (schedule,) = seed(api, ns, [schedule_obj("every-20s", "@every 20s", first_tick="immediate")])
        created = parse_time(schedule["metadata"]["creationTimestamp"])
        assert created is not None
        wait_for(lambda: api.list("agentruns", namespace=ns), "the first run")
        now = time.time()
        next_tick = created.timestamp() + 20 * (int((now - created.timestamp()) // 20) + 1)
        if next_tick - now < 3:
            next_tick += 20
        time.sleep(max(0.0, next_tick - 1 - time.time()))
        renewed = max(c.at for c in a.calls() if c.resource == "leases" and c.verb in ("update", "create"))
        mark = plane.audit.mark()  # replica-b's ServiceAccount served the earlier repeats too
        a.stop(signal.SIGKILL)
        killed = time.time()
        first = wait_for(lambda: [c for c in b.calls(since=mark)
                                  if key(c) == "create agentruns" and c.code == 201],
                         "the standby's first run", timeout=60)[0]
        time.sleep(45)  # two more ticks fired by the new leader
        runs = api.list("agentruns", namespace=ns)
    finally:
        a.stop()
        if b is not None:
            b.stop()
        clear(api, ns)
    ticks = Counter(r["metadata"]["annotations"]["sympozium.ai/scheduled-time"] for r in runs)
    times = sorted(parse_time(t).timestamp() for t in ticks)  # type: ignore[union-attr]
    missing = sum(round((y - x) / 20) - 1 for x, y in itertools.pairwise(times))
    return {"takeover_s": first.at - killed, "expiry_s": renewed + LEASE_DURATION - killed,
            "tick_lag_s": first.at - next_tick, "doubled": sum(n - 1 for n in ticks.values()),
            "missing": missing, "runs": len(runs)}


# --- the report ------------------------------------------------------------------------------------


@contextlib.contextmanager
def plane_for(options: Options) -> Iterator[ControlPlane]:
    plane = ControlPlane(find_assets(), min_request_timeout=1800, progress_notify=None)
    try:
        yield plane.start()
    finally:
        plane.stop()


def measure(options: Options) -> Report:
    size = QUICK if options.quick else FULL
    runs: list[dict[str, Any]] = []
    with plane_for(options) as plane, data_dir(options, NAME) as directory:
        for i in range(options.repeats):
            print(f"   repeat {i + 1}: fires, burst, fail-over", flush=True)
            runs.append({"fires": per_fire(plane, size, directory), "burst": burst(plane, size, directory),
                         "failover": failover(plane, directory)})
        print(f"   idle: {size.idle_minutes:g} min", flush=True)
        quiet = idle(plane, size, directory)
    fires = [r["fires"] for r in runs]
    bursts = [r["burst"] for r in runs]
    overs = [r["failover"] for r in runs]
    q, b = DEFAULT_LIMIT
    k = size.burst
    figures = [
        Figure("requests_per_fire", f"API requests per fire ({size.fire_schedules} x @every {FIRE_EVERY}s: "
               "create, status patch, Events)", "",
               [f["requests_per_fire"] for f in fires], target=None,
               floor=[2 + f["events_per_fire"] for f in fires], floor_label="2 + the Events recorded"),
        Figure("writes_per_fire", "AgentRun creates + status patches per fire", "",
               [f["writes_per_fire"] for f in fires], target=2, gate="worst", floor=[2.0] * len(fires),
               floor_label="one create + one status patch"),
        Figure("events_per_fire", "Events created per fire (best effort, recorder-limited)", "",
               [f["events_per_fire"] for f in fires]),
        Figure("fire_other", "any other request in the window (reads, other writes)", "",
               [float(f["other"]) for f in fires], target=0, gate="worst"),
        Figure("idle_per_minute", f"requests a minute while idle ({size.idle_schedules} schedules, leader "
               f"election on; spread over {size.idle_minutes:g} min)", "/min", quiet["per_minute"],
               floor=[60 / RETRY_PERIOD] * len(quiet["per_minute"]), floor_label="one Lease update per 2 s"),
        Figure("idle_other", f"requests while idle other than the Lease's, {size.idle_minutes:g} min", "",
               [float(quiet["other"])], target=None),
        Figure("burst_s", f"burst of {k} at --kube-qps {q:g} --kube-burst {b}: tick to last status patch",
               "s",
               [r["statuses_done_s"] for r in bursts], target=None,
               floor=[r["bound_s"] for r in bursts], floor_label="token bucket: (requests - B) / Q"),
        Figure("burst_ratio", "burst time / the rate limiter's bound (target x1.1)", "x",
               [r["statuses_done_s"] / r["bound_s"] for r in bursts], target=1.1),
        Figure("burst_requests_per_fire", "requests per fire in the burst (creates, patches, Events)", "",
               [r["requests_per_fire"] for r in bursts]),
        Figure("burst_lost", "burst: ticks lost or doubled", "", [float(r["lost"]) for r in bursts],
               target=0, gate="worst"),
        Figure("failover_s", "fail-over: SIGKILL of the leader to the standby's first run", "s",
               [o["takeover_s"] for o in overs], target=LEASE_DURATION + RETRY_PERIOD,
               floor=[max(0.0, o["expiry_s"]) for o in overs], floor_label="the Lease's expiry"),
        Figure("failover_tick_lag_s", "fail-over: lag of the tick due in the gap", "s",
               [o["tick_lag_s"] for o in overs], target=LEASE_DURATION),
        Figure("failover_wrong", "fail-over: ticks doubled or lost", "",
               [float(o["doubled"] + o["missing"]) for o in overs], target=0, gate="worst"),
    ]
    if options.draw:
        draw(bursts, k)
    public = [{part: {k2: v for k2, v in body.items() if not k2.startswith("_")} for part, body in r.items()}
              for r in runs]
    return Report(NAME, DESCRIPTION, {
        "server": "kube-apiserver + etcd from KUBEBUILDER_ASSETS (tests/kube/controlplane.py), RBAC, "
                  "OwnerReferencesPermissionEnforcement, --min-request-timeout 1800 (the default)",
        "command": "sympozium-schedule run --kubernetes --kubeconfig K [--no-leader-election] "
                   "--metrics-port P --log-level warning --log-format json (defaults: --kube-qps 50 "
                   "--kube-burst 100), as the shipped ServiceAccount",
        "idle": {"schedules": size.idle_schedules, "minutes": size.idle_minutes,
                 "by_request": quiet["by_request"], "total": quiet["total"]},
        "fires_by_request": [f["by_request"] for f in fires],
        "burst_by_request": [r["by_request"] for r in bursts],
        "times": "audit log requestReceivedTimestamp - tick",
    }, figures, public)


def draw(bursts: list[dict[str, Any]], k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import IMG_DIR

    q, b = DEFAULT_LIMIT
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, body in enumerate(bursts):
        line, = ax.step(body["_creates"], range(1, len(body["_creates"]) + 1), where="post",
                        label=f"run {i + 1}: AgentRuns created")
        ax.step(body["_patches"], range(1, len(body["_patches"]) + 1), where="post", linestyle="--",
                color=line.get_color(), label=f"run {i + 1}: statuses patched")
        ax.step(body["_events"], range(1, len(body["_events"]) + 1), where="post", linestyle=":",
                color=line.get_color(), label=f"run {i + 1}: Events")
    bound = statistics.median(r["bound_s"] for r in bursts)
    ax.axvline(bound, color="red", linestyle=":", linewidth=1, label=f"rate-limit bound {bound:.1f} s")
    ax.set_xlabel("seconds after the tick")
    ax.set_ylabel("count")
    ax.set_title(f"{k} due at once on a real kube-apiserver, --kube-qps {q:g} --kube-burst {b}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG_DIR / "k8s.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_for(NAME, measure, DESCRIPTION))
