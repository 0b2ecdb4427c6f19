"""A real Kubernetes control plane for tests: etcd and kube-apiserver (and, on demand,
kube-controller-manager's garbage collector) from ``KUBEBUILDER_ASSETS``, envtest's convention.

What a cluster enforces is on: TLS (the API server's self-signed serving certificate, which
every kubeconfig here trusts), RBAC authorization, the ``OwnerReferencesPermissionEnforcement``
admission plugin (on by default in OpenShift), a short ``--min-request-timeout`` so watches end
during a test as they do in clusters after 30-60 minutes, and an audit log from which tests count
requests by user, verb and resource, and read the User-Agent and the authorizer's decision.

Identities: the tests themselves are ``admin`` (group ``system:masters``, a static token);
the processes under test run as the shipped ServiceAccount, with a token from the TokenRequest
API, after the shipped install (``sympozium-schedule manifests --standalone``) was applied with
``kubectl apply -f -`` as the README says.

The watch cache is off for ConfigMaps only (``--watch-cache-sizes=configmaps#0``): those watches
are served by etcd, so compacting etcd (:meth:`ControlPlane.compact`) makes a real 410 Gone. Every
other resource is served from the watch cache, as in any cluster (which answers an old version
with 410 only after ~100k events in 75 s: nothing a test can do).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.support import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ASSETS_SCRIPT = REPO.parent / "shared" / "kube" / "assets.sh"
ADMIN_TOKEN = "admin-token-for-tests"
GC_TOKEN = "gc-token-for-tests"
INSTALL_NAMESPACE = "sympozium-schedule"
SERVICE_ACCOUNT = "sympozium-schedule"
SA_USER = f"system:serviceaccount:{INSTALL_NAMESPACE}:{SERVICE_ACCOUNT}"
# Watches end after a random 10-20 s (the server picks min..2*min): many times per module.
MIN_REQUEST_TIMEOUT = 10

Obj = dict[str, Any]

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # The server's own loopback calls, the garbage collector and the tests themselves.
        {"level": "None", "users": ["system:apiserver", "admin", "gc"]},
        # What our processes write, with the body as sent (before defaults and pruning).
        {"level": "Request", "verbs": ["create", "update", "patch"],
         "resources": [{"group": "sympozium.ai"}, {"group": "coordination.k8s.io"}, {"group": ""}]},
        {"level": "Metadata"},
    ],
}


def _die_with_parent() -> None:
    """In the child: SIGKILL when the thread that started it ends, however the process ends
    (a test run killed by a timeout must not leave an API server behind)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class NoAssets(RuntimeError):
    pass


def find_assets() -> Path:
    """``$KUBEBUILDER_ASSETS``, else what ``../shared/kube/assets.sh`` unpacks."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env:
        folder = Path(env)
    elif ASSETS_SCRIPT.is_file():
        out = subprocess.run(["bash", str(ASSETS_SCRIPT)], capture_output=True, text=True, check=True)
        folder = Path(out.stdout.strip())
    else:
        raise NoAssets(f"no KUBEBUILDER_ASSETS and no {ASSETS_SCRIPT}: cannot start kube-apiserver")
    missing = [b for b in ("etcd", "kube-apiserver") if not (folder / b).is_file()]
    if missing:
        raise NoAssets(f"KUBEBUILDER_ASSETS={folder} lacks {', '.join(missing)}")
    return folder


# --- the audit log ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One request, as the API server audited it."""

    user: str
    verb: str  # get list watch create update patch delete deletecollection
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None
    code: int | None
    at: float  # when the server received it, Unix seconds
    user_agent: str
    decision: str  # the authorizer's: allow or forbid
    body: Any = None  # a write's request body as sent (audit level Request)
    uri: str = ""

    @property
    def write(self) -> bool:
        return self.verb in ("create", "update", "patch", "delete", "deletecollection")


def _call(event: Obj) -> Call:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource") or ""
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
    return Call(
        user=event["user"]["username"], verb=event["verb"], group=ref.get("apiGroup") or "",
        resource=resource, namespace=ref.get("namespace"), name=ref.get("name"),
        code=(event.get("responseStatus") or {}).get("code"), at=stamp.timestamp(),
        user_agent=event.get("userAgent") or "",
        decision=(event.get("annotations") or {}).get("authorization.k8s.io/decision", ""),
        body=event.get("requestObject"), uri=event.get("requestURI") or "")


class AuditLog:
    """The audit log read as it grows: each request once (a watch when its response started)."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._calls: list[Call] = []
        self._seen: set[str] = set()
        self._open: dict[str, Call] = {}  # watches whose response started and has not ended

    def _read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._offset += end
        for line in data[:end].splitlines():
            event = json.loads(line)
            audit_id, stage = event["auditID"], event.get("stage")
            if stage not in ("ResponseStarted", "ResponseComplete", "Panic"):
                continue
            if audit_id in self._seen:
                self._open.pop(audit_id, None)
                continue
            self._seen.add(audit_id)
            call = _call(event)
            self._calls.append(call)
            if stage == "ResponseStarted":
                self._open[audit_id] = call

    def mark(self) -> int:
        self._read()
        return len(self._calls)

    def open_watches(self, user: str) -> int:
        self._read()
        return sum(1 for c in self._open.values() if c.user == user)

    def calls(self, *, user: str | None = None, since: int = 0) -> list[Call]:
        self._read()
        return [c for c in self._calls[since:] if user is None or c.user == user]


# --- the test's own client -----------------------------------------------------------------------

PATHS = {
    "sympoziumschedules": "/apis/sympozium.ai/v1alpha1",
    "agentruns": "/apis/sympozium.ai/v1alpha1",
    "sympoziuminstances": "/apis/sympozium.ai/v1alpha1",
    "configmaps": "/api/v1",
    "events": "/api/v1",
    "serviceaccounts": "/api/v1",
    "leases": "/apis/coordination.k8s.io/v1",
}
KINDS = {"SympoziumSchedule": "sympoziumschedules", "AgentRun": "agentruns",
         "SympoziumInstance": "sympoziuminstances", "ConfigMap": "configmaps", "Event": "events",
         "Lease": "leases"}


class ApiError(Exception):
    def __init__(self, code: int, body: Obj):
        self.code = code
        self.body = body
        self.reason = str(body.get("reason") or "")
        super().__init__(f"{code} {self.reason}: {body.get('message')}")


class Api:
    """A small synchronous JSON client for the tests (admin unless given another token)."""

    def __init__(self, url: str, ca: Path, token: str = ADMIN_TOKEN):
        self.url = url
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca))

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", query: str = "",
                raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path + (f"?{query}" if query else ""), data=data,
                                     method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                detail = json.loads(payload)
            except ValueError:
                detail = {"message": payload.decode(errors="replace")}
            raise ApiError(exc.code, detail) from None
        if raw:
            return text.decode()
        return json.loads(text) if text else None

    @staticmethod
    def path(plural: str, namespace: str | None, name: str | None = None) -> str:
        out = PATHS[plural] + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
        return out + (f"/{name}" if name else "")

    def create(self, obj: Obj, *, strict: bool = False) -> Obj:
        plural = KINDS[obj["kind"]]
        namespace = obj["metadata"].get("namespace") or "default"
        found: Obj = self.request("POST", self.path(plural, namespace), obj,
                                  query="fieldValidation=Strict" if strict else "")
        return found

    def get(self, plural: str, name: str, *, namespace: str) -> Obj | None:
        try:
            found: Obj = self.request("GET", self.path(plural, namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise
        return found

    def list(self, plural: str, *, namespace: str | None = None,
             labels: Mapping[str, str | None] | None = None) -> list[Obj]:
        query = ""
        if labels:
            selector = ",".join(k if v is None else f"{k}={v}" for k, v in labels.items())
            query = "labelSelector=" + urllib.request.quote(selector)
        items: list[Obj] = self.request("GET", self.path(plural, namespace), query=query)["items"]
        return items

    def patch(self, plural: str, name: str, patch: Obj, *, namespace: str, status: bool = False) -> Obj:
        path = self.path(plural, namespace, name) + ("/status" if status else "")
        found: Obj = self.request("PATCH", path, patch, content_type="application/merge-patch+json")
        return found

    def replace(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        found: Obj = self.request("PUT", self.path(KINDS[obj["kind"]], meta["namespace"], meta["name"]), obj)
        return found

    def delete(self, plural: str, name: str, *, namespace: str) -> bool:
        try:
            self.request("DELETE", self.path(plural, namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def delete_all(self, plural: str, *, namespace: str) -> None:
        self.request("DELETE", self.path(plural, namespace))

    def namespace(self, name: str) -> None:
        try:
            self.request("POST", "/api/v1/namespaces",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiError as exc:
            if exc.code != 409:
                raise

    def close(self) -> None:
        """Nothing to release (one connection per request); kept for the emulator's Api shape."""


# --- the control plane -----------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in a folder of their own; :meth:`stop` ends both and removes it."""

    assets: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kube-")))
    min_request_timeout: int = MIN_REQUEST_TIMEOUT
    progress_notify: str | None = "2s"  # None: etcd's default, 10 min
    url: str = ""
    etcd_url: str = ""
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[Any] = field(default_factory=list)
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _sa_token: str | None = None

    @property
    def ca(self) -> Path:
        # The self-signed serving certificate followed by the CA that signed it.
        return self.root / "certs" / "apiserver.crt"

    @property
    def audit(self) -> AuditLog:
        return self._audit

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        # The child dies with the thread that started it (PR_SET_PDEATHSIG): only the main
        # thread lives as long as the test session.
        assert threading.current_thread() is threading.main_thread(), f"start {name} from the main thread"
        log = (self.root / f"{name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
        self._procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start(self, timeout: float = 60.0) -> ControlPlane:
        root = self.root
        subprocess.run(["openssl", "genrsa", "-out", str(root / "sa.key"), "2048"], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(root / "sa.key"), "-pubout", "-out",
                        str(root / "sa.pub")], check=True, capture_output=True)
        (root / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n'
                                         f'{GC_TOKEN},gc,gc,"system:masters"\n')
        (root / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        self._audit = AuditLog(root / "audit.log")

        client, peer, secure = free_port(), free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            str(self.assets / "etcd"), "--data-dir", str(root / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a test cluster: losing it on a power cut is fine
            # etcd tells the API server every 10 min by default how far its revision has
            # moved; the watch cache of a resource nothing changes advances only then, and so
            # do the bookmarks it sends. Tests ask for every 2 s, so that bookmarks show.
            *(["--experimental-watch-progress-notify-interval", self.progress_notify]
              if self.progress_notify else []),
        ])
        self.url = f"https://127.0.0.1:{secure}"
        self._spawn("kube-apiserver", [
            str(self.assets / "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--secure-port", str(secure),
            "--cert-dir", str(root / "certs"),
            "--service-cluster-ip-range", "10.0.0.0/24", "--endpoint-reconciler-type", "none",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(root / "sa.pub"),
            "--service-account-signing-key-file", str(root / "sa.key"),
            "--token-auth-file", str(root / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--enable-admission-plugins", "OwnerReferencesPermissionEnforcement",
            "--audit-policy-file", str(root / "audit-policy.yaml"),
            "--audit-log-path", str(root / "audit.log"),
            "--min-request-timeout", str(self.min_request_timeout),
            "--watch-cache-sizes", "configmaps#0",
            "--profiling=false",
        ])
        try:
            wait_for(self._ready, timeout=timeout, what="kube-apiserver /readyz", interval=0.1)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.log_tail('kube-apiserver')}\n{self.log_tail('etcd')}") from None
        self.install()
        return self

    def _ready(self) -> bool:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
        if not self.ca.exists():
            return False
        try:
            self.api().request("GET", "/readyz", raw=True)
        except (ApiError, OSError, ValueError):
            return False
        return True

    def api(self, token: str = ADMIN_TOKEN) -> Api:
        return Api(self.url, self.ca, token)

    def kubectl(self, *args: str, input: str | None = None, token: str = ADMIN_TOKEN,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        config = self.kubeconfig(self.root / f"kubectl-{token[:8]}.kubeconfig", token=token)
        return subprocess.run(["kubectl", "--kubeconfig", str(config), *args], input=input,
                              capture_output=True, text=True, check=check, timeout=60)

    def install(self) -> None:
        """The shipped install, as the README applies it, then wait for the CRDs."""
        from sympozium_schedule.manifests import generate

        self.kubectl("apply", "-f", "-", input=generate.render_all(standalone=True))
        api = self.api()
        for crd in generate.all_objects(standalone=True):
            if crd["kind"] != "CustomResourceDefinition":
                continue
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
            wait_for(lambda p=path: any(  # type: ignore[misc]
                c["type"] == "Established" and c["status"] == "True"
                for c in (api.request("GET", p).get("status") or {}).get("conditions") or []),
                timeout=30, what=f"{crd['metadata']['name']} to be established")

    def service_account_token(self) -> str:
        """A token of the shipped ServiceAccount (TokenRequest, as ``kubectl create token``)."""
        if self._sa_token is None:
            answer = self.api().request(
                "POST", f"/api/v1/namespaces/{INSTALL_NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                 "spec": {"expirationSeconds": 86400}})
            self._sa_token = str(answer["status"]["token"])
        return self._sa_token

    def kubeconfig(self, path: Path, *, token: str | None = None, namespace: str | None = None) -> Path:
        """A kubeconfig that trusts the server's certificate; the ServiceAccount's by default."""
        context: Obj = {"cluster": "test", "user": "user"}
        if namespace:
            context["namespace"] = namespace
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                      "certificate-authority": str(self.ca)}}],
            "users": [{"name": "user", "user": {"token": token or self.service_account_token()}}],
            "contexts": [{"name": "test", "context": context}],
        }))
        return path

    def garbage_collector(self, timeout: float = 60.0) -> None:
        """kube-controller-manager with only the garbage collector (started once, on demand,
        after the CRDs exist, so its first discovery finds them)."""
        running = self._procs.get("kube-controller-manager")
        if running is not None and running.poll() is None:
            return
        config = self.kubeconfig(self.root / "gc.kubeconfig", token=GC_TOKEN)
        self._spawn("kube-controller-manager", [
            str(self.assets / "kube-controller-manager"), "--kubeconfig", str(config),
            "--controllers", "garbagecollector", "--leader-elect=false", "--secure-port", "0",
            "--use-service-account-credentials=false", "--kube-api-qps", "100", "--kube-api-burst", "200",
        ])
        log = self.root / "kube-controller-manager.log"
        wait_for(lambda: "Proceeding to collect garbage" in log.read_text(errors="replace"),
                 timeout=timeout, what="the garbage collector to sync", interval=0.1)

    def etcd(self, path: str, body: Obj) -> Obj:
        req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: Obj = json.loads(resp.read())
        return answer

    def compact(self) -> int:
        """Compact etcd past every version handed out so far (a watch from version V starts
        at V+1, so one more revision is written first): watching from any older version is
        410 Gone on resources served without the watch cache (ConfigMaps here)."""
        put = self.etcd("/v3/kv/put", {"key": "L2NvbXBhY3Rpb24tbWFyaw==", "value": "eA=="})
        revision = int(put["header"]["revision"])
        self.etcd("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def namespace(self, prefix: str) -> str:
        """A fresh namespace."""
        name = f"{prefix[:50].rstrip('-')}-{next(self._names)}"
        self.api().namespace(name)
        return name

    def stop(self) -> None:
        # SIGKILL: a throwaway cluster needs no graceful shutdown (the API server's takes seconds).
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        for proc in self._procs.values():
            proc.wait()
        for log in self._logs:
            log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def control_plane(assets: Path | None = None) -> Iterator[ControlPlane]:
    plane = ControlPlane(assets or find_assets())
    try:
        yield plane.start()
    finally:
        plane.stop()


def by_name(objs: Iterable[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs}


def elapsed(since: float) -> float:
    return time.monotonic() - since
