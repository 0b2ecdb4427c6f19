"""Decisions for schedules written for Sympozium's own CRD, over a simulated fortnight.

``simulate`` drives :func:`reconcile` through a fixed script (runs that succeed, fail,
hang; a suspend and a resume; an edit of the task; a missed stretch) for every
Sympozium sample schedule under each of Sympozium's concurrency policies, and records
every decision. ``tests/core/data/sympozium_decisions.json`` holds what the scheduler
decided *before* the richer-schedules fields were added (each decision as its time,
outcome, tick, wake-up and a digest of all of it: status, run, deletions, events);
test_richer.py replays the script and asserts the decisions are the same.

Record (only when the earlier behaviour is meant to change, and say why in the commit):
    python -m tests.core.sympozium_compat > tests/core/data/sympozium_decisions.json
It uses only what both versions have: ScheduleView, RunView and reconcile.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sympozium_schedule.core.decide import reconcile
from sympozium_schedule.core.model import RunView, ScheduleView, format_time
from tests.core.helpers import SCHEDULE_UID, instance, load_sample, utc

DATA = Path(__file__).parent / "data" / "sympozium_decisions.json"
SAMPLES = ("sympoziumschedule_sample.yaml", "sympoziumschedule-example.yaml")
POLICIES = ("Forbid", "Allow", "Replace")
START = utc(2026, 3, 2, 9, 17, 3)  # a Monday, between ticks
DAYS = 14


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for filename in SAMPLES:
        sample = load_sample(filename)
        for policy in POLICIES:
            obj = copy.deepcopy(sample)
            obj["spec"]["concurrencyPolicy"] = policy
            cases.append((f"{filename}:{policy}", obj))
    return cases


def _finish(k: int) -> tuple[timedelta, str]:
    """How the k-th run ends: most succeed in minutes, some fail, some hang for hours."""
    if k % 7 == 3:
        return timedelta(hours=2, minutes=10), "Succeeded"
    if k % 5 == 4:
        return timedelta(minutes=3), "Failed"
    return timedelta(minutes=4), "Succeeded"


def simulate(obj: dict[str, Any]) -> list[list[str | None]]:
    """Every decision of one schedule over the script, as JSON-able records."""
    obj = copy.deepcopy(obj)
    obj["metadata"].update(namespace="default", uid=SCHEDULE_UID, generation=1,
                           creationTimestamp=format_time(START), resourceVersion="1")
    obj["status"] = {}
    inst = instance(obj["spec"]["instanceRef"])
    runs: dict[str, dict[str, Any]] = {}
    ends: dict[str, tuple[datetime, str]] = {}
    records: list[list[str | None]] = []
    now = START
    end = START + timedelta(days=DAYS)
    created = 0
    suspended = edited = False
    while now < end:
        for name, (when, phase) in list(ends.items()):
            if when <= now and name in runs:
                runs[name]["status"] = {"phase": phase}
                del ends[name]
        day = (now - START).days
        if day == 3 and not suspended:
            obj["spec"]["suspend"] = suspended = True
            obj["metadata"]["generation"] += 1
        elif day == 5 and obj["spec"].get("suspend"):
            obj["spec"]["suspend"] = False
            obj["metadata"]["generation"] += 1
        elif day == 8 and not edited:
            obj["spec"]["task"] += " (edited)"
            obj["metadata"]["generation"] += 1
            edited = True
        view = ScheduleView.of(obj)
        decision = reconcile(view, [RunView.of(r) for r in runs.values()], inst, None, now)
        whole = {
            "create": decision.create, "delete": list(decision.delete), "status": decision.status,
            "notes": [[n.type, n.reason, n.message] for n in decision.notes],
        }
        digest = hashlib.sha256(json.dumps(whole, sort_keys=True).encode()).hexdigest()[:16]
        records.append([
            format_time(now), str(decision.outcome.value),
            format_time(decision.tick) if decision.tick else None,
            format_time(decision.wake_at) if decision.wake_at else None,
            digest,
        ])
        obj["status"] = copy.deepcopy(decision.status)
        for name in decision.delete:
            runs.pop(name, None)
            ends.pop(name, None)
        if decision.create is not None:
            run = copy.deepcopy(decision.create)
            runs[run["metadata"]["name"]] = run
            took, phase = _finish(created)
            ends[run["metadata"]["name"]] = (now + took, phase)
            created += 1
        wake = decision.wake_at or end
        upcoming = [w for w, _ in ends.values()] + [wake]
        step = min(upcoming)
        if (now - START).days in (10,) and step.hour == 3:
            step += timedelta(hours=5)  # the scheduler was down for a while: a missed stretch
        now = max(step, now + timedelta(seconds=1))
    return records


def record() -> dict[str, list[list[str | None]]]:
    return {name: simulate(obj) for name, obj in _cases()}


if __name__ == "__main__":
    sys.stdout.write("{\n" + ",\n".join(
        f"{json.dumps(name)}: [\n" + ",\n".join(json.dumps(r) for r in records) + "\n]"
        for name, records in sorted(record().items())) + "\n}\n")
