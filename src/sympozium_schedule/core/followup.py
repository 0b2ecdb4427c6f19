"""What to do once a decision's writes came back: the controller's one follow-up rule.

The runtime executes a :class:`~sympozium_schedule.core.decide.Decision` as
steps (delete runs, create the run, suspend the spec, write the status), sends
them to the store as one group, and hands what each step came to
(:class:`Written`) to :func:`follow_up`. It answers with one
:class:`FollowUp`: done; go on with the remaining steps; execute another
decision instead (a tick whose run the store refused for good is reported and
consumed); read the schedule again; retry later; or report a permanent
refusal. Every case goes through this one function, so the runtime has one
executor and no second path for errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from sympozium_schedule.core.decide import Decision, Note
from sympozium_schedule.core.manual import tick_failed
from sympozium_schedule.core.model import ScheduleView


class Step(StrEnum):
    """The steps of a decision, in the order they are written."""

    DELETE = "delete"  # one per run to delete
    CREATE = "create"
    SUSPEND = "suspend"  # pauseOnFailure: the spec, before the status
    STATUS = "status"


class Result(StrEnum):
    """What one write came to, as the core needs to know it."""

    DONE = "done"
    TAKEN = "taken"  # the name exists already (see Written.ours)
    REFUSED = "refused"  # for good: invalid, or forbidden (see Written.forbidden)
    CONFLICT = "conflict"  # the schedule changed since it was read
    GONE = "gone"  # the schedule is gone
    UNAVAILABLE = "unavailable"  # the store cannot take it now: try again later


@dataclass(frozen=True, slots=True)
class Written:
    result: Result
    message: str = ""
    forbidden: bool = False  # REFUSED: the caller may not (403), rather than invalid (422)
    ours: bool = False  # TAKEN: the object that has the name belongs to this schedule
    holder: str = ""  # TAKEN and not ours: who owns it ("" when nobody does)


class Action(StrEnum):
    DONE = "done"  # every step done: account for the decision, arm its wake-up
    CONTINUE = "continue"  # the steps from ``done`` on are still to be written
    INSTEAD = "instead"  # execute ``decision`` instead (its steps from ``done`` on)
    REREAD = "reread"  # read the schedule again and decide again
    FORGET = "forget"  # the schedule is gone
    RETRY = "retry"  # try again after a back-off
    REFUSED = "refused"  # report ``note`` once; try again only at the longest back-off


@dataclass(frozen=True, slots=True)
class FollowUp:
    action: Action
    decision: Decision
    # Steps of ``decision`` done (a prefix needing no second write); for INSTEAD, none
    # of the new decision's (what the old one did before it failed is not repeated).
    done: int = 0
    note: Note | None = None
    message: str = ""


def steps_of(decision: Decision, *, status: bool) -> list[Step]:
    """The steps of ``decision``; ``status`` says whether its status differs from the stored one."""
    steps = [Step.DELETE] * len(decision.delete)
    if decision.create is not None:
        steps.append(Step.CREATE)
    if decision.suspend is not None:
        steps.append(Step.SUSPEND)
    if status:
        steps.append(Step.STATUS)
    return steps


def once(schedule: ScheduleView, decision: Decision) -> Decision:
    """Drop a Warning the schedule's conditions already show (same type and reason):
    a cause that persists is said once, not at every tick."""
    shown = {(c.type, c.reason) for c in schedule.status.conditions if c.status == "True"}
    notes = tuple(n for n in decision.notes
                  if not (n.type == "Warning" and ("TickSkipped", n.reason) in shown))
    return replace(decision, notes=notes)


def follow_up(schedule: ScheduleView, decision: Decision, steps: Sequence[Step],
              written: Sequence[Written], now: datetime) -> FollowUp:
    """The follow-up of ``decision`` whose ``steps`` came to ``written`` (a prefix of
    the steps: the store stops a group at its first failure)."""
    done = 0
    for step, outcome in zip(steps, written, strict=False):
        if outcome.result is Result.DONE:
            done += 1
            continue
        if step is Step.CREATE:
            assert decision.create is not None
            name = decision.create["metadata"]["name"]
            if outcome.result is Result.TAKEN and outcome.ours:
                # A fire cut short earlier (its status never written): the run counts.
                return FollowUp(Action.CONTINUE, decision, done + 1)
            if outcome.result is Result.TAKEN:
                failed = tick_failed(schedule, decision, "RunNameTaken",
                                     f"an AgentRun named {name} already exists and belongs to "
                                     f"{outcome.holder or 'no schedule'}; delete or rename it", now)
                return FollowUp(Action.INSTEAD, failed)
            if outcome.result is Result.REFUSED:
                reason = "RunForbidden" if outcome.forbidden else "RunRejected"
                failed = tick_failed(schedule, decision, reason,
                                     f"the store refused the run: {outcome.message}", now)
                return FollowUp(Action.INSTEAD, once(schedule, failed))
        if outcome.result is Result.CONFLICT:
            return FollowUp(Action.REREAD, decision, done, message=outcome.message)
        if outcome.result is Result.GONE and step is not Step.DELETE:
            return FollowUp(Action.FORGET, decision, done, message=outcome.message)
        if outcome.result is Result.REFUSED:
            return FollowUp(Action.REFUSED, decision, done, message=outcome.message,
                            note=Note("Warning", "StoreRefused", outcome.message))
        if outcome.result is Result.GONE:  # a run to delete was gone already: done
            done += 1
            continue
        return FollowUp(Action.RETRY, decision, done, message=outcome.message)
    if done < len(steps):
        return FollowUp(Action.CONTINUE, decision, done)
    return FollowUp(Action.DONE, decision, done)


__all__ = ["Action", "FollowUp", "Result", "Step", "Written", "follow_up", "once",
           "steps_of"]
