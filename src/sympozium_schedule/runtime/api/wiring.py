"""Starting the console inside ``run``: embedded (a token in the data directory) or
Kubernetes (the cluster checks every request). app.py calls one of these."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sympozium_schedule.ports.store import Store
from sympozium_schedule.runtime.api.auth import TOKEN_FILE, KubernetesAccess, TokenAccess, write_token
from sympozium_schedule.runtime.api.server import Console, ConsoleSettings, is_loopback

if TYPE_CHECKING:
    from sympozium_schedule.runtime.controller import Controller
    from sympozium_schedule.runtime.informer import Informer


def _informers(controller: Controller | None) -> list[Informer]:
    if controller is None:
        return []
    return [controller.schedules, controller.runs, controller.instances]


async def start_embedded(settings: ConsoleSettings, store: Store, controller: Controller | None,
                         data_dir: Path) -> Console:
    """A new token each start (a leaked one dies with the process), then listen."""
    token = write_token(data_dir)
    access = TokenAccess(token, reads_need_token=not is_loopback(settings.host))
    console = Console(store, settings, access, data_dir=data_dir,
                      informers=_informers(controller))
    url = await console.start()
    if settings.announce is not None:
        mode = " (read-only)" if settings.read_only else ""
        settings.announce(f"console{mode}: {url}/#token={token}\n"
                          f"  token: {token} (also in {data_dir / TOKEN_FILE})")
    return console


async def start_kubernetes(settings: ConsoleSettings, store: Store,
                           controller: Controller | None) -> Console:
    from sympozium_schedule.adapters.kubernetes.access import AccessReviews

    client = getattr(store, "client", None)
    if client is None:
        raise TypeError("the Kubernetes console needs a KubernetesStore")
    console = Console(store, settings, KubernetesAccess(AccessReviews(client)),
                      informers=_informers(controller))
    url = await console.start()
    if settings.announce is not None:
        settings.announce(f"console: {url} (sign in with your Kubernetes token)")
    return console
