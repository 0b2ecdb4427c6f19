"""The commands about schedules' timing: ``next`` (when an expression fires),
``trigger``, ``suspend``, ``resume`` and ``backfill``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sympozium_schedule.cli import kinds, render, session
from sympozium_schedule.cli.errors import CliError, bad_value
from sympozium_schedule.cli.options import (
    DataDir,
    Namespace,
    Selector,
    finish,
    not_found,
    now,
    out,
    targets,
)
from sympozium_schedule.cli.options import namespace as namespace_of
from sympozium_schedule.cli.render import OutputFormat
from sympozium_schedule.core.cron import compile_schedule, load_zone
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.fire_times import upcoming
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import NotFound

MAX_NEXT = 10_000


class TextOrJson(StrEnum):
    TEXT = "text"
    JSON = "json"


# --- next -----------------------------------------------------------------------------------


def _after(text: str | None, zone_name: str) -> datetime:
    if text is None:
        return now()
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise bad_value("not an ISO 8601 time (e.g. 2026-03-08T09:00:00Z or "
                        "2026-03-08T09:00:00+01:00)", flag="--after", value=text) from exc
    if parsed.tzinfo is None:  # a wall-clock time in --tz
        parsed = parsed.replace(tzinfo=load_zone(zone_name, field="--tz"))
    return parsed


def next_(
    expression: Annotated[str, typer.Argument(
        metavar="EXPR", show_default=False,
        help="A cron expression (5 fields), a macro (@daily) or @every <duration>.")],
    tz: Annotated[str, typer.Option("--tz", metavar="TZ", help="IANA time zone.")] = "UTC",
    after: Annotated[str | None, typer.Option(
        "--after", metavar="ISO8601", show_default=False,
        help="Fire times strictly after this (default: now; without an offset, in --tz). "
             "@every counts from here.")] = None,
    count: Annotated[int, typer.Option("--count", metavar="N", help="How many.")] = 5,
    output: Annotated[TextOrJson, typer.Option("-o", "--output")] = TextOrJson.TEXT,
) -> None:
    """Preview when a schedule expression fires, in a time zone."""
    if not 1 <= count <= MAX_NEXT:
        raise bad_value(f"must be between 1 and {MAX_NEXT}", flag="--count", value=count)
    try:
        zone = load_zone(tz, field="--tz")
        start = _after(after, tz)
        compiled = compile_schedule(expression, time_zone=tz, anchor=start, field="EXPR")
    except SpecError as exc:
        raise bad_value(exc) from exc
    times = [t.astimezone(zone).isoformat() for t in upcoming(compiled, start, count)]
    if output is TextOrJson.JSON:
        out(render.dump(times, OutputFormat.JSON))
    else:
        out("".join(t + "\n" for t in times))

# --- trigger, suspend, resume ---------------------------------------------------------------


def trigger(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME...", show_default=False, help="The schedules' names.")] = None,
    selector: Selector = None,
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Start a run of each schedule now; its concurrency policy still applies. Prints the
    runs' names."""
    from sympozium_schedule.cli.runs import schedules
    from sympozium_schedule.core.manual import TriggerRefused
    from sympozium_schedule.runtime.controller import trigger_now

    ns = namespace_of(namespace)
    labels = targets(names, selector, "schedules to trigger")

    async def work() -> tuple[list[str], list[str]]:
        started: list[str] = []
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            found, errors = await schedules(store, ns, names or [], labels)
            for obj in found:
                name = str(obj["metadata"]["name"])
                try:
                    decision = await trigger_now(store, ns, name)
                except NotFound:
                    errors.append(not_found(kinds.info(Kind.SCHEDULE), name, ns).message)
                    continue
                except TriggerRefused as exc:
                    errors.append(f"cannot trigger {ns}/{name}: {exc}")
                    continue
                assert decision.create is not None
                started.append(str(decision.create["metadata"]["name"]))
        return started, errors

    started, errors = session.run(work())
    finish(started, errors, lambda run: run)


def _who() -> str:
    """``user@host``: who asked, for the pause note."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _suspend(names: list[str] | None, selector: list[str] | None, namespace: str | None,
             data_dir: Path | None, *, suspend: bool, note: str | None = None) -> None:
    from sympozium_schedule.cli.runs import SuspendChange, change_schedule, schedules

    ns = namespace_of(namespace)
    verb = "suspend" if suspend else "resume"
    labels = targets(names, selector, f"schedules to {verb}")
    if note is not None and (not note.strip() or len(note) > 1024):
        raise bad_value("must be 1 to 1024 characters", flag="--note", value=note)
    change = SuspendChange(suspend=suspend, by=_who() if suspend else None, reason=note)

    async def work() -> tuple[list[str], list[str]]:
        lines: list[str] = []
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            found, errors = await schedules(store, ns, names or [], labels)
            for obj in found:
                changed = await change_schedule(store, obj, change)
                state = ("suspended" if suspend else "resumed") if changed else \
                    ("already suspended" if suspend else "not suspended, left as it is")
                lines.append(f"{kinds.info(Kind.SCHEDULE).qualified}/{obj['metadata']['name']} {state}")
        return lines, errors

    lines, errors = session.run(work())
    finish(lines, errors, lambda text: text)


def suspend(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME...", show_default=False, help="The schedules' names.")] = None,
    selector: Selector = None,
    note: Annotated[str | None, typer.Option(
        "--note", metavar="TEXT", show_default=False,
        help="Why: kept with who paused it (spec.suspendReason, spec.suspendedBy) until "
             "resume.")] = None,
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Stop schedules from firing (spec.suspend: true); runs in progress go on."""
    _suspend(names, selector, namespace, data_dir, suspend=True, note=note)


def resume(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME...", show_default=False, help="The schedules' names.")] = None,
    selector: Selector = None,
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Let suspended schedules fire again, from the next tick on (missed ticks are not
    replayed)."""
    _suspend(names, selector, namespace, data_dir, suspend=False)


# --- backfill -------------------------------------------------------------------------------


def backfill(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")],
    start: Annotated[str, typer.Option(
        "--from", metavar="ISO8601", help="The first tick to run (included; with an offset, "
                                          "e.g. 2026-11-01T00:00:00Z).")],
    end: Annotated[str, typer.Option(
        "--to", metavar="ISO8601", help="The last tick to run (included; cut at now).")],
    overlap: Annotated[str, typer.Option(
        "--overlap", metavar="POLICY",
        help="While a run of the schedule is unfinished: BufferAll (wait for it: one run at a "
             "time), BufferOne (the same), Allow (go on), Forbid (skip the tick) or Replace.")
    ] = "BufferAll",
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Run the schedule's ticks in a past range, at a bounded pace; a tick whose run still
    exists is not run twice. Progress: `describe schedule NAME` (status.backfill)."""
    from sympozium_schedule.runtime import backfill_requests as backfills

    ns = namespace_of(namespace)
    try:
        text, request = backfills.check(start, end, overlap, now=now())
    except backfills.Refused as exc:
        if "in the future" in str(exc):
            raise bad_value("is in the future: a backfill runs past ticks", flag="--from",
                            value=start) from exc
        raise CliError(str(exc)) from exc

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            try:
                await backfills.ask(store, ns, name, text)
            except NotFound as exc:
                raise not_found(kinds.info(Kind.SCHEDULE), name, ns) from exc
            except backfills.KeptChanging as exc:
                raise CliError(str(exc)) from exc

    session.run(work())
    out(f"{kinds.info(Kind.SCHEDULE).qualified}/{name} backfill {request.id} requested: ticks "
         f"from {request.start.isoformat()} to {min(request.end, now()).isoformat()} "
         f"(overlap {request.overlap})\n")
