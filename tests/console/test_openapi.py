"""The OpenAPI document is valid and describes exactly the routes the console serves."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate

from sympozium_schedule.runtime.api.openapi import document
from tests.console.conftest import Api


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


async def test_every_route_is_described_and_every_description_is_served(api: Api) -> None:
    app_routes = {(r.method, re.sub(r"\{(\w+)\}", r"{\1}", r.resource.canonical))
                  for r in api.console._runner.app.router.routes()  # type: ignore[union-attr]
                  if r.resource is not None and r.resource.canonical.startswith("/api/")
                  and r.method != "HEAD"}
    described = {(method.upper(), path) for path, ops in document()["paths"].items()
                 for method in ops}
    assert app_routes == described


async def test_the_served_document_is_the_module_document(api: Api) -> None:
    reply = await api.get("/api/v1/openapi.json", auth=False)
    assert reply.status == 200
    served: dict[str, Any] = reply.body
    assert served == document()
