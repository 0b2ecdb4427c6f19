"""The ``sympozium-schedule`` command: a thin layer of flags over the runtime and the store.

Each command parses and checks its flags, does its store work in one
``asyncio.run`` (the store always closed), and prints. Failures are raised
as :class:`~sympozium_schedule.cli.errors.CliError` and reported as one
``error:`` line by the root group. Heavy modules (the runtime, jsonschema)
are imported by the commands that need them, so ``get`` starts quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
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
from sympozium_schedule.cli.validate import Document, check, missing_instances, read_sources
from sympozium_schedule.core.cron import compile_schedule, load_zone, parse_duration, upcoming
from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.core.model import LABEL_SCHEDULE, Kind, is_dns1123_label
from sympozium_schedule.ports.store import (
    Conflict,
    EventType,
    Labels,
    NotFound,
    Obj,
    Ref,
    Store,
    StoreError,
)

if TYPE_CHECKING:
    from sympozium_schedule.adapters.sqlite import SQLiteStore
    from sympozium_schedule.runtime.api import ConsoleSettings

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


class SandboxMode(StrEnum):
    REQUIRED = "required"
    BEST_EFFORT = "best-effort"
    OFF = "off"


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


def _console_settings(enabled: bool | None, address: str | None, read_only: bool, *,
                      kubernetes: bool) -> ConsoleSettings | None:
    """The console's flags; ``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (port 0: any free one).

    Without ``--console-address``, a taken default port is replaced by a free one (and the
    address printed): two schedulers on one machine, or replicas in tests, both start."""
    from sympozium_schedule.runtime.api import ConsoleSettings

    if enabled is None:
        # Kubernetes mode needs RBAC for TokenReview and SubjectAccessReview (the install's):
        # on when asked for, so a scheduler run against any cluster does not open a port.
        enabled = not kubernetes or address is not None or read_only
    elif not enabled and read_only:
        # (An address may come from SYMPOZIUM_CONSOLE_ADDRESS: --no-console wins over it.)
        raise bad_value("--console-read-only needs the console", flag="--no-console", value=True)
    if not enabled:
        return None
    settings = ConsoleSettings(read_only=read_only,
                               announce=lambda line: _out(line + "\n"))
    if kubernetes:
        settings.host, settings.port = "0.0.0.0", 8081
    if address is None:
        return settings
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]") if host.startswith("[") and host.endswith("]") else host
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535 or (
            ":" in host and not address.startswith("[")):
        raise bad_value("must be HOST:PORT, [IPv6]:PORT or :PORT with a port from 0 to 65535",
                        flag="--console-address", value=address)
    settings.host = host or settings.host
    settings.port = int(port_text)
    settings.port_fallback = False
    return settings


@app.command()
def run(
    data_dir: DataDir = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Create a demo instance and a schedule firing every 20s, if absent.")] = False,
    no_runner: Annotated[bool, typer.Option(
        "--no-runner", help="Only schedule: create AgentRuns but do not execute them.")] = False,
    agent_command: Annotated[str | None, typer.Option(
        "--agent-command", metavar="CMD", show_default=False,
        help="The default agent's command (split like a shell would; docs/agents.md is the "
             "contract). Default: the demo agent.", rich_help_panel="Agents")] = None,
    agent: Annotated[list[str] | None, typer.Option(
        "--agent", metavar="NAME=CMD", show_default=False,
        help="Define an agent (repeatable); an instance picks it with the annotation "
             "sympozium.ai/agent: NAME. Built in: demo, llm (OpenAI-compatible chat "
             "completions).", rich_help_panel="Agents")] = None,
    default_agent: Annotated[str | None, typer.Option(
        "--default-agent", metavar="NAME", show_default=False,
        help="The agent of instances without the annotation. Default: demo.",
        rich_help_panel="Agents")] = None,
    agent_env: Annotated[list[str] | None, typer.Option(
        "--agent-env", metavar="NAME[=VALUE]", show_default=False,
        help="Pass this variable of run's environment to every agent, or set it (repeatable). "
             "Agents get nothing else of run's environment but PATH, LANG, LC_* and TZ.",
        rich_help_panel="Agents")] = None,
    sandbox: Annotated[SandboxMode, typer.Option(
        "--sandbox", help="required: agents run under Landlock, or run refuses to start; "
                          "best-effort: unsandboxed (warned) where the kernel lacks Landlock; "
                          "off: never.", rich_help_panel="Agents")] = SandboxMode.REQUIRED,
    agent_allow: Annotated[list[Path] | None, typer.Option(
        "--agent-allow", metavar="PATH", show_default=False,
        help="Let agents read and execute PATH too (repeatable; never one holding the data "
             "directory).", rich_help_panel="Agents")] = None,
    agent_allow_write: Annotated[list[Path] | None, typer.Option(
        "--agent-allow-write", metavar="PATH", show_default=False,
        help="Let agents read and write PATH too (repeatable; shared by every run).",
        rich_help_panel="Agents")] = None,
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
    shards: Annotated[int, typer.Option(
        "--shards", metavar="N",
        help="Share the schedules among replicas: N shards, each held by one replica through a "
             "Lease (1-16; every replica the same). 1: one leader fires them all.",
        rich_help_panel="Kubernetes mode")] = 1,
    kube_qps: Annotated[float, typer.Option(
        "--kube-qps", metavar="QPS", help="Client-side limit on API requests per second.",
        rich_help_panel="Kubernetes mode")] = 50.0,
    kube_burst: Annotated[int, typer.Option(
        "--kube-burst", metavar="N", help="Requests allowed in a burst above --kube-qps.",
        rich_help_panel="Kubernetes mode")] = 100,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", help="auto: readable on a terminal, JSON lines otherwise.")] = LogFormat.AUTO,
    log_level: Annotated[str, typer.Option("--log-level", metavar="LEVEL")] = "info",
    console: Annotated[bool | None, typer.Option(
        "--console/--no-console", show_default=False,
        help="Serve the web console and REST API. Default: on; in Kubernetes mode only with "
             "--console or an address (the install sets one).", rich_help_panel="Console")] = None,
    console_address: Annotated[str | None, typer.Option(
        "--console-address", metavar="HOST:PORT", show_default=False,
        envvar="SYMPOZIUM_CONSOLE_ADDRESS",
        help="Where the console listens (env SYMPOZIUM_CONSOLE_ADDRESS). Default: 127.0.0.1:8730; "
             "Kubernetes mode: 0.0.0.0:8081 (a free port if the default one is taken).",
        rich_help_panel="Console")] = None,
    console_read_only: Annotated[bool, typer.Option(
        "--console-read-only", help="The console and API only read; every change is refused.",
        rich_help_panel="Console")] = False,
) -> None:
    """Run the scheduler (and the local runner) until Ctrl-C or SIGTERM."""
    console_settings = _console_settings(console, console_address, console_read_only,
                                         kubernetes=kubernetes)
    if metrics_port is not None and not 0 < metrics_port < 65536:
        raise bad_value("must be between 1 and 65535", flag="--metrics-port", value=metrics_port)
    if kubernetes:
        if demo or no_runner or agent_command or agent or agent_env or data_dir is not None:
            raise bad_value("--demo, --no-runner, --agent-command, --agent, --agent-env and "
                            "--data-dir are for the embedded mode", flag="--kubernetes", value=True)
        from sympozium_schedule.cli.services import run_kubernetes
        from sympozium_schedule.runtime.logs import configure as configure_logs

        configure_logs(log_format.value, log_level)
        run_kubernetes(kubeconfig=kubeconfig, context=context, namespaces=watch_namespaces,
                       nats_url=nats_url, http_port=8080 if metrics_port is None else metrics_port,
                       leader_election=leader_election, lease_namespace=lease_namespace,
                       qps=kube_qps, burst=kube_burst, console=console_settings, shards=shards)
        return
    if shards != 1:
        raise bad_value("shards share a cluster's schedules: add --kubernetes", flag="--shards",
                        value=shards)
    import os

    from sympozium_schedule.cli import runflags
    from sympozium_schedule.runtime.runner import BUILTIN_AGENTS, DOCUMENTED_ENV

    timeout = _duration(run_timeout, "--run-timeout")
    agents, default = runflags.agents(agent or [], agent_command, default_agent, BUILTIN_AGENTS)
    passed_env = runflags.agent_env(agent_env or [], os.environ, DOCUMENTED_ENV)
    allowed = runflags.paths(agent_allow or [], "--agent-allow")
    allowed_write = runflags.paths(agent_allow_write or [], "--agent-allow-write")
    if max_parallel < 1:
        raise bad_value("must be at least 1", flag="--max-parallel", value=max_parallel)
    if log_level.upper() not in logging.getLevelNamesMapping():
        raise bad_value("unknown level (debug, info, warning, error, critical)",
                        flag="--log-level", value=log_level)

    from sympozium_schedule.cli.demo import apply_demo, banner
    from sympozium_schedule.runtime.app import (
        AgentSandboxUnavailable,
        DataDirBusy,
        EmbeddedSettings,
        run_embedded,
    )
    from sympozium_schedule.runtime.logs import configure
    from sympozium_schedule.runtime.paths import default_data_dir

    directory = runflags.data_dir(data_dir if data_dir is not None else default_data_dir())

    async def start_demo(store: SQLiteStore) -> None:
        created, present = await apply_demo(store)
        _out(banner(created=created, present=present, data_dir=directory,
                    default_dir=default_data_dir(), runner=not no_runner,
                    default_agent=default, agent_command=agents[default]))

    configure(log_format.value, log_level)
    settings = EmbeddedSettings(
        data_dir=directory, runner=not no_runner, max_parallel=max_parallel, run_timeout=timeout,
        nats_url=nats_url, router=not no_router, metrics_port=metrics_port,
        on_ready=start_demo if demo else None, agents=agents, default_agent=default,
        agent_env=passed_env, sandbox=sandbox.value, agent_allow=allowed,
        agent_allow_write=allowed_write, console=console_settings)
    try:
        asyncio.run(run_embedded(settings))
    except (DataDirBusy, AgentSandboxUnavailable) as exc:
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
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Write nothing: say what would be created or configured, with a diff "
                          "of each change (Secret values hidden).")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create or update objects from manifests; nothing is applied if any document is invalid.

    SympoziumSchedules, ConfigMaps and Secrets are checked strictly; SympoziumInstances and
    AgentRuns are checked against Sympozium's CRDs, and what does not match is a warning.
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

    if dry_run:
        _apply_dry_run(checked.documents, data_dir)
        return

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir), create=True) as store:
            for line in missing_instances(checked.documents, await stored_instances(store)):
                warn(line)
            await apply_all(store, checked.documents, lambda line: _out(line + "\n"))

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
        _out(f"{kinds.info(doc.kind).qualified}/{doc.name} {outcome} (dry run)\n")
        if diff:
            _out("".join("    " + line for line in diff.splitlines(keepends=True)))


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
    watch: Annotated[bool, typer.Option(
        "-w", "--watch", help="After the table, print each change as it happens (Ctrl-C ends).")]
        = False,
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

    if watch:
        if output is not OutputFormat.TABLE or len(infos) > 1:
            raise CliError("--watch prints a table of one kind (drop -o, list one KIND)")
        _watch(infos[0], name, scope, labels or None, all_namespaces, data_dir)
        return

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


def _watch(info: kinds.KindInfo, name: str | None, namespace: str | None, labels: Labels | None,
           all_namespaces: bool, data_dir: Path | None) -> None:
    """The table, then a row per change, as ``kubectl get -w``."""
    from sympozium_schedule.cli.runs import watch

    def rows(objs: list[Obj], *, header: bool) -> str:
        text = render.kind_table(info, objs, _now(), namespaces=all_namespaces, prefix=False)
        return text if header else "".join(text.splitlines(keepends=True)[1:])

    def emit(change: EventType, obj: Obj) -> None:
        if name is None or (obj.get("metadata") or {}).get("name") == name:
            _out(rows([obj], header=False))

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            listing = await store.list(info.kind, namespace=namespace, labels=labels)
            items = [o for o in listing.items
                     if name is None or (o.get("metadata") or {}).get("name") == name]
            _out(rows(items, header=True))
            await watch(store, info.kind, namespace=namespace, labels=labels,
                        version=listing.resource_version, emit=emit)

    with contextlib.suppress(KeyboardInterrupt):
        session.run(work())


def _targets(names: list[str] | None, selector: list[str] | None, what: str) -> Labels | None:
    """NAME... or -l: exactly one of them."""
    labels = _selector(selector or [])
    if names and labels:
        raise CliError("NAME and --selector cannot be used together", exit_code=2)
    if not names and not labels:
        raise CliError(f"name the {what} (NAME...) or select them (-l KEY=VALUE)", exit_code=2)
    return labels or None


Selector = Annotated[list[str] | None, typer.Option(
    "-l", "--selector", metavar="KEY=VALUE", show_default=False,
    help="Every object with these labels instead of names (key=value or key).")]


# --- delete ---------------------------------------------------------------------------------


@app.command()
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
    ns = _namespace(namespace)
    labels = _targets(names, selector, f"{info.plural} to delete")

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
                    missing.append(_not_found(info, target, ns).message)
        return deleted, missing

    deleted, missing = session.run(work())
    for target in deleted:
        _out(f'{info.qualified} "{target}" deleted\n')
    for line in missing:
        report(line)
    if not deleted and not missing:
        sys.stderr.write(f"No resources found in {ns} namespace.\n")
    if missing:
        raise typer.Exit(1)


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


# --- trigger, suspend, resume ---------------------------------------------------------------


@app.command()
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

    ns = _namespace(namespace)
    labels = _targets(names, selector, "schedules to trigger")

    async def work() -> tuple[list[str], list[str]]:
        started: list[str] = []
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            found, errors = await schedules(store, ns, names or [], labels)
            for obj in found:
                name = str(obj["metadata"]["name"])
                try:
                    decision = await trigger_now(store, ns, name)
                except NotFound:
                    errors.append(_not_found(kinds.info(Kind.SCHEDULE), name, ns).message)
                    continue
                except TriggerRefused as exc:
                    errors.append(f"cannot trigger {ns}/{name}: {exc}")
                    continue
                assert decision.create is not None
                started.append(str(decision.create["metadata"]["name"]))
        return started, errors

    started, errors = session.run(work())
    _finish(started, errors, lambda run: run)


def _finish(done: list[str], errors: list[str], line: Callable[[str], str]) -> None:
    for item in done:
        _out(line(item) + "\n")
    for error in errors:
        report(error)
    if not done and not errors:
        sys.stderr.write("No resources found.\n")
    if errors:
        raise typer.Exit(1)


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

    ns = _namespace(namespace)
    verb = "suspend" if suspend else "resume"
    labels = _targets(names, selector, f"schedules to {verb}")
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
    _finish(lines, errors, lambda text: text)


@app.command()
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


@app.command()
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


@app.command()
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
    import json
    import secrets

    from sympozium_schedule.core import backfill as rules
    from sympozium_schedule.core.model import ANNOTATION_BACKFILL

    ns = _namespace(namespace)
    text = json.dumps({"from": start, "to": end, "overlap": overlap,
                       "id": secrets.token_hex(8)})
    try:
        request = rules.parse_request(text)
    except rules.BadRequest as exc:
        raise CliError(str(exc)) from exc
    if request.start > _now():
        raise bad_value("is in the future: a backfill runs past ticks", flag="--from", value=start)

    async def work() -> None:
        async with session.opened(session.data_dir_or_default(data_dir)) as store:
            ref = Ref(Kind.SCHEDULE, ns, name)
            for _ in range(10):
                try:
                    obj = await store.get(ref)
                except NotFound as exc:
                    raise _not_found(kinds.info(Kind.SCHEDULE), name, ns) from exc
                meta = obj.setdefault("metadata", {})
                meta["annotations"] = dict(meta.get("annotations") or {}) | {
                    ANNOTATION_BACKFILL: text}
                try:
                    await store.update(obj)
                    return
                except Conflict:
                    continue
            raise CliError(f"schedule {ns}/{name} kept changing; try again")

    session.run(work())
    _out(f"{kinds.info(Kind.SCHEDULE).qualified}/{name} backfill {request.id} requested: ticks "
         f"from {request.start.isoformat()} to {min(request.end, _now()).isoformat()} "
         f"(overlap {request.overlap})\n")


# --- logs -----------------------------------------------------------------------------------


@app.command()
def logs(
    name: Annotated[str, typer.Argument(metavar="RUN", help="The AgentRun's name.")],
    follow: Annotated[bool, typer.Option(
        "-f", "--follow", help="Keep printing until the run has finished.")] = False,
    namespace: Namespace = None,
    data_dir: DataDir = None,
) -> None:
    """Print what a run's agent wrote (stdout and stderr, the first MiB of it)."""
    from sympozium_schedule.cli.runs import show_log

    ns = _namespace(namespace)
    directory = session.data_dir_or_default(data_dir)

    async def work() -> None:
        async with session.opened(directory) as store:
            await show_log(store, directory, ns, name, follow=follow, write=_out)

    with contextlib.suppress(KeyboardInterrupt):
        session.run(work())


services.register(app)

if __name__ == "__main__":
    app()
