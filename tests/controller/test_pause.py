from __future__ import annotations

from sympozium_schedule.core.model import Kind
from tests.controller.conftest import Rig, instance, schedule


async def test_pause_on_failure_suspends_at_the_first_failure(rig: Rig) -> None:
    await rig.apply(instance(), schedule("fragile", pauseOnFailure=True))
    await rig.start()
    (first,) = await rig.runs("fragile")
    await rig.advance(3)
    assert len(await rig.runs("fragile")) == 1  # Forbid: the unfinished run holds the rest
    await rig.finish(first["metadata"]["name"], "Failed", "no luck")
    spec = (await rig.get(Kind.SCHEDULE, "fragile"))["spec"]
    assert spec["suspend"] is True
    assert first["metadata"]["name"] in spec["suspendReason"]
    await rig.advance(5)
    assert len(await rig.runs("fragile")) == 1
    assert (await rig.status("fragile"))["phase"] == "Suspended"
