"""The vocabulary: API group and version, the kinds, labels and annotations the
scheduler reads and writes, run phases, what a valid name is, and how times are written."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache

from sympozium_schedule.core.errors import SpecError

GROUP = "sympozium.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_INSTANCE = "sympozium.ai/instance"
LABEL_SCHEDULE = "sympozium.ai/schedule"
LABEL_TYPE = "sympozium.ai/type"
LABEL_SOURCE = "sympozium.ai/source"
ANNOTATION_SCHEDULED_TIME = "sympozium.ai/scheduled-time"
ANNOTATION_TRIGGER = "sympozium.ai/trigger"
ANNOTATION_BACKFILL = "sympozium.ai/backfill"
ANNOTATION_PROVIDER = "sympozium.ai/provider"

MEMORY_SUFFIX = "-memory"
MEMORY_KEY = "MEMORY.md"


class Kind(StrEnum):
    SCHEDULE = "SympoziumSchedule"
    INSTANCE = "SympoziumInstance"
    AGENT_RUN = "AgentRun"
    CONFIG_MAP = "ConfigMap"
    EVENT = "Event"
    # An agent's model key (an instance's authRefs name it), kept in the embedded store.
    SECRET = "Secret"

    @property
    def api_version(self) -> str:
        return "v1" if self in (Kind.CONFIG_MAP, Kind.EVENT, Kind.SECRET) else API_VERSION


# Phases in which a run still occupies its schedule (Forbid waits for them).
# An empty phase means the run was created and nobody has picked it up yet.
UNFINISHED_PHASES = frozenset({"", "Pending", "Running", "Serving", "PostRunning", "AwaitingDelegate"})
SUCCEEDED_PHASE = "Succeeded"

# Used with fullmatch: "$" would also match before a trailing newline ("hb\n").
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


def check_name(value: object, *, field_path: str, max_length: int = 253) -> str:
    """A valid object name, or a :class:`SpecError` naming ``field_path``."""
    if not isinstance(value, str) or not value:
        raise SpecError(field_path, value, "a name is required (a non-empty string)")
    if len(value) > max_length:
        raise SpecError(field_path, value, f"must be at most {max_length} characters")
    if not is_dns1123_subdomain(value):
        raise SpecError(
            field_path, value,
            "must be lowercase letters, digits, '-' and '.', starting and ending "
            "with a letter or digit (DNS-1123)",
        )
    return value


# --- time ---------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; sub-second digits only when present.

    Cached: a burst formats the same few instants (its tick, the next one) for
    every schedule that fires."""
    utc = t if t.tzinfo is UTC else t.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat() + "Z"


def parse_time(value: object) -> datetime | None:
    """An aware datetime from RFC 3339 text; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def memory_configmap_name(instance: str) -> str:
    return f"{instance}{MEMORY_SUFFIX}"
