"""Malformed input. A bad request file gets a rejected result file and changes nothing;
a bad message on the subject is terminated and the router keeps going."""

from __future__ import annotations

import json
from typing import Any

import nats.js.errors
import pytest

from sympozium_schedule.adapters.nats.bus import UPSERT_TOPIC, result_subject
from sympozium_schedule.adapters.nats.subjects import LEGACY_SUBJECT, RESULT_STREAM
from sympozium_schedule.core.requests import Limits
from tests.selfsched.conftest import Agent, System, assert_answer

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOURLY: dict[str, Any] = {"schedule": "@hourly", "task": "check the cluster"}


def as_json(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(("content", "fragments"), [
    # Refused by the bridge itself.
    pytest.param(b"{not json", ("not valid JSON", "write a JSON object"), id="not-json"),
    pytest.param(b"", ("not valid JSON",), id="empty-file"),
    pytest.param(b'{"name": "x", "action": "create"', ("not valid JSON",), id="truncated"),
    pytest.param(b"\xff\xfe\x00garbage", ("not valid JSON",), id="binary"),
    # Refused by the router.
    pytest.param(as_json(["create", "health"]), ("must be a JSON object, not list",), id="array"),
    pytest.param(as_json("create health"), ("must be a JSON object, not str",), id="string"),
    pytest.param(b"null", ("must be a JSON object, not NoneType",), id="null"),
    pytest.param(as_json({"name": "health", "action": "pause"}), ("action",), id="unknown-action"),
    pytest.param(as_json({"name": "health", "action": "create", **HOURLY, "includeMemory": "yes"}),
                 ("includeMemory",), id="includeMemory-string"),
    pytest.param(as_json({"name": "health", "action": "create", "schedule": 60, "task": "x"}),
                 ("schedule",), id="schedule-number"),
    pytest.param(as_json({"name": 7, "action": "create", **HOURLY}), ("name",), id="name-number"),
    pytest.param(as_json({"name": "health", "action": "create", **HOURLY, "type": "daily"}),
                 ("type",), id="unknown-type"),
    pytest.param(as_json({"name": "health", "action": "create", **HOURLY, "concurencyPolicy": "Allow"}),
                 ("concurencyPolicy",), id="unknown-field"),
    pytest.param(as_json({"action": "create", **HOURLY}), ("name",), id="no-name"),
    pytest.param(as_json({"name": "health", **HOURLY}), ("action",), id="no-action"),
    pytest.param(as_json({"name": "health", "action": "create", "task": "x"}),
                 ("create needs both 'schedule'",), id="create-without-schedule"),
    pytest.param(as_json({"name": "health", "action": "create", "schedule": "@hourly"}),
                 ("create needs both", "'task'"), id="create-without-task"),
    pytest.param(as_json({"name": "health", "action": "update"}),
                 ("update needs at least one field",), id="update-without-changes"),
    pytest.param(as_json({"name": "health", "action": "create", "schedule": "61 * * * *", "task": "x"}),
                 ("61 * * * *",), id="bad-cron"),
    pytest.param(as_json({"name": "health", "action": "create", **HOURLY, "timeZone": "Mars/Olympus"}),
                 ("Mars/Olympus",), id="unknown-time-zone"),
])
async def test_a_malformed_request_file_is_rejected_and_changes_nothing(
        system: System, alice: Agent, content: bytes, fragments: tuple[str, ...]) -> None:
    await alice.ask(name="existing", action="create", **HOURLY)
    before = await system.snapshot()

    request = alice.drop("schedule-bad.json", content)
    answer = await alice.answer(request)

    assert_answer(answer, "rejected", *fragments)
    assert answer["requestFile"] == request.name
    assert answer["schedule"] is None
    assert await system.snapshot() == before
    assert alice.pending_files() == [], "a rejected request is archived, not retried"


@pytest.mark.parametrize("name", [
    pytest.param(".hidden.json", id="hidden"),
    pytest.param(".schedule-1.json.tmp", id="tool-temporary"),
    pytest.param("schedule-1.json.tmp", id="not-json-suffix"),
    pytest.param("notes.txt", id="text"),
    pytest.param("old.result.json", id="result-name"),
])
async def test_files_that_are_not_requests_are_left_alone(system: System, alice: Agent, name: str) -> None:
    ignored = alice.drop(name, json.dumps({"name": "sneaky", "action": "create", **HOURLY}))

    # Published after it, so by the time this is answered the bridge has passed it by.
    answer = await alice.ask(name="after", action="create", **HOURLY)

    assert_answer(answer, "accepted")
    assert ignored.exists(), "a request would have been archived to .sent/"
    results = {p.name for p in alice.folder.glob("*.result.json")} - {name}
    assert results == {answer["requestFile"].removesuffix(".json") + ".result.json"}
    assert await system.schedule_names() == ["alice-after"]


@pytest.mark.parametrize("limits", [pytest.param(Limits(max_request_bytes=4096), id="request-4k")])
async def test_an_oversized_request_file_is_rejected_by_the_bridge(system: System, alice: Agent) -> None:
    before = await system.snapshot()
    content = as_json({"name": "big", "action": "create", "schedule": "@hourly", "task": "x" * 5000})

    answer = await alice.answer(alice.drop("schedule-big.json", content))

    assert_answer(answer, "rejected", f"is {len(content)} bytes; the limit is 4096 bytes",
                  "Send a shorter request")
    assert await system.snapshot() == before
    assert alice.bridge.published == 0, "nothing went to NATS"


async def test_an_oversized_request_file_with_the_default_limit(system: System, alice: Agent) -> None:
    before = await system.snapshot()
    content = as_json({"name": "big", "action": "create", "schedule": "@hourly",
                       "task": "x" * Limits().max_request_bytes})

    answer = await alice.answer(alice.drop("schedule-big.json", content))

    assert_answer(answer, "rejected", "the limit is 65536 bytes")
    assert await system.snapshot() == before


def envelope_bytes(metadata: object, data: object = None) -> bytes:
    return as_json({"topic": UPSERT_TOPIC, "timestamp": "2026-03-02T10:00:00Z",
                    "metadata": metadata, "data": data})


META = {"agentRunID": "alice-run-1", "instanceName": "alice", "namespace": "default",
        "requestFile": "schedule-raw.json"}
RAW_BODY = {"name": "raw", "action": "create", **HOURLY}
UNSCOPED = pytest.mark.parametrize("router_settings", [
    pytest.param({"allow_unscoped_publishers": True}, id="unscoped-allowed")])


@pytest.mark.parametrize("payload", [
    pytest.param(b"not json at all", id="not-json"),
    pytest.param(b"", id="empty"),
    pytest.param(as_json([1, 2, 3]), id="json-array"),
    pytest.param(as_json("create"), id="json-string"),
])
async def test_a_malformed_message_is_terminated_and_the_router_keeps_going(
        system: System, alice: Agent, payload: bytes) -> None:
    """Published with alice's own credential on her own subject, past her bridge."""
    before = await system.snapshot()

    await system.publish_raw(alice, payload, msg_id="raw-1")
    info = await system.drained()

    assert info.num_redelivered == 0
    system.check_router()
    assert await system.snapshot() == before
    assert alice.pending_files() == []
    # Later requests still work.
    assert_answer(await alice.ask(name="after", action="create", **HOURLY), "accepted", "created")
    assert await system.schedule_names() == ["alice-after"]


async def test_a_run_of_malformed_messages_then_valid_requests(system: System, alice: Agent) -> None:
    garbage = [b"x", b"[]", as_json("x"), b"\xff"] * 5
    for n, payload in enumerate(garbage):
        await system.publish_raw(alice, payload, msg_id=f"garbage-{n}")
    answers = [await alice.ask(name=f"after-{n}", action="create", **HOURLY) for n in range(3)]

    assert [a["status"] for a in answers] == ["accepted"] * 3
    info = await system.drained()
    assert info.num_redelivered == 0
    assert info.delivered is not None
    assert info.delivered.stream_seq == len(garbage) + 3
    system.check_router()
    assert system.router is not None
    malformed = system.router.metrics.registry.get_sample_value(
        "sympozium_schedule_router_requests_total", {"action": "unknown", "outcome": "malformed"})
    assert malformed == len(garbage)


async def test_metadata_is_optional_on_a_scoped_subject(system: System, alice: Agent) -> None:
    """The subject says who asks; an envelope without metadata is alice's all the same."""
    await system.publish_raw(alice, as_json({"topic": UPSERT_TOPIC, "data": RAW_BODY}), msg_id="m-1")
    await system.drained()

    stored = await system.schedule("alice-raw")
    assert stored is not None
    assert stored["metadata"]["annotations"]["sympozium.ai/requested-by-run"] == alice.run


# --- Sympozium's own bridge: the unscoped subject, with --allow-unscoped-publishers -------------


async def publish_unscoped(system: System, payload: bytes, msg_id: str) -> None:
    """As Sympozium's bridge does: the identity only in the message, on a trusted network
    (here: the scheduler's own login, the only one allowed to publish there)."""
    bus = await system.bus()
    await bus.js.publish(LEGACY_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id}, timeout=5.0)


@UNSCOPED
@pytest.mark.parametrize("payload", [
    pytest.param(as_json({"topic": UPSERT_TOPIC, "data": RAW_BODY}), id="no-metadata"),
    pytest.param(envelope_bytes("alice", RAW_BODY), id="metadata-not-an-object"),
    pytest.param(envelope_bytes({k: v for k, v in META.items() if k != "agentRunID"}, RAW_BODY),
                 id="no-agentRunID"),
    pytest.param(envelope_bytes(META | {"agentRunID": ""}, RAW_BODY), id="empty-agentRunID"),
    pytest.param(envelope_bytes({k: v for k, v in META.items() if k != "instanceName"}, RAW_BODY),
                 id="no-instanceName"),
    pytest.param(envelope_bytes(META | {"namespace": "Not_A_Namespace"}, RAW_BODY), id="bad-namespace"),
    pytest.param(envelope_bytes({k: v for k, v in META.items() if k != "namespace"}
                                | {"instanceName": "nobody"}, RAW_BODY),
                 id="no-namespace-unknown-instance"),
])
async def test_a_malformed_unscoped_message_is_terminated(
        system: System, alice: Agent, payload: bytes) -> None:
    before = await system.snapshot()

    await publish_unscoped(system, payload, "raw-1")
    info = await system.drained()

    assert info.num_redelivered == 0
    system.check_router()
    assert await system.snapshot() == before
    assert_answer(await alice.ask(name="after", action="create", **HOURLY), "accepted", "created")


@UNSCOPED
async def test_an_unscoped_message_without_namespace_finds_the_instance(system: System) -> None:
    """Sympozium's own bridge sends neither a namespace nor a message id: the router
    looks the instance up and answers on the run's result subject all the same."""
    metadata = {k: v for k, v in META.items() if k != "namespace"}
    await publish_unscoped(system, envelope_bytes(metadata, RAW_BODY), "legacy-1")
    await system.drained()

    bus = await system.bus()
    raw = await bus.direct_get(RESULT_STREAM, result_subject("default", "alice-run-1"))
    assert raw is not None
    assert_answer(json.loads(raw), "accepted", "created schedule 'alice-raw'")
    assert await system.schedule_names() == ["alice-raw"]


async def test_unscoped_messages_are_not_consumed_without_the_flag(system: System, alice: Agent) -> None:
    """Without --allow-unscoped-publishers the router does not even read the subject
    whose messages name their own identity (our stream does not capture it)."""
    before = await system.snapshot()
    bus = await system.bus()
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await bus.js.publish(LEGACY_SUBJECT, envelope_bytes(META, RAW_BODY), timeout=2.0)

    assert_answer(await alice.ask(name="after", action="create", **HOURLY), "accepted", "created")
    assert await system.snapshot() != before
    assert await system.schedule_names() == ["alice-after"]
