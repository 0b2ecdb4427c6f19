"""Schedule specs, fuzzed through ``ScheduleView.of`` and ``reconcile`` at arbitrary instants.

Hypothesis draws, for each spec field, whether it is valid, known to be invalid,
absent, or (the schedule and the time zone) text whose validity only the compiler
knows; the values come from the seeded corpora (tests/fuzz/corpus.py) through a
random generator hypothesis also draws, which keeps a case to a dozen draws.
Around the spec: the metadata, the status another writer may have left, the
runs the store holds, the instance (or none, or junk), the memory and the instant.

Whatever comes in, ``reconcile`` returns a decision (no exception), and:

* a spec with an invalid field is phase ``Error`` with a ``Ready=False`` condition
  whose reason is a documented one and whose message starts with the path of an
  invalid field (``spec.timeZone: 'Mars/Olympus': unknown time zone ...``);
* a valid spec is ``Active`` (``Suspended`` when it says so), unless the instance
  is missing or has no model, which the condition then names (``spec.instanceRef``);
* what it asks to write is JSON.

Instants are 2000-2200: ``datetime`` ends at year 9999 and a tick computed next to
that end overflows; creation times come from the store's clock and ``now`` from the
system's, so neither gets there.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sympozium_schedule.core.cron import compile_schedule, load_zone
from sympozium_schedule.core.decide import READY, Outcome, reconcile
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import (
    ANNOTATION_SCHEDULED_TIME,
    API_VERSION,
    UNFINISHED_PHASES,
    RunView,
    ScheduleView,
    format_time,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
)
from sympozium_schedule.core.naming import run_name
from sympozium_schedule.core.runs import instance_model
from tests.fuzz import corpus
from tests.fuzz.conftest import fuzz
from tests.fuzz.specs import BAD_NAMES, FIELDS, NAMES, UNKNOWN_KEYS, Gen, either, ints, pick, utf8

UID = "0b7e2c1a-0000-4000-8000-00000000f022"
ERROR_REASONS = {"InvalidSchedule", "InvalidTimeZone", "InvalidSpec", "InstanceNotFound",
                 "InstanceInvalid"}

# --- instants ------------------------------------------------------------------------------

OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(-timedelta(hours=9, minutes=30)),
           ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Europe/Warsaw")]
START, END = datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
# Daylight-saving edges, where local time skips or repeats.
DST_EDGES = [datetime(2026, 3, 8, 7, 0, tzinfo=UTC), datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
             datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
             datetime(2026, 4, 4, 15, 0, tzinfo=UTC), datetime(2026, 10, 3, 15, 30, tzinfo=UTC)]


def instant(rng: random.Random) -> datetime:
    """Anywhere in 2000-2200, or within two hours of a daylight-saving change."""
    if rng.random() < 0.3:
        at = rng.choice(DST_EDGES) + timedelta(seconds=rng.randint(-7200, 7200))
    else:
        at = START + timedelta(microseconds=rng.randrange((END - START) // timedelta(microseconds=1)))
    return at.astimezone(rng.choice(OFFSETS))


moments = st.randoms(use_true_random=True).map(instant)

# How many fields a case perturbs (made invalid, left out, or of unknown validity): none in
# four cases of ten, so the valid paths get their share; now and then every one.
PERTURBED = [0, 0, 0, 0, 1, 1, 1, 2, 3, len(FIELDS)]


@dataclass
class Drawn:
    obj: dict[str, Any]
    invalid: set[str]  # field paths known to be invalid
    unknown: dict[str, Any]  # field path -> value whose validity only the compiler knows


def build(choices: dict[str, str], rng: random.Random) -> Drawn:
    spec: dict[str, Any] = {}
    invalid: set[str] = set()
    unknown: dict[str, Any] = {}
    for key, f in FIELDS.items():
        choice = choices[key]
        if choice == "unknown" and f.unknown is None:
            choice = "invalid"
        path = f"spec.{key}"
        if choice == "absent":
            if f.required:
                invalid.add(path)
        elif choice == "valid":
            spec[key] = f.valid(rng)
        elif choice == "invalid":
            spec[key] = f.invalid(rng)
            invalid.add(path)
        else:
            assert f.unknown is not None
            spec[key] = unknown[path] = f.unknown(rng)
    if rng.random() < 0.1:
        key = rng.choice([k for k in UNKNOWN_KEYS if k not in FIELDS and utf8(k)])
        spec[key] = corpus.junk(rng)
        invalid.add(f"spec.{key}")
    name = rng.choice(NAMES) if rng.random() < 0.9 else rng.choice(BAD_NAMES)
    if not is_label_value(name):
        invalid.add("metadata.name")
    metadata: dict[str, Any] = {"name": name, "namespace": "default", "uid": UID}
    if rng.random() < 0.5:
        metadata["generation"] = rng.choice([1, 2, 7, corpus.junk(rng, 1)])
    created = rng.choice([format_time(instant(rng)), rng.choice(corpus.ODD_TEXTS), None])
    if created is not None:
        metadata["creationTimestamp"] = created
    obj = {"apiVersion": API_VERSION, "kind": "SympoziumSchedule", "metadata": metadata, "spec": spec}
    if rng.random() < 0.03:  # not a spec at all
        junk = corpus.junk(rng)
        unknown = {}
        if isinstance(junk, dict):
            junk = {k: v for k, v in junk.items() if utf8(k)}
            invalid = {f"spec.{k}" for k in junk} | {
                f"spec.{k}" for k, f in FIELDS.items() if f.required and k not in junk}
        else:
            invalid = {"spec"}
        obj["spec"] = junk
    status = rng.choice([None, "plausible", "plausible", "junk"])
    if status == "plausible":
        obj["status"] = plausible_status(rng)
    elif status == "junk":
        obj["status"] = corpus.junk(rng)
    return Drawn(obj, invalid, unknown)


def time_or_junk(rng: random.Random) -> Any:
    return rng.choice([format_time(instant(rng)), rng.choice(corpus.ODD_TEXTS), corpus.junk(rng, 1)])


def plausible_status(rng: random.Random) -> dict[str, Any]:
    """A status as this controller (or another writer) might have left it."""
    fields: dict[str, Gen] = {
        "phase": pick("Active", "Suspended", "Error", "", None, 3),
        "lastRunTime": time_or_junk, "lastScheduleTime": time_or_junk, "nextRunTime": time_or_junk,
        "lastRunName": either(pick(*NAMES), corpus.junk),
        "totalRuns": either(ints(-5, 2**40), corpus.junk),
        "observedGeneration": either(ints(1, 5), corpus.junk),
        "conditions": lambda r: [{
            "type": r.choice(["Ready", "TickSkipped", "Other", 5]),
            "status": r.choice(["True", "False", "Unknown", "true", ""]),
            "reason": r.choice(corpus.ODD_TEXTS), "message": r.choice(corpus.ODD_TEXTS),
            "lastTransitionTime": time_or_junk(r),
            "observedGeneration": r.choice([1, "1", None, True]),
        } for _ in range(r.randint(0, 3))] if r.random() < 0.8 else corpus.junk(r),
        "active": corpus.junk,
    }
    return {k: fields[k](rng) for k in rng.sample(sorted(fields), rng.randint(0, len(fields)))}


PHASES = [*sorted(UNFINISHED_PHASES), "Succeeded", "Failed", "succeeded", "Unknown"]


def runs_of(obj: dict[str, Any], now: datetime, rng: random.Random) -> list[RunView]:
    """Runs as the store would hand them over: names from nearby ticks (so a tick's run
    may already exist), any phase, annotations right or wrong, owned or not."""
    name = str(obj["metadata"].get("name") or "x")
    out = []
    for _ in range(rng.choice([0, 0, 1, 2, 4])):
        tick = (now - timedelta(seconds=rng.randint(-120, 7200))).replace(microsecond=0)
        meta: dict[str, Any] = {
            "name": run_name(name, tick) if rng.random() < 0.5 else rng.choice(NAMES),
            "namespace": "default",
            "annotations": {ANNOTATION_SCHEDULED_TIME: rng.choice([format_time(tick), format_time(tick),
                                                                   rng.choice(corpus.ODD_TEXTS)])},
            "ownerReferences": [{"uid": rng.choice([UID, UID, "someone-else"])}],
            "creationTimestamp": format_time(tick),
        }
        out.append(RunView.of({"metadata": meta, "status": {"phase": rng.choice(PHASES)}}))
    return out


INSTANCE = {"apiVersion": API_VERSION, "kind": "SympoziumInstance",
            "metadata": {"name": "alice", "namespace": "default"},
            "spec": {"agents": {"default": {"model": "gpt-4o"}}}}


def instance_of(rng: random.Random) -> dict[str, Any] | None:
    """Mostly a usable instance; else none, or one whose model is missing or junk."""
    if rng.random() < 0.7:
        return INSTANCE
    return rng.choice([
        None,
        corpus.junk_object(rng, 3),
        {"spec": {"agents": corpus.junk(rng)}},
        {"spec": {"agents": {"default": corpus.junk(rng)}}},
        {"spec": {"agents": {"default": {"model": corpus.junk(rng, 1)}}, "skills": corpus.junk(rng),
                  "authRefs": corpus.junk(rng), "imagePullSecrets": corpus.junk(rng)}},
    ])


def fails(call: Callable[[], Any]) -> bool:
    try:
        call()
    except SpecError:
        return True
    return False


def failing(drawn: Drawn) -> set[str]:
    """Which of the fields whose validity only the compiler knows do not compile."""
    spec = drawn.obj["spec"] if isinstance(drawn.obj["spec"], dict) else {}
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    out = set()
    for path, expression, zone in (("spec.schedule", spec.get("schedule"), "UTC"),
                                   ("spec.timeZone", "@hourly", spec.get("timeZone"))):
        if path in drawn.unknown and fails(lambda e=expression, z=zone: compile_schedule(
                e, time_zone=z, anchor=anchor)):
            out.add(path)
    return out


@st.composite
def perturbations(draw: st.DrawFn) -> dict[str, str]:
    """What happens to each field: "valid", or "invalid", "absent", "unknown"."""
    order = draw(st.permutations(list(FIELDS)))
    count = draw(st.sampled_from(PERTURBED))
    modes = st.sampled_from(["invalid", "absent", "unknown"])
    return {key: draw(modes) if n < count else "valid" for n, key in enumerate(order)}


@fuzz(3000)
@given(choices=perturbations(), rng=st.randoms(use_true_random=True))
def test_any_spec_at_any_instant_yields_a_decision_and_errors_name_the_field(
        choices: dict[str, str], rng: random.Random) -> None:
    drawn = build(choices, rng)
    now = instant(rng)
    instance = instance_of(rng)
    memory = rng.choice([None, "", rng.choice(corpus.ODD_TEXTS), "# Memory\n" * 1000])
    view = ScheduleView.of(drawn.obj)
    decision = reconcile(view, runs_of(drawn.obj, now, rng), instance, memory, now)
    case = f"case: {drawn}, now={now!r}, instance={instance!r}"

    json.dumps(decision.status)
    json.dumps(decision.create)
    status = decision.status
    ready = next((c for c in status.get("conditions", []) if c["type"] == READY), None)
    bad = drawn.invalid | failing(drawn)
    spec = drawn.obj["spec"] if isinstance(drawn.obj["spec"], dict) else {}
    if decision.outcome is Outcome.ERROR:
        assert status["phase"] == "Error", case
        assert ready is not None, case
        assert ready["status"] == "False", case
        assert ready["reason"] in ERROR_REASONS, case
        assert "nextRunTime" not in status, case
        named = [f for f in bad | {"spec.instanceRef"} if ready["message"].startswith(f"{f}: ")]
        if bad:
            assert set(named) & bad, f"{ready['message']!r} names none of {bad}; {case}"
        else:  # a sound spec: only the instance can be at fault
            assert named == ["spec.instanceRef"], (ready["message"], case)
            assert ready["reason"] in ("InstanceNotFound", "InstanceInvalid"), case
            assert instance is None or instance_model(instance) is None, case
        return
    assert not bad, f"invalid {bad} but the outcome is {decision.outcome}: {status}; {case}"
    assert ready is not None, case
    if spec.get("suspend") is True:
        # Recorded: runs of ticks after the cursor (a status write cut short) still count.
        assert decision.outcome in (Outcome.SUSPENDED, Outcome.RECORDED), case
        assert decision.create is None, case
        assert (status["phase"], ready["status"], ready["reason"]) == ("Suspended", "False", "Suspended")
    else:
        assert (status["phase"], ready["status"]) == ("Active", "True"), case
        assert instance is not None, case
        assert instance_model(instance) is not None, case
        assert "nextRunTime" in status, case
    if decision.create is not None:
        assert decision.tick is not None, case
        assert decision.create["metadata"]["name"] == run_name(view.meta.name, decision.tick)


# --- schedules and zones on their own: the compiler and the reconciler agree --------------------

expressions = st.one_of(st.sampled_from(corpus.VALID_SCHEDULES), st.sampled_from(corpus.INVALID_SCHEDULES),
                        st.sampled_from(corpus.ODD_TEXTS))
zones = st.one_of(st.sampled_from(corpus.VALID_ZONES), st.sampled_from(corpus.INVALID_ZONES),
                  st.sampled_from(corpus.UNKNOWN_ZONES))


@fuzz(3000)
@given(expression=expressions, zone=zones, now=moments)
def test_a_schedule_and_time_zone_either_compile_and_fire_or_are_named(
        expression: str, zone: str, now: datetime) -> None:
    created = now - timedelta(days=3)
    obj = {"metadata": {"name": "hb", "namespace": "default", "uid": UID, "generation": 1,
                        "creationTimestamp": format_time(created)},
           "spec": {"instanceRef": "alice", "schedule": expression, "task": "t", "timeZone": zone}}
    decision = reconcile(ScheduleView.of(obj), [], INSTANCE, None, now)
    try:
        compiled = compile_schedule(expression, time_zone=zone, anchor=created)
    except SpecError:
        assert decision.outcome is Outcome.ERROR
        message = decision.status["conditions"][0]["message"]
        if message.startswith("spec.schedule: "):
            assert not expression.strip() or fails(lambda: compile_schedule(expression, anchor=now))
        else:
            assert message.startswith("spec.timeZone: "), message
            assert not zone or fails(lambda: load_zone(zone))
        return
    assert decision.outcome is not Outcome.ERROR, decision.status
    upcoming = compiled.next_after(now)
    assert upcoming is not None
    assert upcoming > now
    assert decision.status["nextRunTime"] == format_time(upcoming)


@pytest.mark.parametrize("expression", [
    pytest.param("@every " + "1h" * 5000, id="long-duration"),
    pytest.param(" ".join(["0"] * 5000), id="many-fields"),
    pytest.param(",".join(["1"] * 20000) + " * * * *", id="long-list"),
    pytest.param("*/1" + ",*/1" * 5000 + " * * * *", id="many-steps"),
    pytest.param("@every " + "0" * 100_000 + "1s", id="long-number"),
])
def test_long_expressions_are_decided_quickly(expression: str) -> None:
    now = datetime(2026, 3, 2, 10, tzinfo=UTC)
    obj = {"metadata": {"name": "hb", "namespace": "default", "uid": UID},
           "spec": {"instanceRef": "alice", "schedule": expression, "task": "t"}}
    decision = reconcile(ScheduleView.of(obj), [], INSTANCE, None, now)
    assert decision.outcome in (Outcome.ERROR, Outcome.FIRED, Outcome.IDLE)


# --- found by fuzzing --------------------------------------------------------------------------


def missed_ticks(**spec: Any) -> dict[str, Any]:
    """A schedule firing every minute whose last handled tick is ten minutes ago."""
    created = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    return {"metadata": {"name": "hb", "namespace": "default", "uid": UID, "generation": 1,
                         "creationTimestamp": format_time(created)},
            "spec": {"instanceRef": "alice", "schedule": "@every 1m", "task": "t"} | spec,
            "status": {"observedGeneration": 1, "phase": "Active",
                       "lastScheduleTime": format_time(created + timedelta(minutes=50))}}


@pytest.mark.parametrize("deadline", [pytest.param(10**14, id="1e14"),
                                      pytest.param(2**63 - 1, id="int64-max")])
def test_a_huge_starting_deadline_is_not_a_crash(deadline: int) -> None:
    """The CRD takes any integer from 1 (int64 on a cluster); ``timedelta(seconds=...)``
    does not: from about 8.64e13 s, ``_plan`` raised OverflowError on every pass, so the
    schedule never fired again, and no condition said why (only a log line)."""
    view = ScheduleView.of(missed_ticks(startingDeadlineSeconds=deadline))
    assert view.spec_error is None, "the spec is valid"

    decision = reconcile(view, [], INSTANCE, None, datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC))

    assert decision.outcome is Outcome.FIRED, "ten minutes late is well within the deadline"


@pytest.mark.parametrize("name", ["hb\n", "alice\n"])
def test_a_trailing_newline_is_not_part_of_a_dns_name(name: str) -> None:
    """The DNS-1123 regexes end in "$", which also matches before a final newline, and are
    applied with ``re.match``: "alice\\n" passes as a name, an instanceRef, a namespace,
    in the core, the CLI's checks, the SQLite store and the router."""
    assert not is_dns1123_label(name)
    assert not is_dns1123_subdomain(name)
    obj = missed_ticks(instanceRef=name)
    obj["metadata"]["name"] = name
    decision = reconcile(ScheduleView.of(obj), [], INSTANCE, None, datetime(2026, 3, 2, 10, tzinfo=UTC))
    assert decision.outcome is Outcome.ERROR
    assert decision.status["conditions"][0]["message"].startswith(("spec.instanceRef: ", "metadata.name: "))


@pytest.mark.parametrize("expression", [
    pytest.param("@every \u0663s", id="arabic-indic-3"),
    pytest.param("@every \uff11m", id="fullwidth-1"),
    pytest.param("@every 1\u0660m", id="arabic-indic-0"),
])
def test_every_takes_ascii_digits_only(expression: str) -> None:
    """``\\d`` in the duration pattern matches any Unicode digit and ``int()`` reads them,
    so "@every ٣s" fired every 3 s, while a cron field with the same digit ("٣ * * * *")
    is an error and Go's ParseDuration (the format's origin) refuses it. Minor: it makes
    a spec only this parser understands."""
    with pytest.raises(SpecError) as caught:
        compile_schedule(expression, anchor=datetime(2026, 3, 2, tzinfo=UTC))
    assert caught.value.field == "spec.schedule"
    assert caught.value.reason == "InvalidSchedule"
