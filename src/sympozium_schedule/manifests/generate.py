"""Writes the generated files: the SympoziumSchedule CRD and the install manifests,
from the project's own code.

One source of truth for each fact:

* what a spec field accepts (type, enum, default, minimum) comes from
  :class:`~sympozium_schedule.core.model.ScheduleSpec`, so the CRD cannot drift
  from what the controller parses;
* which keywords a field of Sympozium's own carries comes from Sympozium's CRD
  (``crds/upstream_sympozium.ai_sympoziumschedules.yaml``): for those fields our
  CRD is exactly as permissive as theirs, so everything that applies to a cluster
  running Sympozium's CRD applies to ours;
* the install (namespace, RBAC, Deployment, ...) is the Python data below; the
  YAML under ``install/`` (a kustomize base) is written from it.

``python -m sympozium_schedule.manifests.generate`` rewrites every generated
file; tests/manifests fails when a committed file differs from what this module
generates.

The parts live by concern: :mod:`.crd` (with :mod:`.crd_spec` and :mod:`.crd_status`),
:mod:`.rbac`, :mod:`.install`, :mod:`.common` (names and YAML), and :mod:`.authorizer`
(the install's RBAC as an authorizer, for tests). This module writes the files and
names the public parts in one place, for the CLI and the tests.
"""

from __future__ import annotations

from pathlib import Path

from sympozium_schedule import manifests
from sympozium_schedule.manifests.authorizer import permits
from sympozium_schedule.manifests.common import (
    AUTH_DELEGATOR,
    CONSOLE_ADDRESS_ENV,
    CONSOLE_PORT,
    CRD_FILE,
    EVENT_BUS_ENV,
    GENERATED_HEADER,
    HTTP_PORT,
    LEASE_NAME,
    NAME,
    NAMESPACE,
    RUN_AS_USER,
    SYMPOZIUM_CRD_FILES,
    UPSTREAM_CRD_FILE,
    default_image,
    project_version,
    to_yaml,
)
from sympozium_schedule.manifests.crd import CATEGORY, crd, crd_yaml, open_api_schema, sympozium_crds
from sympozium_schedule.manifests.crd_spec import (
    SPEC_DESCRIPTIONS,
    _structural,
    spec_schema,
    sympozium_fields,
    upstream_crd,
)
from sympozium_schedule.manifests.crd_status import status_schema
from sympozium_schedule.manifests.install import (
    all_objects,
    deployment,
    install_files,
    install_objects,
    rbac_objects,
    render_all,
)
from sympozium_schedule.manifests.rbac import leader_election_rules, rbac_rules

__all__ = [
    "AUTH_DELEGATOR", "CATEGORY", "CONSOLE_ADDRESS_ENV", "CONSOLE_PORT", "CRD_FILE",
    "EVENT_BUS_ENV", "GENERATED_HEADER", "HTTP_PORT", "LEASE_NAME", "NAME", "NAMESPACE",
    "RUN_AS_USER", "SPEC_DESCRIPTIONS", "SYMPOZIUM_CRD_FILES", "UPSTREAM_CRD_FILE", "_structural",
    "all_objects", "crd", "crd_yaml", "default_image", "deployment", "install_files",
    "install_objects", "leader_election_rules", "open_api_schema", "permits", "project_version",
    "rbac_objects", "rbac_rules", "render_all", "spec_schema", "status_schema", "sympozium_crds",
    "sympozium_fields", "to_yaml", "upstream_crd", "write_all", "write_crd", "write_install",
]


def write_crd(directory: Path | None = None) -> Path:
    """Rewrite ``crds/sympozium.ai_sympoziumschedules.yaml``."""
    target = (directory or manifests.path("crds")) / CRD_FILE
    target.write_text(crd_yaml())
    return target


def write_install(directory: Path | None = None) -> list[Path]:
    """Rewrite the kustomize base under ``install/``, removing files it no longer has."""
    base = directory or manifests.path("install")
    base.mkdir(parents=True, exist_ok=True)
    files = install_files()
    for stale in base.glob("*.yaml"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        (base / name).write_text(text)
        written.append(base / name)
    return written


def write_all() -> list[Path]:
    return [write_crd(), *write_install()]


if __name__ == "__main__":
    for written in write_all():
        print(written)
