"""Which stored runs belong to a schedule, and which of its finished ones go.

Apart from :mod:`~sympozium_schedule.core.decide` because a manual trigger
(:mod:`~sympozium_schedule.core.manual`) counts the same runs as the tick stream:
a run of an older schedule of the same name must block neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sympozium_schedule.core.model import RunView, ScheduleSpec, ScheduleView

__all__ = ["history_to_prune", "owned_runs"]


def _order(run: RunView) -> datetime:
    return run.order_key


def owned_runs(schedule: ScheduleView, runs: Sequence[RunView]) -> list[RunView]:
    """Runs of this schedule incarnation: a run owned by an older schedule of
    the same name (deleted and re-created) is not ours to count or prune."""
    uid = schedule.meta.uid
    return [r for r in runs if not r.owner_uids or not uid or uid in r.owner_uids]


def history_to_prune(spec: ScheduleSpec, runs: Sequence[RunView]) -> list[str]:
    """Names of the finished runs beyond the history limits (the oldest of each kind)."""
    if not runs:
        return []
    finished = sorted((r for r in runs if r.finished), key=_order, reverse=True)
    ok = [r.name for r in finished if r.succeeded]
    failed = [r.name for r in finished if not r.succeeded]
    doomed = ok[spec.successful_runs_history_limit:] + failed[spec.failed_runs_history_limit:]
    return sorted(doomed)
