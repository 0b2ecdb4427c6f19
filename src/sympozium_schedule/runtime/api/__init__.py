"""The console: a REST API under ``/api/v1/``, one live stream of changes, and the web
pages that use them, all served by ``run`` (aiohttp; plain HTML, CSS and ES modules,
no build step and no Node.js at run time).

Contract. Reads and writes go to the same :class:`~sympozium_schedule.ports.store.Store`
the scheduler uses, so the console works alike in embedded and Kubernetes mode.
Request bodies are Sympozium's own (``name``, ``agentRef``/``instanceRef``,
``schedule``, ``task``, ...), validated by the core into the one-line messages the
CLI prints. Live updates come from the controller's informers, never from polling
the store per client. Every request is checked by an :class:`~.auth.Access`: a
token in embedded mode, TokenReview and SubjectAccessReview in Kubernetes mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sympozium_schedule.runtime.api.settings import ConsoleSettings

if TYPE_CHECKING:
    from sympozium_schedule.runtime.api.server import Console

__all__ = ["Console", "ConsoleSettings"]


def __getattr__(name: str) -> Any:
    """The server (aiohttp) is imported when first used, not with its settings."""
    if name == "Console":
        from sympozium_schedule.runtime.api.server import Console

        return Console
    raise AttributeError(name)
