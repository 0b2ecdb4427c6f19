"""The install: the kustomize base, render_all(), least-privilege RBAC, the Deployment, and the
Dockerfile it runs."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sympozium_schedule import manifests
from sympozium_schedule.adapters.kubernetes.store import RESOURCES, Lease
from sympozium_schedule.core.shards import MAX_SHARDS
from sympozium_schedule.manifests import generate
from sympozium_schedule.runtime.kubernetes_mode import KubernetesSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_DIR = manifests.path("install")
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


OBJECTS = generate.install_objects()
(DEPLOYMENT,) = _by_kind(OBJECTS, "Deployment")
POD = DEPLOYMENT["spec"]["template"]
(CONTAINER,) = POD["spec"]["containers"]


# --- generated files ---------------------------------------------------------------------------


def test_the_committed_kustomize_base_is_the_generated_one() -> None:
    expected = generate.install_files()
    committed = {p.name for p in INSTALL_DIR.iterdir() if p.is_file()}
    assert committed == set(expected), "run python -m sympozium_schedule.manifests.generate"
    for name, text in expected.items():
        assert (INSTALL_DIR / name).read_text() == text, (
            f"install/{name} is stale: run python -m sympozium_schedule.manifests.generate")


def test_the_base_carries_the_same_crd_as_crds() -> None:
    base = INSTALL_DIR / generate.CRD_FILE
    assert base.read_text() == manifests.path("crds", generate.CRD_FILE).read_text()


def test_the_kustomization_lists_every_file_of_the_base() -> None:
    kustomization = yaml.safe_load((INSTALL_DIR / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = {p.name for p in INSTALL_DIR.iterdir()} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    # kustomize loads nothing outside the base's directory by default.
    assert all("/" not in r for r in kustomization["resources"])


def test_write_install_writes_the_generated_files_and_drops_stale_ones(tmp_path: Path) -> None:
    (tmp_path / "configmap.yaml").write_text("kind: ConfigMap\n")
    written = generate.write_install(tmp_path)
    assert {p.name: p.read_text() for p in written} == generate.install_files()
    assert {p.name for p in tmp_path.iterdir()} == set(generate.install_files())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_the_install() -> None:
    """What `kubectl apply -k` would apply: the CRD and every install object, unchanged."""
    out = subprocess.run(["kubectl", "kustomize", str(INSTALL_DIR)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    expected = [generate.crd(), *OBJECTS]
    assert sorted(built, key=_key) == sorted(expected, key=_key)


# --- render_all -------------------------------------------------------------------------------


def _rendered(**kwargs: Any) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(generate.render_all(**kwargs)) if d is not None]


@pytest.mark.parametrize("standalone", [False, True], ids=["with-sympozium", "standalone"])
def test_every_rendered_manifest_is_well_formed(standalone: bool) -> None:
    docs = _rendered(standalone=standalone)
    assert docs == generate.all_objects(standalone=standalone)
    for doc in docs:
        assert isinstance(doc.get("apiVersion"), str)
        assert doc["apiVersion"]
        assert isinstance(doc.get("kind"), str)
        assert doc["kind"]
        assert isinstance(doc["metadata"].get("name"), str)
        assert doc["metadata"]["name"]
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], _key(doc)
        else:
            assert doc["metadata"]["namespace"] == generate.NAMESPACE, _key(doc)
    keys = [_key(d) for d in docs]
    assert len(keys) == len(set(keys))


def test_crds_come_first_and_the_namespace_before_what_lives_in_it() -> None:
    kinds = [d["kind"] for d in _rendered(standalone=True)]
    assert kinds[:4] == ["CustomResourceDefinition"] * 3 + ["Namespace"]


def test_standalone_adds_sympoziums_crds_unchanged_but_for_the_category() -> None:
    crds = {d["metadata"]["name"]: d for d in _rendered(standalone=True)
            if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"sympoziumschedules.sympozium.ai", "agentruns.sympozium.ai",
                         "sympoziuminstances.sympozium.ai"}
    assert crds["sympoziumschedules.sympozium.ai"] == generate.crd()
    for filename in generate.SYMPOZIUM_CRD_FILES:
        crd = manifests.load_crd(filename)
        assert "categories" not in crd["spec"]["names"], "Sympozium's own CRD has none"
        crd["spec"]["names"]["categories"] = ["sympozium"]
        assert crds[crd["metadata"]["name"]] == crd


def test_without_standalone_only_our_crd() -> None:
    crds = [d for d in _rendered() if d["kind"] == "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == ["sympoziumschedules.sympozium.ai"]


def test_the_image_is_configurable() -> None:
    (deployment,) = _by_kind(_rendered(image="registry.example/sched:dev"), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/sched:dev"


def test_the_default_image_is_tagged_with_the_version() -> None:
    assert CONTAINER["image"] == f"ghcr.io/sympozium-ai/sympozium-schedule:{generate.project_version()}"
    assert not CONTAINER["image"].endswith(":latest")


def test_the_namespace_is_configurable() -> None:
    docs = _rendered(namespace="scheduling")
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == "scheduling"
    (ns,) = _by_kind(docs, "Namespace")
    assert ns["metadata"]["name"] == "scheduling"
    for binding in _by_kind(docs, "ClusterRoleBinding") + _by_kind(docs, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == "scheduling"


# --- RBAC --------------------------------------------------------------------------------------


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(group, resource, verb, tuple(rule.get("resourceNames", ())))
            for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


@pytest.mark.parametrize("rules", [
    pytest.param(generate.rbac_rules(), id="cluster-role"),
    pytest.param(generate.leader_election_rules(), id="leader-election-role"),
])
def test_rbac_rules_are_well_formed(rules: list[dict[str, Any]]) -> None:
    assert rules
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}
        for key in ("apiGroups", "resources", "verbs"):
            assert isinstance(rule[key], list), key
            assert rule[key], key
            assert all(isinstance(v, str) for v in rule[key])
            assert "*" not in rule[key], "no wildcards"
        assert set(rule["verbs"]) <= VERBS
        assert len(set(rule["verbs"])) == len(rule["verbs"])
        for resource in rule["resources"]:
            plural, _, sub = resource.partition("/")
            assert plural == plural.lower()
            assert plural.endswith("s")
            assert sub in ("", "status", "finalizers")
        if "resourceNames" in rule:
            # A create, list or watch names no object: resourceNames would never match it.
            assert not set(rule["verbs"]) & {"create", "list", "watch", "deletecollection"}
    grants = [g for rule in rules for g in _grants([rule])]
    assert len(grants) == len(set(grants)), "a grant is repeated"


def test_the_cluster_role_grants_exactly_what_the_code_uses() -> None:
    expected = {
        ("sympozium.ai", "sympoziumschedules", v) for v in
        ("get", "list", "watch", "create", "update", "delete")
    } | {("sympozium.ai", "sympoziumschedules/status", "patch"),
         # blockOwnerDeletion on the runs' owner references (OwnerReferencesPermissionEnforcement)
         ("sympozium.ai", "sympoziumschedules/finalizers", "update")} | {
        ("sympozium.ai", "agentruns", v) for v in ("get", "list", "watch", "create", "delete")
    } | {
        ("sympozium.ai", "sympoziuminstances", v) for v in ("get", "list", "watch")
    } | {("", "configmaps", "list"), ("", "configmaps", "watch"), ("", "events", "create"),
         ("", "events", "list")}  # the console's Events panel
    assert {(g, r, v) for g, r, v, names in _grants(generate.rbac_rules())} == expected
    assert all(not names for *_, names in _grants(generate.rbac_rules()))


def test_the_lease_role_grants_create_list_and_get_update_of_our_leases_only() -> None:
    """The one leader's Lease, and the shard and member Leases of up to MAX_SHARDS shards
    (named one by one: RBAC has no name patterns); list, for a sharded replica's round."""
    lease = KubernetesSettings().lease_name
    assert lease == generate.LEASE_NAME
    ours = (lease, *[f"{lease}-shard-{i}" for i in range(MAX_SHARDS)],
            *[f"{lease}-member-{i}" for i in range(MAX_SHARDS)])
    assert _grants(generate.leader_election_rules()) == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "list", ()),
        ("coordination.k8s.io", "leases", "get", ours),
        ("coordination.k8s.io", "leases", "update", ours),
    }
    assert not generate.permits(verb="update", group="coordination.k8s.io", resource="leases",
                                namespace=generate.NAMESPACE, name=f"{lease}-shard-{MAX_SHARDS}")


def test_every_kind_the_store_handles_is_granted_and_nothing_else() -> None:
    handled = {(r._api_info.resource.group, r._api_info.plural) for r in RESOURCES.values()}
    granted = {(g, r.partition("/")[0]) for g, r, _, _ in _grants(generate.rbac_rules())}
    assert granted == handled
    lease = (Lease._api_info.resource.group, Lease._api_info.plural)
    assert {(g, r) for g, r, _, _ in _grants(generate.leader_election_rules())} == {lease}


def test_the_console_may_ask_the_cluster_about_tokens_and_access() -> None:
    bindings = {b["roleRef"]["name"]: b for b in _by_kind(OBJECTS, "ClusterRoleBinding")}
    delegator = bindings[generate.AUTH_DELEGATOR]
    assert delegator["roleRef"]["kind"] == "ClusterRole"
    assert delegator["subjects"] == [{"kind": "ServiceAccount", "name": generate.NAME,
                                      "namespace": generate.NAMESPACE}]


def test_the_roles_are_bound_to_the_service_account() -> None:
    (account,) = _by_kind(OBJECTS, "ServiceAccount")
    (cluster_role,) = _by_kind(OBJECTS, "ClusterRole")
    (role,) = _by_kind(OBJECTS, "Role")
    assert cluster_role["rules"] == generate.rbac_rules()
    assert role["rules"] == generate.leader_election_rules()
    assert role["metadata"]["namespace"] == generate.NAMESPACE
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"],
               "namespace": account["metadata"]["namespace"]}
    for binding_kind, role_obj in (("ClusterRoleBinding", cluster_role), ("RoleBinding", role)):
        (binding,) = [b for b in _by_kind(OBJECTS, binding_kind)
                      if b["roleRef"]["name"] != generate.AUTH_DELEGATOR]
        assert binding["subjects"] == [subject]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                      "kind": role_obj["kind"], "name": role_obj["metadata"]["name"]}
        if binding_kind == "RoleBinding":
            assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert POD["spec"]["serviceAccountName"] == account["metadata"]["name"]


NS = generate.NAMESPACE


@pytest.mark.parametrize(("request_", "allowed"), [
    pytest.param(dict(verb="watch", group="sympozium.ai", resource="sympoziumschedules"), True,
                 id="watch-schedules-cluster-wide"),
    pytest.param(dict(verb="patch", group="sympozium.ai", resource="sympoziumschedules/status",
                      namespace="team-a", name="hb"), True, id="patch-schedule-status"),
    pytest.param(dict(verb="update", group="sympozium.ai", resource="sympoziumschedules",
                      namespace="team-a", name="hb"), True, id="router-updates-a-schedule"),
    pytest.param(dict(verb="patch", group="sympozium.ai", resource="sympoziumschedules",
                      namespace="team-a", name="hb"), False, id="no-patch-of-the-spec"),
    pytest.param(dict(verb="update", group="sympozium.ai", resource="sympoziumschedules/status",
                      namespace="team-a", name="hb"), False, id="no-put-of-the-status"),
    pytest.param(dict(verb="create", group="sympozium.ai", resource="agentruns",
                      namespace="team-a"), True, id="create-a-run"),
    pytest.param(dict(verb="update", group="sympozium.ai", resource="agentruns",
                      namespace="team-a", name="r"), False, id="no-update-of-runs"),
    pytest.param(dict(verb="patch", group="sympozium.ai", resource="agentruns/status",
                      namespace="team-a", name="r"), False, id="no-run-status"),
    pytest.param(dict(verb="create", group="sympozium.ai", resource="sympoziuminstances",
                      namespace="team-a"), False, id="instances-read-only"),
    pytest.param(dict(verb="get", group="", resource="configmaps", namespace="team-a",
                      name="alice-memory"), False, id="configmaps-only-through-the-informer"),
    pytest.param(dict(verb="list", group="", resource="secrets"), False, id="no-secrets"),
    pytest.param(dict(verb="create", group="", resource="events", namespace="team-a"), True,
                 id="create-events"),
    pytest.param(dict(verb="patch", group="", resource="events", namespace="team-a", name="e"),
                 False, id="events-never-patched"),
    pytest.param(dict(verb="create", group="events.k8s.io", resource="events",
                      namespace="team-a"), False, id="core-events-only"),
    pytest.param(dict(verb="create", group="coordination.k8s.io", resource="leases",
                      namespace=NS), True, id="create-the-lease"),
    pytest.param(dict(verb="update", group="coordination.k8s.io", resource="leases",
                      namespace=NS, name=generate.LEASE_NAME), True, id="renew-the-lease"),
    pytest.param(dict(verb="get", group="coordination.k8s.io", resource="leases",
                      namespace=NS, name="kube-scheduler"), False, id="not-another-lease"),
    pytest.param(dict(verb="get", group="coordination.k8s.io", resource="leases",
                      namespace="kube-system", name=generate.LEASE_NAME), False,
                 id="not-in-another-namespace"),
    pytest.param(dict(verb="delete", group="coordination.k8s.io", resource="leases",
                      namespace=NS, name=generate.LEASE_NAME), False, id="lease-never-deleted"),
])
def test_permits(request_: dict[str, Any], allowed: bool) -> None:
    assert generate.permits(**request_) is allowed


# --- the Deployment ---------------------------------------------------------------------------


def test_the_deployment_runs_the_controller_with_leader_election() -> None:
    assert DEPLOYMENT["spec"]["replicas"] == 2
    assert CONTAINER["args"] == ["run", "--kubernetes"]
    selector = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert selector.items() <= POD["metadata"]["labels"].items()


def test_the_pod_identity_comes_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {e["name"]: e for e in CONTAINER["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # ...and they are the variables the runtime reads.
    monkeypatch.setenv("POD_NAMESPACE", "ns-from-env")
    monkeypatch.setenv("POD_NAME", "pod-from-env")
    settings = KubernetesSettings()
    assert settings.lease_namespace == "ns-from-env"
    name, _, suffix = settings.identity.partition("_")
    assert (name, len(suffix)) == ("pod-from-env", 36), settings.identity


def test_each_process_has_its_own_leader_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes on one host (no POD_NAME) must not share an identity, or both lead."""
    monkeypatch.delenv("POD_NAME", raising=False)
    first, second = KubernetesSettings().identity, KubernetesSettings().identity
    assert first != second
    assert first.startswith(socket.gethostname() + "_")


def test_the_lease_namespace_defaults_to_the_pods_then_the_installs(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never ``default``, where the shipped Role grants nothing (issue 8, defect 3)."""
    from sympozium_schedule.runtime import kubernetes_mode

    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(kubernetes_mode, "IN_CLUSTER_NAMESPACE_FILE", tmp_path / "absent")
    assert KubernetesSettings().lease_namespace == generate.NAMESPACE == kubernetes_mode.INSTALL_NAMESPACE
    mounted = tmp_path / "namespace"
    mounted.write_text("team-a\n")
    monkeypatch.setattr(kubernetes_mode, "IN_CLUSTER_NAMESPACE_FILE", mounted)
    assert KubernetesSettings().lease_namespace == "team-a"


def test_the_event_bus_url_is_optional() -> None:
    env = {e["name"]: e for e in CONTAINER["env"]}
    ref = env[generate.EVENT_BUS_ENV]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": generate.NAME, "key": generate.EVENT_BUS_ENV, "optional": True}
    # Nothing in the install makes that ConfigMap: whoever enables the router owns it.
    assert not _by_kind(OBJECTS, "ConfigMap")


def test_an_event_bus_url_can_be_given() -> None:
    (deployment,) = _by_kind(_rendered(event_bus_url="nats://nats.sympozium-system.svc:4222"),
                             "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[generate.EVENT_BUS_ENV] == {"name": generate.EVENT_BUS_ENV,
                                           "value": "nats://nats.sympozium-system.svc:4222"}


def test_the_http_port_is_the_runtimes() -> None:
    assert CONTAINER["ports"] == [
        {"name": "http", "containerPort": KubernetesSettings().http_port, "protocol": "TCP"},
        {"name": "console", "containerPort": generate.CONSOLE_PORT, "protocol": "TCP"}]


def test_the_install_turns_the_console_on_at_its_port() -> None:
    from sympozium_schedule.cli.scheduler import _console_settings

    env = {e["name"]: e for e in CONTAINER["env"]}
    address = env[generate.CONSOLE_ADDRESS_ENV]["value"]
    settings = _console_settings(None, address, False, kubernetes=True)
    assert settings is not None
    assert (settings.host, settings.port) == ("0.0.0.0", generate.CONSOLE_PORT)
    assert _console_settings(None, None, False, kubernetes=True) is None  # off unless asked
    asked = _console_settings(True, None, False, kubernetes=True)
    assert asked is not None
    assert (asked.host, asked.port) == ("0.0.0.0", generate.CONSOLE_PORT)


@pytest.mark.parametrize(("probe", "path"), [
    pytest.param("livenessProbe", "/healthz", id="liveness"),
    pytest.param("readinessProbe", "/readyz", id="readiness"),
])
def test_probes(probe: str, path: str) -> None:
    from sympozium_schedule.runtime.http import make_app
    from sympozium_schedule.runtime.metrics import Metrics

    spec = CONTAINER[probe]
    assert spec["httpGet"] == {"path": path, "port": "http"}
    assert spec["periodSeconds"] > 0
    assert spec["timeoutSeconds"] > 0
    routes = {r.resource.canonical for r in make_app(Metrics(), ready=lambda: True).router.routes()
              if r.resource is not None}
    assert path in routes


def test_resources_have_requests_and_limits() -> None:
    resources = CONTAINER["resources"]
    for part in ("requests", "limits"):
        assert set(resources[part]) == {"cpu", "memory"}


def test_the_security_context_is_restricted() -> None:
    pod, container = POD["spec"]["securityContext"], CONTAINER["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert container["runAsNonRoot"] is True
    assert pod["runAsUser"] == generate.RUN_AS_USER != 0
    assert pod["seccompProfile"] == container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in container
    assert "hostNetwork" not in POD["spec"]


def test_the_only_writable_path_is_an_empty_dir() -> None:
    mounts = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["spec"]["volumes"]}
    assert mounts == {"tmp": "/tmp"}
    assert "emptyDir" in volumes["tmp"]


def test_the_metrics_service_selects_the_pods() -> None:
    (svc,) = _by_kind(OBJECTS, "Service")
    assert svc["spec"]["selector"].items() <= POD["metadata"]["labels"].items()
    assert svc["spec"]["ports"] == [{"name": "http", "port": generate.HTTP_PORT,
                                     "targetPort": "http", "protocol": "TCP"}]


def test_the_disruption_budget_keeps_a_replica() -> None:
    (pdb,) = _by_kind(OBJECTS, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == DEPLOYMENT["spec"]["selector"]


# --- the Dockerfile ---------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_is_python_slim_and_installs_the_project() -> None:
    steps = _instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip wheel" in runs
    assert "pip install" in runs


def test_the_image_runs_as_the_deployments_numeric_user() -> None:
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users[-1] == f"{generate.RUN_AS_USER}:{generate.RUN_AS_USER}"
    assert POD["spec"]["securityContext"]["runAsGroup"] == generate.RUN_AS_USER


def test_the_image_entrypoint_and_command() -> None:
    steps = dict(_instructions())
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(steps["ENTRYPOINT"]) == ["sympozium-schedule"]
    assert "sympozium-schedule" in scripts
    assert json.loads(steps["CMD"]) == CONTAINER["args"]
    assert steps["EXPOSE"] == str(generate.HTTP_PORT)


def test_the_build_context_is_what_pip_needs() -> None:
    lines = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
