"""``run --demo``: a schedule that fires right away, and a banner saying what to try.

The demo objects live in ``manifests/demo.yaml``. They are created once the
scheduler holds the data directory and is ready (so a second ``run`` that is
refused never writes them), and an object already present, perhaps edited
by the user, is left as it is.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import yaml

from sympozium_schedule import manifests
from sympozium_schedule.cli.errors import PROG
from sympozium_schedule.cli.kinds import info
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import AlreadyExists, Obj, Store

PROG_ENV = "SYMPOZIUM_SCHEDULE_PROG"  # ./dev sets it to itself
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


def program() -> str:
    """How to type this command here: what ./dev says it is, the command on PATH, the
    script as it was started, or the module through this Python."""
    given = os.environ.get(PROG_ENV, "").strip()
    if given:
        return given
    if shutil.which(PROG):
        return PROG
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == PROG:
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m sympozium_schedule.cli.main"


def banner(*, created: list[str], present: list[str], data_dir: Path, default_dir: Path,
           runner: bool, default_agent: str = "demo", agent_command: tuple[str, ...] = (),
           prog: str | None = None) -> str:
    """What will happen, and the commands to watch it happen."""
    prog = prog or program()
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
    if not runner:
        lines[-1] += "; with --no-runner nothing executes it, so it stays without a phase."
    elif default_agent == "demo":
        lines[-1] += ", which the demo agent (no LLM) answers in about a second."
        lines.append("Schedule demo-planner's agent asks for a schedule of its own with the "
                     f"schedule_task tool: the router creates {DEMO_SELF_SCHEDULED} a few "
                     "seconds after start.")
    else:
        lines[-1] += (f", which your agent {default_agent!r} executes "
                      f"({shlex.join(agent_command)}).")
        lines.append(f"Schedule demo-planner asks its agent to create {DEMO_SELF_SCHEDULED} with "
                     "schedule_task: only the demo agent is sure to; yours may or may not.")
    lines += [
        "In another terminal, try:",
        f"  {prog} get schedules{flag}",
        f"  {prog} describe schedule {DEMO_SCHEDULE}{flag}",
        f"  {prog} get runs{flag}",
        f"  {prog} logs <run name>{flag}",
        f"  {prog} trigger {DEMO_SCHEDULE}{flag}",
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines) + "\n"
