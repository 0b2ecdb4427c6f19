"""What the commands share: their common flags, the selector syntax, printing, and
the checks every command makes of a namespace or a duration."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from sympozium_schedule.cli import kinds
from sympozium_schedule.cli.errors import CliError, bad_value, report
from sympozium_schedule.cli.render import OutputFormat
from sympozium_schedule.core.cron import parse_duration
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import is_dns1123_label
from sympozium_schedule.ports.store import Labels, NotFound, Obj, Ref, Store

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", show_default=False,
    help="The data directory holding the store. Default: $SYMPOZIUM_DATA_DIR, "
         "else ~/.local/share/sympozium-schedule.")]
Namespace = Annotated[str | None, typer.Option(
    "-n", "--namespace", metavar="NS", show_default=False,
    help="The namespace (default: default).")]
Output = Annotated[OutputFormat, typer.Option("-o", "--output", help="Output format.")]
Selector = Annotated[list[str] | None, typer.Option(
    "-l", "--selector", metavar="KEY=VALUE", show_default=False,
    help="Every object with these labels instead of names (key=value or key).")]


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def now() -> datetime:
    return datetime.now(UTC)


def namespace(value: str | None) -> str:
    if value is None:
        return "default"
    if not is_dns1123_label(value):
        raise bad_value("not a valid namespace (lowercase letters, digits and '-', at most 63 "
                        "characters)", flag="--namespace", value=value)
    return value


def not_found(info: kinds.KindInfo, name: str, namespace: str) -> CliError:
    return CliError(f'{info.singular} "{name}" not found in namespace "{namespace}"')


def duration(text: str, flag: str) -> timedelta:
    try:
        return parse_duration(text, field=flag)
    except SpecError as exc:
        raise bad_value(exc) from exc


def selector(values: list[str]) -> dict[str, str | None]:
    labels: dict[str, str | None] = {}
    for value in values:
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            if "!=" in part or part.startswith("!") or " in " in part or " notin " in part:
                raise bad_value("only key=value and key (present) selectors are supported",
                                flag="--selector", value=part)
            key, sep, want = part.partition("=")
            want = want[1:] if want.startswith("=") else want
            if not key.strip():
                raise bad_value("a selector needs a label key", flag="--selector", value=part)
            labels[key.strip()] = want.strip() if sep else None
    return labels


def targets(names: list[str] | None, values: list[str] | None, what: str) -> Labels | None:
    """NAME... or -l: exactly one of them."""
    labels = selector(values or [])
    if names and labels:
        raise CliError("NAME and --selector cannot be used together", exit_code=2)
    if not names and not labels:
        raise CliError(f"name the {what} (NAME...) or select them (-l KEY=VALUE)", exit_code=2)
    return labels or None


async def fetch(store: Store, info: kinds.KindInfo, name: str | None, namespace: str | None,
                labels: Labels | None) -> list[Obj]:
    if name is not None:
        assert namespace is not None
        try:
            return [await store.get(Ref(info.kind, namespace, name))]
        except NotFound as exc:
            raise not_found(info, name, namespace) from exc
    listing = await store.list(info.kind, namespace=namespace, labels=labels)
    return listing.items


def finish(done: list[str], errors: list[str], line: Callable[[str], str]) -> None:
    """Print what was done, report what failed (exit status 1 if anything did)."""
    for item in done:
        out(line(item) + "\n")
    for error in errors:
        report(error)
    if not done and not errors:
        sys.stderr.write("No resources found.\n")
    if errors:
        raise typer.Exit(1)
