"""``run``: the scheduler on this machine (``--kubernetes``: in a cluster), its flags
checked before anything starts."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sympozium_schedule.cli.errors import CliError, bad_value
from sympozium_schedule.cli.options import DataDir, duration, out
from sympozium_schedule.cli.services import (
    AllowUnscoped,
    AuthCallout,
    LogFormat,
    NatsNkeyFile,
    NatsPasswordFile,
    NatsUser,
)
from sympozium_schedule.ports.store import StoreError

if TYPE_CHECKING:
    from sympozium_schedule.adapters.sqlite import SQLiteStore
    from sympozium_schedule.runtime.api import ConsoleSettings


class SandboxMode(StrEnum):
    REQUIRED = "required"
    BEST_EFFORT = "best-effort"
    OFF = "off"


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
                               announce=lambda line: out(line + "\n"))
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
    nats_user: NatsUser = None,
    nats_password_file: NatsPasswordFile = None,
    nats_nkey_file: NatsNkeyFile = None,
    auth_callout: AuthCallout = None,
    allow_unscoped_publishers: AllowUnscoped = False,
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
    from sympozium_schedule.cli.services import load_callout, router_credential

    credential = router_credential(nats_user, nats_password_file, nats_nkey_file)
    if credential is not None and not nats_url:
        raise bad_value("is a login on a NATS server given with --nats-url (the server run "
                        "starts itself logs its router in)",
                        flag="--nats-nkey-file" if nats_nkey_file else "--nats-user",
                        value=str(nats_nkey_file or nats_user))
    callout = None
    if auth_callout is not None:
        if not kubernetes or not nats_url:
            raise bad_value("needs --kubernetes and --nats-url (embedded run serves its own callout)",
                            flag="--auth-callout", value=str(auth_callout))
        callout = load_callout(auth_callout)
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
                       qps=kube_qps, burst=kube_burst, console=console_settings,
                       credential=credential, callout=callout,
                       allow_unscoped=allow_unscoped_publishers, shards=shards)
        return
    if shards != 1:
        raise bad_value("shards share a cluster's schedules: add --kubernetes", flag="--shards",
                        value=shards)
    import os

    from sympozium_schedule.cli import runflags
    from sympozium_schedule.runtime.runner import BUILTIN_AGENTS, DOCUMENTED_ENV

    timeout = duration(run_timeout, "--run-timeout")
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
        out(banner(created=created, present=present, data_dir=directory,
                    default_dir=default_data_dir(), runner=not no_runner,
                    default_agent=default, agent_command=agents[default]))

    configure(log_format.value, log_level)
    settings = EmbeddedSettings(
        data_dir=directory, runner=not no_runner, max_parallel=max_parallel, run_timeout=timeout,
        nats_url=nats_url, router=not no_router, metrics_port=metrics_port,
        router_credential=credential, allow_unscoped_publishers=allow_unscoped_publishers,
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
