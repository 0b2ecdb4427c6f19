"""cronsim or croniter? DST behaviour first, then the cost of one next-fire query.

    python bench/cron_libraries.py

(a) Vixie cron's DST rule, which the core promises (core/cron.py): a local time
skipped by spring-forward fires once at the jump; one repeated by fall-back fires
once, the first time. Each library is asked for the fires strictly after a start
instant, keeping only candidates later than the start as the core's
CronSchedule.next_after does; ``*`` marks a library whose raw iterator returned a
time at or before the start (the core has to skip those).
(b) Microseconds to build an iterator at a start instant and take its first fire,
which is what the core does per query: median and spread (min..max) over repetitions.

Exit status 1 when cronsim fails a DST vector: the core's cron math relies on it.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import islice
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim

Fires = Callable[[str, datetime], Iterator[datetime]]


def cronsim_fires(expression: str, start: datetime) -> Iterator[datetime]:
    return iter(CronSim(expression, start))


def croniter_fires(expression: str, start: datetime) -> Iterator[datetime]:
    it = croniter(expression, start)
    while True:
        yield it.get_next(datetime)


LIBRARIES: dict[str, Fires] = {"cronsim": cronsim_fires, "croniter": croniter_fires}


@dataclass(frozen=True)
class Vector:
    name: str
    expression: str
    zone: str
    start: str  # ISO 8601 with the local offset
    expected: tuple[str, ...]  # the next fires, likewise


VECTORS = (
    Vector("NY 02:30 skipped", "30 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00",
           ("2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00")),
    Vector("NY 01:30 repeated", "30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00",
           ("2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00")),
    Vector("NY 01:30 repeated, from 2nd pass", "30 1 * * *", "America/New_York",
           "2026-11-01T01:10:00-05:00", ("2026-11-02T01:30:00-05:00",)),
    Vector("Warsaw 02:30 skipped", "30 2 * * *", "Europe/Warsaw", "2026-03-28T12:00:00+01:00",
           ("2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00")),
    Vector("Warsaw 02:30 repeated", "30 2 * * *", "Europe/Warsaw", "2026-10-24T12:00:00+02:00",
           ("2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00")),
    Vector("Warsaw 02:30 repeated, from 2nd pass", "30 2 * * *", "Europe/Warsaw",
           "2026-10-25T02:10:00+01:00", ("2026-10-26T02:30:00+01:00",)),
)


def check(fires: Fires, vector: Vector) -> tuple[bool, bool]:
    """(the fires match, the raw iterator returned a time at or before the start)."""
    start = datetime.fromisoformat(vector.start).astimezone(ZoneInfo(vector.zone))
    candidates = list(islice(fires(vector.expression, start), len(vector.expected) + 2))
    # In UTC: aware datetimes in one zone compare by wall time, blind to a repeated hour.
    after, utc = start.astimezone(UTC), [t.astimezone(UTC) for t in candidates]
    got = [t for t in utc if t > after][: len(vector.expected)]
    expected = [datetime.fromisoformat(e).astimezone(UTC) for e in vector.expected]
    return got == expected, any(t <= after for t in utc)


EXPRESSIONS = ("*/5 * * * *", "0 9 * * 1-5", "30 2 * * *", "0 0 1 * *", "15 10 * * 0")
ZONES: dict[str, tzinfo] = {"UTC": UTC, "America/New_York": ZoneInfo("America/New_York")}
CALLS, REPEATS = 200, 7


def micros_per_call(fires: Fires, expression: str, zone: tzinfo) -> list[float]:
    # Start instants spread over a year (and off the minute), so no call repeats another.
    base = datetime(2026, 1, 1, tzinfo=UTC)
    starts = [(base + timedelta(hours=43.7 * i, seconds=7)).astimezone(zone)
              for i in range(CALLS)]
    samples = []
    for _ in range(REPEATS):
        began = time.perf_counter_ns()
        for start in starts:
            next(fires(expression, start))
        samples.append((time.perf_counter_ns() - began) / CALLS / 1000)
    return samples


def main() -> int:
    print("(a) DST vectors: fires strictly after the start (* = raw iterator went backwards)")
    print(f"{'vector':<38}" + "".join(f"{name:>12}" for name in LIBRARIES))
    cronsim_ok = True
    for vector in VECTORS:
        cells = []
        for name, fires in LIBRARIES.items():
            ok, backwards = check(fires, vector)
            cells.append(("ok" if ok else "FAIL") + ("*" if backwards else " "))
            cronsim_ok &= ok or name != "cronsim"
        print(f"{vector.name:<38}" + "".join(f"{cell:>12}" for cell in cells))

    print(f"\n(b) first fire after a start, us/call: median (min..max) over {REPEATS} x {CALLS};"
          " ratio = croniter / cronsim")
    header = "".join(f"{name:>24}" for name in LIBRARIES)
    print(f"{'expression':<14}{'zone':<18}{header}{'ratio':>8}")
    for expression in EXPRESSIONS:
        for zone_name, zone in ZONES.items():
            medians, cells = [], []
            for fires in LIBRARIES.values():
                samples = micros_per_call(fires, expression, zone)
                medians.append(statistics.median(samples))
                cells.append(f"{medians[-1]:.1f} ({min(samples):.1f}..{max(samples):.1f})")
            ratio = medians[1] / medians[0]
            print(f"{expression:<14}{zone_name:<18}" + "".join(f"{c:>24}" for c in cells)
                  + f"{ratio:>7.1f}x")

    if not cronsim_ok:
        print("\ncronsim FAILED a DST vector: the core's DST promise does not hold", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
