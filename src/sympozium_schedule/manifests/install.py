"""The install: namespace, ServiceAccount and bindings, Service, PodDisruptionBudget and
Deployment, as Python data (the kustomize base under ``install/`` is written from it)."""

from __future__ import annotations

from typing import Any

from sympozium_schedule.manifests.common import (
    AUTH_DELEGATOR,
    CONSOLE_ADDRESS_ENV,
    CONSOLE_PORT,
    CRD_FILE,
    EVENT_BUS_ENV,
    HTTP_PORT,
    NAME,
    NAMESPACE,
    RUN_AS_USER,
    default_image,
    project_version,
    to_yaml,
)
from sympozium_schedule.manifests.crd import crd, sympozium_crds
from sympozium_schedule.manifests.rbac import leader_election_rules, rbac_rules

LABELS = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/component": "scheduler",
    "app.kubernetes.io/part-of": "sympozium",
}
SELECTOR = {k: LABELS[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")}
LEADER_ELECTION_ROLE = f"{NAME}-leader-election"


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(LABELS)
    return meta


def namespace_object(namespace: str = NAMESPACE) -> dict[str, Any]:
    # Shared with Sympozium's own components: no Pod Security labels forced on them.
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"app.kubernetes.io/part-of": "sympozium"}}}


def rbac_objects(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    subject = {"kind": "ServiceAccount", "name": NAME, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": _meta(NAME), "rules": rbac_rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(NAME),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [subject]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(f"{NAME}-auth-delegator"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": AUTH_DELEGATOR},
         "subjects": [subject]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": _meta(LEADER_ELECTION_ROLE, namespace), "rules": leader_election_rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(LEADER_ELECTION_ROLE, namespace),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": LEADER_ELECTION_ROLE},
         "subjects": [subject]},
    ]


def _env(event_bus_url: str | None) -> list[dict[str, Any]]:
    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    bus: dict[str, Any] = {"name": EVENT_BUS_ENV}
    if event_bus_url is None:
        # The router (agents' schedule requests from NATS) runs only with a bus URL. Unset by
        # default, so the install works without Sympozium's NATS; to enable it:
        #   kubectl -n sympozium-system create configmap sympozium-schedule \
        #     --from-literal=EVENT_BUS_URL=nats://nats.sympozium-system.svc:4222
        bus["valueFrom"] = {"configMapKeyRef": {"name": NAME, "key": EVENT_BUS_ENV,
                                                "optional": True}}
    else:
        bus["value"] = event_bus_url
    return [
        {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},  # the Lease's
        {"name": "POD_NAME", "valueFrom": field("metadata.name")},  # the leader identity
        bus,
        # The console (off by default in Kubernetes mode): sign in with a Kubernetes token.
        {"name": CONSOLE_ADDRESS_ENV, "value": f"0.0.0.0:{CONSOLE_PORT}"},
    ]


def deployment(*, image: str | None = None, namespace: str = NAMESPACE,
               event_bus_url: str | None = None) -> dict[str, Any]:
    def probe(path: str, *, delay: int, period: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "initialDelaySeconds": delay,
                "periodSeconds": period, "timeoutSeconds": 3, "failureThreshold": 3}

    container = {
        "name": "scheduler",
        "image": image or default_image(),
        "imagePullPolicy": "IfNotPresent",
        "args": ["run", "--kubernetes"],
        "env": _env(event_bus_url),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": "console", "containerPort": CONSOLE_PORT, "protocol": "TCP"}],
        # /healthz: the process serves; /readyz: caches synced and the API reachable (a
        # standby is ready too, so rolling updates proceed; /leaderz tells the leader).
        "livenessProbe": probe("/healthz", delay=10, period=20),
        "readinessProbe": probe("/readyz", delay=5, period=10),
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # A writable /tmp for libraries that want one; the root filesystem stays read-only.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME, namespace),
        "spec": {
            # Two replicas, one leading (a Lease): a standby takes over within the lease
            # duration (15 s) when the leader's node goes away.
            "replicas": 2,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": dict(SELECTOR)},
            "template": {
                "metadata": {
                    "labels": dict(LABELS),
                    "annotations": {"kubectl.kubernetes.io/default-container": "scheduler"},
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    # Spread the two replicas, or one node failure takes both.
                    "affinity": {"podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": dict(SELECTOR)},
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }],
                    }},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def service(namespace: str = NAMESPACE) -> dict[str, Any]:
    """``/metrics`` (and the probes) for a Prometheus scrape."""
    meta = _meta(f"{NAME}-metrics", namespace)
    meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT),
                           "prometheus.io/path": "/metrics"}
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"selector": dict(SELECTOR),
                 "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http",
                            "protocol": "TCP"}]},
    }


def pod_disruption_budget(namespace: str = NAMESPACE) -> dict[str, Any]:
    """A drain takes one replica at a time, so a standby is there to take the Lease."""
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(NAME, namespace),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(SELECTOR)}},
    }


def install_objects(*, image: str | None = None, namespace: str = NAMESPACE,
                    event_bus_url: str | None = None) -> list[dict[str, Any]]:
    """Everything but the CRDs, in the order to apply."""
    return [
        namespace_object(namespace),
        *rbac_objects(namespace),
        service(namespace),
        pod_disruption_budget(namespace),
        deployment(image=image, namespace=namespace, event_bus_url=event_bus_url),
    ]


def all_objects(*, image: str | None = None, namespace: str = NAMESPACE,
                event_bus_url: str | None = None, standalone: bool = False) -> list[dict[str, Any]]:
    """The whole install: CRDs first (with Sympozium's own when ``standalone``), then the rest."""
    crds = [crd()]
    if standalone:
        crds += sympozium_crds()
    return crds + install_objects(image=image, namespace=namespace, event_bus_url=event_bus_url)


def render_all(*, image: str | None = None, namespace: str = NAMESPACE,
               event_bus_url: str | None = None, standalone: bool = False) -> str:
    """The install as one multi-document YAML stream (``sympozium-schedule manifests``).

    ``standalone`` adds Sympozium's AgentRun and SympoziumInstance CRDs, for a cluster
    without Sympozium; where Sympozium is installed, its own CRDs are the ones to keep.
    """
    header = f"# sympozium-schedule {project_version()}: the install, for kubectl apply -f\n"
    return to_yaml(all_objects(image=image, namespace=namespace, event_bus_url=event_bus_url,
                               standalone=standalone), header=header)


# --- the kustomize base (install/) ----------------------------------------------------------

def install_files() -> dict[str, str]:
    """The kustomize base under ``install/``: file name to contents.

    The CRD is copied in, because kustomize refuses a file outside the base's own
    directory (``../crds/...``) unless the caller disables its load restrictor.
    """
    objects = install_objects()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    files = {
        CRD_FILE: [crd()],
        "namespace.yaml": by_kind["Namespace"],
        "rbac.yaml": [o for o in objects if o["kind"] in (
            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")],
        "service.yaml": by_kind["Service"],
        "poddisruptionbudget.yaml": by_kind["PodDisruptionBudget"],
        "deployment.yaml": by_kind["Deployment"],
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    out = {name: to_yaml(docs) for name, docs in files.items()}
    out["kustomization.yaml"] = to_yaml([kustomization], explicit_start=False)
    return out
