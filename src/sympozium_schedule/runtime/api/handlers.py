"""What every group of the console's handlers stands on: the console, its store and clock,
and reading the schedule a route names (a 404 in the API's words when it is gone).

Apart from :mod:`~.routes` so that the groups of handlers (schedules, fire times,
records) can each live in their own module and share it without importing the
route table that puts them together.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import NotFound, Obj, Ref
from sympozium_schedule.runtime.api.errors import not_found

if TYPE_CHECKING:
    from sympozium_schedule.runtime.api.server import Console

__all__ = ["RUN_KIND", "SCHEDULE_KIND", "Handlers", "by_name"]

SCHEDULE_KIND, RUN_KIND = "sympoziumschedule", "agentrun"


def by_name(items: list[Obj]) -> list[Obj]:
    return sorted(items, key=lambda o: (str(o["metadata"].get("namespace")), str(o["metadata"]["name"])))


class Handlers:
    def __init__(self, console: Console):
        self.console = console
        self.store = console.store

    def _now(self) -> datetime:
        return self.console.clock()

    async def _schedule(self, namespace: str, name: str) -> Obj:
        try:
            return await self.store.get(Ref(Kind.SCHEDULE, namespace, name))
        except NotFound as exc:
            raise not_found(SCHEDULE_KIND, name, namespace) from exc

