"""The API and richer schedules: every spec field accepted by name and checked as `apply`
checks it, suspend with a note (who and why) cleared by resume, and backfill asked for as
the CLI asks for it. Every reply is checked against the OpenAPI document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sympozium_schedule.core.model import ANNOTATION_BACKFILL, Kind, format_time
from sympozium_schedule.ports.store import Ref
from tests.console.conftest import Api, schedule

S = "/api/v1/schedules"


async def stored(api: Api, name: str) -> dict[str, Any]:
    return await api.store.get(Ref(Kind.SCHEDULE, "default", name))


async def test_create_with_the_richer_fields(api: Api) -> None:
    body = {"name": "rich", "agentRef": "alice", "schedule": "0 9 * * 1-5", "task": "t",
            "timeZone": "Europe/Warsaw", "schedules": [{"schedule": "0 12 * * 6"}],
            "exclude": [{"start": "2026-12-24", "end": "2026-12-26"}], "jitter": "2m",
            "startTime": "2026-12-01T00:00:00Z", "maxRuns": 10, "pauseOnFailure": True,
            "concurrencyPolicy": "BufferAll"}
    reply = await api.post(S, body)
    assert reply.status == 201, reply.text
    spec = (await stored(api, "rich"))["spec"]
    for key, value in body.items():
        if key not in ("name", "agentRef"):
            assert spec[key] == value, key


@pytest.mark.parametrize(("extra", "says"), [
    pytest.param({"jitter": "1h"}, "spec.jitter: '1h': must be shorter than", id="jitter-too-long"),
    pytest.param({"maxRuns": 0}, "spec.maxRuns", id="max-runs-zero"),
    pytest.param({"exclude": [{"start": "2026-12-24"}]}, "spec.exclude[0]", id="half-a-range"),
    pytest.param({"endTime": "2026-01-01T00:00:00Z", "startTime": "2026-02-01T00:00:00Z"},
                 "spec.endTime", id="window-reversed"),
])
async def test_bad_richer_fields_are_refused_naming_them(api: Api, extra: dict[str, Any],
                                                         says: str) -> None:
    reply = await api.post(S, {"name": "bad", "agentRef": "alice", "schedule": "@hourly",
                               "task": "t"} | extra)
    assert reply.status == 422, reply.text
    assert says in reply.body["error"]
    assert (await api.get(f"{S}/bad")).status == 404


async def test_suspend_with_a_note_and_resume_clears_it(api: Api) -> None:
    await api.seed(schedule("s"))
    reply = await api.post(f"{S}/s/suspend", {"note": "database migration"})
    assert reply.status == 200, reply.text
    spec = (await stored(api, "s"))["spec"]
    assert (spec["suspend"], spec["suspendReason"]) == (True, "database migration")
    assert "console" in spec["suspendedBy"]
    assert (await api.post(f"{S}/s/resume")).status == 200
    spec = (await stored(api, "s"))["spec"]
    assert spec["suspend"] is False
    assert "suspendReason" not in spec
    assert "suspendedBy" not in spec


@pytest.mark.parametrize("body", [
    pytest.param({"note": ""}, id="empty-note"),
    pytest.param({"note": 3}, id="note-not-text"),
    pytest.param({"why": "x"}, id="unknown-field"),
    pytest.param(["note"], id="not-an-object"),
])
async def test_a_bad_suspend_body_changes_nothing(api: Api, body: Any) -> None:
    await api.seed(schedule("s"))
    before = await stored(api, "s")
    reply = await api.post(f"{S}/s/suspend", body)
    assert reply.status == 400, reply.text
    assert await stored(api, "s") == before


async def test_backfill_is_asked_for_with_the_annotation(api: Api) -> None:
    await api.seed(schedule("b"))
    start = datetime.now(UTC) - timedelta(days=2)
    reply = await api.post(f"{S}/b/backfill", {"from": format_time(start),
                                                "to": format_time(start + timedelta(days=1))})
    assert reply.status == 202, reply.text
    assert reply.body["overlap"] == "BufferAll"
    asked = json.loads((await stored(api, "b"))["metadata"]["annotations"][ANNOTATION_BACKFILL])
    assert (asked["id"], asked["overlap"]) == (reply.body["id"], "BufferAll")


@pytest.mark.parametrize(("body", "status"), [
    pytest.param({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, 400, id="not-a-time"),
    pytest.param({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 400,
                 id="reversed"),
    pytest.param({"from": "2999-01-01T00:00:00Z", "to": "2999-01-02T00:00:00Z"}, 400,
                 id="in-the-future"),
    pytest.param({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                  "overlap": "Wait"}, 400, id="bad-overlap"),
    pytest.param({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "pace": 1}, 400,
                 id="unknown-field"),
])
async def test_a_bad_backfill_changes_nothing(api: Api, body: dict[str, Any], status: int) -> None:
    await api.seed(schedule("b"))
    before = await stored(api, "b")
    reply = await api.post(f"{S}/b/backfill", body)
    assert reply.status == status, reply.text
    assert await stored(api, "b") == before


async def test_backfill_of_a_missing_schedule_is_404(api: Api) -> None:
    reply = await api.post(f"{S}/ghost/backfill", {"from": "2026-01-01T00:00:00Z",
                                                    "to": "2026-01-02T00:00:00Z"})
    assert reply.status == 404
