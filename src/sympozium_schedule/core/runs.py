"""Building the AgentRun a tick creates, as Sympozium's own schedule controller does.

The model settings come from the instance (``spec.agents.default`` and
``spec.authRefs``); the shape must validate against Sympozium's AgentRun CRD
(tests/core/test_runs.py checks it against the reference schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sympozium_schedule.core.model import (
    ANNOTATION_PROVIDER,
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_TRIGGER,
    API_VERSION,
    LABEL_INSTANCE,
    LABEL_SCHEDULE,
    LABEL_TYPE,
    Kind,
    ScheduleSpec,
    ScheduleView,
    format_time,
)
from sympozium_schedule.core.naming import run_name

# Skills that need a long-running server make no sense in a one-shot scheduled run.
_SERVER_SKILLS = frozenset({"web-endpoint", "skillpack-web-endpoint"})
_PROVIDER_HINTS = ("anthropic", "azure-openai", "bedrock", "lm-studio", "ollama", "openai")


def compose_task(task: str, memory: str | None, *, include_memory: bool) -> str:
    """The task text, with the instance's MEMORY.md in front when asked and present."""
    if include_memory and memory and memory.strip():
        return f"## Memory Context\n{memory}\n\n## Task\n{task}"
    return task


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _default_agent(instance: dict[str, Any]) -> dict[str, Any]:
    return _mapping(_mapping(_mapping(instance.get("spec")).get("agents")).get("default"))


def _auth_refs(instance: dict[str, Any]) -> list[dict[str, Any]]:
    refs = _mapping(instance.get("spec")).get("authRefs")
    return [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []


def resolve_provider(instance: dict[str, Any]) -> str:
    """Which LLM provider the instance uses, by Sympozium's precedence."""
    meta = _mapping(instance.get("metadata"))
    # Sympozium's Ensemble controller sets it as a label; an annotation is accepted too.
    for source in (_mapping(meta.get("labels")), _mapping(meta.get("annotations"))):
        explicit = source.get(ANNOTATION_PROVIDER)
        if isinstance(explicit, str) and explicit:
            return explicit
    refs = _auth_refs(instance)
    for ref in refs:
        provider = ref.get("provider")
        if isinstance(provider, str) and provider:
            return provider
    for ref in refs:
        secret = ref.get("secret")
        if isinstance(secret, str):
            for hint in _PROVIDER_HINTS:
                if hint in secret:
                    return hint
    base = _default_agent(instance).get("baseURL")
    if isinstance(base, str) and base:
        if "ollama" in base or ":11434" in base:
            return "ollama"
        if "lm-studio" in base or ":1234" in base:
            return "lm-studio"
        return "custom"
    return "openai"


def resolve_auth_secret(instance: dict[str, Any]) -> str:
    for ref in _auth_refs(instance):
        secret = ref.get("secret")
        if isinstance(secret, str) and secret.strip():
            return secret
    return ""


def instance_model(instance: dict[str, Any]) -> str | None:
    """The instance's default model name; None when the instance does not say."""
    model = _default_agent(instance).get("model")
    return model if isinstance(model, str) and model else None


def _model_spec(instance: dict[str, Any], model: str) -> dict[str, Any]:
    default = _default_agent(instance)
    spec: dict[str, Any] = {
        "provider": resolve_provider(instance),
        "model": model,
        "authSecretRef": resolve_auth_secret(instance),
    }
    for key in ("baseURL", "thinking"):
        value = default.get(key)
        if isinstance(value, str) and value:
            spec[key] = value
    selector = default.get("nodeSelector")
    if isinstance(selector, dict) and selector and all(
        isinstance(v, str) for v in selector.values()
    ):
        spec["nodeSelector"] = dict(selector)
    return spec


def _skill(raw: object) -> dict[str, Any] | None:
    """A skill reference the AgentRun schema accepts, or None.

    The embedded store does not enforce the instance CRD, so a malformed entry
    is dropped here rather than producing a run the API would refuse.
    """
    if not isinstance(raw, dict):
        return None
    kept: dict[str, Any] = {}
    for key in ("skillPackRef", "configMapRef"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            kept[key] = value
    params = raw.get("params")
    if isinstance(params, dict) and params and all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        kept["params"] = dict(params)
    if kept.get("skillPackRef") in _SERVER_SKILLS or not kept:
        return None
    return kept


def _skills(instance: dict[str, Any]) -> list[dict[str, Any]]:
    raw = _mapping(instance.get("spec")).get("skills")
    kept = (_skill(s) for s in (raw if isinstance(raw, list) else []))
    return [s for s in kept if s is not None]


@dataclass(frozen=True, slots=True)
class RunTemplate:
    """What an instance contributes to every run it gets: derived once per
    instance version, not once per fire. ``model`` is None when the instance
    names no model (the schedule then reports InstanceInvalid)."""

    model: str | None
    spec: dict[str, Any]  # read-only: shared by the runs built from it

    @classmethod
    def of(cls, instance: Mapping[str, Any] | RunTemplate) -> RunTemplate:
        if isinstance(instance, RunTemplate):
            return instance
        inst = dict(instance)
        model = instance_model(inst)
        spec: dict[str, Any] = {}
        if model is not None:
            spec["model"] = _model_spec(inst, model)
        skills = _skills(inst)
        if skills:
            spec["skills"] = skills
        pull = _mapping(inst.get("spec")).get("imagePullSecrets")
        if isinstance(pull, list):
            secrets = [{"name": p["name"]} for p in pull
                       if isinstance(p, dict) and isinstance(p.get("name"), str)]
            if secrets:
                spec["imagePullSecrets"] = secrets
        lifecycle = _default_agent(inst).get("lifecycle")
        if isinstance(lifecycle, dict) and lifecycle:
            spec["lifecycle"] = lifecycle
        return cls(model, spec)


def build_agent_run(
    schedule: ScheduleView,
    spec: ScheduleSpec,
    template: RunTemplate,
    memory: str | None,
    tick: datetime,
    *,
    manual: bool = False,
    backfill: bool = False,
) -> dict[str, Any]:
    """The AgentRun object for ``tick`` (a whole-second UTC instant)."""
    meta = schedule.meta
    name = run_name(meta.name, tick, manual=manual)
    annotations = {ANNOTATION_SCHEDULED_TIME: format_time(tick)}
    if manual:
        annotations[ANNOTATION_TRIGGER] = "manual"
    elif backfill:  # named as the tick's own run: a tick that ran is never backfilled twice
        annotations[ANNOTATION_TRIGGER] = "backfill"
    run_spec: dict[str, Any] = {
        "instanceRef": spec.instance_ref,
        "agentId": f"schedule-{meta.name}",
        "sessionKey": name,
        "task": compose_task(spec.task, memory, include_memory=spec.include_memory),
    }
    run_spec.update(template.spec)
    owner: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": Kind.SCHEDULE.value,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": Kind.AGENT_RUN.value,
        "metadata": {
            "name": name,
            "namespace": meta.namespace,
            "labels": {
                LABEL_INSTANCE: spec.instance_ref,
                LABEL_SCHEDULE: meta.name,
                LABEL_TYPE: spec.type,
            },
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": run_spec,
    }
