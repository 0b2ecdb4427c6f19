"""Asking for a backfill: the ``sympozium.ai/backfill`` annotation written on a schedule,
the one way the CLI's ``backfill`` and the API's ``POST .../backfill`` both ask.

The controller adopts the annotation (``core.backfill``); asking is only checking the
request the way the controller will and writing it, retried on a conflicting edit.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime

from sympozium_schedule.core import backfill as rules
from sympozium_schedule.core.model import ANNOTATION_BACKFILL, Kind
from sympozium_schedule.ports.store import Conflict, Ref, Store

ATTEMPTS = 10


class Refused(ValueError):
    """A request the controller would refuse: said to its author, nothing written."""


class KeptChanging(RuntimeError):
    """Every attempt met a newer version of the schedule."""


def check(start: object, end: object, overlap: object, *, now: datetime) -> tuple[str, rules.Request]:
    """The annotation's text and the request it holds, or :class:`Refused` saying why."""
    text = json.dumps({"from": start, "to": end, "overlap": overlap, "id": secrets.token_hex(8)})
    try:
        request = rules.parse_request(text)
    except rules.BadRequest as exc:
        raise Refused(str(exc)) from exc
    if request.start > now:
        raise Refused("backfill: from is in the future: a backfill runs past ticks")
    return text, request


async def ask(store: Store, namespace: str, name: str, text: str) -> None:
    """Write the annotation on the schedule (:class:`~ports.store.NotFound` if it is
    gone); a request already there is replaced, as ``kubectl annotate --overwrite``."""
    ref = Ref(Kind.SCHEDULE, namespace, name)
    for _ in range(ATTEMPTS):
        obj = await store.get(ref)
        meta = obj.setdefault("metadata", {})
        meta["annotations"] = dict(meta.get("annotations") or {}) | {ANNOTATION_BACKFILL: text}
        try:
            await store.update(obj)
            return
        except Conflict:
            continue
    raise KeptChanging(f"schedule {namespace}/{name} kept changing; try again")
