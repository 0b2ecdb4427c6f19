"""The Schedule Router: agents' requests from the bus applied to the store.

:mod:`.router` consumes, applies and answers; :mod:`.messages` reads a message
(who asks, from the subject; which request; where its answer goes);
:mod:`.directory` answers from memory what every request asks of the store.
"""

from sympozium_schedule.runtime.router.directory import AgentDirectory
from sympozium_schedule.runtime.router.router import Router, RouterSettings

__all__ = ["AgentDirectory", "Router", "RouterSettings"]
