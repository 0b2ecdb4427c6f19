"""The bus port in memory (tests, and a router without a server): see :mod:`.bus`."""

from sympozium_schedule.adapters.memory.bus import MemoryBroker, MemoryBus

__all__ = ["MemoryBroker", "MemoryBus"]
