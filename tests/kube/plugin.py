"""The real control plane as pytest fixtures: one per session (per xdist worker), started on
first use. Every test that uses it is marked ``kube``; ``./dev test`` deselects them, saying so,
only when no control plane can be found."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube.controlplane import ControlPlane, control_plane


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kube: runs against a real kube-apiserver (etcd + kube-apiserver from KUBEBUILDER_ASSETS)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"cluster_plane", "store_plane"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kube)


@pytest.fixture(scope="session")
def cluster_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with the shipped install applied, for the whole session."""
    with control_plane() as plane:
        yield plane


@pytest.fixture(scope="session")
def store_plane() -> Iterator[ControlPlane]:
    """A control plane of its own for the store contract suite, which expects a store that
    holds only what the test put there (a list across all namespaces must not see the
    controller tests' objects)."""
    with control_plane() as plane:
        yield plane
