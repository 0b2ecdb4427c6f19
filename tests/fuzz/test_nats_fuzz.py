"""Raw messages, fuzzed through ``Router.handle``: on a run's scoped subject
(``sympozium.schedule.request.<ns>.<instance>.<run>``, the identity the bus vouches
for) and on the unscoped ``sympozium.schedule.upsert`` of Sympozium's own bridge
(believed with ``allow_unscoped_publishers`` only).

The router is the real one on a real SQLite store; the bus is the in-memory one
(held to NATS's behaviour by tests/bus), its answers recorded as the router publishes
them, so thousands of deliveries take seconds (the real server's side is
tests/selfsched's). Messages: random bytes, random JSON,
envelopes with broken metadata, and well-formed envelopes carrying near-valid
requests. Properties:

* ``handle`` never raises;
* a message no retry can make sense of (not JSON, not an envelope with metadata,
  no run or instance to answer, a bad namespace, or an instance it cannot place)
  is TERM, and nothing is published, remembered or stored;
* any other message is ACKed with exactly one answer on its run's result subject
  (status, message, request id); a rejection changes nothing in the store, an
  acceptance changes only the agent's own schedule ``<instance>-<name>``;
* the same request delivered again gets the same answer and changes nothing;
* on a scoped subject, the answer goes to the subject's run, and metadata naming
  anyone else is refused with nothing changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sympozium_schedule.adapters.memory import MemoryBroker, MemoryBus
from sympozium_schedule.adapters.sqlite import SQLiteStore
from sympozium_schedule.core.model import API_VERSION, LABEL_INSTANCE, LABEL_SOURCE, Kind, is_dns1123_label
from sympozium_schedule.core.requests import Limits
from sympozium_schedule.ports.bus import (
    DEDUPE_BUCKET,
    LEGACY_SUBJECT,
    LEGACY_TOPIC,
    MSG_ID,
    Delivery,
    Disposition,
    RunSubjects,
    result_subject,
    token,
)
from sympozium_schedule.runtime.router import Router, RouterSettings
from tests.fuzz import corpus
from tests.fuzz.conftest import fuzz
from tests.fuzz.specs import request_body

# alice lives in "default" (and nowhere else), bob in two namespaces, carol nowhere.
INSTANCES = [("default", "alice"), ("default", "bob"), ("other", "bob")]
RUNS = ["alice-run-1", "r", "a.b", "x" * 63]


class RecordingBus(MemoryBus):
    """The in-memory bus, noting each answer the router publishes."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker, "fuzz-router")
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None,
                      timeout: float = 2.0) -> bool:
        self.published.append((subject, payload))
        return await super().publish(subject, payload, msg_id=msg_id, timeout=timeout)


class World:
    """A router on a store, driven on one event loop for the whole module."""

    def __init__(self, root: Path):
        self.loop = asyncio.new_event_loop()
        self.store = SQLiteStore(root / "store.db")
        self.router = Router(self.store, RouterSettings(nats_url="nats://127.0.0.1:9", limits=Limits(),
                                                        allow_unscoped_publishers=True))
        broker = MemoryBroker()
        self.bus = RecordingBus(broker)
        self.run(self.bus.ensure_result_stream())
        self.router._kv = self.run(self.bus.bucket())  # what handle needs of the bus
        self.router._bus = self.bus
        self.kv_data = broker.buckets[DEDUPE_BUCKET]
        for namespace, name in INSTANCES:
            self.run(self.store.create({
                "apiVersion": API_VERSION, "kind": Kind.INSTANCE.value,
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"agents": {"default": {"model": "gpt-4o"}}}}))
        self.run(self.store.create({  # a person's schedule, under a name an agent would use
            "apiVersion": API_VERSION, "kind": Kind.SCHEDULE.value,
            "metadata": {"name": "alice-nightly", "namespace": "default",
                         "labels": {LABEL_INSTANCE: "alice"}},
            "spec": {"instanceRef": "alice", "schedule": "0 3 * * *", "task": "report"}}))

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def snapshot(self) -> dict[tuple[str, str, str], str]:
        objects = {}
        for kind in Kind:
            for obj in self.run(self.store.list(kind)).items:
                meta = obj["metadata"]
                objects[(kind.value, meta["namespace"], meta["name"])] = meta["resourceVersion"]
        return objects

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = World(tmp_path_factory.mktemp("router"))
    yield made
    made.close()


# --- messages ----------------------------------------------------------------------------------


def metadata(rng: random.Random) -> tuple[Any, str | None]:
    """Envelope metadata, and why it is malformed (None: it is not)."""
    meta: dict[str, Any] = {"agentRunID": rng.choice(RUNS), "instanceName": rng.choice(["alice", "alice",
                                                                                        "bob", "carol"]),
                            "namespace": rng.choice(["default", "default", "other"]),
                            "requestId": f"req-{rng.getrandbits(40)}", "requestFile": "schedule-1.json"}
    roll = rng.random()
    if roll < 0.05:
        return rng.choice([None, "alice", [], 5]), "metadata"
    if roll < 0.15:
        key = rng.choice(["agentRunID", "instanceName"])
        if rng.random() < 0.5:
            del meta[key]
        else:
            meta[key] = rng.choice(["", 5, None, [], {}])
        return meta, key
    if roll < 0.25:
        meta["namespace"] = rng.choice(["Bad_NS", "a" * 64, "-a", "a.b", "default\x00", "\u00e9"])
        return meta, "namespace"
    if roll < 0.4:  # Sympozium's own bridge sends no namespace: the router looks for the instance
        meta.pop("namespace")
        found = [ns for ns, name in INSTANCES if name == meta["instanceName"]]
        return meta, None if len(found) == 1 else "no-namespace"
    if roll < 0.5:  # odd but harmless extras and types the router tolerates
        meta["requestId"] = rng.choice([None, "", 5, rng.choice(corpus.ODD_TEXTS)])
        meta["requestFile"] = rng.choice([None, 5, rng.choice(corpus.ODD_TEXTS)])
        meta["extra"] = corpus.junk(rng)
    return meta, None


def message(rng: random.Random) -> tuple[bytes, str | None, dict[str, str]]:
    """The message bytes, why it is malformed (None: it is not), and its headers."""
    headers = {MSG_ID: f"msg-{rng.getrandbits(32)}"} if rng.random() < 0.5 else {}
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))), "bytes", headers
    if roll < 0.2:  # JSON, but no envelope (or one whose metadata names no one)
        value = corpus.junk(rng, 3)
        if isinstance(value, dict) and isinstance(value.get("metadata"), dict):
            value["metadata"] = {}
        return json.dumps(value).encode(), "json", headers
    meta, why = metadata(rng)
    envelope = {"topic": LEGACY_TOPIC, "timestamp": "2026-03-02T10:00:00Z", "metadata": meta,
                "data": request_body(rng)}
    if rng.random() < 0.1:
        envelope.pop("data")
    text = json.dumps(corpus.storable(envelope), ensure_ascii=rng.random() < 0.5)
    if why is None and rng.random() < 0.05:
        return text[: rng.randint(0, len(text) - 1)].encode(), "truncated", headers
    return text.encode(), why, headers


@fuzz(2000)
@given(rng=st.randoms(use_true_random=True), redeliver=st.booleans())
def test_any_message_is_terminated_or_answered_once_and_touches_only_its_own_schedule(
        world: World, rng: random.Random, redeliver: bool) -> None:
    data, why, headers = message(rng)
    before_store, before_kv = world.snapshot(), dict(world.kv_data)
    world.bus.published.clear()
    seq = rng.getrandbits(20)
    delivery = Delivery(data=data, headers=headers, subject=LEGACY_SUBJECT,
                        delivered=rng.choice([1, 1, 2, 7]), stream_seq=seq)

    verdict, delay = world.run(world.router.handle(delivery))

    case = f"message {data!r}"
    assert delay >= 0
    if why is not None:
        assert verdict is Disposition.TERM, (verdict, why, case)
        assert world.bus.published == [], case
        assert world.kv_data == before_kv, case
        assert world.snapshot() == before_store, case
        return
    assert verdict is Disposition.ACK, f"{verdict} for a well-formed message: {case}"
    (subject, payload), = world.bus.published
    meta = json.loads(data)["metadata"]
    namespace = meta.get("namespace") or next(ns for ns, name in INSTANCES if name == meta["instanceName"])
    assert subject == result_subject(namespace, meta["agentRunID"])
    answer = json.loads(payload)
    assert set(answer) == {"requestId", "requestFile", "status", "message", "schedule"}
    assert answer["status"] in ("accepted", "rejected"), answer
    assert isinstance(answer["message"], str), answer
    assert len(answer["message"]) > 5, answer
    after = world.snapshot()
    changed = {k for k in before_store.keys() | after.keys() if before_store.get(k) != after.get(k)}
    if answer["status"] == "rejected":
        assert not changed, (answer, changed)
    else:
        own = {(Kind.SCHEDULE.value, namespace, f"{meta['instanceName']}-{json.loads(data)['data']['name']}")}
        assert changed <= own, (answer, changed)
        for key in changed & after.keys():
            stored = world.run(world.store.list(Kind.SCHEDULE, namespace=namespace)).items
            (obj,) = [o for o in stored if o["metadata"]["name"] == key[2]]
            assert obj["metadata"]["labels"] == {LABEL_INSTANCE: meta["instanceName"], LABEL_SOURCE: "agent"}
            assert obj["spec"]["instanceRef"] == meta["instanceName"]
            assert is_dns1123_label(obj["metadata"]["name"])
    if not redeliver:
        return
    world.bus.published.clear()
    again = world.run(world.router.handle(delivery))
    assert again == (Disposition.ACK, 0.0)
    (_, payload_again), = world.bus.published
    assert json.loads(payload_again) == answer, "a redelivered request is answered the same"
    assert world.snapshot() == after, "a redelivered request is applied once"


def scoped_message(rng: random.Random) -> tuple[str, bytes, str | None, str | None]:
    """(subject, bytes, why it is malformed, why it is refused): a message on a run's
    own subject, its metadata agreeing, missing, odd or naming someone else."""
    ns, instance, run = (rng.choice(["default", "default", "other", "Bad_NS"]),
                         rng.choice(["alice", "alice", "bob", "carol"]), rng.choice(RUNS))
    subject = RunSubjects(ns, instance, run).request
    roll = rng.random()
    if roll < 0.1:
        return subject, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))), "bytes", None
    if roll < 0.15:
        return subject, json.dumps(rng.choice([[1], "x", 5, None])).encode(), "not-an-object", None
    meta: Any = {"agentRunID": run, "instanceName": instance, "namespace": ns,
                 # Each request its own id (the same id is the same request, answered
                 # from the record): ids that are no subject token get hashed.
                 "requestId": rng.choice([f"req-{rng.getrandbits(40)}", "", None,
                                          f"a/b.{rng.getrandbits(40)}", "x" * 80 + str(rng.getrandbits(40))]),
                 "requestFile": "schedule-1.json"}
    forged = None
    roll = rng.random()
    if roll < 0.2:
        key, value = rng.choice([("instanceName", "bob" if instance != "bob" else "alice"),
                                 ("agentRunID", "someone-else"), ("namespace", "kube-system")])
        meta[key] = value
        forged = key
    elif roll < 0.35:
        for key in rng.sample(["agentRunID", "instanceName", "namespace"], rng.randint(1, 3)):
            del meta[key]
    elif roll < 0.45:
        meta = rng.choice([None, "alice", [], 5, {}])
    envelope = {"topic": LEGACY_TOPIC, "metadata": meta, "data": request_body(rng)}
    why = "namespace" if ns == "Bad_NS" else None
    return subject, json.dumps(corpus.storable(envelope)).encode(), why, forged


@fuzz(2000)
@given(rng=st.randoms(use_true_random=True), redeliver=st.booleans())
def test_a_scoped_message_is_answered_to_its_subjects_run_and_changes_only_that_instance(
        world: World, rng: random.Random, redeliver: bool) -> None:
    subject, data, why, forged = scoped_message(rng)
    ns, instance, run = subject.split(".")[3:]
    before_store, before_kv = world.snapshot(), dict(world.kv_data)
    world.bus.published.clear()
    delivery = Delivery(data=data, headers={}, subject=subject, delivered=rng.choice([1, 2]),
                        stream_seq=rng.getrandbits(20))

    verdict, _ = world.run(world.router.handle(delivery))

    case = f"{subject} {data!r}"
    if why is not None:
        assert verdict is Disposition.TERM, (why, case)
        assert world.bus.published == [], case
        assert world.kv_data == before_kv, case
        return
    assert verdict is Disposition.ACK, case
    (answer_subject, payload), = world.bus.published
    answer = json.loads(payload)
    assert answer_subject.startswith(RunSubjects(ns, instance, run).answers + "."), case
    assert answer_subject == RunSubjects(ns, instance, run).answer(answer["requestId"])
    after = world.snapshot()
    changed = {k for k in before_store.keys() | after.keys() if before_store.get(k) != after.get(k)}
    if forged is not None:
        assert answer["status"] == "rejected", (answer, case)
        assert "identity comes from the bus" in answer["message"], answer
    if answer["status"] == "rejected":
        assert not changed, (answer, changed)
    else:
        assert {(k[1], k[2].split("-")[0]) for k in changed} <= {(ns, token(instance))}, (answer, changed)
    if redeliver:
        world.bus.published.clear()
        assert world.run(world.router.handle(delivery)) == (Disposition.ACK, 0.0)
        (_, again), = world.bus.published
        assert json.loads(again) == answer
        assert world.snapshot() == after


@pytest.fixture
def fresh_world(tmp_path: Path) -> Iterator[World]:
    """A world of its own (the module's has the fuzzers' schedules: an instance may be full)."""
    made = World(tmp_path)
    yield made
    made.close()


def test_a_redelivered_request_whose_record_was_lost_is_answered_from_its_published_answer(
        fresh_world: World) -> None:
    """A nats-server SIGKILLed just after acknowledging the record can lose it with its last
    unflushed writes while the answer published after it survives (seen in CI: the agent got
    a second answer, 'nothing changed'). The redelivered request is answered from that answer."""
    subject = RunSubjects("default", "alice", "alice-run-1").request
    envelope = {"topic": LEGACY_TOPIC,
                "metadata": {"agentRunID": "alice-run-1", "instanceName": "alice", "namespace": "default",
                             "requestId": "req-record-lost", "requestFile": "schedule-9.json"},
                "data": {"name": "record-lost", "action": "create", "schedule": "@hourly", "task": "t"}}
    delivery = Delivery(data=json.dumps(envelope).encode(), headers={}, subject=subject, delivered=1,
                        stream_seq=424242)
    before_kv = dict(fresh_world.kv_data)
    fresh_world.bus.published.clear()
    assert fresh_world.run(fresh_world.router.handle(delivery)) == (Disposition.ACK, 0.0)
    (_, first), = fresh_world.bus.published
    assert json.loads(first)["status"] == "accepted"
    after = fresh_world.snapshot()
    for key in set(fresh_world.kv_data) - set(before_kv):  # the record, lost with the server's writes
        del fresh_world.kv_data[key]

    fresh_world.bus.published.clear()
    again = dataclasses.replace(delivery, delivered=2)
    assert fresh_world.run(fresh_world.router.handle(again)) == (Disposition.ACK, 0.0)

    (_, second), = fresh_world.bus.published
    assert second == first, "answered again word for word"
    assert fresh_world.snapshot() == after, "applied once"
    assert set(fresh_world.kv_data) - set(before_kv), "the record is written again"


# --- found by fuzzing ------------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_task_is_answered_not_redelivered_forever(world: World) -> None:
    """JSON can carry a lone surrogate (\\ud800). parse_request measured the task with
    ``task.encode()``, which raised UnicodeEncodeError out of ``handle``; the consumer
    NAKs a handler that raises, so the request came back every second, never answered."""
    meta = {"agentRunID": "alice-run-1", "instanceName": "alice", "namespace": "default",
            "requestId": "default/alice-run-1/schedule-surrogate", "requestFile": "schedule-surrogate.json"}
    data = ('{"topic": "schedule.upsert", "metadata": ' + json.dumps(meta) + ', "data": {"name": "odd", '
            '"action": "create", "schedule": "@hourly", "task": "check \\ud800"}}').encode()
    before = world.snapshot()
    world.bus.published.clear()

    verdict = world.run(world.router.handle(Delivery(data=data, headers={}, subject=LEGACY_SUBJECT,
                                                     delivered=1, stream_seq=1)))

    assert verdict == (Disposition.ACK, 0.0)
    (_, payload), = world.bus.published
    answer = json.loads(payload)
    if answer["status"] == "accepted":  # stored whole, then: the store holds UTF-8 only
        assert world.snapshot() != before
    else:
        assert world.snapshot() == before
