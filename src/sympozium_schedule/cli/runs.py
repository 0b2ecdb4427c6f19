"""Living with runs: the store work behind ``logs``, ``suspend``/``resume``,
``apply --dry-run`` and ``get --watch``. The commands in main.py parse flags and
print; these functions do the reading and writing.
"""

from __future__ import annotations

import asyncio
import codecs
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sympozium_schedule.cli.errors import CliError
from sympozium_schedule.core.model import UNFINISHED_PHASES, Kind
from sympozium_schedule.ports.store import (
    Conflict,
    EventType,
    Expired,
    Labels,
    NotFound,
    Obj,
    Ref,
    Store,
)
from sympozium_schedule.runtime.paths import run_log

FOLLOW_INTERVAL = 0.2

# --- logs -----------------------------------------------------------------------------------


async def show_log(store: Store, data_dir: Path, namespace: str, name: str, *, follow: bool,
                   write: Callable[[str], None]) -> None:
    """Print a run's agent.log; with ``follow``, keep printing what is added until the
    run has finished (or is deleted) and nothing more comes."""
    path = run_log(data_dir, namespace, name)
    ref = Ref(Kind.AGENT_RUN, namespace, name)

    async def phase() -> str | None:
        try:
            run = await store.get(ref)
        except NotFound:
            return None
        return str((run.get("status") or {}).get("phase") or "")

    current = await phase()
    if current is None and not path.exists():
        raise CliError(f'agentrun "{name}" not found in namespace "{namespace}"')
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    while True:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        offset += len(data)
        if data:
            write(decoder.decode(data))
        if not follow:
            if current is not None and not path.exists():
                raise CliError(f"agentrun {name!r} has no log yet (phase "
                               f"{current or '<none>'}); -f waits for it")
            return
        if current is None or (current not in UNFINISHED_PHASES and not data):
            write(decoder.decode(b"", final=True))
            return
        await asyncio.sleep(FOLLOW_INTERVAL)
        current = await phase()


# --- suspend / resume -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SuspendChange:
    """What ``suspend``/``resume`` asks of a schedule: suspend carries who paused it and
    why (spec.suspendedBy, spec.suspendReason), resume clears them."""

    suspend: bool
    by: str | None = None
    reason: str | None = None

    def apply(self, obj: Obj) -> bool:
        """Change ``obj`` in place; False when it already is as asked."""
        spec = obj.setdefault("spec", {})
        if bool(spec.get("suspend", False)) == self.suspend and (
                not self.suspend or self.reason is None
                or spec.get("suspendReason") == self.reason):
            return False
        spec["suspend"] = self.suspend
        if self.suspend:
            for key, value in (("suspendedBy", self.by), ("suspendReason", self.reason)):
                if value:
                    spec[key] = value
                else:
                    spec.pop(key, None)
        else:
            spec.pop("suspendedBy", None)
            spec.pop("suspendReason", None)
        return True


async def schedules(store: Store, namespace: str, names: Sequence[str],
                    labels: Labels | None) -> tuple[list[Obj], list[str]]:
    """The schedules named, or matching ``labels``; and an error line per missing name."""
    if labels is not None:
        return (await store.list(Kind.SCHEDULE, namespace=namespace, labels=labels)).items, []
    found, missing = [], []
    for name in names:
        try:
            found.append(await store.get(Ref(Kind.SCHEDULE, namespace, name)))
        except NotFound:
            missing.append(f'sympoziumschedule "{name}" not found in namespace "{namespace}"')
    return found, missing


async def change_schedule(store: Store, obj: Obj, change: SuspendChange) -> bool:
    """Apply ``change`` as a conditional update, re-reading on a conflict (the
    controller writes status, which does not conflict, but a person may edit)."""
    for _ in range(10):
        if not change.apply(obj):
            return False
        try:
            await store.update(obj)
            return True
        except Conflict:
            obj = await store.get(Ref.of(obj))
    raise CliError(f"schedule {Ref.of(obj)} kept changing; try again")


# --- apply --dry-run ------------------------------------------------------------------------

_MANAGED = ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name")


def _comparable(obj: Obj) -> Obj:
    """What apply replaces: everything but status and the store's own metadata."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _MANAGED}
    out["metadata"] = meta
    return out


def _hidden(obj: Obj, before: Obj | None) -> Obj:
    """A Secret with its values hidden; on the applied side (``before`` given), a value
    that differs from the stored one says so."""
    if obj.get("kind") != Kind.SECRET.value:
        return obj
    theirs = (before or {}).get("data") or {}
    data = obj.get("data") or {}
    return obj | {"data": {k: "<hidden>" if before is None or theirs.get(k) == v
                           else "<hidden, changed>" for k, v in data.items()}}


def dry_run_diff(current: Obj | None, wanted: Obj) -> tuple[str, str]:
    """(outcome, diff): what apply would do to ``current`` to make it ``wanted``."""
    if current is None:
        return "created", ""
    before, after = _comparable(current), _comparable(wanted)
    if before == after:
        return "unchanged", ""
    old = yaml.safe_dump(_hidden(before, None), sort_keys=True).splitlines(keepends=True)
    new = yaml.safe_dump(_hidden(after, before), sort_keys=True).splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(old, new, "stored", "applied", n=2))
    return "configured", diff


async def dry_run(store: Store, objects: Sequence[Obj]) -> list[tuple[Obj, str, str]]:
    out = []
    for obj in objects:
        try:
            current: Obj | None = await store.get(Ref.of(obj))
        except NotFound:
            current = None
        outcome, diff = dry_run_diff(current, obj)
        out.append((obj, outcome, diff))
    return out


# --- get --watch ----------------------------------------------------------------------------


async def watch(store: Store, kind: Kind, *, namespace: str | None, labels: Labels | None,
                version: str, emit: Callable[[EventType, Obj], None]) -> None:
    """Call ``emit`` for every change after ``version``, until cancelled; a watch
    that ends is resumed, an expired one relisted (changes in between are shown)."""
    seen: dict[tuple[str, str], Any] = {}
    while True:
        try:
            async for event in store.watch(kind, resource_version=version, namespace=namespace,
                                           labels=labels):
                meta = event.object.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                seen[(str(meta.get("namespace")), str(meta.get("name")))] = version
                emit(event.type, event.object)
        except Expired:
            listing = await store.list(kind, namespace=namespace, labels=labels)
            for obj in listing.items:
                meta = obj.get("metadata") or {}
                key = (str(meta.get("namespace")), str(meta.get("name")))
                if seen.get(key) != meta.get("resourceVersion"):
                    emit(EventType.MODIFIED, obj)
            version = listing.resource_version
        await asyncio.sleep(0.05)
