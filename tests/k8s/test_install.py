"""What we ship, applied to the real kube-apiserver as a person would: every sample, example and
demo object passes the server's strict field validation against the CRDs we ship (the session's
cluster was itself installed with ``kubectl apply -f -`` of ``manifests --standalone``), and
``kubectl get sympozium`` lists the whole category. Sympozium's own upstream samples, which the
server rejects strictly, are still accepted by ``sympozium-schedule apply`` with warnings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sympozium_schedule import manifests
from tests.k8s.conftest import PROGRAM, Cluster, Space
from tests.kube.controlplane import REPO

SHIPPED = sorted([*manifests.path("samples").glob("*.yaml"), manifests.path("demo.yaml"),
                  *(REPO / "examples").glob("*.yaml")])
UPSTREAM_SAMPLES = REPO.parent / "shared" / "reference" / "sympozium-v1alpha1" / "samples"


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in SHIPPED])
def test_everything_shipped_passes_strict_validation(cluster: Cluster, path: Path) -> None:
    """Issue 8, defect 4: the shipped AgentRun and SympoziumInstance samples had fields
    Sympozium's CRDs do not (spec.agentID, spec.model.maxTokens, ...): strict decoding
    refused them. ``--validate=strict`` makes an unknown field an error, not a silent prune."""
    assert len(SHIPPED) >= 7
    done = cluster.plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(path),
                                 check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_kubectl_get_sympozium_lists_schedules_runs_and_instances(cluster: Cluster, space: Space) -> None:
    """Issue 8, defect 6: Sympozium's CRDs have no category; the standalone install adds
    ``sympozium`` to its copies, so the category lists all three kinds."""
    space.instance("alice")
    space.schedule("hb", "@every 1h")
    space.agent_run("manual-run")
    done = cluster.plane.kubectl("get", "sympozium", "-n", space.name, "-o", "name")
    assert sorted(done.stdout.split()) == [
        "agentrun.sympozium.ai/manual-run", "sympoziuminstance.sympozium.ai/alice",
        "sympoziumschedule.sympozium.ai/hb"]


def test_sympoziums_upstream_samples_still_apply_with_warnings(tmp_path: Path) -> None:
    """The upstream files stay untouched in ../shared; the embedded ``apply`` checks Sympozium's
    kinds against their CRDs as warnings only, so they still go in."""
    assert UPSTREAM_SAMPLES.is_dir(), f"{UPSTREAM_SAMPLES} is missing"
    done = subprocess.run([PROGRAM, "apply", "-f", str(UPSTREAM_SAMPLES), "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "warning" in output.lower()
    assert "agentID" in output, output
