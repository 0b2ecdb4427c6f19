"""The SympoziumSchedule CRD's ``status`` schema: every key the controller writes
(:data:`~sympozium_schedule.core.decide.MANAGED_STATUS_KEYS`) declared, no more."""

from __future__ import annotations

from typing import Any

from sympozium_schedule.core.decide import MANAGED_STATUS_KEYS
from sympozium_schedule.core.shards import SHARD_STATUS_KEYS

# metav1.ObjectReference, as controller-gen writes it (CronJob's status.active has this shape).
_OBJECT_REFERENCE: dict[str, Any] = {
    "description": "ObjectReference contains enough information to let you inspect or modify "
                   "the referred object.",
    "properties": {
        "apiVersion": {"description": "API version of the referent.", "type": "string"},
        "fieldPath": {"description": "If referring to a piece of an object instead of an entire "
                                     "object, the path to that piece.", "type": "string"},
        "kind": {"description": "Kind of the referent.", "type": "string"},
        "name": {"description": "Name of the referent.", "type": "string"},
        "namespace": {"description": "Namespace of the referent.", "type": "string"},
        "resourceVersion": {"description": "Specific resourceVersion to which this reference "
                                           "is made, if any.", "type": "string"},
        "uid": {"description": "UID of the referent.", "type": "string"},
    },
    "type": "object",
    "x-kubernetes-map-type": "atomic",
}

# metav1.Condition, exactly as controller-gen writes it (and Sympozium's CRD carries it).
_CONDITION: dict[str, Any] = {
    "description": "Condition contains details for one aspect of the current state of this "
                   "API Resource.",
    "properties": {
        "lastTransitionTime": {
            "description": (
                "lastTransitionTime is the last time the condition transitioned from one status "
                "to another.\nThis should be when the underlying condition changed.  If that is "
                "not known, then using the time when the API field changed is acceptable."),
            "format": "date-time",
            "type": "string",
        },
        "message": {
            "description": ("message is a human readable message indicating details about the "
                            "transition.\nThis may be an empty string."),
            "maxLength": 32768,
            "type": "string",
        },
        "observedGeneration": {
            "description": (
                "observedGeneration represents the .metadata.generation that the condition was "
                "set based upon.\nFor instance, if .metadata.generation is currently 12, but the "
                ".status.conditions[x].observedGeneration is 9, the condition is out of date\n"
                "with respect to the current state of the instance."),
            "format": "int64",
            "minimum": 0,
            "type": "integer",
        },
        "reason": {
            "description": (
                "reason contains a programmatic identifier indicating the reason for the "
                "condition's last transition.\nProducers of specific condition types may define "
                "expected values and meanings for this field,\nand whether the values are "
                "considered a guaranteed API.\nThe value should be a CamelCase string.\nThis "
                "field may not be empty."),
            "maxLength": 1024,
            "minLength": 1,
            "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            "type": "string",
        },
        "status": {
            "description": "status of the condition, one of True, False, Unknown.",
            "enum": ["True", "False", "Unknown"],
            "type": "string",
        },
        "type": {
            "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
            "maxLength": 316,
            "pattern": (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"),
            "type": "string",
        },
    },
    "required": ["lastTransitionTime", "message", "reason", "status", "type"],
    "type": "object",
}

# One entry per key core/decide.py writes (MANAGED_STATUS_KEYS) and a sharded controller
# adds (SHARD_STATUS_KEYS); a test holds them equal.
_STATUS_PROPERTIES: dict[str, Any] = {
    "active": {
        "description": "Active lists the AgentRuns of this schedule that have not finished.",
        "items": _OBJECT_REFERENCE,
        "type": "array",
        "x-kubernetes-list-type": "atomic",
    },
    "conditions": {
        "description": "Conditions represent the latest available observations.",
        "items": _CONDITION,
        "type": "array",
    },
    "backfill": {
        "description": (
            "Backfill is the progress of the backfill asked for with the\n"
            "sympozium.ai/backfill annotation."),
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    },
    "buffered": {
        "description": (
            "Buffered lists the ticks waiting for the unfinished run to finish\n"
            "(concurrencyPolicy BufferOne or BufferAll), oldest first."),
        "items": {"format": "date-time", "type": "string"},
        "type": "array",
    },
    "lastFailedRun": {
        "description": "LastFailedRun is the newest failed AgentRun seen (pauseOnFailure).",
        "type": "string",
    },
    "lastRunName": {
        "description": "LastRunName is the name of the most recently created AgentRun.",
        "type": "string",
    },
    "lastRunTime": {
        "description": "LastRunTime is when the last AgentRun was triggered.",
        "format": "date-time",
        "type": "string",
    },
    "lastScheduleTime": {
        "description": (
            "LastScheduleTime is the most recent tick that was handled (fired or skipped):\n"
            "ticks after it are the ones missed."),
        "format": "date-time",
        "type": "string",
    },
    "nextFireTime": {
        "description": (
            "NextFireTime is when the next tick is planned to fire: nextRunTime plus its\n"
            "jitter (only with spec.jitter)."),
        "format": "date-time",
        "type": "string",
    },
    "nextRunTime": {
        "description": "NextRunTime is the computed next trigger time.",
        "format": "date-time",
        "type": "string",
    },
    "observedGeneration": {
        "description": "ObservedGeneration is the metadata.generation this status was computed "
                       "from.",
        "format": "int64",
        "type": "integer",
    },
    "phase": {
        "description": "Phase is the current phase (Active, Suspended, Completed, Error).",
        "type": "string",
    },
    "replica": {
        "description": (
            "Replica is the replica (its Lease identity) that holds this schedule's shard\n"
            "and fires it (only with run --kubernetes --shards N > 1)."),
        "type": "string",
    },
    "shard": {
        "description": (
            "Shard is the shard this schedule hashes into; its Lease is\n"
            "sympozium-schedule-shard-<shard> (only with --shards N > 1)."),
        "format": "int64",
        "type": "integer",
    },
    "remainingRuns": {
        "description": "RemainingRuns is how many more runs maxRuns allows.",
        "format": "int64",
        "type": "integer",
    },
    "scheduledRuns": {
        "description": "ScheduledRuns counts the runs ticks created while maxRuns is set.",
        "format": "int64",
        "type": "integer",
    },
    "totalRuns": {
        "description": "TotalRuns is the total number of runs triggered by this schedule.",
        "format": "int64",
        "type": "integer",
    },
}


def status_schema() -> dict[str, Any]:
    missing = (set(MANAGED_STATUS_KEYS) | set(SHARD_STATUS_KEYS)) ^ set(_STATUS_PROPERTIES)
    if missing:
        raise ValueError(f"status keys written and declared differ: {sorted(missing)}")
    return {
        "description": "SympoziumScheduleStatus defines the observed state of a SympoziumSchedule.",
        "properties": dict(sorted(_STATUS_PROPERTIES.items())),
        "type": "object",
    }
