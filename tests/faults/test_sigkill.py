"""SIGKILL of a real ``sympozium-schedule run`` at random moments, fifty times, restarting at once.

Thirty ``@every 1s`` schedules (concurrencyPolicy Allow, so every tick fires) keep a
stream of fires going. Each cycle starts a ``run`` (warm, see conftest: the next one
imports while this one runs, so the restart is immediate), waits for it to be ready,
lets it fire for a random 0.2-2 s (seeded) and SIGKILLs it. Half of the kill moments
are pulled into the first 80 ms after a tick, when that tick's writes are in flight:
the window a crash can leave half-done, which uniform delays land in rarely. The
fifty cycles take about a minute.

Afterwards, from the runs' ``sympozium.ai/scheduled-time`` annotations:

* every tick has at most one run;
* every tick while a process was up (from its readiness to shortly before its
  kill) has its run;
* across each restart, the most recent tick missed while down was caught up, and
  no older missed tick was replayed (at most one catch-up);
* every run was created by a live process, never for a tick still in the future;
* every run is counted in its schedule's status (``totalRuns``, ``lastRunName``).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sympozium_schedule.core.model import Kind
from tests.faults.conftest import (
    KEEP_ALL,
    SECOND,
    RunProcess,
    Runs,
    created,
    floor_tick,
    instance_obj,
    now,
    objects,
    rows,
    schedule_obj,
    schedule_of,
    seed,
    tick_of,
)

pytestmark = pytest.mark.e2e

SEED = 20260302
CYCLES = 50
SCHEDULES = [f"tick-{n:02d}" for n in range(30)]
# A tick this close to a kill may legitimately be unfired when the kill lands (its
# fire still in flight on a loaded machine); the next process then catches it up as
# the most recent missed tick, which is checked separately.
GRACE = timedelta(seconds=1)
MID_FIRE = timedelta(milliseconds=80)


@dataclass(frozen=True)
class Life:
    """One `run` process: told to go, seen ready (first pass done), killed or stopped."""

    go: datetime
    ready: datetime
    end: datetime


def kill_moment(rng: random.Random, ready: datetime) -> datetime:
    target = ready + timedelta(seconds=rng.uniform(0.2, 2.0))
    if rng.random() < 0.5:  # into the writes of the tick at or before it
        tick = floor_tick(target)
        if tick < ready + timedelta(seconds=0.2):
            tick += SECOND
        target = tick + timedelta(seconds=rng.uniform(0, MID_FIRE.total_seconds()))
    return target


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - now()).total_seconds()))


def one_life(process: RunProcess, rng: random.Random | None) -> Life:
    """Run ``process`` until a random kill moment (or, without ``rng``, stop it cleanly
    after two more ticks)."""
    go = process.started or process.go()
    ready = process.wait_ready()
    if rng is None:
        sleep_until(ready + 2 * SECOND)
        assert process.terminate() == 0, process.tail()
        assert process.ended is not None
        return Life(go, ready, process.ended)
    sleep_until(kill_moment(rng, ready))
    assert process.alive(), process.tail()
    return Life(go, ready, process.kill())


def ticks_between(start: datetime, end: datetime) -> list[datetime]:
    """The whole-second ticks in [start, end]."""
    first = floor_tick(start) + (SECOND if start != floor_tick(start) else timedelta(0))
    return [first + k * SECOND for k in range(int((end - first) / SECOND) + 1)] if first <= end else []


def made_by(life: Life, all_runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(tick, creation) of every run a process created: what a failure needs to be read."""
    return sorted((tick_of(r).strftime("%H:%M:%S"), created(r).strftime("%H:%M:%S.%f")[:-3])
                  for r in all_runs if life.go <= created(r) <= life.end)


def test_fifty_sigkills_neither_duplicate_nor_lose_a_tick(data_dir: Path, runs: Runs) -> None:
    seed(data_dir, instance_obj(), *(schedule_obj(name, "@every 1s", **KEEP_ALL) for name in SCHEDULES))
    rng = random.Random(SEED)
    lives: list[Life] = []
    processes: list[RunProcess] = []
    upcoming = runs.warm()
    for _ in range(CYCLES):
        current = upcoming
        current.go()
        upcoming = runs.warm()  # imports while this one runs: the restart is immediate
        lives.append(one_life(current, rng))
        processes.append(current)
    upcoming.go()
    lives.append(one_life(upcoming, None))
    processes.append(upcoming)

    # Nothing half-written: every object parses.
    for kind, name, body, status in rows(data_dir):
        for text in (body, status):
            assert text is None or isinstance(json.loads(text), dict), (kind, name)

    all_runs = objects(data_dir, Kind.AGENT_RUN)
    assert {schedule_of(r) for r in all_runs} == set(SCHEDULES)
    for run in all_runs:
        made = created(run)
        owner = [life for life in lives if life.go <= made <= life.end]
        assert owner, f"{run['metadata']['name']} was created at {made}, while no process ran"
        (life,) = owner
        tick = tick_of(run)
        assert tick <= made, f"{run['metadata']['name']} is for a tick still in the future"
        assert tick >= floor_tick(life.go), (
            f"{run['metadata']['name']}: a process that started at {life.go} replayed the "
            f"older tick {tick} (only the most recent missed tick is caught up)")

    statuses = {s["metadata"]["name"]: s.get("status") or {} for s in objects(data_dir, Kind.SCHEDULE)}
    for name in SCHEDULES:
        mine = sorted((r for r in all_runs if schedule_of(r) == name), key=tick_of)
        # Every run is counted: a fire's run and status are one write group, and a run
        # whose status a crash cut off is recorded by the next process.
        assert statuses[name].get("totalRuns") == len(mine), (name, statuses[name], len(mine))
        assert statuses[name].get("lastRunName") == mine[-1]["metadata"]["name"], name
        counts = Counter(tick_of(r) for r in all_runs if schedule_of(r) == name)
        doubled = sorted(t.isoformat() for t, n in counts.items() if n > 1)
        assert not doubled, f"{name}: ticks with two runs: {doubled}"
        ticks = set(counts)
        for n, life in enumerate(lives):
            lost = [t.isoformat() for t in ticks_between(life.ready, life.end - GRACE) if t not in ticks]
            assert not lost, (
                f"{name}: process {n} was up ({life.ready} .. {life.end}) but lost {lost}; "
                f"its runs of {name}: {made_by(life, mine)}; its log:\n{processes[n].tail(6000)}")
            if n == 0:
                continue
            # The most recent tick at the restart (missed or not) has its run: at least
            # one run in [latest tick at go, readiness].
            assert any(floor_tick(life.go) <= t <= life.ready for t in ticks), (
                f"{name}: process {n} (go {life.go}, ready {life.ready}) did not catch up "
                f"the most recent missed tick; ticks around: "
                f"{sorted(t.isoformat() for t in ticks if abs(t - life.go) < 3 * SECOND)}")
