"""Deterministic names: the same tick always yields the same AgentRun name.

That is what makes a fire idempotent across restarts and across two
controllers: creating a name that is already taken counts as done.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

MAX_NAME = 63  # a DNS-1123 label, so the name also fits a label value


def _digest(text: str, size: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def run_name(schedule: str, tick: datetime, *, manual: bool = False) -> str:
    """``<schedule>-<unix seconds of the tick>`` (``-m<seconds>`` for a manual trigger).

    Dots are not allowed in a DNS-1123 label; when the schedule name has any,
    or is too long to fit, a short hash of the full name keeps it unique.
    """
    suffix = ("m" if manual else "") + str(int(tick.timestamp()))
    base = schedule.replace(".", "-")
    if base != schedule or len(base) + 1 + len(suffix) > MAX_NAME:
        keep = MAX_NAME - len(suffix) - 1 - 8 - 1
        base = base[:keep].rstrip("-") + "-" + _digest(schedule)
    return f"{base}-{suffix}"


def agent_schedule_name(instance: str, name: str) -> str:
    """The stored name of a schedule an agent asked for: ``<instance>-<name>``."""
    return f"{instance}-{name}"
