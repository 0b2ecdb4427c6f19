"""The flags of ``run`` that say which agents exist and what they get.

Agents are the operator's to define: ``--agent NAME=COMMAND`` (repeatable), the
built-ins ``demo`` and ``llm``, ``--agent-command`` for the default one. An
instance only picks a name (annotation ``sympozium.ai/agent``); a command never
comes from an object in the store, which people and agents other than the
operator can write.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from sympozium_schedule.cli.errors import CliError, bad_value
from sympozium_schedule.core.model import is_dns1123_label

COMMAND_AGENT = "default"  # the name --agent-command gives its agent
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_command(text: str, flag: str) -> tuple[str, ...]:
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise bad_value(f"not a valid command line ({exc})", flag=flag, value=text) from exc
    if not words:
        raise bad_value("the command is empty", flag=flag, value=text)
    return words


def agents(values: Sequence[str], command: str | None, default: str | None,
           builtin: Mapping[str, tuple[str, ...]]) -> tuple[dict[str, tuple[str, ...]], str]:
    """The agents by name and the default one's name, from the flags."""
    out = dict(builtin)
    for value in values:
        name, sep, text = value.partition("=")
        name = name.strip()
        if not sep:
            raise bad_value("expected NAME=COMMAND", flag="--agent", value=value)
        if not is_dns1123_label(name):
            raise bad_value("the name must be lowercase letters, digits and '-' (it is matched "
                            "against the sympozium.ai/agent annotation)", flag="--agent", value=value)
        if name in builtin:
            raise bad_value(f"{name} is built in (built in: {', '.join(builtin)}); choose another "
                            "name", flag="--agent", value=value)
        if name in out:
            raise bad_value(f"agent {name} is defined twice", flag="--agent", value=value)
        out[name] = split_command(text, "--agent")
    chosen = default
    if command is not None:
        if default is not None:
            raise CliError("--agent-command defines the default agent; it cannot be combined with "
                           "--default-agent (name the command with --agent NAME=COMMAND instead)",
                           exit_code=2)
        out[COMMAND_AGENT] = split_command(command, "--agent-command")
        chosen = COMMAND_AGENT
    chosen = chosen or "demo"
    if chosen not in out:
        raise bad_value(f"no such agent (defined: {', '.join(sorted(out))})",
                        flag="--default-agent", value=chosen)
    return out, chosen


def agent_env(values: Sequence[str], environ: Mapping[str, str],
              reserved: Sequence[str]) -> dict[str, str]:
    """``--agent-env NAME`` passes this process's variable on; ``NAME=VALUE`` sets one."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, given = value.partition("=")
        if not _ENV_NAME.fullmatch(name):
            raise bad_value("not a variable name", flag="--agent-env", value=value)
        if name in reserved:
            raise bad_value("the runner sets this one for every agent (docs/agents.md)",
                            flag="--agent-env", value=value)
        if sep:
            out[name] = given
        elif name in environ:
            out[name] = environ[name]
        else:
            raise bad_value("not set in this environment (give NAME=VALUE to set it)",
                            flag="--agent-env", value=value)
    return out


def paths(values: Sequence[Path], flag: str) -> tuple[Path, ...]:
    for path in values:
        if not path.exists():
            raise bad_value("no such file or directory", flag=flag, value=str(path))
    return tuple(p.resolve() for p in values)


def data_dir(path: Path) -> Path:
    """A data directory that is a directory or does not exist yet."""
    if path.exists() and not path.is_dir():
        raise bad_value("not a directory", flag="--data-dir", value=str(path))
    return path
