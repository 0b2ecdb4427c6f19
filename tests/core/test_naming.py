"""Run names come from the tick: same tick, same name; always a valid object name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sympozium_schedule.core.model import is_dns1123_label, is_label_value
from sympozium_schedule.core.naming import MAX_NAME, agent_schedule_name, run_name
from tests.core.helpers import utc

TICK = utc(2026, 3, 1, 10)  # 1772359200
LONG = "nightly-cluster-health-report-for-the-platform-team-in-eu-west1"  # 63 characters


@pytest.mark.parametrize(
    ("schedule", "tick", "manual", "expected"),
    [
        pytest.param("hb", TICK, False, "hb-1772359200", id="scheduled"),
        pytest.param("hb", TICK, True, "hb-m1772359200", id="manual"),
        pytest.param("alice-heartbeat", TICK + timedelta(hours=1), False,
                     "alice-heartbeat-1772362800", id="next-hour"),
        pytest.param("hb", datetime(2026, 3, 1, 5, tzinfo=ZoneInfo("America/New_York")), False,
                     "hb-1772359200", id="any-offset-same-instant"),
        pytest.param("a" * 52, TICK, False, "a" * 52 + "-1772359200", id="longest-kept-whole"),
    ],
)
def test_run_name_exact(schedule: str, tick: datetime, manual: bool, expected: str) -> None:
    assert run_name(schedule, tick, manual=manual) == expected
    assert run_name(schedule, tick, manual=manual) == expected  # and again: no hidden state


@pytest.mark.parametrize(
    ("schedule", "manual"),
    [
        pytest.param(LONG, False, id="63-chars"),
        pytest.param(LONG, True, id="63-chars-manual"),
        pytest.param("a" * 53, False, id="one-char-too-long"),
        pytest.param("a" * 52, True, id="one-char-too-long-manual"),
        pytest.param("team.alpha", False, id="dots"),
        pytest.param("team.alpha", True, id="dots-manual"),
        pytest.param("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.0.1.2.3.4", False,
                     id="many-dots-63-chars"),
        pytest.param("x" * 42 + "-" * 1 + "y" * 20, False, id="dash-at-the-cut"),
        pytest.param("x" * 41 + "--" + "y" * 20, False, id="dashes-at-the-cut"),
    ],
)
def test_long_or_dotted_names_become_valid_labels(schedule: str, manual: bool) -> None:
    name = run_name(schedule, TICK, manual=manual)
    assert len(name) <= MAX_NAME == 63
    assert is_dns1123_label(name), name
    assert is_label_value(name)
    assert name.endswith(("-m" if manual else "-") + "1772359200")
    assert name.startswith(schedule.replace(".", "-")[:20])


def test_dotted_name_does_not_collide_with_its_dashed_twin() -> None:
    assert run_name("team.alpha", TICK) != run_name("team-alpha", TICK)
    assert run_name("a.b-c", TICK) != run_name("a-b.c", TICK)


def test_truncated_names_sharing_a_prefix_stay_distinct() -> None:
    a, b = LONG[:-1] + "1", LONG[:-1] + "2"
    assert run_name(a, TICK) != run_name(b, TICK)


def test_agent_schedule_name() -> None:
    assert agent_schedule_name("alice", "daily-digest") == "alice-daily-digest"


# --- properties -------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"


def _labels(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(_ALPHABET, min_size=min_size, max_size=max_size).map(
        lambda s: s.strip("-")).filter(bool)


# Schedule names as the core accepts them: a DNS-1123 subdomain of at most 63 characters,
# with long dashed ones (truncated and hashed) and dotted ones (hashed) well represented.
schedule_names = st.one_of(
    _labels(1, 63),
    _labels(45, 63),
    st.lists(_labels(1, 20), min_size=2, max_size=4).map(".".join),
).filter(is_label_value)
ticks = st.integers(946_684_800, 32_503_680_000).map(  # 2000-01-01 .. 3000-01-01
    lambda s: datetime.fromtimestamp(s, tz=UTC))


@settings(max_examples=200)
@given(schedule=schedule_names, tick=ticks, manual=st.booleans())
def test_every_name_is_a_deterministic_dns1123_label(schedule: str, tick: datetime,
                                                      manual: bool) -> None:
    name = run_name(schedule, tick, manual=manual)
    assert is_dns1123_label(name), name
    assert run_name(schedule, tick, manual=manual) == name


@settings(max_examples=200)
@given(schedule=schedule_names, a=ticks, b=ticks)
def test_distinct_ticks_give_distinct_names(schedule: str, a: datetime, b: datetime) -> None:
    assume(a != b)
    assert run_name(schedule, a) != run_name(schedule, b)
    assert run_name(schedule, a, manual=True) != run_name(schedule, b, manual=True)


@settings(max_examples=200)
@given(a=schedule_names, b=schedule_names, tick=ticks)
def test_distinct_schedules_give_distinct_names(a: str, b: str, tick: datetime) -> None:
    assume(a != b)
    assert run_name(a, tick) != run_name(b, tick)


@settings(max_examples=150)
@given(a=schedule_names, b=schedule_names, ta=ticks, tb=ticks)
def test_manual_names_never_equal_scheduled_ones(a: str, b: str, ta: datetime,
                                                 tb: datetime) -> None:
    assert run_name(a, ta, manual=True) != run_name(b, tb)
