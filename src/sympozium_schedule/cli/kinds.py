"""The kinds the CLI knows and the names a person may type for them.

kubectl accepts a resource's plural, singular and short names; so does this
CLI, case-insensitively, with or without the ``.sympozium.ai`` group suffix.
"""

from __future__ import annotations

from dataclasses import dataclass

from sympozium_schedule.cli.errors import CliError
from sympozium_schedule.core.model import GROUP, Kind


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: Kind
    plural: str
    singular: str
    short: tuple[str, ...]
    group: str  # "" for the core API group (ConfigMap, Event)

    @property
    def qualified(self) -> str:
        """``sympoziumschedule.sympozium.ai`` or ``configmap``: how kubectl names the
        type in messages (``... created``, ``... "x" deleted``)."""
        return f"{self.singular}.{self.group}" if self.group else self.singular

    @property
    def aliases(self) -> tuple[str, ...]:
        return (self.plural, self.singular, *self.short)


KINDS: tuple[KindInfo, ...] = (
    KindInfo(Kind.SCHEDULE, "sympoziumschedules", "sympoziumschedule",
             ("schedules", "schedule", "symsched"), GROUP),
    KindInfo(Kind.INSTANCE, "sympoziuminstances", "sympoziuminstance",
             ("instances", "instance", "syminst"), GROUP),
    KindInfo(Kind.AGENT_RUN, "agentruns", "agentrun", ("runs", "run", "ar"), GROUP),
    KindInfo(Kind.CONFIG_MAP, "configmaps", "configmap", ("cm",), ""),
    KindInfo(Kind.EVENT, "events", "event", ("ev",), ""),
    KindInfo(Kind.SECRET, "secrets", "secret", (), ""),
)

_BY_KIND = {info.kind: info for info in KINDS}
_BY_ALIAS = {alias: info for info in KINDS for alias in info.aliases}
for _info in KINDS:
    if _info.group:
        _BY_ALIAS[f"{_info.plural}.{_info.group}"] = _info
        _BY_ALIAS[f"{_info.singular}.{_info.group}"] = _info


def info(kind: Kind) -> KindInfo:
    return _BY_KIND[kind]


def accepted_names() -> str:
    """One line listing every accepted name, for error messages."""
    return "; ".join(", ".join(info.aliases) for info in KINDS)


def resolve(text: str) -> KindInfo:
    """The kind a typed name refers to; a :class:`CliError` listing the accepted names."""
    found = _BY_ALIAS.get(text.strip().lower())
    if found is None:
        raise CliError(f'unknown resource type "{text}" (accepted: {accepted_names()})')
    return found


def resolve_many(text: str) -> list[KindInfo]:
    """``schedules,runs``: several kinds at once, as ``kubectl get pods,services``."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise CliError(f'unknown resource type "{text}" (accepted: {accepted_names()})')
    found: list[KindInfo] = []
    for part in parts:
        kind = resolve(part)
        if kind not in found:
            found.append(kind)
    return found
