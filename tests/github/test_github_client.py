"""The GitHub client: App auth, token caching, retries, rate limits, pacing."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.github.client import (
    WRITES_PER_MINUTE,
    GitHubApp,
    GitHubWriteError,
    Pacer,
    acquire,
    backoff_s,
    classify_failure,
    permission_level,
)
from tests.support.github_mock import API, INSTALLATION, FakeTime, api_calls


async def test_app_routes_use_a_short_lived_rs256_jwt(
    github: GitHubApp, gh_mock: respx.MockRouter, rsa_key: rsa.RSAPrivateKey
) -> None:
    route = gh_mock.get("/repos/lab/charlm/installation").respond(200, json={"id": 99})
    assert await github.installation_for_repo("lab/charlm") == 99
    assert await github.installation_for_repo("lab/charlm") == 99  # cached
    assert route.call_count == 1
    header = route.calls[0].request.headers["authorization"]
    assert header.startswith("Bearer ")
    claims = jwt.decode(header.split()[1], rsa_key.public_key(), algorithms=["RS256"])
    assert claims["iss"] == "42"
    assert 0 < claims["exp"] - claims["iat"] <= 600


async def test_installation_token_is_fetched_once_and_reused(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get("/repos/lab/charlm/labels").respond(200, json=[])
    await github.request(INSTALLATION, "GET", "/repos/lab/charlm/labels")
    await github.request(INSTALLATION, "GET", "/repos/lab/charlm/labels")
    assert gh_mock["token"].call_count == 1
    for call in gh_mock.calls[1:]:
        assert call.request.headers["authorization"] == "token ghs_installation"


async def test_installation_token_about_to_expire_is_renewed(
    private_pem: str,
) -> None:
    app = GitHubApp(42, private_pem, API)
    with respx.mock(base_url=API) as router:
        token = router.post(f"/app/installations/{INSTALLATION}/access_tokens").respond(
            201, json={"token": "ghs_short", "expires_at": "2000-01-01T00:00:00Z"}
        )
        router.get("/rate_limit").respond(200, json={})
        await app.request(INSTALLATION, "GET", "/rate_limit")
        await app.request(INSTALLATION, "GET", "/rate_limit")
    assert token.call_count == 2


async def test_job_token_is_narrowed_to_one_repo_and_contents_read(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    """Hosts get read access only; the bot's own push token asks for write, for one repo."""
    token, expires = await github.job_token(INSTALLATION, "lab/charlm")
    assert (token, expires) == ("ghs_installation", "2099-01-01T00:00:00Z")
    request = gh_mock["token"].calls[0].request
    assert request.headers["authorization"].startswith("Bearer ")
    assert request.read() and httpx.Response(200, content=request.content).json() == {
        "repositories": ["charlm"],
        "permissions": {"contents": "read"},
    }
    assert await github.push_token(INSTALLATION, "lab/charlm") == "ghs_installation"
    pushed = httpx.Response(200, content=gh_mock["token"].calls[1].request.content).json()
    assert pushed == {"repositories": ["charlm"], "permissions": {"contents": "write"}}


async def test_retries_a_502_then_succeeds(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    gh_mock.get("/repos/lab/charlm/pulls/3").mock(
        side_effect=[httpx.Response(502), httpx.Response(200, json={"number": 3})]
    )
    reply = await github.request(INSTALLATION, "GET", "/repos/lab/charlm/pulls/3")
    assert reply.data == {"number": 3}
    assert fake_time.sleeps == [1.0]


async def test_secondary_rate_limit_honours_retry_after(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = gh_mock.post("/repos/lab/charlm/issues/1/comments").mock(
        side_effect=[
            httpx.Response(
                403,
                headers={"retry-after": "2"},
                json={"message": "You have exceeded a secondary rate limit."},
            ),
            httpx.Response(201, json={"id": 5}),
        ]
    )
    # Even a non-idempotent POST is resent: a rate-limited request was not performed.
    reply = await github.request(
        INSTALLATION, "POST", "/repos/lab/charlm/issues/1/comments", json={"body": "x"}
    )
    assert reply.data == {"id": 5}
    assert fake_time.sleeps == [2.0]
    assert route.call_count == 2


async def test_secondary_rate_limit_by_message_waits_a_minute(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    gh_mock.get("/repos/lab/charlm").mock(
        side_effect=[
            httpx.Response(403, json={"message": "You have exceeded a secondary rate limit"}),
            httpx.Response(200, json={}),
        ]
    )
    await github.request(INSTALLATION, "GET", "/repos/lab/charlm")
    assert fake_time.sleeps == [60.0]


async def test_primary_rate_limit_waits_until_reset(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    reset = int(fake_time.now) + 37
    gh_mock.get("/repos/lab/charlm").mock(
        side_effect=[
            httpx.Response(
                403,
                headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
                json={"message": "API rate limit exceeded"},
            ),
            httpx.Response(200, json={"full_name": "lab/charlm"}),
        ]
    )
    reply = await github.request(INSTALLATION, "GET", "/repos/lab/charlm")
    assert reply.data["full_name"] == "lab/charlm"
    assert fake_time.sleeps == [37.0]


async def test_a_long_rate_limit_is_handed_back_with_its_wait(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    reset = int(fake_time.now) + 1800
    gh_mock.get("/repos/lab/charlm").respond(
        429, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    )
    with pytest.raises(GitHubWriteError) as raised:
        await github.request(INSTALLATION, "GET", "/repos/lab/charlm")
    assert raised.value.retryable and raised.value.retry_after == 1800.0
    assert fake_time.sleeps == []


async def test_gives_up_after_five_attempts_with_a_retryable_error(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = gh_mock.get("/repos/lab/charlm").respond(503, json={"message": "Unavailable"})
    with pytest.raises(GitHubWriteError) as raised:
        await github.request(INSTALLATION, "GET", "/repos/lab/charlm")
    assert route.call_count == 5
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert raised.value.status == 503 and raised.value.retryable
    assert "Unavailable" in str(raised.value)


async def test_permanent_error_is_not_retried(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = gh_mock.post("/repos/lab/charlm/labels").respond(
        422, json={"message": "Validation Failed", "errors": [{"code": "invalid"}]}
    )
    with pytest.raises(GitHubWriteError) as raised:
        await github.request(INSTALLATION, "POST", "/repos/lab/charlm/labels", json={})
    assert route.call_count == 1 and fake_time.sleeps == []
    assert raised.value.status == 422 and not raised.value.retryable
    assert raised.value.message == "Validation Failed (invalid)"


async def test_ambiguous_failure_of_a_non_idempotent_post_is_not_resent(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    route = gh_mock.post("/repos/lab/charlm/issues/1/comments").respond(502)
    with pytest.raises(GitHubWriteError) as raised:
        await github.request(
            INSTALLATION, "POST", "/repos/lab/charlm/issues/1/comments", json={"body": "x"}
        )
    assert route.call_count == 1
    assert raised.value.retryable and raised.value.status == 502


async def test_connection_refused_is_retried(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    gh_mock.post("/repos/lab/charlm/issues/1/comments").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={"id": 1})]
    )
    reply = await github.request(
        INSTALLATION, "POST", "/repos/lab/charlm/issues/1/comments", json={"body": "x"}
    )
    assert reply.status == 201 and fake_time.sleeps == [1.0]


async def test_pacing_allows_80_writes_a_minute_then_waits(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    gh_mock.post("/repos/lab/charlm/issues/1/labels").respond(200, json=[])
    gh_mock.get("/repos/lab/charlm").respond(200, json={})
    for _ in range(80):
        await github.request(INSTALLATION, "POST", "/repos/lab/charlm/issues/1/labels", json={})
    await github.request(INSTALLATION, "GET", "/repos/lab/charlm")  # reads are not paced
    assert fake_time.sleeps == []
    fake_time.now += 10
    await github.request(INSTALLATION, "POST", "/repos/lab/charlm/issues/1/labels", json={})
    assert fake_time.sleeps == [50.0]  # until the first write is a minute old


async def test_only_content_creation_waits_for_the_content_limit(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """GitHub's 80 a minute is on content-generating requests: once 80 comments went out,
    an edit, a label added, a label removed and a close still go at once; a comment waits."""
    issue = "/repos/lab/charlm/issues/1"
    gh_mock.post(f"{issue}/comments").respond(201, json={"id": 1})
    gh_mock.patch("/repos/lab/charlm/issues/comments/1").respond(200, json={"id": 1})
    gh_mock.post(f"{issue}/labels").respond(200, json=[])
    gh_mock.delete(f"{issue}/labels/hold").respond(200, json=[])
    gh_mock.patch(issue).respond(200, json={})
    for _ in range(80):
        await github.request(INSTALLATION, "POST", f"{issue}/comments", json={"body": "x"})
    await github.request(INSTALLATION, "PATCH", "/repos/lab/charlm/issues/comments/1", json={})
    await github.request(INSTALLATION, "POST", f"{issue}/labels", json={}, creates=False)
    await github.request(INSTALLATION, "DELETE", f"{issue}/labels/hold")
    await github.request(INSTALLATION, "PATCH", issue, json={"state": "closed"})
    assert fake_time.sleeps == []
    await github.request(INSTALLATION, "POST", f"{issue}/comments", json={"body": "x"})
    assert fake_time.sleeps == [60.0]


async def test_every_write_is_paced_at_githubs_points_a_minute(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """900 points a minute, 5 a write: the 181st write of a minute waits, content or not."""
    gh_mock.delete("/repos/lab/charlm/issues/1/labels/hold").respond(200, json=[])
    for _ in range(WRITES_PER_MINUTE):
        await github.request(INSTALLATION, "DELETE", "/repos/lab/charlm/issues/1/labels/hold")
    assert fake_time.sleeps == []
    await github.request(INSTALLATION, "DELETE", "/repos/lab/charlm/issues/1/labels/hold")
    assert fake_time.sleeps == [60.0] and WRITES_PER_MINUTE == 180


def test_pacing_is_settable_and_off_when_unset(private_pem: str, fake_time: FakeTime) -> None:
    loose = GitHubApp(
        42,
        private_pem,
        API,
        clock=fake_time,
        content_per_minute=None,
        content_per_hour=None,
        writes_per_minute=None,
    )
    assert loose._pacers_for(INSTALLATION, creates=True) == []
    tight = GitHubApp(42, private_pem, API, clock=fake_time, content_per_hour=100)
    assert [(p.limit, p.period_s) for p in tight._pacers_for(INSTALLATION, creates=True)] == [
        (180, 60.0),
        (80, 60.0),
        (100, 3600.0),
    ]
    assert [p.limit for p in tight._pacers_for(INSTALLATION, creates=False)] == [180]


async def test_pacing_is_per_installation(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    gh_mock.post("/app/installations/8/access_tokens").respond(
        201, json={"token": "ghs_other", "expires_at": "2099-01-01T00:00:00Z"}
    )
    gh_mock.post("/repos/lab/charlm/issues/1/labels").respond(200, json=[])
    for installation in [INSTALLATION] * 80 + [8]:
        await github.request(installation, "POST", "/repos/lab/charlm/issues/1/labels", json={})
    assert fake_time.sleeps == []


async def test_hourly_window_also_holds() -> None:
    clock = FakeTime()
    minute, hour = Pacer(80, 60, clock), Pacer(500, 3600, clock)
    for _ in range(500):
        await acquire([minute, hour], clock.sleep)
    # 500 writes need 6 full minute windows; the 501st waits for the first to be an hour old.
    assert sum(clock.sleeps) == pytest.approx(360.0)
    await acquire([minute, hour], clock.sleep)
    assert clock.now - 1_000_000.0 == pytest.approx(3600.0)


async def test_graphql_errors_are_permanent(github: GitHubApp, gh_mock: respx.MockRouter) -> None:
    gh_mock.post("/graphql").respond(
        200, json={"data": None, "errors": [{"message": "Could not resolve to a node"}]}
    )
    with pytest.raises(GitHubWriteError) as raised:
        await github.graphql(INSTALLATION, "mutation { x }")
    assert not raised.value.retryable
    assert "Could not resolve" in raised.value.message


async def test_deliveries_are_listed_across_pages_and_redelivered(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    next_page = f'<{API}/app/hook/deliveries?per_page=100&cursor=abc>; rel="next"'
    gh_mock.get("/app/hook/deliveries", params={"cursor": "abc"}).respond(200, json=[{"id": 2}])
    gh_mock.get("/app/hook/deliveries").respond(200, json=[{"id": 1}], headers={"link": next_page})
    attempts = gh_mock.post("/app/hook/deliveries/2/attempts").respond(202, json={})
    assert await github.list_deliveries() == [{"id": 1}, {"id": 2}]
    await github.redeliver(2)
    assert attempts.calls[0].request.headers["authorization"].startswith("Bearer ")
    assert [call[1] for call in api_calls(gh_mock)] == [
        "/app/hook/deliveries?per_page=100",
        "/app/hook/deliveries?per_page=100&cursor=abc",
        "/app/hook/deliveries/2/attempts",
    ]


async def test_permission_of_a_stranger_is_none(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get("/repos/lab/charlm/collaborators/mallory/permission").respond(
        404, json={"message": "Not Found"}
    )
    gh_mock.get("/repos/lab/charlm/collaborators/alice/permission").respond(
        200, json={"permission": "write", "role_name": "maintain"}
    )
    assert await github.permission(INSTALLATION, "lab/charlm", "mallory") == "none"
    assert await github.permission(INSTALLATION, "lab/charlm", "alice") == "maintain"


@pytest.mark.parametrize(
    ("body", "level"),
    [
        ({"permission": "admin", "role_name": "admin"}, "admin"),
        ({"permission": "write", "role_name": "maintain"}, "maintain"),
        ({"permission": "read", "role_name": "triage"}, "triage"),
        ({"permission": "write"}, "write"),
        ({"permission": "write", "role_name": "custom-role"}, "write"),
        ({}, "none"),
    ],
)
def test_permission_level(body: dict[str, str], level: str) -> None:
    assert permission_level(body) == level


@pytest.mark.parametrize(
    ("status", "headers", "message", "retryable", "wait", "resend"),
    [
        (502, {}, "Bad Gateway", True, None, False),
        (500, {}, "", True, None, False),
        (403, {"retry-after": "2"}, "secondary rate limit", True, 2.0, True),
        (429, {"retry-after": "5"}, "", True, 5.0, True),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}, "", True, 30.0, True),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "900"}, "", True, 0.0, True),
        (403, {}, "You have exceeded a secondary rate limit", True, 60.0, True),
        (403, {}, "Resource not accessible by integration", False, None, False),
        (404, {}, "Not Found", False, None, False),
        (422, {}, "Validation Failed", False, None, False),
    ],
)
def test_classify_failure(
    status: int,
    headers: dict[str, str],
    message: str,
    retryable: bool,
    wait: float | None,
    resend: bool,
) -> None:
    failure = classify_failure(status, headers, message, now_epoch=1000.0)
    assert (failure.retryable, failure.wait_s, failure.resend_safe) == (retryable, wait, resend)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


async def test_a_refused_token_is_replaced_once(
    github: GitHubApp, gh_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = gh_mock.get("/repos/lab/charlm").mock(
        side_effect=[
            httpx.Response(401, json={"message": "Bad credentials"}),
            httpx.Response(200, json={"full_name": "lab/charlm"}),
        ]
    )
    await github.request(INSTALLATION, "GET", "/repos/lab/charlm")
    assert route.call_count == 2 and gh_mock["token"].call_count == 2
    assert fake_time.sleeps == []


async def test_a_token_refused_twice_is_a_permanent_error(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get("/repos/lab/charlm").respond(401, json={"message": "Bad credentials"})
    with pytest.raises(GitHubWriteError) as raised:
        await github.request(INSTALLATION, "GET", "/repos/lab/charlm")
    assert raised.value.status == 401 and not raised.value.retryable


async def test_job_tokens_are_minted_ahead_and_reused_while_they_have_time(
    private_pem: str,
) -> None:
    """A lease need not wait on GitHub: a fresh token is reused, the next one minted early."""
    from datetime import UTC, datetime

    clock = [datetime(2030, 1, 1, 12, 0, tzinfo=UTC).timestamp()]
    app = GitHubApp(42, private_pem, API, wall_clock=lambda: clock[0])
    minted = iter(range(100))

    def mint(request: httpx.Request) -> httpx.Response:
        n = next(minted)
        expiry = datetime.fromtimestamp(clock[0] + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return httpx.Response(201, json={"token": f"ghs_{n}", "expires_at": expiry})

    with respx.mock(base_url=API) as router:
        route = router.post(f"/app/installations/{INSTALLATION}/access_tokens").mock(
            side_effect=mint
        )
        await app.warm_job_token(INSTALLATION, "lab/charlm")
        assert route.call_count == 1
        assert (await app.job_token(INSTALLATION, "lab/charlm"))[0] == "ghs_0"  # reused
        assert (await app.job_token(INSTALLATION, "lab/other"))[0] == "ghs_1"  # per repository
        assert route.call_count == 2
        clock[0] += 15 * 60  # 45 minutes left: still handed out, the next one minted ahead
        assert (await app.job_token(INSTALLATION, "lab/charlm"))[0] == "ghs_0"
        for _ in range(50):
            if route.call_count == 3:
                break
            await asyncio.sleep(0.01)
        assert route.call_count == 3
        assert (await app.job_token(INSTALLATION, "lab/charlm"))[0] == "ghs_2"
        clock[0] += 25 * 60  # the other one has 20 minutes left: too little for a job
        assert (await app.job_token(INSTALLATION, "lab/other"))[0] == "ghs_3"
