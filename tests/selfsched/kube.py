"""A real kube-apiserver (and its etcd) for the bus callout's TokenReview, from
``$KUBEBUILDER_ASSETS`` or ``../shared/kube/assets.sh``: just enough control plane to
mint pod-bound ServiceAccount tokens and review them. (The Kubernetes suite has its
own, fuller harness; this one stays small so the self-scheduling suite needs no more.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import support

ADMIN_TOKEN = "selfsched-admin-token"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "kube" / "assets.sh"


def assets() -> Path | None:
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env and (Path(env) / "kube-apiserver").exists():
        return Path(env)
    if SHARED.exists():
        done = subprocess.run([str(SHARED)], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    return None


@dataclass
class ApiServer:
    url: str
    kubeconfig: Path
    root: Path

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout


@contextlib.contextmanager
def api_server(root: Path) -> Iterator[ApiServer]:
    found = assets()
    if found is None or shutil.which("kubectl") is None or shutil.which("openssl") is None:
        raise RuntimeError("no kube-apiserver assets (KUBEBUILDER_ASSETS or ../shared/kube), "
                           "kubectl or openssl on this machine")
    root.mkdir(parents=True, exist_ok=True)
    key = root / "sa.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(root / "sa.pub")],
                   check=True, capture_output=True)
    (root / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
    etcd_port, peer_port, api_port = support.free_port(), support.free_port(), support.free_port()
    processes: list[subprocess.Popen[bytes]] = []
    logs = (root / "etcd.log").open("wb"), (root / "apiserver.log").open("wb")
    try:
        processes.append(subprocess.Popen([
            str(found / "etcd"), "--data-dir", str(root / "etcd"), "--name", "selfsched",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"selfsched=http://127.0.0.1:{peer_port}"],
            stdout=logs[0], stderr=subprocess.STDOUT))
        processes.append(subprocess.Popen([
            str(found / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={api_port}", f"--cert-dir={root / 'certs'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            "--service-account-issuer=https://selfsched.test",
            f"--service-account-key-file={root / 'sa.pub'}",
            f"--service-account-signing-key-file={key}",
            f"--token-auth-file={root / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount"],
            stdout=logs[1], stderr=subprocess.STDOUT))
        url = f"https://127.0.0.1:{api_port}"
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def ready() -> bool:
            request = urllib.request.Request(f"{url}/readyz",
                                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    request, context=insecure, timeout=2) as response:
                return bool(response.status == 200)
            return False

        support.wait_for(ready, timeout=60, what="kube-apiserver /readyz", interval=0.2)
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{url}", insecure-skip-tls-verify: true}}}}]
users: [{{name: admin, user: {{token: {ADMIN_TOKEN}}}}}]
contexts: [{{name: c, context: {{cluster: c, user: admin}}}}]
current-context: c
""")
        yield ApiServer(url, kubeconfig, root)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for handle in logs:
            handle.close()


