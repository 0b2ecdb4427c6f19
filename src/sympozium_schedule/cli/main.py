"""The ``sympozium-schedule`` command: a thin layer of flags over the runtime and the store.

Each command parses and checks its flags, does its store work in one
``asyncio.run`` (the store always closed), and prints. Failures are raised
as :class:`~sympozium_schedule.cli.errors.CliError` and reported as one
``error:`` line by the root group. Heavy modules (the runtime, jsonschema)
are imported by the commands that need them, so ``get`` starts quickly.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sympozium_schedule.cli import kinds, render, services, session
from sympozium_schedule.cli.apply import apply_all, stored_instances
from sympozium_schedule.cli.describe import describe_schedule
from sympozium_schedule.cli.errors import PROG, CliError, OneLineErrors, bad_value, report, warn
from sympozium_schedule.cli.render import OutputFormat
from sympozium_schedule.cli.services import LogFormat
from sympozium_schedule.cli.validate import check, missing_instances, read_sources
from sympozium_schedule.core.cron import compile_schedule, load_zone, parse_duration, upcoming
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import LABEL_SCHEDULE, Kind, is_dns1123_label
from sympozium_schedule.ports.store import Labels, NotFound, Obj, Ref, Store, StoreError

if TYPE_CHECKING:
    from sympozium_schedule.adapters.sqlite import SQLiteStore

app = typer.Typer(
    cls=OneLineErrors,
    name=PROG,
    help="Scheduled tasks for Sympozium agents: SympoziumSchedules whose ticks create AgentRuns.\n\n"
         "Objects live in a store in a data directory (--data-dir; default $SYMPOZIUM_DATA_DIR, "
         "else ~/.local/share/sympozium-schedule). `run` is the scheduler; the other commands "
         "read and write the store, with or without it running.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", show_default=False,
    help="The data directory holding the store. Default: $SYMPOZIUM_DATA_DIR, "
         "else ~/.local/share/sympozium-schedule.")]
Namespace = Annotated[str | None, typer.Option(
    "-n", "--namespace", metavar="NS", show_default=False,
    help="The namespace (default: default).")]
Output = Annotated[OutputFormat, typer.Option("-o", "--output", help="Output format.")]
MAX_NEXT = 10_000


class TextOrJson(StrEnum):
    TEXT = "text"
    JSON = "json"


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _now() -> datetime:
    return datetime.now(UTC)


def _namespace(value: str | None) -> str:
    if value is None:
        return "default"
    if not is_dns1123_label(value):
        raise bad_value("not a valid namespace (lowercase letters, digits and '-', at most 63 "
                        "characters)", flag="--namespace", value=value)
    return value


def _not_found(info: kinds.KindInfo, name: str, namespace: str) -> CliError:
    return CliError(f'{info.singular} "{name}" not found in namespace "{namespace}"')


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("sympozium-schedule")
    except PackageNotFoundError:
        text = "unknown"
    _out(f"{PROG} {text}\n")
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Scheduled tasks for Sympozium agents."""


# --- run ------------------------------------------------------------------------------------


def _duration(text: str, flag: str) -> timedelta:
    try:
        return parse_duration(text, field=flag)
    except SpecError as exc:
        raise bad_value(exc) from exc


def _agent_command(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise bad_value(f"not a valid command line ({exc})", flag="--agent-command", value=text) from exc
    if not words:
        raise bad_value("is empty", flag="--agent-command", value=text)
    return words


def _startup_failure(group: BaseExceptionGroup[BaseException]) -> CliError | None:
    """A port in use or a store that cannot be written, from inside the scheduler's
    task group, as one line; anything else is a bug and keeps its traceback."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _startup_failure(exc)
            if found is not None:
                return found
        elif isinstance(exc, OSError | StoreError):
            return CliError(str(exc))
    return None


@app.command()
def run(
    data_dir: DataDir = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Create a demo instance and a schedule firing every 20s, if absent.")] = False,
    no_runner: Annotated[bool, typer.Option(
        "--no-runner", help="Only schedule: create AgentRuns but do not execute them.")] = False,
    agent_command: Annotated[str | None, typer.Option(
        "--agent-command", metavar="CMD", show_default=False,
        help="The agent each run executes (split like a shell would). Default: the demo agent.")] = None,
    max_parallel: Annotated[int, typer.Option(
        "--max-parallel", metavar="N", help="At most N agents at once.")] = 4,
    run_timeout: Annotated[str, typer.Option(
        "--run-timeout", metavar="DURATION",
        help="Kill an agent after this long, e.g. 30s, 10m, 1h30m (an AgentRun's spec.timeout "
             "wins).")] = "10m",
    nats_url: Annotated[str | None, typer.Option(
        "--nats-url", "--event-bus-url", metavar="URL", envvar="EVENT_BUS_URL", show_default=False,
        help="Use this NATS server for agents' schedule requests instead of starting one "
             "(env EVENT_BUS_URL). In Kubernetes mode the router runs only when it is set.")] = None,
    no_router: Annotated[bool, typer.Option(
        "--no-router", help="Do not act on agents' schedule requests (self-scheduling).")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", metavar="PORT", show_default=False,
        help="Serve /metrics, /healthz, /readyz and /leaderz on this port "
             "(Kubernetes mode: 8080 unless set).")] = None,
    kubernetes: Annotated[bool, typer.Option(
        "--kubernetes", help="Schedule in a Kubernetes cluster instead of the data directory.",
        rich_help_panel="Kubernetes mode")] = False,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", metavar="PATH", show_default=False,
        help="Kubeconfig file. Default: $KUBECONFIG, ~/.kube/config, else in-cluster.",
        rich_help_panel="Kubernetes mode")] = None,
    context: Annotated[str | None, typer.Option(
        "--context", metavar="NAME", show_default=False, help="Kubeconfig context.",
        rich_help_panel="Kubernetes mode")] = None,
    watch_namespaces: Annotated[list[str] | None, typer.Option(
        "-n", "--namespace", metavar="NS", show_default=False,
        help="Watch only this namespace (repeatable). Default: all namespaces.",
        rich_help_panel="Kubernetes mode")] = None,
    leader_election: Annotated[bool, typer.Option(
        "--leader-election/--no-leader-election",
        help="Hold a coordination.k8s.io Lease so several replicas can run.",
        rich_help_panel="Kubernetes mode")] = True,
    lease_namespace: Annotated[str | None, typer.Option(
        "--lease-namespace", metavar="NS", show_default=False,
        help="Where the Lease lives. Default: $POD_NAMESPACE, else the pod's namespace, else "
             "sympozium-schedule (the install's).",
        rich_help_panel="Kubernetes mode")] = None,
    kube_qps: Annotated[float, typer.Option(
        "--kube-qps", metavar="QPS", help="Client-side limit on API requests per second.",
        rich_help_panel="Kubernetes mode")] = 50.0,
    kube_burst: Annotated[int, typer.Option(
        "--kube-burst", metavar="N", help="Requests allowed in a burst above --kube-qps.",
        rich_help_panel="Kubernetes mode")] = 100,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", help="auto: readable on a terminal, JSON lines otherwise.")] = LogFormat.AUTO,
    log_level: Annotated[str, typer.Option("--log-level", metavar="LEVEL")] = "info",
) -> None:
    """Run the scheduler (and the local runner) until Ctrl-C or SIGTERM."""
    if metrics_port is not None and not 0 < metrics_port < 65536:
        raise bad_value("must be between 1 and 65535", flag="--metrics-port", value=metrics_port)
    if kubernetes:
        if demo or no_runner or agent_command or data_dir is not None:
            raise bad_value("--demo, --no-runner, --agent-command and --data-dir are for the "
                            "embedded mode", flag="--kubernetes", value=True)
        from sympozium_schedule.cli.services import run_kubernetes
        from sympozium_schedule.runtime.logs import configure as configure_logs

        configure_logs(log_format.value, log_level)
        run_kubernetes(kubeconfig=kubeconfig, context=context, namespaces=watch_namespaces,
                       nats_url=nats_url, http_port=8080 if metrics_port is None else metrics_port,
                       leader_election=leader_election, lease_namespace=lease_namespace,
                       qps=kube_qps, burst=kube_burst)
        return
    timeout = _duration(run_timeout, "--run-timeout")
    command = _agent_command(agent_command)
    if max_parallel < 1:
        raise bad_value("must be at least 1", flag="--max-parallel", value=max_parallel)
    if log_level.upper() not in logging.getLevelNamesMapping():
        raise bad_value("unknown level (debug, info, warning, error, critical)",
                        flag="--log-level", value=log_level)

    from sympozium_schedule.cli.demo import apply_demo, banner
    from sympozium_schedule.runtime.app import DataDirBusy, EmbeddedSettings, run_embedded
    from sympozium_schedule.runtime.logs import configure
    from sympozium_schedule.runtime.paths import default_data_dir

    directory = data_dir if data_dir is not None else default_data_dir()

    async def start_demo(store: SQLiteStore) -> None:
        created, present = await apply_demo(store)
        _out(banner(created=created, present=present, data_dir=directory,
                    default_dir=default_data_dir(), runner=not no_runner))

    configure(log_format.value, log_level)
    settings = EmbeddedSettings(
        data_dir=directory, runner=not no_runner, max_parallel=max_parallel, run_timeout=timeout,
        nats_url=nats_url, router=not no_router, metrics_port=metrics_port,
        on_ready=start_demo if demo else None)
    if command is not None:
        settings.agent_command = command
    try:
        asyncio.run(run_embedded(settings))
    except DataDirBusy as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot start in {directory}: {exc}") from exc
    except BaseExceptionGroup as group:
        failure = _startup_failure(group)
        if failure is None:
            raise
        raise failure from group


# --- apply ----------------------------------------------------------------------------------


@app.command()
def apply(
    filenames: Annotated[list[str], typer.Option(
        "-f", "--filename", metavar="FILE|DIR|-",
        help="Manifests to apply (repeatable): a YAML/JSON file with one or more documents, a "
             "directory of them, or - for stdin.")],
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Create or update objects from manifests; nothing is applied if any document is invalid.

    SympoziumSchedules and ConfigMaps are checked strictly; SympoziumInstances and AgentRuns
    are checked against Sympozium's CRDs, and what does not match is a warning.
    """
    default_ns = _namespace(namespace)
    sources, errors = read_sources(filenames, sys.stdin)
    checked = check(sources, namespace=default_ns, now=_now())
    for line in checked.warnings:
        warn(line)
    errors += checked.errors
    if errors:
        for line in errors:
            report(line)
        raise typer.Exit(1)
    if not checked.documents:
        raise CliError("no objects passed to apply")

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            for line in missing_instances(checked.documents, await stored_instances(store)):
                warn(line)
            await apply_all(store, checked.documents, lambda line: _out(line + "\n"))

    session.run(work())


# --- get ------------------------------------------------------------------------------------


def _selector(values: list[str]) -> dict[str, str | None]:
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


async def _fetch(store: Store, info: kinds.KindInfo, name: str | None, namespace: str | None,
                 labels: Labels | None) -> list[Obj]:
    if name is not None:
        assert namespace is not None
        try:
            return [await store.get(Ref(info.kind, namespace, name))]
        except NotFound as exc:
            raise _not_found(info, name, namespace) from exc
    listing = await store.list(info.kind, namespace=namespace, labels=labels)
    return listing.items


@app.command()
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
    data_dir: DataDir = None,
) -> None:
    """List objects, or show one."""
    infos = kinds.resolve_many(kind)
    ns = _namespace(namespace)
    labels = _selector(selector or [])
    if name is not None and len(infos) > 1:
        raise CliError("NAME needs a single KIND")
    if name is not None and all_namespaces:
        raise CliError("an object cannot be fetched by NAME across all namespaces (drop -A)")
    if name is not None and labels:
        raise CliError("NAME and --selector cannot be used together")
    scope = None if all_namespaces else ns

    async def work() -> list[tuple[kinds.KindInfo, list[Obj]]]:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            return [(info, await _fetch(store, info, name, scope, labels or None)) for info in infos]

    found = session.run(work())
    if output is not OutputFormat.TABLE:
        items = [obj for _, objs in found for obj in objs]
        _out(render.dump(items[0] if name is not None else render.as_list(items), output))
        return
    now = _now()
    tables = [render.kind_table(info, objs, now, namespaces=all_namespaces, prefix=len(infos) > 1)
              for info, objs in found if objs]
    if not tables:
        where = "" if all_namespaces else f" in {ns} namespace"
        sys.stderr.write(f"No resources found{where}.\n")
        return
    _out("\n".join(tables))


# --- delete ---------------------------------------------------------------------------------


@app.command()
def delete(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="What to delete (get --help lists the names).")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Its name.")],
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Delete an object (a schedule's runs go with it)."""
    info = kinds.resolve(kind)
    ns = _namespace(namespace)

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            try:
                await store.delete(Ref(info.kind, ns, name))
            except NotFound as exc:
                raise _not_found(info, name, ns) from exc

    session.run(work())
    _out(f'{info.qualified} "{name}" deleted\n')


# --- describe -------------------------------------------------------------------------------


@app.command()
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
    ns = _namespace(namespace)

    async def work() -> tuple[Obj, list[Obj], list[Obj]]:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            (obj,) = await _fetch(store, info, name, ns, None)
            runs = await store.list(Kind.AGENT_RUN, namespace=ns, labels={LABEL_SCHEDULE: name})
            events = await store.list(Kind.EVENT, namespace=ns)
            return obj, runs.items, events.items

    obj, runs, events = session.run(work())
    _out(describe_schedule(obj, runs, events, _now()))


# --- next -----------------------------------------------------------------------------------


def _after(text: str | None, zone_name: str) -> datetime:
    if text is None:
        return _now()
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise bad_value("not an ISO 8601 time (e.g. 2026-03-08T09:00:00Z or "
                        "2026-03-08T09:00:00+01:00)", flag="--after", value=text) from exc
    if parsed.tzinfo is None:  # a wall-clock time in --tz
        parsed = parsed.replace(tzinfo=load_zone(zone_name, field="--tz"))
    return parsed


@app.command("next")
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
        _out(render.dump(times, OutputFormat.JSON))
    else:
        _out("".join(t + "\n" for t in times))


# --- trigger --------------------------------------------------------------------------------


@app.command()
def trigger(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")],
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Start a run of a schedule now; its concurrency policy still applies. Prints the run's name."""
    from sympozium_schedule.core.decide import TriggerRefused
    from sympozium_schedule.runtime.controller import trigger_now

    ns = _namespace(namespace)

    async def work() -> str:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            try:
                decision = await trigger_now(store, ns, name)
            except NotFound as exc:
                raise _not_found(kinds.info(Kind.SCHEDULE), name, ns) from exc
            except TriggerRefused as exc:
                raise CliError(f"cannot trigger {ns}/{name}: {exc}") from exc
            assert decision.create is not None
            return str(decision.create["metadata"]["name"])

    _out(session.run(work()) + "\n")


services.register(app)

if __name__ == "__main__":
    app()
