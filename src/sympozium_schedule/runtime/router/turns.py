"""One instance's turn: its requests are applied one at a time, in the order they
were delivered, while other instances' requests proceed side by side."""

from __future__ import annotations

import asyncio
from typing import Any


class Turn:
    """A FIFO lock per instance, dropped when nobody holds or waits for it (a class
    rather than a generator-based context manager: it is taken for every request)."""

    __slots__ = ("_entry", "_key", "_turns")

    def __init__(self, turns: dict[tuple[str, str], list[Any]], key: tuple[str, str]):
        self._turns, self._key = turns, key
        entry = turns.get(key)
        if entry is None:
            entry = turns[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        self._entry = entry

    async def __aenter__(self) -> None:
        try:
            await self._entry[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry[0].release()
        self._leave()

    def _leave(self) -> None:
        self._entry[1] -= 1
        if self._entry[1] == 0:
            del self._turns[self._key]
