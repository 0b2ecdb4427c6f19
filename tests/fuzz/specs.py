"""What the fuzz properties build inputs from: SympoziumSchedule specs field by field (for
each field a generator of valid values and one of values certainly invalid, and for the
schedule and the time zone text whose validity only the compiler knows), and agents'
self-scheduling requests. Generators are functions of a ``random.Random``; the values
come from the corpora in corpus.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sympozium_schedule.core.model import is_dns1123_label, is_label_value
from sympozium_schedule.core.requests import Limits
from tests.fuzz.corpus import (
    INVALID_SCHEDULES,
    INVALID_ZONES,
    ODD_TEXTS,
    SEED,
    UNKNOWN_ZONES,
    VALID_SCHEDULES,
    VALID_ZONES,
    junk,
    storable,
    wrong_type,
)

Gen = Callable[[random.Random], Any]

_names = random.Random(SEED + 1)
NAMES = [n for n in ["alice", "a", "0", "a-b", "a.b", "team.alpha", "x" * 63, "a" * 30 + "." + "b" * 32,
                     *("".join(_names.choice("abz09-.") for _ in range(_names.randint(1, 40)))
                       for _ in range(300))] if is_label_value(n)]
# Not "hb\n": a trailing newline passes the DNS-1123 checks (their regexes end in "$"), which
# test_spec_fuzz.py::test_a_trailing_newline_is_not_part_of_a_dns_name exposes on its own.
BAD_NAMES = ["a" * 64, "a" * 253, "Hb", "hb_1", "", "-hb", "hb-", "h..b", "\u00e9", "h\nb", "h b", "\nhb"]
# Bigger than the store takes (1.5 MB), wide characters, text that looks like the memory header.
HUGE = ["x" * 1_600_000, "\U0001f600" * 400_000, ("## Task\n" + "\u0663" * 1000) * 300]


def pick(*options: Any) -> Gen:
    return lambda rng: rng.choice(options)


def task(rng: random.Random) -> str:
    if rng.random() < 0.02:
        return rng.choice(HUGE)
    return rng.choice([rng.choice(ODD_TEXTS), "", " ", "\x00", "Check the cluster."])


@dataclass(frozen=True)
class Field:
    valid: Gen
    invalid: Gen
    unknown: Gen | None = None
    required: bool = False


def literal(*allowed: str) -> Field:
    near = [v for a in allowed for v in (a.upper(), a.lower(), a + " ", a[:-1]) if v not in allowed]

    def invalid(rng: random.Random) -> Any:
        roll = rng.random()
        if roll < 0.4:
            return rng.choice(near)
        if roll < 0.7:
            text = rng.choice(ODD_TEXTS)
            return text if text not in allowed else text + "?"
        return wrong_type(rng, str)

    return Field(pick(*allowed), invalid)


def either(*gens: Gen) -> Gen:
    return lambda rng: rng.choice(gens)(rng)


def ints(lo: int, hi: int) -> Gen:
    return lambda rng: rng.choice([lo, hi, rng.randint(lo, hi), rng.randint(lo, min(hi, lo + 100))])


FIELDS: dict[str, Field] = {
    "instanceRef": Field(pick(*NAMES), either(pick(*BAD_NAMES), lambda r: wrong_type(r, str)),
                         required=True),
    "schedule": Field(pick(*VALID_SCHEDULES),
                      either(pick(*INVALID_SCHEDULES), pick(""), lambda r: wrong_type(r, str)),
                      unknown=pick(*ODD_TEXTS), required=True),
    "task": Field(task, lambda r: wrong_type(r, str), required=True),
    "type": literal("heartbeat", "scheduled", "sweep"),
    "suspend": Field(pick(True, False), lambda r: wrong_type(r, bool)),
    "concurrencyPolicy": literal("Forbid", "Allow", "Replace"),
    "includeMemory": Field(pick(True, False), lambda r: wrong_type(r, bool)),
    "timeZone": Field(pick(*VALID_ZONES),
                      either(pick(*INVALID_ZONES), pick(""), lambda r: wrong_type(r, str),
                             lambda r: "Nowhere/" + r.choice(ODD_TEXTS)),
                      unknown=pick(*UNKNOWN_ZONES)),
    # Up to 10**13 s (300,000 years); beyond, see test_a_huge_starting_deadline_is_not_a_crash.
    "startingDeadlineSeconds": Field(either(pick(None), ints(1, 10**13)),
                                     either(ints(-(2**63), 0), lambda r: wrong_type(r, int, type(None)))),
    "firstTick": literal("immediate", "afterInterval"),
    "successfulRunsHistoryLimit": Field(ints(0, 2**63 - 1),
                                        either(ints(-(2**63), -1), lambda r: wrong_type(r, int))),
    "failedRunsHistoryLimit": Field(ints(0, 2**63 - 1),
                                    either(ints(-(2**63), -1), lambda r: wrong_type(r, int))),
}
UNKNOWN_KEYS = ["concurencyPolicy", "instance_ref", "time_zone", "Schedule", "schedules", "startingDeadline",
                "spec", "status", "", "Suspend", *ODD_TEXTS[:200]]


def utf8(text: str) -> bool:
    """Whether ``text`` survives a store: neither SQLite's nor the API server's holds a
    lone surrogate (a key made of one cannot even be named in a message)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- self-scheduling requests ---------------------------------------------------------------

LIMITS = Limits()
ACTIONS = ["create", "update", "suspend", "resume", "delete"]
REQUEST_KEYS = ["name", "action", "schedule", "task", "type", "timeZone", "concurrencyPolicy",
                "includeMemory"]
# Label values that are DNS-1123 labels too (request names may not have dots).
LABELS = [n for n in NAMES if is_dns1123_label(n)]
SLOW = [s for s in VALID_SCHEDULES if s.lower().startswith(("@hourly", "@daily", "@weekly"))]


def request_body(rng: random.Random) -> Any:
    """A request as an agent (or a model gone wrong) might write it (no lone surrogates:
    test_a_lone_surrogate_in_a_task_is_refused_or_stored_whole)."""
    return storable(_request_body(rng))


def _request_body(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.1:
        return junk(rng, 3)
    body: dict[str, Any] = {"name": rng.choice(LABELS[:40]), "action": rng.choice(ACTIONS)}
    if body["action"] in ("create", "update") or rng.random() < 0.2:
        body["schedule"] = rng.choice([*SLOW, *SLOW, rng.choice(VALID_SCHEDULES),
                                       rng.choice(INVALID_SCHEDULES), "@every 1m", "@every 5m",
                                       "*/5 * * * *", "0,1 9 * * *"])
        body["task"] = rng.choice(["Check the cluster.", "", rng.choice(ODD_TEXTS),
                                   "x" * (LIMITS.max_task_bytes + rng.choice([-1, 0, 1]))])
    for key in ("type", "timeZone", "concurrencyPolicy", "includeMemory"):
        if rng.random() < 0.2:
            body[key] = rng.choice({
                "type": ["heartbeat", "scheduled", "sweep", "daily"],
                "timeZone": [*VALID_ZONES[:20], *INVALID_ZONES],
                "concurrencyPolicy": ["Forbid", "Allow", "Replace", "Sometimes"],
                "includeMemory": [True, False, "yes"],
            }[key])
    if roll < 0.5:  # one field broken
        key = rng.choice([*REQUEST_KEYS, "unknownField", "instanceRef", "namespace"])
        body[key] = rng.choice([wrong_type(rng, str), rng.choice(ODD_TEXTS),
                                rng.choice(BAD_NAMES), None])
    elif roll < 0.6:
        body.pop(rng.choice(["name", "action"]))
    return body
