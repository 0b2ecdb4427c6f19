"""A schedule, its runs and its instance on virtual time, changed the way the runtime
changes them: each decision's status written, its run created, its deletions done."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sympozium_schedule.core.decide import Decision, Outcome, reconcile
from sympozium_schedule.core.manual import trigger
from sympozium_schedule.core.model import RunView, ScheduleView
from tests.core.helpers import (
    NAMESPACE,
    agent_run,
    instance,
    schedule,
    schedule_status_errors,
    utc,
)

T0 = utc(2026, 3, 2, 10)  # a Monday
H = timedelta(hours=1)
REMOVE = object()  # a spec value meaning "leave the key out"


@dataclass
class World:
    obj: dict[str, Any]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    instance: dict[str, Any] | None = field(default_factory=instance)
    memory: str | None = None

    def __post_init__(self) -> None:
        self.obj.setdefault("status", {})

    @classmethod
    def new(cls, *, created: datetime = T0, **spec: Any) -> World:
        return cls(schedule(created=created, **spec))

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.obj["status"]
        return status

    def view(self) -> ScheduleView:
        return ScheduleView.of(self.obj)

    def run_views(self) -> list[RunView]:
        return [RunView.of(r) for r in self.runs.values()]

    def decide(self, now: datetime) -> Decision:
        decision = reconcile(self.view(), self.run_views(), self.instance, self.memory, now)
        if decision.status != self.status:  # (validating what is already stored is wasted time)
            assert schedule_status_errors(decision.status) == []
        return decision

    def apply(self, decision: Decision) -> None:
        self.obj["status"] = copy.deepcopy(decision.status)
        for name in decision.delete:
            self.runs.pop(name, None)
        if decision.create is not None:
            self.runs[decision.create["metadata"]["name"]] = copy.deepcopy(decision.create)

    def step(self, now: datetime) -> Decision:
        decision = self.decide(now)
        self.apply(decision)
        return decision

    def trigger(self, now: datetime) -> Decision:
        decision = trigger(self.view(), self.run_views(), self.instance, self.memory, now)
        self.apply(decision)
        return decision

    def edit(self, **spec: Any) -> None:
        for key, value in spec.items():
            if value is REMOVE:
                self.obj["spec"].pop(key, None)
            else:
                self.obj["spec"][key] = value
        self.obj["metadata"]["generation"] += 1

    def set_phase(self, name: str, phase: str) -> None:
        self.runs[name]["status"] = {"phase": phase}

    def add_run(self, name: str, *, phase: str | None, tick: datetime, **kw: Any) -> None:
        self.runs[name] = agent_run(name, phase=phase, tick=tick, **kw)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def ref(name: str) -> dict[str, str]:
    return {"apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun", "name": name,
            "namespace": NAMESPACE}


def fired(world: World, tick: datetime) -> None:
    """``world`` fired ``tick`` and the run finished."""
    d = world.step(tick)
    assert (d.outcome, d.tick) == (Outcome.FIRED, tick)
    assert d.create is not None
    world.set_phase(d.create["metadata"]["name"], "Succeeded")


