"""The scheduler's model of the Kubernetes-shaped objects it reads and writes, in one
import: the vocabulary (:mod:`.names`), the schedule's spec (:mod:`.spec`) and typed
views of schedules and runs (:mod:`.views`).

Objects travel through the stores as plain JSON dicts, exactly as the Kubernetes
API would hold them; the core parses what it needs into frozen views once per
reconcile and writes status back as a dict.
"""

from __future__ import annotations

from sympozium_schedule.core.names import (
    ANNOTATION_BACKFILL,
    ANNOTATION_PROVIDER,
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_TRIGGER,
    API_VERSION,
    EPOCH,
    GROUP,
    LABEL_INSTANCE,
    LABEL_SCHEDULE,
    LABEL_SOURCE,
    LABEL_TYPE,
    MEMORY_KEY,
    MEMORY_SUFFIX,
    SUCCEEDED_PHASE,
    UNFINISHED_PHASES,
    VERSION,
    Kind,
    check_name,
    format_time,
    is_dns1123_label,
    is_dns1123_subdomain,
    memory_configmap_name,
    parse_time,
)
from sympozium_schedule.core.spec import (
    BUFFERING_POLICIES,
    CONCURRENCY_POLICIES,
    ConcurrencyPolicy,
    CronEntry,
    ExcludeEntry,
    FirstTick,
    ScheduleSpec,
    ScheduleType,
    is_label_value,
    spec_error_from,
)
from sympozium_schedule.core.views import (
    Condition,
    ObjectView,
    RunView,
    ScheduleStatus,
    ScheduleView,
)

__all__ = [
    "ANNOTATION_BACKFILL", "ANNOTATION_PROVIDER", "ANNOTATION_SCHEDULED_TIME",
    "ANNOTATION_TRIGGER", "API_VERSION", "BUFFERING_POLICIES", "CONCURRENCY_POLICIES", "EPOCH",
    "GROUP", "LABEL_INSTANCE", "LABEL_SCHEDULE", "LABEL_SOURCE", "LABEL_TYPE", "MEMORY_KEY",
    "MEMORY_SUFFIX", "SUCCEEDED_PHASE", "UNFINISHED_PHASES", "VERSION", "ConcurrencyPolicy",
    "Condition", "CronEntry", "ExcludeEntry", "FirstTick", "Kind", "ObjectView", "RunView",
    "ScheduleSpec", "ScheduleStatus", "ScheduleType", "ScheduleView", "check_name",
    "format_time", "is_dns1123_label", "is_dns1123_subdomain", "is_label_value",
    "memory_configmap_name", "parse_time", "spec_error_from",
]
