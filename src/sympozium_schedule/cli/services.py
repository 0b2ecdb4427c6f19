"""The long-running commands besides the embedded ``run``: ``run --kubernetes``,
``router``, ``bridge``, and ``manifests`` (which prints the cluster install).

The bridge takes Sympozium's own sidecar flags and environment, so it can
replace that sidecar without changing the pod spec.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sympozium_schedule.cli.errors import CliError, bad_value

if TYPE_CHECKING:
    from sympozium_schedule.core.requests import Limits
    from sympozium_schedule.ports.bus import Credential
    from sympozium_schedule.runtime.api import ConsoleSettings
    from sympozium_schedule.runtime.bus_identity import CalloutConfig

class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


# Sympozium's IPC bridge falls back to this when EVENT_BUS_URL is unset.
SYMPOZIUM_EVENT_BUS = "nats://nats.sympozium-system.svc:4222"

EventBusUrl = Annotated[str | None, typer.Option(
    "--event-bus-url", "--nats-url", metavar="URL", envvar="EVENT_BUS_URL", show_default=False,
    help="The NATS server (env EVENT_BUS_URL).")]
# The bus login and trust flags, the same on `router` and `run` (whose router they configure).
_BUS = "Bus (self-scheduling)"
NatsUser = Annotated[str | None, typer.Option(
    "--nats-user", metavar="USER", envvar="NATS_USER", show_default=False,
    help="The router's own login on the NATS server (env NATS_USER).", rich_help_panel=_BUS)]
NatsPasswordFile = Annotated[Path | None, typer.Option(
    "--nats-password-file", metavar="FILE", envvar="NATS_PASSWORD_FILE", show_default=False,
    help="A file holding that user's password (env NATS_PASSWORD_FILE).", rich_help_panel=_BUS)]
NatsNkeyFile = Annotated[Path | None, typer.Option(
    "--nats-nkey-file", metavar="FILE", envvar="NATS_NKEY_FILE", show_default=False,
    help="Log in with the nkey seed in this file instead (env NATS_NKEY_FILE).",
    rich_help_panel=_BUS)]
AuthCallout = Annotated[Path | None, typer.Option(
    "--auth-callout", metavar="FILE", envvar="SYMPOZIUM_AUTH_CALLOUT", show_default=False,
    help="Kubernetes mode: serve the NATS auth callout for agents' bridges as this file "
         "configures it (see docs/security.md).", rich_help_panel=_BUS)]
AllowUnscoped = Annotated[bool, typer.Option(
    "--allow-unscoped-publishers",
    help="Also apply requests on sympozium.schedule.upsert, believing the identity the "
         "message names (Sympozium's own bridge). Only on a network where every publisher "
         "is trusted.", rich_help_panel=_BUS)]
Kubeconfig = Annotated[Path | None, typer.Option(
    "--kubeconfig", metavar="PATH", show_default=False,
    help="Kubeconfig file. Default: $KUBECONFIG, ~/.kube/config, else in-cluster.")]
Context = Annotated[str | None, typer.Option(
    "--context", metavar="NAME", show_default=False, help="Kubeconfig context.")]
Namespaces = Annotated[list[str] | None, typer.Option(
    "-n", "--namespace", metavar="NS", show_default=False,
    help="Watch only this namespace (repeat for several). Default: all namespaces.")]


def check_log_level(level: str) -> str:
    import logging

    if level.upper() not in logging.getLevelNamesMapping():
        raise bad_value("unknown level (debug, info, warning, error, critical)",
                        flag="--log-level", value=level)
    return level


def check_namespaces(values: list[str] | None) -> tuple[str, ...] | None:
    from sympozium_schedule.core.model import is_dns1123_label

    if not values:
        return None
    for value in values:
        if not is_dns1123_label(value):
            raise bad_value("not a namespace name", flag="--namespace", value=value)
    return tuple(dict.fromkeys(values))


def run_kubernetes(*, kubeconfig: Path | None, context: str | None, namespaces: list[str] | None,
                   nats_url: str | None, http_port: int | None, leader_election: bool,
                   lease_namespace: str | None, qps: float, burst: int, controller: bool = True,
                   console: ConsoleSettings | None = None, credential: Credential | None = None,
                   callout: CalloutConfig | None = None, allow_unscoped: bool = False,
                   shards: int = 1) -> None:
    """The controller (and, with a NATS URL, the router) against a cluster."""
    from sympozium_schedule.ports.store import StoreError
    from sympozium_schedule.runtime.kubernetes_mode import KubernetesSettings
    from sympozium_schedule.runtime.kubernetes_mode import run_kubernetes as run_k8s

    if kubeconfig is not None and not kubeconfig.is_file():
        raise bad_value("no such file", flag="--kubeconfig", value=str(kubeconfig))
    if qps <= 0 or burst < 1:
        raise bad_value("--kube-qps must be > 0 and --kube-burst >= 1", flag="--kube-qps", value=qps)
    from sympozium_schedule.core.shards import MAX_SHARDS

    if not 1 <= shards <= MAX_SHARDS:
        raise bad_value(f"must be between 1 and {MAX_SHARDS} (the install's Role names that many "
                        "shard Leases)", flag="--shards", value=shards)
    if shards > 1 and not leader_election:
        raise bad_value("shards are held through Leases: drop --no-leader-election",
                        flag="--shards", value=shards)
    settings = KubernetesSettings(
        kubeconfig=kubeconfig, context=context, namespaces=check_namespaces(namespaces),
        nats_url=nats_url, http_port=http_port, leader_election=leader_election,
        qps=qps, burst=burst, controller=controller, console=console, shards=shards,
        router_credential=credential, callout=callout, allow_unscoped_publishers=allow_unscoped)
    if lease_namespace is not None:
        settings.lease_namespace = lease_namespace
    try:
        asyncio.run(run_k8s(settings))
    except StoreError as exc:
        raise CliError(str(exc)) from exc


def register(app: typer.Typer) -> None:
    """Add the service commands to the root command."""

    @app.command()
    def router(
        nats_url: EventBusUrl = None,
        kubernetes: Annotated[bool, typer.Option(
            "--kubernetes", help="Apply requests to a cluster instead of a data directory.")] = False,
        kubeconfig: Kubeconfig = None,
        context: Context = None,
        data_dir: Annotated[Path | None, typer.Option(
            "--data-dir", metavar="DIR", show_default=False,
            help="Embedded mode: the data directory (default as for run).")] = None,
        max_schedules: Annotated[int, typer.Option(
            "--max-schedules-per-instance", metavar="N",
            help="Agent-created schedules allowed per instance.")] = 10,
        min_interval: Annotated[str, typer.Option(
            "--min-interval", metavar="DURATION",
            help="The shortest interval between fires an agent may ask for.")] = "5m",
        max_task_bytes: Annotated[int, typer.Option(
            "--max-task-bytes", metavar="N", help="The largest task an agent may set.")] = 8192,
        nats_user: NatsUser = None,
        nats_password_file: NatsPasswordFile = None,
        nats_nkey_file: NatsNkeyFile = None,
        auth_callout: AuthCallout = None,
        allow_unscoped_publishers: AllowUnscoped = False,
        http_port: Annotated[int | None, typer.Option(
            "--http-port", metavar="PORT", show_default=False,
            help="Serve /metrics, /healthz, /readyz.")] = None,
        log_format: Annotated[LogFormat, typer.Option("--log-format")] = LogFormat.AUTO,
        log_level: Annotated[str, typer.Option("--log-level", metavar="LEVEL")] = "info",
    ) -> None:
        """The Schedule Router alone: apply agents' schedule requests from NATS to the store."""
        from sympozium_schedule.cli.options import duration as _duration
        from sympozium_schedule.core.requests import Limits
        from sympozium_schedule.runtime.logs import configure

        limits = Limits(max_schedules_per_instance=max_schedules,
                        min_interval=_duration(min_interval, "--min-interval"),
                        max_task_bytes=max_task_bytes)
        if max_schedules < 0 or max_task_bytes < 1:
            raise bad_value("must be positive", flag="--max-task-bytes", value=max_task_bytes)
        credential = router_credential(nats_user, nats_password_file, nats_nkey_file)
        callout = load_callout(auth_callout) if auth_callout is not None else None
        if callout is not None and not kubernetes:
            raise bad_value("needs --kubernetes (embedded `run` serves its own callout)",
                            flag="--auth-callout", value=str(auth_callout))
        configure(log_format.value, check_log_level(log_level))
        if kubernetes:
            if not nats_url:
                raise bad_value("is required (or EVENT_BUS_URL)", flag="--nats-url", value="")
            run_router_kubernetes(kubeconfig=kubeconfig, context=context, nats_url=nats_url,
                                  http_port=http_port, limits=limits, credential=credential,
                                  callout=callout, allow_unscoped=allow_unscoped_publishers)
            return
        asyncio.run(_embedded_router(data_dir, nats_url, limits, credential, allow_unscoped_publishers))

    @app.command()
    def bridge(
        ipc_path: Annotated[Path, typer.Option(
            "--ipc-path", metavar="DIR", help="The agent's IPC folder.")] = Path("/ipc"),
        agent_run_id: Annotated[str, typer.Option(
            "--agent-run-id", metavar="NAME", envvar="AGENT_RUN_ID",
            help="The AgentRun this bridge serves (env AGENT_RUN_ID).")] = "",
        instance: Annotated[str, typer.Option(
            "--instance", metavar="NAME", envvar="INSTANCE_NAME",
            help="Its SympoziumInstance (env INSTANCE_NAME).")] = "",
        namespace: Annotated[str, typer.Option(
            "--namespace", metavar="NS", envvar="AGENT_NAMESPACE",
            help="Its namespace (env AGENT_NAMESPACE).")] = "default",
        event_bus_url: EventBusUrl = None,
        token_file: Annotated[Path | None, typer.Option(
            "--token-file", metavar="FILE", envvar="EVENT_BUS_TOKEN_FILE", show_default=False,
            help="The run's credential for the bus, re-read at each reconnect: in a cluster, the "
                 "pod's projected ServiceAccount token (env EVENT_BUS_TOKEN_FILE).")] = None,
        log_format: Annotated[LogFormat, typer.Option("--log-format")] = LogFormat.AUTO,
        log_level: Annotated[str, typer.Option("--log-level", metavar="LEVEL")] = "info",
    ) -> None:
        """The IPC bridge of one agent run: forwards <ipc>/schedules requests to NATS and
        writes the router's answers back. A drop-in for Sympozium's sidecar. (Under `run`,
        each run's bridge runs inside `run`, with a credential of its own.)"""
        from sympozium_schedule.core.model import is_dns1123_label
        from sympozium_schedule.runtime.bridge import Bridge, BridgeSettings
        from sympozium_schedule.runtime.logs import configure

        if not agent_run_id:
            raise bad_value("is required (or AGENT_RUN_ID)", flag="--agent-run-id", value="")
        if not instance:
            raise bad_value("is required (or INSTANCE_NAME)", flag="--instance", value="")
        if not is_dns1123_label(namespace):
            raise bad_value("not a namespace name", flag="--namespace", value=namespace)
        if token_file is not None and not token_file.is_file():
            raise bad_value("no such file", flag="--token-file", value=str(token_file))
        url = event_bus_url or SYMPOZIUM_EVENT_BUS
        configure(log_format.value, check_log_level(log_level))
        settings = BridgeSettings(ipc_path=ipc_path, agent_run_id=agent_run_id, instance=instance,
                                  namespace=namespace, nats_url=url, token_file=token_file)
        try:
            asyncio.run(_until_signal(Bridge(settings).run))
        except OSError as exc:
            raise CliError(f"cannot watch {ipc_path / 'schedules'}: {exc}") from exc

    @app.command()
    def manifests(
        crd: Annotated[bool, typer.Option(
            "--crd", help="Only the SympoziumSchedule CRD.")] = False,
        image: Annotated[str | None, typer.Option(
            "--image", metavar="IMAGE", show_default=False, help="The controller image.")] = None,
        namespace: Annotated[str | None, typer.Option(
            "--namespace", metavar="NS", show_default=False,
            help="Install into this namespace (default sympozium-schedule).")] = None,
        event_bus_url: Annotated[str | None, typer.Option(
            "--event-bus-url", metavar="URL", show_default=False,
            help="Run the router against this NATS server.")] = None,
        standalone: Annotated[bool, typer.Option(
            "--standalone",
            help="Include Sympozium's AgentRun and SympoziumInstance CRDs (no Sympozium "
                 "installed).")] = False,
    ) -> None:
        """Print the Kubernetes install (CRDs, RBAC, Deployment) for kubectl apply -f -."""
        from sympozium_schedule.core.model import is_dns1123_label
        from sympozium_schedule.manifests import generate

        if crd:
            typer.echo(generate.crd_yaml(), nl=False)
            return
        if namespace is not None and not is_dns1123_label(namespace):
            raise bad_value("not a namespace name", flag="--namespace", value=namespace)
        typer.echo(generate.render_all(image=image, namespace=namespace or generate.NAMESPACE,
                                       event_bus_url=event_bus_url, standalone=standalone),
                   nl=False)


async def _until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGINT/SIGTERM set ``stop``."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)


def router_credential(user: str | None, password_file: Path | None,
                      nkey_file: Path | None) -> Credential | None:
    """The router's own login from the flags (each secret from a file, as a mounted Secret)."""
    from sympozium_schedule.ports.bus import Credential

    def read(path: Path, flag: str) -> str:
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise bad_value(f"cannot be read ({exc.strerror})", flag=flag, value=str(path)) from exc
        if not text:
            raise bad_value("is empty", flag=flag, value=str(path))
        return text

    if nkey_file is not None:
        if user is not None:
            raise bad_value("give --nats-user or --nats-nkey-file, not both", flag="--nats-nkey-file",
                            value=str(nkey_file))
        return Credential(nkey_seed=read(nkey_file, "--nats-nkey-file"))
    if password_file is not None and user is None:
        raise bad_value("needs --nats-user", flag="--nats-password-file", value=str(password_file))
    if user is not None:
        password = read(password_file, "--nats-password-file") if password_file is not None else None
        return Credential(user=user, password=password)
    return None


def load_callout(path: Path) -> CalloutConfig:
    from sympozium_schedule.runtime.bus_identity import CalloutConfig, CalloutConfigError

    try:
        return CalloutConfig.load(path)
    except CalloutConfigError as exc:
        raise bad_value(str(exc), flag="--auth-callout", value=str(path)) from exc


def run_router_kubernetes(*, kubeconfig: Path | None, context: str | None, nats_url: str,
                          http_port: int | None, limits: Limits, credential: Credential | None,
                          callout: CalloutConfig | None, allow_unscoped: bool) -> None:
    """The router alone against a cluster (and the bus's auth callout, when configured)."""
    from sympozium_schedule.ports.store import StoreError
    from sympozium_schedule.runtime.kubernetes_mode import KubernetesSettings
    from sympozium_schedule.runtime.kubernetes_mode import run_kubernetes as run_k8s

    if kubeconfig is not None and not kubeconfig.is_file():
        raise bad_value("no such file", flag="--kubeconfig", value=str(kubeconfig))
    settings = KubernetesSettings(
        kubeconfig=kubeconfig, context=context, nats_url=nats_url, http_port=http_port,
        leader_election=False, controller=False, limits=limits, router_credential=credential,
        callout=callout, allow_unscoped_publishers=allow_unscoped)
    try:
        asyncio.run(run_k8s(settings))
    except StoreError as exc:
        raise CliError(str(exc)) from exc


async def _embedded_router(data_dir: Path | None, nats_url: str | None, limits: Limits,
                           credential: Credential | None, allow_unscoped: bool) -> None:
    from sympozium_schedule.adapters.nats.server import read_url
    from sympozium_schedule.adapters.sqlite import SQLiteStore
    from sympozium_schedule.runtime.paths import default_data_dir, store_path
    from sympozium_schedule.runtime.router import Router, RouterSettings

    directory = data_dir or default_data_dir()
    if not nats_url and read_url(directory):
        raise bad_value(f"is required: the server `run` started for {directory} admits only run's own "
                        "parts, and its router already runs inside `run`. Give --nats-url for a NATS "
                        "server of your own", flag="--nats-url", value="")
    if not nats_url:
        raise bad_value("is required (or EVENT_BUS_URL)", flag="--nats-url", value="")
    store = SQLiteStore(store_path(directory))
    router = Router(store, RouterSettings(nats_url=nats_url, limits=limits, credential=credential,
                                          allow_unscoped_publishers=allow_unscoped))
    task = asyncio.create_task(router.run())

    async def stop_on_signal(stop: asyncio.Event) -> None:
        await stop.wait()
        task.cancel()

    try:
        await asyncio.gather(_until_signal(stop_on_signal), task)
    except asyncio.CancelledError:
        pass
    finally:
        await store.close()
