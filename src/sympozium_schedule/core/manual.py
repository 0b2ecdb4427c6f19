"""Runs outside the tick stream, and ticks whose run could not be created.

:func:`trigger` starts a run now at a person's request; :func:`tick_failed` turns
a fire whose run the store refused for good into a skipped tick that says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sympozium_schedule.core.decide import Decision, Outcome
from sympozium_schedule.core.fire_times import floor_second
from sympozium_schedule.core.history import owned_runs
from sympozium_schedule.core.model import (
    BUFFERING_POLICIES,
    RunView,
    ScheduleStatus,
    ScheduleView,
    format_time,
)
from sympozium_schedule.core.policy import plan_tick
from sympozium_schedule.core.runs import RunTemplate, build_agent_run
from sympozium_schedule.core.status import TICK_SKIPPED, Note, StatusBuilder, run_ref


class TriggerRefused(Exception):
    """A manual trigger that the schedule's state or policy does not allow."""


def trigger(
    schedule: ScheduleView,
    runs: Sequence[RunView],
    instance: Mapping[str, Any] | RunTemplate | None,
    memory: str | None,
    now: datetime,
) -> Decision:
    """A manual run now, outside the cron; the concurrency policy still applies
    (a buffering policy refuses: a manual run is never buffered).

    The cursor is untouched: a manual run neither consumes nor replays a tick,
    and it does not count towards maxRuns.
    """
    spec = schedule.spec
    if spec is None:
        raise TriggerRefused(f"the schedule is invalid: {schedule.spec_error}")
    if instance is None:
        raise TriggerRefused(
            f"SympoziumInstance {spec.instance_ref!r} not found in namespace "
            f"{schedule.meta.namespace!r}")
    template = RunTemplate.of(instance)
    if template.model is None:
        raise TriggerRefused(
            f"SympoziumInstance {spec.instance_ref!r} has no spec.agents.default.model")
    b = StatusBuilder(schedule, now)
    active = sorted((r for r in owned_runs(schedule, runs) if not r.finished),
                    key=lambda r: r.order_key)
    tick = floor_second(now)
    unbounded = spec.model_copy(update={"starting_deadline_seconds": None})
    plan = plan_tick(unbounded, None, active, tick, tick, now, busy=bool(active), buffered=0)
    if plan.action == "buffer":
        raise TriggerRefused(f"AgentRun {active[-1].name} is still {active[-1].phase or 'Pending'} "
                             f"and concurrencyPolicy {spec.concurrency_policy} does not buffer "
                             "manual runs; trigger again when it has finished")
    if plan.action == "skip":
        raise TriggerRefused(plan.message.replace(f"skipped the {format_time(tick)} tick: ", ""))
    assert spec.concurrency_policy not in BUFFERING_POLICIES or not active
    run = build_agent_run(schedule, spec, template, memory, tick, manual=True)
    name = run["metadata"]["name"]
    b.last_run_time = tick
    b.last_run_name = name
    b.total_runs += 1
    b.notes.append(Note("Normal", "RunTriggered", f"created AgentRun {name} (manual trigger)"))
    if plan.delete:
        b.notes.append(Note("Normal", "RunReplaced", plan.message))
    namespace = schedule.meta.namespace
    refs = [run_ref(namespace, r.name) for r in active if r.name not in plan.delete]
    refs.append(run_ref(namespace, name))
    status = b.build(refs)
    # A manual run says nothing about whether the controller has seen the latest
    # spec; advancing observedGeneration here would hide an edit from it.
    if schedule.status.observed_generation is None:
        status.pop("observedGeneration", None)
    else:
        status["observedGeneration"] = schedule.status.observed_generation
    return Decision(status, run, tick, plan.delete, tuple(b.notes), None, Outcome.FIRED,
                    planned=tick)


def tick_failed(schedule: ScheduleView, decision: Decision, reason: str, message: str,
                now: datetime) -> Decision:
    """The tick's run could not be created for a reason retrying will not fix.

    ``RunNameTaken``: the name belongs to an object this schedule does not own;
    creating under another name would break the one-run-per-tick guarantee.
    ``RunRejected``: the store refused the run (too large, invalid, forbidden).
    Either way the tick is consumed and the schedule says why, instead of
    retrying forever; it counts as no run (not towards maxRuns either).
    """
    if decision.tick is None or decision.create is None:
        raise ValueError("tick_failed needs a decision that creates a run")
    stored = schedule.status
    planned = replace(schedule, status=ScheduleStatus.from_dict(decision.status))
    b = StatusBuilder(planned, now)
    b.last_run_time = stored.last_run_time
    b.last_run_name = stored.last_run_name
    b.total_runs = stored.total_runs
    if b.scheduled_runs is not None:
        b.scheduled_runs = stored.scheduled_runs or 0
    name = decision.create["metadata"]["name"]
    text = f"skipped the {format_time(decision.tick)} tick: {message}"
    b.condition(TICK_SKIPPED, "True", reason, text)
    notes = (Note("Warning", reason, text),)
    active = [a for a in decision.status.get("active", []) if a.get("name") != name]
    return Decision(b.build(active), None, decision.tick, (), notes,
                    decision.wake_at, Outcome.SKIPPED, None)
