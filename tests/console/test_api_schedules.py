"""The schedule endpoints: Sympozium's request bodies, the CLI's messages, conflicts,
and bad input that changes nothing. Every reply is checked against the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from sympozium_schedule.cli.manifest_files import Source
from sympozium_schedule.cli.validate import check
from sympozium_schedule.core.model import Kind
from sympozium_schedule.ports.store import Ref
from tests.console.conftest import Api, instance, schedule

S = "/api/v1/schedules"


async def stored(api: Api, name: str, namespace: str = "default") -> dict[str, Any]:
    return await api.store.get(Ref(Kind.SCHEDULE, namespace, name))


# --- create -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    # Sympozium's web console (web/src/lib/api.ts: schedules.create) and its UI test.
    pytest.param({"name": "cy-sched", "agentRef": "alice", "schedule": "*/5 * * * *",
                  "task": "scheduled cypress test"}, id="sympozium-console-agentRef"),
    # Sympozium's API before the rename (CreateScheduleRequest.InstanceRef), all its fields.
    pytest.param({"name": "cy-sched", "instanceRef": "alice", "schedule": "0 * * * *", "task": "t",
                  "type": "heartbeat", "suspend": True, "concurrencyPolicy": "Allow"},
                 id="sympozium-api-instanceRef"),
    # Go's omitempty: empty strings mean "the default".
    pytest.param({"name": "cy-sched", "agentRef": "alice", "schedule": "@hourly", "task": "t",
                  "type": "", "concurrencyPolicy": ""}, id="empty-means-default"),
])
async def test_create_accepts_sympoziums_bodies(api: Api, body: dict[str, Any]) -> None:
    reply = await api.post(S, body)
    assert reply.status == 201, reply.text
    created = reply.body
    assert created["kind"] == "SympoziumSchedule"
    assert created["metadata"]["name"] == "cy-sched"
    assert created["spec"]["instanceRef"] == "alice"
    assert created["spec"]["schedule"] == body["schedule"]
    assert "Warning" not in reply.headers
    assert (await stored(api, "cy-sched"))["spec"] == created["spec"]
    assert "type" not in created["spec"] or created["spec"]["type"] == body.get("type")


async def test_create_without_a_name_generates_one_as_sympozium_does(api: Api) -> None:
    reply = await api.post(S, {"agentRef": "alice", "schedule": "@daily", "task": "t"})
    assert reply.status == 201
    assert reply.body["metadata"]["name"].startswith("alice-schedule-")


async def test_create_in_a_namespace_and_all_of_our_fields(api: Api) -> None:
    await api.seed(instance("bob", "team-a"))
    reply = await api.post(f"{S}?namespace=team-a", {
        "name": "nightly", "agentRef": "bob", "schedule": "30 2 * * *", "task": "t",
        "timeZone": "Europe/Warsaw", "includeMemory": False, "startingDeadlineSeconds": 300,
        "firstTick": "afterInterval", "successfulRunsHistoryLimit": 5, "failedRunsHistoryLimit": 2,
        "labels": {"team": "a"}})
    assert reply.status == 201, reply.text
    obj = await stored(api, "nightly", "team-a")
    assert obj["spec"]["timeZone"] == "Europe/Warsaw"
    assert obj["metadata"]["labels"] == {"team": "a"}


async def test_create_warns_when_the_instance_is_missing(api: Api) -> None:
    reply = await api.post(S, {"name": "orphan", "agentRef": "nobody", "schedule": "@daily", "task": "t"})
    assert reply.status == 201
    assert "SympoziumInstance 'nobody' not found" in reply.headers["Warning"]


def apply_message(spec: dict[str, Any], name: str = "bad") -> str:
    """What `apply` prints for the same schedule (the CLI's own checker, in-process)."""
    doc = yaml.safe_dump(schedule(name) | {"spec": spec})
    checked = check([Source("f.yaml", doc)], namespace="default", now=datetime.now(UTC))
    assert len(checked.errors) == 1, checked.errors
    return checked.errors[0].split(f"SympoziumSchedule default/{name}: ", 1)[1]


BASE = {"instanceRef": "alice", "schedule": "0 9 * * *", "task": "t"}


@pytest.mark.parametrize("change", [
    pytest.param({"schedule": "61 * * * *"}, id="bad-minute"),
    pytest.param({"schedule": "* * *"}, id="three-fields"),
    pytest.param({"schedule": "@every 0s"}, id="zero-interval"),
    pytest.param({"schedule": "@fortnightly"}, id="unknown-macro"),
    pytest.param({"timeZone": "Mars/Olympus"}, id="bad-zone"),
    pytest.param({"schedule": "@every 1h", "timeZone": "Nowhere"}, id="bad-zone-with-every"),
    pytest.param({"type": "weekly"}, id="bad-type"),
    pytest.param({"concurrencyPolicy": "Sometimes"}, id="bad-policy"),
    pytest.param({"suspend": "yes"}, id="suspend-not-bool"),
    pytest.param({"startingDeadlineSeconds": 0}, id="deadline-zero"),
    pytest.param({"instanceRef": "Not_A_Name"}, id="bad-instance-name"),
])
async def test_invalid_specs_are_422_with_the_clis_message(api: Api, change: dict[str, Any]) -> None:
    body = {"name": "bad", **BASE, **change}
    reply = await api.post(S, body)
    assert reply.status == 422, reply.text
    assert reply.body["error"] == apply_message(BASE | change)
    assert reply.body["field"].startswith("spec.")
    assert "\n" not in reply.body["error"]
    assert (await api.get(S)).body == []  # nothing was created


@pytest.mark.parametrize(("raw", "status", "says"), [
    pytest.param(b"{not json", 400, "not valid JSON", id="bad-json"),
    pytest.param(b"", 400, "the body is empty", id="empty"),
    pytest.param(b"[1, 2]", 400, "must be a JSON object", id="array"),
    pytest.param(b'{"name": "x", "agentRef": "alice", "schedule": "@daily", "task": "t", "sched": 1}',
                 400, "sched: unknown field", id="unknown-field"),
    pytest.param(b'{"name": "x", "schedule": "@daily", "task": "t"}', 422,
                 "spec.instanceRef: None: is required", id="no-agent"),
    pytest.param(b'{"name": "x", "agentRef": "alice", "schedule": "@daily"}', 422,
                 "spec.task: None: is required", id="no-task"),
    pytest.param(b'{"name": "x", "agentRef": "alice", "instanceRef": "bob", "schedule": "@daily", '
                 b'"task": "t"}', 400, "disagree", id="two-agents"),
    pytest.param(b'{"name": "Bad_Name", "agentRef": "alice", "schedule": "@daily", "task": "t"}', 422,
                 "metadata.name: 'Bad_Name'", id="bad-name"),
    pytest.param(b'{"name": "' + b"a" * 64 + b'", "agentRef": "alice", "schedule": "@daily", "task": "t"}',
                 422, "at most 63 characters", id="long-name"),
    pytest.param(b'{"name": "x", "agentRef": "alice", "schedule": "@daily", "task": "t", "labels": [1]}',
                 400, "labels: must be an object", id="bad-labels"),
])
async def test_bad_create_bodies_change_nothing(api: Api, raw: bytes, status: int, says: str) -> None:
    reply = await api.call("POST", S, data=raw, headers={"Content-Type": "application/json"})
    assert reply.status == status, reply.text
    assert says in reply.body["error"]
    assert (await api.get(S)).body == []


async def test_a_taken_name_is_409_with_the_resource_version(api: Api) -> None:
    await api.seed(schedule("taken"))
    reply = await api.post(S, {"name": "taken", "agentRef": "alice", "schedule": "@daily", "task": "t"})
    assert reply.status == 409
    assert reply.body["error"] == 'sympoziumschedule "taken" already exists in namespace "default"'
    assert reply.body["resourceVersion"] == (await stored(api, "taken"))["metadata"]["resourceVersion"]


# --- read -----------------------------------------------------------------------------------


async def test_list_by_namespace_selector_and_across_namespaces(api: Api) -> None:
    await api.seed(schedule("b"), schedule("a", labels={"team": "x"}),
                   schedule("c", namespace="other", labels={"team": "x"}))
    assert [o["metadata"]["name"] for o in (await api.get(S)).body] == ["a", "b"]
    assert [o["metadata"]["name"] for o in (await api.get(f"{S}?namespace=other")).body] == ["c"]
    both = (await api.get(f"{S}?allNamespaces=true&labelSelector=team%3Dx")).body
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in both] == [
        ("default", "a"), ("other", "c")]
    present = (await api.get(f"{S}?labelSelector=team")).body
    assert [o["metadata"]["name"] for o in present] == ["a"]


@pytest.mark.parametrize(("query", "says"), [
    pytest.param("namespace=Bad_NS", "namespace: 'Bad_NS': not a valid namespace", id="bad-namespace"),
    pytest.param("allNamespaces=maybe", "allNamespaces: 'maybe': must be true or false", id="bad-flag"),
    pytest.param("labelSelector=team!%3Dx", "only key=value and key (present)", id="unsupported-selector"),
    pytest.param("labelSelector=%3Dx", "needs a label key", id="no-key"),
])
async def test_bad_list_queries(api: Api, query: str, says: str) -> None:
    reply = await api.get(f"{S}?{query}")
    assert reply.status == 400
    assert says in reply.body["error"]


async def test_get_and_not_found(api: Api) -> None:
    await api.seed(schedule("one"))
    assert (await api.get(f"{S}/one")).body["metadata"]["name"] == "one"
    missing = await api.get(f"{S}/two?namespace=elsewhere")
    assert missing.status == 404
    assert missing.body["error"] == 'sympoziumschedule "two" not found in namespace "elsewhere"'
    bad = await api.get(f"{S}/Bad..Name")
    assert bad.status == 400


# --- patch, suspend, resume, delete ---------------------------------------------------------------


async def test_patch_with_sympoziums_body(api: Api) -> None:
    await api.seed(schedule("p", startingDeadlineSeconds=60))
    reply = await api.patch(f"{S}/p", {"schedule": "*/10 * * * *", "task": "new task", "type": "sweep",
                                       "suspend": True, "concurrencyPolicy": "Replace"})
    assert reply.status == 200, reply.text
    spec = (await stored(api, "p"))["spec"]
    assert spec == {"instanceRef": "alice", "schedule": "*/10 * * * *", "task": "new task",
                    "type": "sweep", "suspend": True, "concurrencyPolicy": "Replace",
                    "startingDeadlineSeconds": 60}
    assert reply.body["metadata"]["generation"] == 2
    cleared = await api.patch(f"{S}/p", {"startingDeadlineSeconds": None})
    assert "startingDeadlineSeconds" not in cleared.body["spec"]


async def test_patch_with_a_stale_resource_version_is_409(api: Api) -> None:
    await api.seed(schedule("p"))
    old = (await stored(api, "p"))["metadata"]["resourceVersion"]
    await api.patch(f"{S}/p", {"task": "first"})
    now = await stored(api, "p")
    reply = await api.patch(f"{S}/p", {"task": "second", "resourceVersion": old})
    assert reply.status == 409
    assert reply.body["resourceVersion"] == now["metadata"]["resourceVersion"]
    assert reply.body["generation"] == now["metadata"]["generation"]
    assert (await stored(api, "p"))["spec"]["task"] == "first"
    ok = await api.patch(f"{S}/p", {"task": "second", "resourceVersion": now["metadata"]["resourceVersion"]})
    assert ok.status == 200


@pytest.mark.parametrize(("body", "status", "says"), [
    pytest.param({"schedule": "not cron"}, 422, "spec.schedule: 'not cron'", id="bad-cron"),
    pytest.param({"timeZone": "Nowhere/Land"}, 422, "spec.timeZone", id="bad-zone"),
    pytest.param({"suspend": "true"}, 422, "spec.suspend", id="string-bool"),
    pytest.param({"schedule": None}, 422, "spec.schedule: None: is required", id="remove-required"),
    pytest.param({}, 400, "names no field", id="empty"),
    pytest.param({"name": "other"}, 400, "name: unknown field", id="rename"),
    pytest.param({"resourceVersion": 5}, 400, "resourceVersion: must be a string", id="rv-not-string"),
])
async def test_bad_patches_change_nothing(api: Api, body: dict[str, Any], status: int, says: str) -> None:
    await api.seed(schedule("p"))
    before = await stored(api, "p")
    reply = await api.patch(f"{S}/p", body)
    assert reply.status == status, reply.text
    assert says in reply.body["error"]
    assert await stored(api, "p") == before


async def test_patch_of_a_missing_schedule_is_404(api: Api) -> None:
    assert (await api.patch(f"{S}/ghost", {"task": "x"})).status == 404


async def test_suspend_and_resume(api: Api) -> None:
    await api.seed(schedule("s"))
    assert (await api.post(f"{S}/s/suspend")).body["spec"]["suspend"] is True
    assert (await stored(api, "s"))["spec"]["suspend"] is True
    assert (await api.post(f"{S}/s/resume")).body["spec"]["suspend"] is False
    assert (await api.post(f"{S}/ghost/resume")).status == 404


async def test_delete(api: Api) -> None:
    await api.seed(schedule("d"))
    reply = await api.delete(f"{S}/d")
    assert reply.status == 204
    assert (await api.get(f"{S}/d")).status == 404
    again = await api.delete(f"{S}/d")
    assert again.status == 404
    assert again.body["error"] == 'sympoziumschedule "d" not found in namespace "default"'


# --- trigger, next, events ---------------------------------------------------------------------


async def test_trigger_creates_a_run_and_the_policy_still_applies(api: Api) -> None:
    await api.seed(schedule("t"))
    reply = await api.post(f"{S}/t/trigger")
    assert reply.status == 201, reply.text
    run = await api.store.get(Ref(Kind.AGENT_RUN, "default", reply.body["name"]))
    assert run["metadata"]["annotations"]["sympozium.ai/trigger"] == "manual"
    # Forbid: the first run has not finished, so a second trigger is refused and says why.
    refused = await api.post(f"{S}/t/trigger")
    assert refused.status == 409
    assert refused.body["error"].startswith("cannot trigger default/t: ")
    runs = await api.get("/api/v1/runs?schedule=t")
    assert len(runs.body) == 1


async def test_trigger_without_the_instance_is_refused(api: Api) -> None:
    await api.seed(schedule("lonely", instance_ref="nobody"))
    reply = await api.post(f"{S}/lonely/trigger")
    assert reply.status == 409
    assert "SympoziumInstance 'nobody' not found" in reply.body["error"]
    assert (await api.post(f"{S}/ghost/trigger")).status == 404


async def test_next_fire_times_in_the_schedules_zone_with_dst_notes(api: Api) -> None:
    await api.seed(schedule("ny", "30 2 * * *", timeZone="America/New_York"))
    reply = await api.get(f"{S}/ny/next?count=3")
    assert reply.status == 200
    assert len(reply.body["times"]) == 3
    for t in reply.body["times"]:
        local = datetime.fromisoformat(t["local"])
        assert (local.hour, local.minute) == (2, 30)
        assert datetime.fromisoformat(t["utc"].replace("Z", "+00:00")) == local
    kinds = {n["kind"] for n in reply.body["notes"]}
    assert "gap" in kinds  # 02:30 does not exist on the spring-forward day


@pytest.mark.parametrize("count", ["0", "1001", "many"])
async def test_next_count_bounds(api: Api, count: str) -> None:
    await api.seed(schedule("n"))
    reply = await api.get(f"{S}/n/next?count={count}")
    assert reply.status == 400
    assert "count" in reply.body["error"]


async def test_next_of_an_invalid_stored_schedule_says_why(api: Api) -> None:
    await api.seed(schedule("broken", "not a cron"))
    reply = await api.get(f"{S}/broken/next")
    assert reply.status == 422
    assert reply.body["error"].startswith("spec.schedule: 'not a cron'")


async def test_events_of_one_schedule(api: Api) -> None:
    await api.seed(schedule("e"), schedule("other"))
    obj = await stored(api, "e")
    for name, reason in (("e", "RunCreated"), ("other", "TickSkipped")):
        await api.seed({"apiVersion": "v1", "kind": "Event",
                        "metadata": {"generateName": f"{name}.", "namespace": "default"},
                        "involvedObject": {"kind": "SympoziumSchedule", "name": name,
                                           "uid": obj["metadata"]["uid"] if name == "e" else "x"},
                        "reason": reason, "message": "m", "type": "Normal",
                        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"})
    reply = await api.get(f"{S}/e/events")
    assert [e["reason"] for e in reply.body] == ["RunCreated"]


# --- preview and timeline -----------------------------------------------------------------------


async def test_preview_as_the_editor_types(api: Api) -> None:
    ok = await api.get("/api/v1/preview?schedule=30+1+*+*+*&timeZone=America%2FNew_York&count=2"
                       "&after=2026-01-01T00:00:00Z")
    assert ok.status == 200
    assert [t["utc"] for t in ok.body["times"]] == ["2026-01-01T06:30:00Z", "2026-01-02T06:30:00Z"]
    assert [n["kind"] for n in ok.body["notes"]] == ["repeat"]
    bad = await api.get("/api/v1/preview?schedule=61+*+*+*+*")
    assert bad.status == 422
    assert bad.body["error"] == apply_message(BASE | {"schedule": "61 * * * *"})
    after = await api.get("/api/v1/preview?schedule=%40daily&after=yesterday")
    assert after.status == 400


async def test_timeline_is_bounded_per_schedule(api: Api) -> None:
    await api.seed(schedule("every-minute", "* * * * *"), schedule("daily", "0 9 * * *"),
                   schedule("paused", "0 * * * *", suspend=True), schedule("broken", "bad"))
    reply = await api.get("/api/v1/timeline?hours=48")
    rows = {r["name"]: r for r in reply.body["schedules"]}
    assert len(rows["every-minute"]["times"]) == 1000
    assert rows["every-minute"]["truncated"]
    assert len(rows["daily"]["times"]) == 2
    assert not rows["daily"]["truncated"]
    assert rows["paused"]["suspended"] is True
    assert rows["broken"]["error"].startswith("spec.schedule: 'bad'")
    assert (await api.get("/api/v1/timeline?hours=0")).status == 400
