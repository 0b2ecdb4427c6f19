"""The AgentRun a tick creates: Sympozium's shape, validated against its CRD."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sympozium_schedule.core.model import (
    ScheduleSpec,
    ScheduleView,
    is_dns1123_label,
    is_label_value,
)
from sympozium_schedule.core.runs import (
    RunTemplate,
    build_agent_run,
    compose_task,
    instance_model,
    resolve_auth_secret,
    resolve_provider,
)
from tests.core.helpers import (
    NAMESPACE,
    SCHEDULE_UID,
    crd_errors,
    instance,
    load_sample,
    schedule,
    utc,
)

AGENT_RUN_CRD = "sympozium.ai_agentruns.yaml"  # in helpers.CRD_DIR
TICK = utc(2026, 3, 1, 10)
CREATED = utc(2026, 2, 1)


def build(inst: dict[str, Any] | None = None, *, memory: str | None = None,
          manual: bool = False, name: str = "hb", **spec: Any) -> dict[str, Any]:
    view = ScheduleView.of(schedule(name=name, created=CREATED, **spec))
    assert view.spec is not None, view.spec_error
    inst = instance() if inst is None else inst
    template = RunTemplate.of(inst)
    assert template.model is not None
    return build_agent_run(view, view.spec, template, memory, TICK, manual=manual)


def assert_valid_agent_run(run: dict[str, Any]) -> None:
    assert crd_errors(run, AGENT_RUN_CRD) == []
    meta = run["metadata"]
    # What the CRD's `metadata: {type: object}` leaves to the API server.
    assert is_dns1123_label(meta["name"]), meta["name"]
    assert all(is_label_value(v) or v == "" for v in meta["labels"].values()), meta["labels"]
    assert json.loads(json.dumps(run)) == run  # plain JSON, nothing a store cannot hold


FULL_INSTANCE = instance(
    default={
        "baseURL": "https://api.githubcopilot.com",
        "thinking": "high",
        "nodeSelector": {"kubernetes.io/arch": "arm64", "pool": "gpu"},
        "lifecycle": {
            "gateDefault": "allow",
            "preRun": [{"name": "fetch", "image": "busybox:1.36", "command": ["sh", "-c"],
                        "args": ["echo hi"], "env": [{"name": "A", "value": "1"}]}],
            "postRun": [{"name": "gate", "image": "ghcr.io/x/gate:1", "gate": True,
                         "timeout": "2m"}],
            "rbac": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    },
    authRefs=[{"provider": "anthropic", "secret": "alice-anthropic-key"}],
    skills=[
        {"skillPackRef": "k8s-ops", "params": {"CLUSTER": "prod"}},
        {"configMapRef": "alice-extra-skills"},
        {"skillPackRef": "web-endpoint"},
    ],
    imagePullSecrets=[{"name": "ghcr-pull"}, {"name": "quay-pull"}],
)


@pytest.mark.parametrize(
    ("inst", "spec"),
    [
        pytest.param(instance(), {}, id="minimal"),
        pytest.param(FULL_INSTANCE, {"type": "sweep", "concurrencyPolicy": "Allow"}, id="full"),
        pytest.param(instance(default={"baseURL": "http://ollama.default.svc:11434/v1"}),
                     {"includeMemory": False}, id="keyless-local-model"),
        pytest.param(instance(model="claude-sonnet-4-5", authRefs=[{"secret": "k"}],
                              skills=[{"name": "unknown-shape"}]), {}, id="unknown-skill-shape"),
    ],
)
@pytest.mark.parametrize("manual", [False, True], ids=["scheduled", "manual"])
def test_agent_run_validates_against_the_crd(inst: dict[str, Any], spec: dict[str, Any],
                                             manual: bool) -> None:
    assert_valid_agent_run(build(inst, memory="- likes tea", manual=manual, **spec))


def test_sympozium_samples_make_a_valid_agent_run() -> None:
    sample = load_sample("sympoziumschedule-example.yaml")
    sample["metadata"]["uid"] = SCHEDULE_UID  # the store assigns one
    sample["metadata"]["creationTimestamp"] = "2026-02-01T00:00:00Z"
    view = ScheduleView.of(sample)
    assert view.spec is not None, view.spec_error
    inst = load_sample("sympoziuminstance_sample.yaml")
    assert instance_model(inst) == "gpt-4o"
    run = build_agent_run(view, view.spec, RunTemplate.of(inst), "notes", TICK)
    assert_valid_agent_run(run)
    assert run["spec"]["skills"] == [{"skillPackRef": "k8s-ops"}]
    assert run["spec"]["model"]["provider"] == "github"  # the first authRef naming one


def test_the_reference_schema_rejects_what_it_should() -> None:
    # Guards the guard: a closed schema that accepted anything would prove nothing.
    run = build()
    del run["spec"]["model"]["authSecretRef"]
    run["spec"]["sessionkey"] = "typo"
    run["spec"]["skills"] = [{"skillPackRef": 5}]
    errors = crd_errors(run, AGENT_RUN_CRD)
    assert any("authSecretRef" in e for e in errors)
    assert any("sessionkey" in e for e in errors)
    assert any(e.startswith("spec.skills.0.skillPackRef") for e in errors)


def test_agent_run_shape() -> None:
    run = build(name="alice-heartbeat", type="heartbeat")
    assert run["apiVersion"] == "sympozium.ai/v1alpha1"
    assert run["kind"] == "AgentRun"
    assert run["metadata"] == {
        "name": "alice-heartbeat-1772359200",
        "namespace": NAMESPACE,
        "labels": {
            "sympozium.ai/instance": "alice",
            "sympozium.ai/schedule": "alice-heartbeat",
            "sympozium.ai/type": "heartbeat",
        },
        "annotations": {"sympozium.ai/scheduled-time": "2026-03-01T10:00:00Z"},
        "ownerReferences": [{
            "apiVersion": "sympozium.ai/v1alpha1",
            "kind": "SympoziumSchedule",
            "name": "alice-heartbeat",
            "uid": SCHEDULE_UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }],
    }
    assert run["spec"] == {
        "instanceRef": "alice",
        "agentId": "schedule-alice-heartbeat",
        "sessionKey": "alice-heartbeat-1772359200",
        "task": "Check in.",
        "model": {"provider": "openai", "model": "gpt-4o", "authSecretRef": ""},
    }


def test_manual_run_is_marked_and_named_apart() -> None:
    run = build(manual=True)
    assert run["metadata"]["name"] == "hb-m1772359200"
    assert run["spec"]["sessionKey"] == "hb-m1772359200"
    assert run["metadata"]["annotations"] == {
        "sympozium.ai/scheduled-time": "2026-03-01T10:00:00Z",
        "sympozium.ai/trigger": "manual",
    }


def test_default_type_label_is_scheduled() -> None:
    assert build()["metadata"]["labels"]["sympozium.ai/type"] == "scheduled"


# --- the task ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "include", "expected"),
    [
        pytest.param("likes tea", True, "## Memory Context\nlikes tea\n\n## Task\nDo it.",
                     id="memory-first"),
        pytest.param("# Notes\n- a\n- b\n", True,
                     "## Memory Context\n# Notes\n- a\n- b\n\n\n## Task\nDo it.",
                     id="memory-kept-verbatim"),
        pytest.param(None, True, "Do it.", id="no-memory-configmap"),
        pytest.param("", True, "Do it.", id="empty-memory"),
        pytest.param(" \n\t\n", True, "Do it.", id="blank-memory"),
        pytest.param("likes tea", False, "Do it.", id="include-memory-false"),
    ],
)
def test_memory_injection(memory: str | None, include: bool, expected: str) -> None:
    assert compose_task("Do it.", memory, include_memory=include) == expected
    run = build(memory=memory, task="Do it.", includeMemory=include)
    assert run["spec"]["task"] == expected


def test_include_memory_defaults_to_true() -> None:
    assert build(memory="m", task="t")["spec"]["task"] == "## Memory Context\nm\n\n## Task\nt"


# --- model, provider and auth -----------------------------------------------------------


@pytest.mark.parametrize(
    ("inst", "provider"),
    [
        pytest.param(instance(annotations={"sympozium.ai/provider": "bedrock"},
                              authRefs=[{"provider": "openai", "secret": "alice-anthropic"}],
                              default={"baseURL": "http://ollama:11434"}),
                     "bedrock", id="annotation-wins"),
        pytest.param(instance(annotations={"sympozium.ai/provider": ""},
                              authRefs=[{"provider": "anthropic", "secret": "k"}]),
                     "anthropic", id="empty-annotation-ignored"),
        pytest.param(instance(authRefs=[{"secret": "alice-ollama-key"},
                                        {"provider": "azure-openai", "secret": "k"}]),
                     "azure-openai", id="any-authref-provider-beats-a-secret-name-guess"),
        pytest.param(instance(authRefs=[{"provider": "", "secret": "alice-anthropic-key"}]),
                     "anthropic", id="secret-name-anthropic"),
        pytest.param(instance(authRefs=[{"secret": "team-azure-openai-creds"}]),
                     "azure-openai", id="secret-name-azure-openai-before-openai"),
        pytest.param(instance(authRefs=[{"secret": "bedrock-creds"}]), "bedrock",
                     id="secret-name-bedrock"),
        pytest.param(instance(authRefs=[{"secret": "plain"}, {"secret": "x-openai-key"}]),
                     "openai", id="secret-name-second-ref"),
        pytest.param(instance(authRefs=[{"secret": "plain"}],
                              default={"baseURL": "http://ollama.default.svc/v1"}),
                     "ollama", id="no-hint-falls-through-to-base-url"),
        pytest.param(instance(default={"baseURL": "http://10.0.0.7:11434/v1"}), "ollama",
                     id="base-url-ollama-port"),
        pytest.param(instance(default={"baseURL": "http://lm-studio.lan/v1"}), "lm-studio",
                     id="base-url-lm-studio-host"),
        pytest.param(instance(default={"baseURL": "http://127.0.0.1:1234/v1"}), "lm-studio",
                     id="base-url-lm-studio-port"),
        pytest.param(instance(default={"baseURL": "https://api.githubcopilot.com"}), "custom",
                     id="base-url-other-is-custom"),
        pytest.param(instance(), "openai", id="default-openai"),
        pytest.param(instance(authRefs="not-a-list"), "openai", id="malformed-authrefs"),
    ],
)
def test_provider_resolution_precedence(inst: dict[str, Any], provider: str) -> None:
    assert resolve_provider(inst) == provider
    run = build(inst)
    assert run["spec"]["model"]["provider"] == provider
    assert_valid_agent_run(run)


@pytest.mark.parametrize(
    ("auth_refs", "secret"),
    [
        pytest.param(None, "", id="none"),
        pytest.param([{"provider": "openai"}], "", id="ref-without-secret"),
        pytest.param([{"secret": "  "}, {"secret": "second"}], "second", id="blank-skipped"),
        pytest.param([{"secret": "first"}, {"secret": "second"}], "first", id="first-wins"),
        pytest.param(["junk", {"secret": 7}, {"secret": "ok"}], "ok", id="junk-skipped"),
    ],
)
def test_auth_secret_resolution(auth_refs: object, secret: str) -> None:
    inst = instance() if auth_refs is None else instance(authRefs=auth_refs)
    assert resolve_auth_secret(inst) == secret
    run = build(inst)
    assert run["spec"]["model"]["authSecretRef"] == secret  # required by the CRD, even empty
    assert_valid_agent_run(run)


def test_model_settings_are_copied_from_the_instance() -> None:
    assert build(FULL_INSTANCE)["spec"]["model"] == {
        "provider": "anthropic",
        "model": "gpt-4o",
        "authSecretRef": "alice-anthropic-key",
        "baseURL": "https://api.githubcopilot.com",
        "thinking": "high",
        "nodeSelector": {"kubernetes.io/arch": "arm64", "pool": "gpu"},
    }


@pytest.mark.parametrize(
    "default",
    [
        pytest.param({"baseURL": "", "thinking": ""}, id="empty-strings"),
        pytest.param({"baseURL": 3, "thinking": None}, id="not-strings"),
        pytest.param({"nodeSelector": {"a": 1}}, id="non-string-selector-value"),
        pytest.param({"nodeSelector": {}}, id="empty-selector"),
        pytest.param({"nodeSelector": ["a"]}, id="selector-not-a-mapping"),
    ],
)
def test_unusable_model_settings_are_left_out(default: dict[str, Any]) -> None:
    run = build(instance(default=default))
    assert set(run["spec"]["model"]) == {"provider", "model", "authSecretRef"}
    assert_valid_agent_run(run)


@pytest.mark.parametrize(
    ("agents", "model"),
    [
        pytest.param({"default": {"model": "gpt-4o"}}, "gpt-4o", id="set"),
        pytest.param({"default": {"model": ""}}, None, id="empty"),
        pytest.param({"default": {"model": 4}}, None, id="not-a-string"),
        pytest.param({"default": {}}, None, id="missing"),
        pytest.param({}, None, id="no-default-agent"),
        pytest.param("junk", None, id="agents-not-a-mapping"),
    ],
)
def test_instance_model(agents: object, model: str | None) -> None:
    assert instance_model({"spec": {"agents": agents}}) == model


# --- skills, pull secrets, lifecycle ----------------------------------------------------


def test_server_skills_are_left_out_and_others_copied() -> None:
    assert build(FULL_INSTANCE)["spec"]["skills"] == [
        {"skillPackRef": "k8s-ops", "params": {"CLUSTER": "prod"}},
        {"configMapRef": "alice-extra-skills"},
    ]


@pytest.mark.parametrize(
    "skills",
    [
        pytest.param([{"skillPackRef": "web-endpoint"}], id="web-endpoint"),
        pytest.param([{"skillPackRef": "skillpack-web-endpoint"}], id="skillpack-web-endpoint"),
        pytest.param([{"name": "code-review"}], id="no-known-keys"),
        pytest.param([], id="empty"),
        pytest.param("junk", id="not-a-list"),
    ],
)
def test_no_skills_key_when_nothing_is_left(skills: object) -> None:
    run = build(instance(skills=skills))
    assert "skills" not in run["spec"]
    assert_valid_agent_run(run)


@pytest.mark.parametrize(
    "skills",
    [
        # An instance that skipped schema validation (the embedded store, a hand-edited
        # file) must neither crash the reconcile nor yield an AgentRun the CRD refuses.
        pytest.param([{"skillPackRef": ["web-endpoint"]}, {"skillPackRef": "k8s-ops"}],
                     id="unhashable-skillpackref"),
        pytest.param([{"skillPackRef": 5}, {"skillPackRef": "k8s-ops"}],
                     id="non-string-skillpackref"),
        pytest.param([{"skillPackRef": "k8s-ops", "params": {"RETRIES": 3}}],
                     id="non-string-param-value"),
    ],
)
def test_malformed_skills_never_make_an_invalid_agent_run(skills: object) -> None:
    run = build(instance(skills=skills))
    assert_valid_agent_run(run)


def test_image_pull_secrets_and_lifecycle_are_copied() -> None:
    spec = build(FULL_INSTANCE)["spec"]
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}, {"name": "quay-pull"}]
    assert spec["lifecycle"] == FULL_INSTANCE["spec"]["agents"]["default"]["lifecycle"]


@pytest.mark.parametrize(
    ("pull", "expected"),
    [
        pytest.param([{"name": "a", "extra": 1}, "junk", {"name": 3}, {}], [{"name": "a"}],
                     id="only-named-entries"),
        pytest.param([{}], None, id="nothing-usable"),
        pytest.param({"name": "a"}, None, id="not-a-list"),
    ],
)
def test_image_pull_secrets_keep_only_names(pull: object, expected: object) -> None:
    run = build(instance(imagePullSecrets=pull))
    assert run["spec"].get("imagePullSecrets") == expected
    assert_valid_agent_run(run)


# --- properties -------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"
names = st.text(_ALPHABET, min_size=1, max_size=63).map(lambda s: s.strip("-")).filter(bool)
# Unicode across planes, control characters, RTL, emoji; plus the occasional huge text.
texts = st.one_of(
    st.text(max_size=2_000),
    st.text(min_size=1, max_size=8).map(lambda s: s * 40_000),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task=texts, memory=st.none() | texts, model=st.text(min_size=1, max_size=300),
       schedule_name=names, instance_name=names, manual=st.booleans(),
       include=st.booleans())
def test_any_task_model_and_names_make_a_valid_agent_run(
    task: str, memory: str | None, model: str, schedule_name: str, instance_name: str,
    manual: bool, include: bool,
) -> None:
    inst = instance(instance_name, model=model)
    view = ScheduleView.of(schedule(name=schedule_name, created=CREATED,
                                    instanceRef=instance_name, task=task,
                                    includeMemory=include))
    assert isinstance(view.spec, ScheduleSpec), view.spec_error
    run = build_agent_run(view, view.spec, RunTemplate.of(inst), memory, TICK, manual=manual)
    assert_valid_agent_run(run)
    assert run["spec"]["model"]["model"] == model
    assert run["spec"]["task"].endswith(task)
    assert run["metadata"]["labels"]["sympozium.ai/schedule"] == schedule_name
