"""The ``sympozium-schedule`` command: a thin layer of flags over the runtime and the store.

Each command parses and checks its flags, does its store work in one
``asyncio.run`` (the store always closed), and prints. Failures are raised
as :class:`~sympozium_schedule.cli.errors.CliError` and reported as one
``error:`` line by the root group. Heavy modules (the runtime, jsonschema)
are imported by the commands that need them, so ``get`` starts quickly.

The commands live by concern: ``scheduler`` (run), ``objects`` (apply, get,
delete, describe, logs), ``schedules`` (next, trigger, suspend, resume,
backfill) and ``services`` (router, bridge, manifests); this module only
assembles them, in the order ``--help`` lists them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sympozium_schedule.cli import objects, scheduler, schedules, services
from sympozium_schedule.cli.errors import PROG, OneLineErrors
from sympozium_schedule.cli.options import out

app = typer.Typer(
    cls=OneLineErrors,
    name=PROG,
    help="Scheduled tasks for Sympozium agents: SympoziumSchedules whose ticks create AgentRuns.\n\n"
         "Objects live in a store in a data directory (--data-dir; default $SYMPOZIUM_DATA_DIR, "
         "else ~/.local/share/sympozium-schedule). `run` is the scheduler; the other commands "
         "read and write the store, with or without it running.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("sympozium-schedule")
    except PackageNotFoundError:
        text = "unknown"
    out(f"{PROG} {text}\n")
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Scheduled tasks for Sympozium agents."""


for _name, _command in (
    ("run", scheduler.run),
    ("apply", objects.apply),
    ("get", objects.get),
    ("delete", objects.delete),
    ("describe", objects.describe),
    ("next", schedules.next_),
    ("trigger", schedules.trigger),
    ("suspend", schedules.suspend),
    ("resume", schedules.resume),
    ("backfill", schedules.backfill),
    ("logs", objects.logs),
):
    app.command(_name)(_command)
services.register(app)

if __name__ == "__main__":
    app()
