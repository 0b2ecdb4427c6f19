"""Packaged manifests: Sympozium's CRDs (unchanged, MIT, see LICENSE.sympozium),
this project's SympoziumSchedule CRD, samples and install manifests."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def path(*parts: str) -> Path:
    return Path(str(resources.files(__name__).joinpath(*parts)))


def load_crd(filename: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path("crds", filename).read_text())
    return loaded


def crd_schema(filename: str) -> dict[str, Any]:
    """The openAPIV3Schema of a CRD's first version."""
    schema: dict[str, Any] = load_crd(filename)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema
