"""``run --demo``: a schedule that fires right away, and a banner saying what to try.

The demo objects live in ``manifests/demo.yaml``. They are created once the
scheduler holds the data directory and is ready (so a second ``run`` that is
refused never writes them), and an object already present, perhaps edited
by the user, is left as it is.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from sympozium_schedule import manifests
from sympozium_schedule.cli.kinds import info
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import AlreadyExists, Obj, Store

DEMO_FILE = "demo.yaml"
DEMO_SCHEDULE = "demo-heartbeat"
# The planner's agent asks for this schedule through schedule_task (see demo.yaml).
DEMO_SELF_SCHEDULED = "demo-followup"


def demo_objects() -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(manifests.path(DEMO_FILE).read_text()) if doc]


def _label(obj: Obj) -> str:
    return f"{info(Kind(obj['kind'])).qualified}/{obj['metadata']['name']}"


async def apply_demo(store: Store) -> tuple[list[str], list[str]]:
    """Create the demo objects that are missing: (created, already present)."""
    created: list[str] = []
    present: list[str] = []
    for obj in demo_objects():
        try:
            await store.create(obj)
            created.append(_label(obj))
        except AlreadyExists:
            present.append(_label(obj))
    return created, present


def banner(*, created: list[str], present: list[str], data_dir: Path, default_dir: Path,
           runner: bool) -> str:
    """What will happen, and the commands to watch it happen."""
    flag = "" if data_dir.resolve() == default_dir.resolve() else \
        f" --data-dir {shlex.quote(str(data_dir))}"
    lines = [f"sympozium-schedule is running the demo (data dir {data_dir})."]
    if created:
        lines.append(f"Created {', '.join(created)}.")
    if present:
        lines.append(f"Already present, left as they are: {', '.join(present)}.")
    expression = next((o["spec"]["schedule"] for o in demo_objects()
                       if o["metadata"]["name"] == DEMO_SCHEDULE), "?")
    lines.append(f"Schedule {DEMO_SCHEDULE} ({expression}) fires now and then on schedule: each "
                 "tick creates an AgentRun")
    if runner:
        lines[-1] += ", which the demo agent (no LLM) answers in about a second."
        lines.append("Schedule demo-planner's agent asks for a schedule of its own with the "
                     f"schedule_task tool: the router creates {DEMO_SELF_SCHEDULED} a few "
                     "seconds after start.")
    else:
        lines[-1] += "; with --no-runner nothing executes it, so it stays without a phase."
    lines += [
        "In another terminal, try:",
        f"  sympozium-schedule get schedules{flag}",
        f"  sympozium-schedule describe schedule {DEMO_SCHEDULE}{flag}",
        f"  sympozium-schedule get runs{flag}",
        f"  sympozium-schedule trigger {DEMO_SCHEDULE}{flag}",
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines) + "\n"
