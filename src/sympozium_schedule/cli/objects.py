"""The commands on objects in the store: ``apply``, ``get``, ``delete``, ``describe``
and ``logs`` (what a run printed)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from sympozium_schedule.cli import kinds, render, session
from sympozium_schedule.cli.apply import apply_all, stored_instances
from sympozium_schedule.cli.bulk import check_all, no_cycle_collection
from sympozium_schedule.cli.describe import describe_schedule
from sympozium_schedule.cli.errors import CliError, report, warn
from sympozium_schedule.cli.manifest_files import read_sources
from sympozium_schedule.cli.options import (
    DataDir,
    Namespace,
    Output,
    Selector,
    fetch,
    not_found,
    now,
    out,
    targets,
)
from sympozium_schedule.cli.options import namespace as namespace_of
from sympozium_schedule.cli.options import selector as parse_selector
from sympozium_schedule.cli.render import OutputFormat
from sympozium_schedule.cli.validate import Document, missing_instances
from sympozium_schedule.core.model import LABEL_SCHEDULE, Kind
from sympozium_schedule.ports.store import EventType, Labels, NotFound, Obj, Ref

# --- apply ----------------------------------------------------------------------------------


def apply(
    filenames: Annotated[list[str], typer.Option(
        "-f", "--filename", metavar="FILE|DIR|-",
        help="Manifests to apply (repeatable): a YAML/JSON file with one or more documents, a "
             "directory of them, or - for stdin.")],
    namespace: Namespace = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Write nothing: say what would be created or configured, with a diff "
                          "of each change (Secret values hidden).")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create or update objects from manifests; nothing is applied if any document is invalid.

    SympoziumSchedules, ConfigMaps and Secrets are checked strictly; SympoziumInstances and
    AgentRuns are checked against Sympozium's CRDs, and what does not match is a warning.
    """
    with no_cycle_collection():
        _apply(filenames, namespace_of(namespace), dry_run, data_dir)


def _apply(filenames: list[str], default_ns: str, dry_run: bool, data_dir: Path | None) -> None:
    sources, errors = read_sources(filenames, sys.stdin)
    checked = check_all(sources, namespace=default_ns, now=now())
    for line in checked.warnings:
        warn(line)
    errors += checked.errors
    if errors:
        for line in errors:
            report(line)
        raise typer.Exit(1)
    if not checked.documents:
        raise CliError("no objects passed to apply")

    if dry_run:
        _apply_dry_run(checked.documents, data_dir)
        return

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir), create=True) as store:
            for line in missing_instances(checked.documents, await stored_instances(store)):
                warn(line)
            await apply_all(store, checked.documents, lambda line: out(line + "\n"))

    session.run(work())


def _apply_dry_run(documents: list[Document], data_dir: Path | None) -> None:
    from sympozium_schedule.cli.apply import in_dependency_order
    from sympozium_schedule.cli.runs import dry_run

    ordered = in_dependency_order(documents)
    directory = session.data_dir_or_default(data_dir)

    async def work() -> list[tuple[Obj, str, str]]:
        if not session.store_file(directory).exists():
            return [(d.obj, "created", "") for d in ordered]
        async with session.opened(directory) as store:
            for line in missing_instances(ordered, await stored_instances(store)):
                warn(line)
            return await dry_run(store, [d.obj for d in ordered])

    for doc, (_, outcome, diff) in zip(ordered, session.run(work()), strict=True):
        out(f"{kinds.info(doc.kind).qualified}/{doc.name} {outcome} (dry run)\n")
        if diff:
            out("".join("    " + line for line in diff.splitlines(keepends=True)))


def get(
    kind: Annotated[str, typer.Argument(
        metavar="KIND", help=f"What to list, or several separated by commas. Accepted: "
                             f"{kinds.accepted_names()}.")],
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", show_default=False, help="One object by name.")] = None,
    namespace: Namespace = None,
    all_namespaces: Annotated[bool, typer.Option(
        "-A", "--all-namespaces", help="List across all namespaces.")] = False,
    output: Output = OutputFormat.TABLE,
    selector: Annotated[list[str] | None, typer.Option(
        "-l", "--selector", metavar="KEY=VALUE",
        help="Only objects with these labels (key=value or key; repeatable, or comma-separated).")]
        = None,
    watch: Annotated[bool, typer.Option(
        "-w", "--watch", help="After the table, print each change as it happens (Ctrl-C ends).")]
        = False,
    data_dir: DataDir = None,
) -> None:
    """List objects, or show one."""
    infos = kinds.resolve_many(kind)
    ns = namespace_of(namespace)
    labels = parse_selector(selector or [])
    if name is not None and len(infos) > 1:
        raise CliError("NAME needs a single KIND")
    if name is not None and all_namespaces:
        raise CliError("an object cannot be fetched by NAME across all namespaces (drop -A)")
    if name is not None and labels:
        raise CliError("NAME and --selector cannot be used together")
    scope = None if all_namespaces else ns

    if watch:
        if output is not OutputFormat.TABLE or len(infos) > 1:
            raise CliError("--watch prints a table of one kind (drop -o, list one KIND)")
        _watch(infos[0], name, scope, labels or None, all_namespaces, data_dir)
        return

    async def work() -> list[tuple[kinds.KindInfo, list[Obj]]]:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            return [(info, await fetch(store, info, name, scope, labels or None)) for info in infos]

    found = session.run(work())
    if output is not OutputFormat.TABLE:
        items = [obj for _, objs in found for obj in objs]
        out(render.dump(items[0] if name is not None else render.as_list(items), output))
        return
    at = now()
    tables = [render.kind_table(info, objs, at, namespaces=all_namespaces, prefix=len(infos) > 1)
              for info, objs in found if objs]
    if not tables:
        where = "" if all_namespaces else f" in {ns} namespace"
        sys.stderr.write(f"No resources found{where}.\n")
        return
    out("\n".join(tables))


def _watch(info: kinds.KindInfo, name: str | None, namespace: str | None, labels: Labels | None,
           all_namespaces: bool, data_dir: Path | None) -> None:
    """The table, then a row per change, as ``kubectl get -w``."""
    from sympozium_schedule.cli.runs import watch

    def rows(objs: list[Obj], *, header: bool) -> str:
        text = render.kind_table(info, objs, now(), namespaces=all_namespaces, prefix=False)
        return text if header else "".join(text.splitlines(keepends=True)[1:])

    def emit(change: EventType, obj: Obj) -> None:
        if name is None or (obj.get("metadata") or {}).get("name") == name:
            out(rows([obj], header=False))

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            listing = await store.list(info.kind, namespace=namespace, labels=labels)
            items = [o for o in listing.items
                     if name is None or (o.get("metadata") or {}).get("name") == name]
            out(rows(items, header=True))
            await watch(store, info.kind, namespace=namespace, labels=labels,
                        version=listing.resource_version, emit=emit)

    with contextlib.suppress(KeyboardInterrupt):
        session.run(work())

# --- delete ---------------------------------------------------------------------------------


def delete(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="What to delete (get --help lists the names).")],
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME...", show_default=False, help="Their names.")] = None,
    selector: Selector = None,
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Delete objects by name or label selector (a schedule's runs go with it)."""
    info = kinds.resolve(kind)
    ns = namespace_of(namespace)
    labels = targets(names, selector, f"{info.plural} to delete")

    async def work() -> tuple[list[str], list[str]]:
        deleted: list[str] = []
        missing: list[str] = []
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            targets = list(names or [])
            if labels is not None:
                listing = await store.list(info.kind, namespace=ns, labels=labels)
                targets = [str(o["metadata"]["name"]) for o in listing.items]
            for target in dict.fromkeys(targets):
                try:
                    await store.delete(Ref(info.kind, ns, target))
                    deleted.append(target)
                except NotFound:
                    missing.append(not_found(info, target, ns).message)
        return deleted, missing

    deleted, missing = session.run(work())
    for target in deleted:
        out(f'{info.qualified} "{target}" deleted\n')
    for line in missing:
        report(line)
    if not deleted and not missing:
        sys.stderr.write(f"No resources found in {ns} namespace.\n")
    if missing:
        raise typer.Exit(1)

# --- describe -------------------------------------------------------------------------------


def describe(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="schedule (or any of its names).")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")],
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Show a schedule in detail: spec, status, conditions, runs, events, next fire times."""
    info = kinds.resolve(kind)
    if info.kind is not Kind.SCHEDULE:
        raise CliError(f"describe shows schedules only ({', '.join(kinds.info(Kind.SCHEDULE).aliases)})")
    ns = namespace_of(namespace)

    async def work() -> tuple[Obj, list[Obj], list[Obj]]:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            (obj,) = await fetch(store, info, name, ns, None)
            runs = await store.list(Kind.AGENT_RUN, namespace=ns, labels={LABEL_SCHEDULE: name})
            events = await store.list(Kind.EVENT, namespace=ns)
            return obj, runs.items, events.items

    obj, runs, events = session.run(work())
    out(describe_schedule(obj, runs, events, now()))

# --- logs -----------------------------------------------------------------------------------


def logs(
    name: Annotated[str, typer.Argument(metavar="RUN", help="The AgentRun's name.")],
    follow: Annotated[bool, typer.Option(
        "-f", "--follow", help="Keep printing until the run has finished.")] = False,
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Print what a run's agent wrote (stdout and stderr, the first MiB of it)."""
    from sympozium_schedule.cli.runs import show_log

    ns = namespace_of(namespace)
    directory = session.data_dir_or_default(data_dir)

    async def work() -> None:
        async with session.opened(directory) as store:
            await show_log(store, directory, ns, name, follow=follow, write=out)

    with contextlib.suppress(KeyboardInterrupt):
        session.run(work())
