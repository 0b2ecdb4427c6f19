"""Agents' request files, fuzzed: random bytes, random JSON and near-valid requests through
the IPC bridge's local checks, then ``core.requests.parse_request`` and ``plan``.

The bridge is the real one, on a real IPC folder, with a recording stand-in for its
NATS connection (the only thing it would otherwise need). Properties:

* the bridge takes every request file (never an exception): it either answers it
  itself (a ``rejected`` result file with a message) or publishes it, with the
  identity of its run in the metadata, never what the file says; either way the
  file is archived;
* ``parse_request`` accepts the body or raises ``RequestError`` with a message, and
  nothing else;
* ``plan`` never raises; a rejection has a message; what it creates or updates is a
  valid spec of the agent's own instance, under ``<instance>-<name>``, that fires
  no more often than the guardrail allows; another owner's schedule is never
  touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sympozium_schedule.adapters.ipc import MAX_NAME_BYTES, ScheduleFolder, result_name
from sympozium_schedule.adapters.nats.subjects import RunSubjects
from sympozium_schedule.core.cron import compile_schedule
from sympozium_schedule.core.fire_times import shortest_gap
from sympozium_schedule.core.model import LABEL_INSTANCE, LABEL_SOURCE, ScheduleSpec
from sympozium_schedule.core.requests import (
    ANNOTATION_REQUESTED_BY,
    Identity,
    RequestError,
    ScheduleRequest,
    parse_request,
    plan,
)
from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
from tests.fuzz import corpus
from tests.fuzz.conftest import fuzz
from tests.fuzz.specs import LABELS, LIMITS, request_body, utf8

WHO = Identity(namespace="default", instance="alice", run="alice-run-1")
NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)


def request_file(rng: random.Random) -> bytes:
    """The bytes of a request file."""
    roll = rng.random()
    if roll < 0.15:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    if roll < 0.25:
        text = json.dumps(request_body(rng))
        return text[: rng.randint(0, len(text))].encode()  # cut short
    if roll < 0.3:
        return b"\xef\xbb\xbf" + json.dumps(request_body(rng)).encode()  # a byte-order mark
    if roll < 0.35:
        return json.dumps({"x": "y" * LIMITS.max_request_bytes}).encode()  # too large
    body = request_body(rng)
    return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()


# --- the bridge's local checks -------------------------------------------------------------------


class RecordingBus:
    """What the bridge needs of a NATS connection to publish, recorded."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, str]] = []

    async def publish(self, subject: str, payload: bytes, *, msg_id: str) -> bool:
        self.published.append((subject, payload, msg_id))
        return True


_folders = itertools.count()


@pytest.fixture(scope="module")
def ipc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ipc")


# Names up to 240 bytes, some too long to archive (over MAX_NAME_BYTES): those are refused.
FILE_NAMES = ["schedule-1.json", "schedule-\u00e9.json", "a b.json", "-.json", "x.JSON", "x.json.json",
              "schedule-2.result.json", ".hidden.json", "schedule-1.json.tmp", "\u202e.json", "..json",
              "notes.txt", "'; drop.json", "\U0001f600.json", "x" * 235 + ".json", "\n.json", "\\.json",
              "y" * 200 + ".json", "~.json", "a~b.json"]


def archived(folder: Path) -> dict[str, tuple[str, bytes]]:
    """``.sent/<request id>~<name>`` by name: (request id, content)."""
    found: dict[str, tuple[str, bytes]] = {}
    if not (folder / ".sent").is_dir():
        return found
    for entry in (folder / ".sent").iterdir():
        request_id, _, name = entry.name.partition("~")
        found[name] = (request_id, entry.read_bytes())
    return found


@fuzz(1500)
@given(rng=st.randoms(use_true_random=True), names=st.lists(st.sampled_from(FILE_NAMES), min_size=1,
                                                          max_size=3, unique=True))
def test_the_bridge_answers_or_forwards_every_request_file(
        ipc_root: Path, rng: random.Random, names: list[str]) -> None:
    ipc = ipc_root / str(next(_folders))
    settings = BridgeSettings(ipc_path=ipc, agent_run_id=WHO.run, instance=WHO.instance,
                              namespace=WHO.namespace, nats_url="nats://127.0.0.1:9",
                              max_request_bytes=LIMITS.max_request_bytes)
    bridge = Bridge(settings)
    folder = bridge.folder = ScheduleFolder(ipc, max_bytes=LIMITS.max_request_bytes)
    bus = RecordingBus()
    bridge._bus = bus  # type: ignore[assignment]  # the one thing it needs of NATS
    contents = {name: request_file(rng) for name in names}
    for name, content in contents.items():
        (folder.path / name).write_bytes(content)

    pending, _ = folder.pending(settle=0.0)
    assert sorted(pending) == sorted(n for n in names if n.endswith(".json")
                                     and not n.endswith(".result.json") and not n.startswith("."))

    async def forward_all() -> None:
        for name in pending:
            await bridge._forward(name)

    try:
        asyncio.run(forward_all())
        sent = archived(folder.path)
    finally:
        folder.close()
    published = {json.loads(p)["metadata"]["requestFile"]: (s, json.loads(p), m) for s, p, m in bus.published}
    for name in pending:
        content = contents[name]
        assert "result" not in name, "result files are not requests"
        assert not (folder.path / name).exists(), f"{name} was not archived"
        result = folder.path / result_name(name)
        if name not in published:  # answered by the bridge itself
            answer = json.loads(result.read_text())
            assert answer["status"] == "rejected", answer
            assert answer["requestFile"] == name
            assert answer["schedule"] is None
            assert len(answer["message"]) > 10, answer
            too_long = len(name.encode()) > MAX_NAME_BYTES
            assert too_long or len(content) > LIMITS.max_request_bytes or not valid_json(content), \
                (name, content)
            if not too_long:
                assert sent[name] == (answer["requestId"], content)
            continue
        subject, envelope, msg_id = published[name]
        assert not result.exists()
        assert subject == RunSubjects(WHO.namespace, WHO.instance, WHO.run).request
        assert sent[name] == (msg_id, content)
        assert envelope["data"] == json.loads(content)
        assert envelope["metadata"] == {  # who is asking comes from the bridge, never the file
            "agentRunID": WHO.run, "instanceName": WHO.instance, "namespace": WHO.namespace,
            "requestId": msg_id, "requestFile": name}
    assert len({m for _, _, m in bus.published}) == len(bus.published), "request ids are unique"


def valid_json(content: bytes) -> bool:
    try:
        json.loads(content)
    except ValueError:
        return False
    return True


# --- the router's rules ------------------------------------------------------------------------------


def schedule_obj(name: str, *, labels: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
            "metadata": {"name": name, "namespace": "default", "uid": "u-1", "resourceVersion": "7",
                         "labels": labels}, "spec": spec}


def existing_for(name: str, rng: random.Random) -> dict[str, Any] | None:
    """What the store might hold under the stored name: nothing, the agent's own schedule,
    a person's, another instance's agent's, or one with a spec someone broke."""
    stored = f"{WHO.instance}-{name}"
    spec = {"instanceRef": WHO.instance, "schedule": "@hourly", "task": "t", "type": "heartbeat",
            "suspend": rng.random() < 0.5}
    own = {LABEL_SOURCE: "agent", LABEL_INSTANCE: WHO.instance}
    return rng.choice([
        None, None,
        schedule_obj(stored, labels=own, spec=spec),
        schedule_obj(stored, labels=own, spec=spec | {"schedule": rng.choice(corpus.INVALID_SCHEDULES)}),
        schedule_obj(stored, labels=own, spec=corpus.junk_object(rng) | {"instanceRef": WHO.instance}),
        schedule_obj(stored, labels={LABEL_INSTANCE: WHO.instance}, spec=spec),  # a person's
        schedule_obj(stored, labels={LABEL_SOURCE: "agent", LABEL_INSTANCE: "bob"}, spec=spec),
        schedule_obj(stored, labels=own, spec=spec | {"instanceRef": "bob"}),
    ])


def owned(obj: dict[str, Any]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return (labels.get(LABEL_SOURCE) == "agent" and labels.get(LABEL_INSTANCE) == WHO.instance
            and (obj.get("spec") or {}).get("instanceRef") == WHO.instance)


@fuzz(2500)
@given(rng=st.randoms(use_true_random=True))
def test_any_request_is_parsed_or_refused_with_a_message_and_planned_safely(rng: random.Random) -> None:
    raw = request_file(rng)
    try:
        body = json.loads(raw)
    except ValueError:
        return  # the bridge answers these itself (above)
    refusal = ""
    try:
        request = parse_request(body, LIMITS)
    except RequestError as exc:
        refusal = str(exc)
    if refusal:
        assert len(refusal) > 10, refusal
        return
    assert isinstance(request, ScheduleRequest)
    existing = existing_for(request.name, rng)
    others = [f"{WHO.instance}-{n}" for n in rng.sample(LABELS, rng.choice([0, 3, 9, 10, 12]))]
    now = NOW + timedelta(seconds=rng.randint(-10**8, 10**8))
    decided = plan(request, WHO, existing, others, LIMITS, now)

    assert decided.message, decided
    stored = f"{WHO.instance}-{request.name}"
    if decided.op == "reject":
        assert decided.object is None
        return
    assert existing is None or owned(existing), f"{decided.op} of someone else's schedule: {existing}"
    assert decided.name == stored
    if decided.op in ("delete", "noop"):
        assert decided.op == "noop" or existing is not None
        return
    obj = decided.object
    assert obj is not None
    assert obj["metadata"]["name"] == stored
    assert "status" not in obj
    if request.action in ("suspend", "resume"):  # the flag and nothing else, however broken the rest
        assert existing is not None
        assert obj["spec"] == (existing["spec"] | {"suspend": request.action == "suspend"})
        assert obj["metadata"] == existing["metadata"]
        return
    spec = ScheduleSpec.parse(obj["spec"])
    assert spec.instance_ref == WHO.instance
    if decided.op == "create":
        assert existing is None
        assert request.action == "create"
        assert obj["metadata"]["labels"] == {LABEL_INSTANCE: WHO.instance, LABEL_SOURCE: "agent"}
        assert obj["metadata"]["annotations"] == {ANNOTATION_REQUESTED_BY: WHO.run}
        assert len([n for n in others if n != stored]) < LIMITS.max_schedules_per_instance
    else:
        assert existing is not None
        assert obj["metadata"]["labels"] == existing["metadata"]["labels"]
    if request.task is not None:
        assert len(request.task.encode()) <= LIMITS.max_task_bytes
    compiled = compile_schedule(spec.schedule, time_zone=spec.time_zone, anchor=now)
    gap = shortest_gap(compiled, now)
    assert gap is None or gap >= LIMITS.min_interval, (spec.schedule, gap)


# --- found by fuzzing ------------------------------------------------------------------------------


def test_a_request_name_with_a_trailing_newline_is_refused() -> None:
    """The DNS-1123 checks end their regexes in "$", which also matches before a final
    newline: "health\\n" passed as a name, and the agent's schedule became
    "alice-health\\n" (see test_spec_fuzz.py::test_a_trailing_newline_is_not_part_of_a_dns_name)."""
    with pytest.raises(RequestError, match=r"request\.name"):
        parse_request({"name": "health\n", "action": "create", "schedule": "@hourly", "task": "t"}, LIMITS)


def test_a_lone_surrogate_in_a_task_is_refused_or_stored_whole() -> None:
    """A JSON request may carry a lone surrogate (\\ud800): whatever the rules decide, the
    task they measure against the byte limit must be one UTF-8 can hold."""
    body = json.loads('{"name": "x", "action": "create", "schedule": "@hourly", "task": "a\\ud800"}')
    try:
        request = parse_request(body, LIMITS)
    except RequestError:
        return
    assert request.task is not None
    assert utf8(request.task), "a task no store can hold was accepted"


def test_a_request_file_with_a_long_name_is_answered_and_the_bridge_goes_on(ipc_root: Path) -> None:
    """A request file named with 244 to 255 bytes is a valid file, but the answer's
    temporary name (".<stem>.result.json.tmp") is longer than a file name may be: writing
    it raised OSError (ENAMETOOLONG) out of ``_publish_file``, which ends the bridge's
    publishing task, so every later request of the run went unsent."""
    ipc = ipc_root / "long-name"
    bridge = Bridge(BridgeSettings(ipc_path=ipc, agent_run_id=WHO.run, instance=WHO.instance,
                                   namespace=WHO.namespace, nats_url="nats://127.0.0.1:9"))
    bus = RecordingBus()
    bridge._bus = bus  # type: ignore[assignment]
    folder = bridge.folder = ScheduleFolder(ipc, max_bytes=LIMITS.max_request_bytes)
    long_name = folder.path / ("x" * 245 + ".json")
    long_name.write_bytes(b"not json")
    after = folder.path / "schedule-2.json"
    after.write_text(json.dumps({"name": "after", "action": "delete"}))

    async def forward() -> None:
        publisher = asyncio.create_task(bridge._publish_loop())
        try:
            for path in (long_name, after):
                bridge._enqueue(path.name)
            with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
                await asyncio.wait_for(bridge._queue.join(), 2.0)
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await publisher

    asyncio.run(forward())
    assert [json.loads(p)["metadata"]["requestFile"] for _, p, _ in bus.published] == [after.name]
    assert not long_name.exists(), "the long-named request was not archived"
