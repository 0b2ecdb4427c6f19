"""Who may do what: the token, read-only mode, cross-origin and foreign-Host requests,
and the Kubernetes access checks' decisions and caching."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from sympozium_schedule.ports.access import Check, Principal, Review
from sympozium_schedule.runtime.api.auth import TOKEN_FILE, KubernetesAccess, write_token
from sympozium_schedule.runtime.api.errors import ApiError
from tests.console.conftest import Api, schedule

CREATE = {"name": "new", "agentRef": "alice", "schedule": "@daily", "task": "t"}
# Every route that changes something, with a body where it takes one.
MUTATIONS = [
    ("POST", "/api/v1/schedules", CREATE),
    ("PATCH", "/api/v1/schedules/s", {"task": "changed"}),
    ("DELETE", "/api/v1/schedules/s", None),
    ("POST", "/api/v1/schedules/s/suspend", None),
    ("POST", "/api/v1/schedules/s/resume", None),
    ("POST", "/api/v1/schedules/s/trigger", None),
]
READS = ["/api/v1/schedules", "/api/v1/schedules/s", "/api/v1/schedules/s/next",
         "/api/v1/schedules/s/events", "/api/v1/runs", "/api/v1/instances", "/api/v1/timeline",
         "/api/v1/preview?schedule=%40daily"]


async def snapshot(api: Api) -> Any:
    return ((await api.get("/api/v1/schedules")).body, (await api.get("/api/v1/runs")).body)


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=[f"{m} {p}" for m, p, _ in MUTATIONS])
@pytest.mark.parametrize("token", [False, "not-the-token-at-all-0123456789"], ids=["no-token", "bad-token"])
async def test_changes_need_the_token_and_change_nothing_without_it(
        api: Api, method: str, path: str, body: Any, token: Any) -> None:
    await api.seed(schedule("s"))
    before = await snapshot(api)
    reply = await api.call(method, path, json=body, auth=token)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in reply.body["error"]
    assert await snapshot(api) == before


async def test_a_malformed_authorization_header_is_401(api: Api) -> None:
    reply = await api.call("GET", "/api/v1/schedules", auth=False, headers={"Authorization": "Basic eDp5"})
    assert reply.status == 401
    assert "Bearer" in reply.body["error"]


@pytest.mark.parametrize("path", READS)
async def test_reads_are_open_on_loopback(api: Api, path: str) -> None:
    await api.seed(schedule("s"))
    assert (await api.get(path, auth=False)).status == 200


@pytest.mark.parametrize("path", READS)
async def test_reads_need_the_token_beyond_loopback(make_api: Any, path: str) -> None:
    api = await make_api(reads_need_token=True)
    await api.seed(schedule("s"))
    assert (await api.get(path, auth=False)).status == 401
    assert (await api.get(path)).status in (200, 422)  # 422: the schedule has no instance


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=[f"{m} {p}" for m, p, _ in MUTATIONS])
async def test_read_only_mode_refuses_every_change(make_api: Any, method: str, path: str, body: Any) -> None:
    api = await make_api(read_only=True)
    await api.seed(schedule("s"))
    before = await snapshot(api)
    reply = await api.call(method, path, json=body)
    assert reply.status == 403
    assert "read-only" in reply.body["error"]
    assert await snapshot(api) == before
    session = await api.get("/api/v1/session")
    assert session.body["readOnly"] is True


async def test_cross_origin_changes_are_refused(api: Api) -> None:
    await api.seed(schedule("s"))
    evil = await api.post("/api/v1/schedules/s/suspend", headers={"Origin": "https://evil.example"})
    assert evil.status == 403
    assert "cross-origin" in evil.body["error"]
    assert (await api.get("/api/v1/schedules/s")).body["spec"].get("suspend") is not True
    own = await api.post("/api/v1/schedules/s/suspend", headers={"Origin": api.url})
    assert own.status == 200


async def test_a_foreign_host_is_refused_on_loopback(api: Api) -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 must read nothing."""
    reply = await api.get("/api/v1/schedules", headers={"Host": "evil.example"}, auth=False)
    assert reply.status == 421
    page = await api.get("/", headers={"Host": "evil.example"}, validate=False)
    assert page.status == 421
    assert (await api.get("/api/v1/schedules", headers={"Host": "localhost"})).status == 200


async def test_session_says_who_and_what(api: Api) -> None:
    anonymous = await api.get("/api/v1/session", auth=False)
    assert anonymous.body == {"mode": "embedded", "readOnly": False, "readsNeedToken": False,
                              "authenticated": False, "user": None, "logs": True}
    signed = await api.get("/api/v1/session")
    assert signed.body["authenticated"] is True
    assert (await api.get("/api/v1/session", auth="wrong-token-0123456789")).status == 401


async def test_pages_carry_security_headers(api: Api) -> None:
    page = await api.get("/", auth=False, validate=False)
    assert page.status == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    script = await api.get("/static/app.js", auth=False, validate=False)
    assert script.status == 200
    assert "set-cookie" not in {k.lower() for k in page.headers}


def test_the_token_file_is_owner_only_and_new_each_start(tmp_path: Any) -> None:
    first = write_token(tmp_path)
    mode = stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode)
    assert mode == 0o600
    assert (tmp_path / TOKEN_FILE).read_text().strip() == first
    assert write_token(tmp_path) != first
    assert len(first) >= 40


# --- Kubernetes mode: the decisions and the cache (the real API server's answers are
# tested against a real kube-apiserver in tests/k8s once that harness is merged) -----------


class Answers:
    """Scripted cluster answers, to test what KubernetesAccess does with them."""

    def __init__(self) -> None:
        self.tokens = {"alice-token": Review(True, Principal("alice", ("devs",), "u1"))}
        self.allowed = {("alice", "list", "sympoziumschedules", "team-a")}
        self.calls: list[str] = []

    async def review_token(self, token: str) -> Review:
        self.calls.append("token")
        return self.tokens.get(token, Review(False, error="token expired"))

    async def may(self, who: Principal, check: Check) -> tuple[bool, str]:
        self.calls.append(f"sar {check.verb}")
        ok = (who.name, check.verb, check.resource, check.namespace) in self.allowed
        return ok, "" if ok else "RBAC: no rule allows it"


async def test_kubernetes_access_allows_what_rbac_allows_and_caches_briefly() -> None:
    answers = Answers()
    clock = [0.0]
    access = KubernetesAccess(answers, ttl=10, clock=lambda: clock[0])
    who = await access.authenticate("alice-token")
    assert who is not None
    assert who.name == "alice"
    allowed = Check("list", "sympoziumschedules", namespace="team-a")
    await access.authorize(who, allowed)
    with pytest.raises(ApiError) as denied:
        await access.authorize(who, Check("delete", "sympoziumschedules", namespace="team-a", name="x"))
    assert denied.value.status == 403
    assert denied.value.message == ('user "alice" may not delete sympoziumschedules \'x\' in namespace '
                                    '"team-a" (RBAC: no rule allows it)')
    # Within the TTL the same questions cost no API call...
    await access.authenticate("alice-token")
    await access.authorize(who, allowed)
    assert answers.calls == ["token", "sar list", "sar delete"]
    # ...after it, they are asked again (a revoked role stops working).
    clock[0] = 11
    await access.authorize(who, allowed)
    assert answers.calls[-1] == "sar list"


async def test_kubernetes_access_refuses_bad_and_missing_tokens() -> None:
    access = KubernetesAccess(Answers())
    with pytest.raises(ApiError) as bad:
        await access.authenticate("stolen")
    assert bad.value.status == 401
    assert "token expired" in bad.value.message
    with pytest.raises(ApiError) as missing:
        await access.authorize(None, Check("list", "sympoziumschedules"))
    assert missing.value.status == 401
    assert access.reads_need_token


async def test_kubernetes_access_reports_an_unreachable_api_as_503() -> None:
    class Down(Answers):
        async def review_token(self, token: str) -> Review:
            raise OSError("connection refused")

    with pytest.raises(ApiError) as caught:
        await KubernetesAccess(Down()).authenticate("alice-token")
    assert caught.value.status == 503
