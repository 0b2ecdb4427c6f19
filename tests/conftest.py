"""Fixtures shared across suites: the real Kubernetes control plane (tests/kube)."""

pytest_plugins = ["tests.kube.plugin"]
