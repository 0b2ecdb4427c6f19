"""Output as kubectl prints it: plain tables, ``-o yaml`` and ``-o json``.

Tables are laid out by rich and written as plain text (no colour, no box,
trailing spaces trimmed, never cropped to the terminal) so they read the
same on a terminal and in a pipe. Times are relative, in kubectl's units
(``12s``, ``3m20s``, ``5h``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import yaml

from sympozium_schedule.cli.kinds import KindInfo
from sympozium_schedule.core.model import LABEL_SCHEDULE, Kind, parse_time
from sympozium_schedule.ports.store import Obj

NONE = "<none>"
_UNLIMITED = 1_000_000  # columns: rich lays out for a width; this one never binds


class OutputFormat(StrEnum):
    TABLE = "table"
    YAML = "yaml"
    JSON = "json"


# --- time -----------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration (k8s.io/apimachinery/pkg/util/duration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(value: object, now: datetime) -> str:
    """How long ago an RFC 3339 time was, as in an AGE column."""
    t = parse_time(value)
    return NONE if t is None else human_duration((now - t).total_seconds())


def relative(value: object, now: datetime) -> str:
    """``12s ago`` (truncated, as an AGE column) or ``in 8s`` (rounded up: a timer due
    in 7.6s has not fired 7s from now)."""
    t = parse_time(value)
    if t is None:
        return NONE
    delta = (t - now).total_seconds()
    if delta > 0:
        return f"in {human_duration(math.ceil(delta))}"
    return f"{human_duration(-delta)} ago"


def stamp(value: object, now: datetime) -> str:
    """``2026-03-01T10:00:00Z (12s ago)`` for describe."""
    t = parse_time(value)
    return NONE if t is None else f"{value} ({relative(value, now)})"


# --- tables ---------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns three spaces apart, as kubectl prints them. Nothing is cropped or
    wrapped to the terminal's width: one object is one line, as in a pipe."""
    # rich is imported here, not at the top: most commands print no table.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, show_header=True, header_style=None, pad_edge=False,
                 padding=(0, 3, 0, 0), show_edge=False)
    for header in headers:
        grid.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        grid.add_row(*(Text(cell) for cell in row))
    buffer = io.StringIO()
    console = Console(file=buffer, width=_UNLIMITED, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, markup=False, soft_wrap=False)
    console.print(grid)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _section(obj: Obj, key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


def _phase(spec: dict[str, Any], status: dict[str, Any]) -> str:
    """The phase, with the pause note of a suspended schedule (shortened)."""
    phase = _text(status.get("phase"))
    note = spec.get("suspendReason") if spec.get("suspend") else None
    if isinstance(note, str) and note:
        note = " ".join(note.split())
        phase += f" ({note[:37] + '...' if len(note) > 40 else note})"
    return phase


def _schedule_row(obj: Obj, now: datetime) -> list[str]:
    spec, status = _section(obj, "spec"), _section(obj, "status")
    return [
        str(_meta(obj).get("name", "")), _text(spec.get("instanceRef")), _text(spec.get("schedule")),
        _text(spec.get("type") or "scheduled"), _phase(spec, status),
        relative(status.get("lastRunTime"), now), relative(status.get("nextRunTime"), now),
        age(_meta(obj).get("creationTimestamp"), now),
    ]


def run_duration(obj: Obj, now: datetime) -> str:
    """How long the agent ran (so far, while it runs)."""
    status = _section(obj, "status")
    started = parse_time(status.get("startedAt"))
    if started is None:
        return NONE
    ended = parse_time(status.get("completedAt")) or now
    return human_duration((ended - started).total_seconds())


def run_outcome(obj: Obj, width: int = 60) -> str:
    """The answer's first line, or ``error: ...``, on one line of at most ``width``."""
    status = _section(obj, "status")
    error, result = status.get("error"), status.get("result")
    if isinstance(error, str) and error.strip():
        text = "error: " + error.strip()
    elif isinstance(result, str) and result.strip():
        text = result.strip()
    else:
        return NONE
    line = " ".join(text.splitlines()[0].split())
    return line if len(line) <= width else line[:width - 3] + "..."


def _run_row(obj: Obj, now: datetime) -> list[str]:
    labels = _meta(obj).get("labels") or {}
    return [
        str(_meta(obj).get("name", "")), _text(_section(obj, "spec").get("instanceRef")),
        _text(labels.get(LABEL_SCHEDULE) if isinstance(labels, dict) else None),
        _text(_section(obj, "status").get("phase")), run_duration(obj, now), run_outcome(obj),
        age(_meta(obj).get("creationTimestamp"), now),
    ]


def _instance_row(obj: Obj, now: datetime) -> list[str]:
    agents = _section(_section(obj, "spec"), "agents")
    default = agents.get("default") if isinstance(agents.get("default"), dict) else {}
    return [str(_meta(obj).get("name", "")), _text((default or {}).get("model")),
            age(_meta(obj).get("creationTimestamp"), now)]


def _configmap_row(obj: Obj, now: datetime) -> list[str]:
    count = len(_section(obj, "data")) + len(_section(obj, "binaryData"))
    return [str(_meta(obj).get("name", "")), str(count), age(_meta(obj).get("creationTimestamp"), now)]


def _secret_row(obj: Obj, now: datetime) -> list[str]:
    return [str(_meta(obj).get("name", "")), _text(obj.get("type")), str(len(_section(obj, "data"))),
            age(_meta(obj).get("creationTimestamp"), now)]


def hide_secret(obj: Obj) -> Obj:
    """A Secret as ``get`` shows it: its keys, each value replaced by its size."""
    if obj.get("kind") != Kind.SECRET.value:
        return obj
    out = dict(obj)
    for section in ("data", "stringData"):
        values = out.get(section)
        if isinstance(values, dict):
            out[section] = {k: f"<hidden: {len(v) if isinstance(v, str) else 0} characters>"
                            for k, v in values.items()}
    return out


def event_time(obj: Obj) -> str:
    return str(obj.get("lastTimestamp") or obj.get("eventTime")
               or _meta(obj).get("creationTimestamp") or "")


def _event_row(obj: Obj, now: datetime) -> list[str]:
    involved = _section(obj, "involvedObject")
    target = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    return [age(event_time(obj), now), _text(obj.get("type")), _text(obj.get("reason")), target,
            str(obj.get("message") or "")]


Row = Callable[[Obj, datetime], list[str]]
COLUMNS: dict[Kind, tuple[tuple[str, ...], Row]] = {
    Kind.SCHEDULE: (("NAME", "INSTANCE", "SCHEDULE", "TYPE", "PHASE", "LAST RUN", "NEXT RUN", "AGE"),
                    _schedule_row),
    Kind.AGENT_RUN: (("NAME", "INSTANCE", "SCHEDULE", "PHASE", "DURATION", "RESULT", "AGE"),
                     _run_row),
    Kind.INSTANCE: (("NAME", "MODEL", "AGE"), _instance_row),
    Kind.CONFIG_MAP: (("NAME", "DATA", "AGE"), _configmap_row),
    Kind.EVENT: (("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), _event_row),
    Kind.SECRET: (("NAME", "TYPE", "DATA", "AGE"), _secret_row),
}


def kind_table(info: KindInfo, objects: Sequence[Obj], now: datetime, *,
               namespaces: bool, prefix: bool) -> str:
    """The table for one kind; ``namespaces`` adds the NAMESPACE column (``-A``),
    ``prefix`` names rows ``kind.group/name`` (when several kinds are listed)."""
    headers, row = COLUMNS[info.kind]
    if info.kind is Kind.EVENT:
        objects = sorted(objects, key=event_time)
    rows = []
    for obj in objects:
        cells = row(obj, now)
        if prefix and info.kind is not Kind.EVENT:
            cells[0] = f"{info.qualified}/{cells[0]}"
        if namespaces:
            cells.insert(0, str(_meta(obj).get("namespace", "")))
        rows.append(cells)
    return table(("NAMESPACE", *headers) if namespaces else headers, rows)


# --- documents ------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a task) as ``|`` blocks, not one long quoted line."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


_FIRST = ("apiVersion", "kind", "metadata")
_FIRST_META = ("name", "namespace", "labels", "annotations", "ownerReferences")


def _first(mapping: dict[str, Any], keys: Sequence[str], last: Sequence[str] = ()) -> dict[str, Any]:
    head = {k: mapping[k] for k in keys if k in mapping}
    tail = {k: mapping[k] for k in last if k in mapping}
    middle = {k: v for k, v in mapping.items() if k not in head and k not in tail}
    return head | middle | tail


def canonical(obj: Obj) -> Obj:
    """Keys in the order people expect to read them (apiVersion, kind, metadata with
    the name first, spec, status last), whatever order the store kept them in."""
    out = _first(hide_secret(obj), _FIRST, ("status",))
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = _first(out["metadata"], _FIRST_META)
    return out


def as_list(items: Sequence[Obj]) -> Obj:
    return {"apiVersion": "v1", "kind": "List", "items": [canonical(item) for item in items]}


def dump(obj: object, fmt: OutputFormat) -> str:
    if isinstance(obj, dict) and obj.get("kind") != "List":
        obj = canonical(obj)
    if fmt is OutputFormat.JSON:
        return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    text: str = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                          default_flow_style=False)
    return text
