"""A run of a schedule now, at a person's request (the CLI's ``trigger``, the console's)."""

from __future__ import annotations

import contextlib

from sympozium_schedule.core.decide import MANAGED_STATUS_KEYS, Decision
from sympozium_schedule.core.manual import trigger
from sympozium_schedule.core.merge import diff_patch
from sympozium_schedule.core.model import (
    LABEL_SCHEDULE,
    MEMORY_KEY,
    Kind,
    RunView,
    ScheduleView,
    memory_configmap_name,
)
from sympozium_schedule.ports.store import Conflict, NotFound, Ref, Store
from sympozium_schedule.runtime.clock import Clock, system_clock


async def trigger_now(store: Store, namespace: str, name: str, *,
                      clock: Clock = system_clock) -> Decision:
    """Start a run of a schedule now (the CLI's ``trigger``); the policy still applies.

    Reads what it needs straight from the store, so it works with or without a
    controller running. The status update is conditional and retried on a
    conflict, so a fire landing at the same moment is never miscounted.
    """
    ref = Ref(Kind.SCHEDULE, namespace, name)
    obj = await store.get(ref)
    view = ScheduleView.of(obj)
    listing = await store.list(Kind.AGENT_RUN, namespace=namespace, labels={LABEL_SCHEDULE: name})
    runs = [RunView.of(r) for r in listing.items]
    instance = memory = None
    if view.spec is not None:
        with contextlib.suppress(NotFound):
            instance = await store.get(Ref(Kind.INSTANCE, namespace, view.spec.instance_ref))
        with contextlib.suppress(NotFound):
            cm = await store.get(Ref(Kind.CONFIG_MAP, namespace,
                                     memory_configmap_name(view.spec.instance_ref)))
            value = (cm.get("data") or {}).get(MEMORY_KEY)
            memory = value if isinstance(value, str) else None
    decision = trigger(view, runs, instance, memory, clock())
    assert decision.create is not None and decision.tick is not None
    for run_name in decision.delete:
        with contextlib.suppress(NotFound):
            await store.delete(Ref(Kind.AGENT_RUN, namespace, run_name))
    run = await store.create(decision.create)
    run_ref = {k: run[k] for k in ("apiVersion", "kind")} | {
        "name": run["metadata"]["name"], "namespace": namespace}
    patch = diff_patch(obj.get("status") or {}, decision.status, MANAGED_STATUS_KEYS)
    version = obj["metadata"].get("resourceVersion")
    for _ in range(10):
        try:
            await store.patch_status(ref, patch, resource_version=version)
            break
        except Conflict:
            fresh = await store.get(ref)
            version = fresh["metadata"].get("resourceVersion")
            status = fresh.get("status") or {}
            active = [a for a in status.get("active") or [] if a.get("name") not in decision.delete]
            if all(a.get("name") != run_ref["name"] for a in active):
                active.append(run_ref)
            patch = {
                "totalRuns": int(status.get("totalRuns") or 0) + 1,
                "lastRunName": run_ref["name"],
                "lastRunTime": decision.status["lastRunTime"],
                "active": active,
            }
    return decision
