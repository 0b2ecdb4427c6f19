"""Seeded corpora of inputs for the fuzz properties: schedule expressions, durations,
time zones and odd text, valid and invalid, built once at import from a fixed seed.

Why corpora: on a loaded CI machine every hypothesis draw costs tens of microseconds,
and a cron expression built draw by draw costs milliseconds. A property that draws
whole expressions from a corpus of thousands (one draw) runs thousands of cases in
seconds, and hypothesis still combines them with every other field, instant and
state. The grammars here are plain functions of a ``random.Random``, so the same
seed gives the same corpus on every machine.
"""

from __future__ import annotations

import random
from zoneinfo import available_timezones

SEED = 20260302

# --- text ------------------------------------------------------------------------------------

# What a human or a model might type, and what only a fuzzer types: control characters,
# lone surrogates (JSON can carry them as \ud800), bidi marks, combining marks, fullwidth
# and non-ASCII digits, emoji, path and cron punctuation.
ODD = ["\x00", "\x07", "\t", "\n", "\r", "\x7f", "\u00a0", "\u2003", "\u200b", "\u200f", "\u202e",
       "\ufeff", "\ud800", "\udfff", "\u0301", "\uff15", "\u0663", "\u00e9", "\u0130", "\u212a",
       "\U0001f600", "\U0010ffff", "/", "..", "*", "?", "#", "@", "-", ",", " ", "'", '"', "\\",
       "{", "}", "[", "]", ":", "&", "!", "|", ">", "%", "0", "9", "a", "Z", "é", "ß"]


def odd_text(rng: random.Random, max_parts: int = 12) -> str:
    parts = []
    for _ in range(rng.randint(0, max_parts)):
        roll = rng.random()
        if roll < 0.5:
            parts.append(rng.choice(ODD))
        elif roll < 0.8:
            parts.append("".join(rng.choice("abcxyz019-_.") for _ in range(rng.randint(1, 6))))
        else:
            parts.append(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0xd7ff),
                                         rng.randint(0xe000, 0x10ffff)])))
    return "".join(parts)


# --- cron ------------------------------------------------------------------------------------

BOUNDS = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 28), "month": (1, 12), "dow": (0, 6)}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MACROS = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]


def _show(rng: random.Random, field: str, n: int) -> str:
    names = MONTHS if field == "month" else DAYS if field == "dow" else None
    if names is not None and rng.random() < 0.4:
        name = names[n - BOUNDS[field][0]]
        return name.upper() if rng.random() < 0.5 else name
    return str(n)


def cron_item(rng: random.Random, field: str) -> str:
    """One valid list item: *, */s, n, a-b or a-b/s (month and day names too)."""
    lo, hi = BOUNDS[field]
    kind = rng.choice(["*", "step", "value", "range", "range-step"])
    if kind == "*":
        return "*"
    if kind == "step":
        return f"*/{rng.randint(1, hi)}"
    a = rng.randint(lo, hi)
    if kind == "value":
        return _show(rng, field, a)
    b = rng.randint(a, hi)
    text = f"{_show(rng, field, a)}-{_show(rng, field, b)}"
    return text + (f"/{rng.randint(1, hi)}" if kind == "range-step" else "")


def cron_fields(rng: random.Random) -> list[str]:
    return [",".join(cron_item(rng, f) for _ in range(rng.choice([1, 1, 1, 2, 3]))) for f in BOUNDS]


def valid_cron(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        macro = rng.choice(MACROS)
        return macro.upper() if rng.random() < 0.3 else macro
    if roll < 0.3:
        return f"@every {valid_duration(rng)}"
    sep = rng.choice([" ", " ", "  ", "\t"])
    pad = rng.choice(["", "", " ", "\n"])
    return pad + sep.join(cron_fields(rng)) + pad


OUT_OF_RANGE = {"minute": [60, 61, 99, 999], "hour": [24, 25, 99], "dom": [0, 32, 99],
                "month": [0, 13, 99], "dow": [8, 9, 99]}
BAD_TOKENS = ["x", "?", "1,,2", "*/0", "-5", "5-", "+5", "1-", "*/", "5/", "\u0663", "\uff15", "MON-SUN",
              "monday", "15W", "1.5", "0x1", "*-*", "**", "1--2", "1-2-3", "%", "L-1", "/5"]
BAD_MACROS = ["@every", "@every5m", "@sometimes", "@", "@ hourly", "@daily daily", "@hourly *",
              "@every 5m 5m", "@every -5m"]


def invalid_cron(rng: random.Random) -> str:
    """A valid five-field expression with one change that certainly breaks it."""
    fields = cron_fields(rng)
    at = rng.randrange(5)
    name = list(BOUNDS)[at]
    how = rng.choice(["range", "token", "count", "never", "macro", "reversed", "duration"])
    if how == "range":
        fields[at] = str(rng.choice(OUT_OF_RANGE[name]))
    elif how == "token":
        fields[at] = rng.choice(BAD_TOKENS)
    elif how == "count":
        fields = fields[:rng.randint(1, 4)] if rng.random() < 0.5 else [*fields, "*"][:rng.randint(6, 7)]
        if len(fields) == 6 and rng.random() < 0.5:
            fields.append("*")
    elif how == "never":  # only day-of-month and month restricted: February has no 30th
        fields[2:5] = [rng.choice(["30", "31"]), "2", "*"]
    elif how == "macro":
        return rng.choice(BAD_MACROS)
    elif how == "duration":
        return f"@every {invalid_duration(rng)}"
    else:
        lo, hi = BOUNDS[name]
        fields[at] = f"{hi}-{lo}"
    return " ".join(fields)


# --- durations -------------------------------------------------------------------------------

MAX_SECONDS = 366 * 86400


def valid_duration(rng: random.Random) -> str:
    seconds = rng.choice([1, 59, 60, 3600, MAX_SECONDS, rng.randint(1, 3600), rng.randint(1, MAX_SECONDS)])
    parts = [(seconds // 3600, "h"), (seconds // 60 % 60, "m"), (seconds % 60, "s")]
    text = "".join(f"{v}{u}" for v, u in parts if v)
    if rng.random() < 0.2:  # Go accepts leading zeros and zero parts
        text = rng.choice(["0", "0h", "0m"]) + text
    return text


def invalid_duration(rng: random.Random) -> str:
    return rng.choice([
        "0s", "0h0m0s", "1d", "1.5h", "-1s", "1h 30m", "1H", "s", "", "8784h1s", "9999999999999s",
        "1w", "1ms", "1us", "1\u00b5s", "\u00bds", "h1", "1hh", "1s1", f"{MAX_SECONDS + 1}s",
        f"{rng.randint(MAX_SECONDS + 1, 10**12)}s", f"{rng.randint(8785, 10**9)}h", "1 s", "one s",
    ])


# --- time zones --------------------------------------------------------------------------------

ZONES = sorted(z for z in available_timezones() if z not in ("localtime", "Factory", "posixrules"))
VALID_ZONES = ["UTC", "Etc/UTC", "Z", *ZONES]
INVALID_ZONES = ["Mars/Olympus", "Europe/W\u00e0rsaw", " UTC", "UTC ", "Europe/Warsaw\n", "../etc/passwd",
                 "/etc/localtime", "/usr/share/zoneinfo/UTC", "posix/UTC", "right/UTC", "localtime",
                 "Factory", "posixrules", "Europe", "Europe/", "zone.tab", "tzdata.zi", "UTC\x00",
                 "Europe/Warsaw/..", "\u00c9", "\U0001f600", "a" * 300, "+01:00", "GMT+25", "Europe\\Warsaw",
                 "UTC+1", "utc ", "\u200bUTC", "Europe/Warsaw\u200f"]


# --- the corpora -------------------------------------------------------------------------------

_rng = random.Random(SEED)
ODD_TEXTS = [odd_text(_rng) for _ in range(1500)]
VALID_SCHEDULES = [valid_cron(_rng) for _ in range(3000)]
INVALID_SCHEDULES = [invalid_cron(_rng) for _ in range(1500)]
UNKNOWN_ZONES = [odd_text(_rng, 4) for _ in range(300)]


# --- JSON --------------------------------------------------------------------------------------


def scalar(rng: random.Random) -> object:
    return rng.choice([
        # int64 bounds, not beyond: larger integers are refused by design (tested apart)
        None, True, False, 0, 1, -1, 2**31, 2**63 - 1, -(2**63), rng.randint(-10**6, 10**6),
        0.0, -0.0, 1.5, 1e308, -1e-308, rng.uniform(-1e6, 1e6), "", "0", "true", "null",
        rng.choice(ODD_TEXTS),
    ])


def junk(rng: random.Random, depth: int = 2) -> object:
    """Any JSON value, nested up to ``depth``."""
    roll = rng.random()
    if depth <= 0 or roll < 0.6:
        return scalar(rng)
    if roll < 0.8:
        return [junk(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(ODD_TEXTS): junk(rng, depth - 1) for _ in range(rng.randint(0, 3))}


def wrong_type(rng: random.Random, *keep: type) -> object:
    """A JSON value of any type but ``keep`` (a bool is not an int here)."""
    while True:
        value = junk(rng, 1)
        if isinstance(value, bool):
            if bool not in keep:
                return value
        elif not isinstance(value, keep):
            return value


def junk_object(rng: random.Random, depth: int = 2) -> dict[str, object]:
    """A JSON object of anything."""
    return {rng.choice(ODD_TEXTS): junk(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def storable(value: object) -> object:
    """``value`` with lone surrogates replaced: JSON can carry them (\\ud800), no UTF-8
    file or API server can, and the fuzz properties leave them to dedicated tests."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    return value
