"""Errors as a person sees them: one line on stderr starting with ``error:``.

Commands raise :class:`CliError` (or let a store error through); the group's
``main`` turns those, and click's own usage errors, into that one line and
an exit code, so no command has to format errors itself and no traceback
reaches the terminal for anything but a bug.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import typer
from typer.core import TyperGroup

from sympozium_schedule.core.errors import SpecError
from sympozium_schedule.ports.store import StoreError

PROG = "sympozium-schedule"
USAGE = 2  # click's exit code for a bad command line; the brief's for bad flag values


class CliError(Exception):
    """A failure to report as one line; ``exit_code`` 1, or 2 for a bad command line."""

    def __init__(self, message: str, *, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def bad_value(exc: SpecError | str, *, flag: str | None = None, value: object = None) -> CliError:
    """A usage error naming the flag and the value: from a SpecError raised with
    the flag as its field, or from a reason given here."""
    if isinstance(exc, SpecError):
        return CliError(str(exc), exit_code=USAGE)
    return CliError(f"{flag}: {value!r}: {exc}", exit_code=USAGE)


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def report(message: str) -> None:
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {one_line(message)}\n")


def _click_exceptions() -> ModuleType:
    """typer vendors click from 0.2x on; older releases raise click's own exceptions."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - typer with an external click
        return importlib.import_module("click.exceptions")


class OneLineErrors(TyperGroup):
    """The root command: runs in click's non-standalone mode and reports every
    expected failure as one ``error:`` line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        click_exc = _click_exceptions()
        try:
            result = super().main(args, prog_name or PROG, complete_var, False,
                                  windows_expand_args, **extra)
        except CliError as exc:
            report(exc.message)
            code = exc.exit_code
        except StoreError as exc:
            report(str(exc))
            code = 1
        except click_exc.NoArgsIsHelpError as exc:
            exc.show()
            code = 0
        except click_exc.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click_exc.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            report(message)
            code = exc.exit_code
        except typer.Abort:
            report("aborted")
            code = 1
        else:
            code = result if isinstance(result, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)
