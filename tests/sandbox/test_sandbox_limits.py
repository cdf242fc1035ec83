"""GitHub's rate limits in the sandbox: budgets, headers, refusals, conditional requests, record.

Each test gets a sandbox of its own (the limits are the sandbox's state), over
real HTTP on loopback, and speaks to it with plain httpx so that the headers
are seen exactly as sent.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_helpers import REPO

from sandbox.cli import limit_settings
from sandbox.control import SandboxControl, SandboxError
from sandbox.limits import Limits, Settings, etag_of, matches
from sandbox.server import SandboxServer


@pytest.fixture
def box(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "gh") as server:
        server.create_repo(REPO, files={"README.md": "# charlm\n"})
        yield server


@pytest.fixture
def control(box: SandboxServer) -> Iterator[SandboxControl]:
    with SandboxControl(box.url) as c:
        yield c


def _token(box: SandboxServer) -> str:
    return str(box.world.mint_installation_token(box.installation_id(REPO) or 0, {})["token"])


def _api(box: SandboxServer, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    return httpx.request(method, box.url + path, headers=headers, timeout=30, **kw)


def test_every_answer_says_what_is_left_of_the_budget(box: SandboxServer) -> None:
    token = _token(box)
    first = _api(box, "GET", f"/repos/{REPO}", token)
    second = _api(box, "GET", f"/repos/{REPO}/issues/999", token)  # a 404 costs one too
    assert first.status_code == 200 and second.status_code == 404
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-resource"] == "core"
    assert (first.headers["x-ratelimit-used"], first.headers["x-ratelimit-remaining"]) == (
        "1",
        "4999",
    )
    assert (second.headers["x-ratelimit-used"], second.headers["x-ratelimit-remaining"]) == (
        "2",
        "4998",
    )
    reset = int(first.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 3601
    assert second.headers["x-ratelimit-reset"] == first.headers["x-ratelimit-reset"]


def test_an_installations_tokens_share_one_budget_users_have_their_own(
    box: SandboxServer,
) -> None:
    a, b = _token(box), _token(box)
    _api(box, "GET", f"/repos/{REPO}", a)
    assert _api(box, "GET", f"/repos/{REPO}", b).headers["x-ratelimit-used"] == "2"
    bob = _api(box, "GET", f"/repos/{REPO}", box.user_token("bob"))
    assert bob.headers["x-ratelimit-used"] == "1"


def test_past_the_budget_github_refuses_and_does_nothing(
    box: SandboxServer, control: SandboxControl
) -> None:
    control.set_limits(budget=3)
    token = _token(box)
    issue = _api(box, "POST", f"/repos/{REPO}/issues", token, json={"title": "t"}).json()
    for _ in range(2):
        assert _api(box, "GET", f"/repos/{REPO}", token).status_code == 200
    refused = _api(
        box, "POST", f"/repos/{REPO}/issues/{issue['number']}/comments", token, json={"body": "x"}
    )
    assert refused.status_code == 403
    assert refused.json()["message"].startswith("API rate limit exceeded")
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["x-ratelimit-used"] == "3"  # the refusal itself is not counted
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert control.comments(REPO, issue["number"]) == []  # refused means not done
    # Another caller's budget is untouched.
    assert _api(box, "GET", f"/repos/{REPO}", box.user_token("bob")).status_code == 200


def test_the_budget_comes_back_when_its_window_resets(
    box: SandboxServer, control: SandboxControl
) -> None:
    control.set_limits(budget=1, window_s=1.0)
    token = _token(box)
    assert _api(box, "GET", f"/repos/{REPO}", token).status_code == 200
    assert _api(box, "GET", f"/repos/{REPO}", token).status_code == 403
    time.sleep(1.1)
    again = _api(box, "GET", f"/repos/{REPO}", token)
    assert again.status_code == 200 and again.headers["x-ratelimit-used"] == "1"
    assert _api(box, "GET", f"/repos/{REPO}", token).status_code == 403
    control.set_limits(reset=True)  # the control API's "an hour has passed"
    assert _api(box, "GET", f"/repos/{REPO}", token).status_code == 200


def test_a_conditional_request_answers_304_and_costs_nothing(
    box: SandboxServer, control: SandboxControl
) -> None:
    token = _token(box)
    issue = control.open_issue(REPO, "conditional")
    path = f"/repos/{REPO}/issues/{issue['number']}/comments"
    first = _api(box, "GET", path, token)
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["x-ratelimit-used"] == "1"
    unchanged = _api(box, "GET", path, token, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["x-ratelimit-used"] == "1"
    assert unchanged.headers["etag"] == etag
    control.comment(REPO, issue["number"], "something changed")
    changed = _api(box, "GET", path, token, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and len(changed.json()) == 1
    assert changed.headers["etag"] != etag and changed.headers["x-ratelimit-used"] == "2"
    # Without credentials nothing is answered, conditional or not.
    bare = httpx.get(box.url + path, headers={"If-None-Match": etag})
    assert bare.status_code == 401
    record = control.requests()
    assert [(r["status"], r["counted"]) for r in record if r["route"].endswith("/comments")] == [
        (200, True),
        (304, False),
        (200, True),
        (401, False),
    ]


def test_the_secondary_limit_holds_back_content_creation_only(
    box: SandboxServer, control: SandboxControl
) -> None:
    control.set_limits(secondary_per_minute=2)
    token = _token(box)
    issue = control.open_issue(REPO, "busy")
    path = f"/repos/{REPO}/issues/{issue['number']}/comments"
    assert [
        _api(box, "POST", path, token, json={"body": str(i)}).status_code for i in range(2)
    ] == [201, 201]
    limited = _api(box, "POST", path, token, json={"body": "third"})
    assert limited.status_code == 403
    assert "secondary rate limit" in limited.json()["message"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert _api(box, "GET", path, token).status_code == 200  # reads are not held back
    assert len(control.comments(REPO, issue["number"])) == 2
    # Nor what changes existing things: GitHub's limit is on content generated.
    number = issue["number"]
    labelled = _api(box, "POST", f"/repos/{REPO}/issues/{number}/labels", token, json=["bug"])
    edited = _api(box, "PATCH", f"/repos/{REPO}/issues/{number}", token, json={"title": "b"})
    assert (labelled.status_code, edited.status_code) == (200, 200)
    flags = {r["route"]: r["content"] for r in control.requests() if r["status"] < 300}
    assert flags == {
        "POST /repos/{owner}/{repo}/issues/{n}/comments": True,
        "GET /repos/{owner}/{repo}/issues/{n}/comments": False,
        "POST /repos/{owner}/{repo}/issues/{n}/labels": False,
        "PATCH /repos/{owner}/{repo}/issues/{n}": False,
    }


def test_graphql_has_a_budget_of_its_own(box: SandboxServer, control: SandboxControl) -> None:
    control.set_limits(graphql_budget=1)
    token = _token(box)
    query = {"query": "mutation { markPullRequestReadyForReview(input: {pullRequestId: 1}) }"}
    first = _api(box, "POST", "/graphql", token, json=query)
    assert first.headers["x-ratelimit-resource"] == "graphql"
    assert _api(box, "POST", "/graphql", token, json=query).status_code == 403
    rest = _api(box, "GET", f"/repos/{REPO}", token)
    assert rest.status_code == 200 and rest.headers["x-ratelimit-used"] == "1"


def test_every_request_is_recorded_by_route_and_caller(
    box: SandboxServer, control: SandboxControl
) -> None:
    token = _token(box)
    control.clear_requests()
    issue = control.open_issue(REPO, "recorded")  # the control API is not GitHub's: not recorded
    _api(box, "GET", f"/repos/{REPO}/issues/{issue['number']}", token)
    _api(box, "POST", f"/repos/{REPO}/issues/{issue['number']}/labels", token, json=["a", "b"])
    _api(box, "GET", f"/repos/{REPO}/issues/{issue['number']}", "ghs_nonsense")
    record = control.requests()
    installation = f"installation:{box.installation_id(REPO)}"
    assert [(r["method"], r["route"], r["who"], r["status"], r["write"]) for r in record] == [
        ("GET", "GET /repos/{owner}/{repo}/issues/{n}", installation, 200, False),
        ("POST", "POST /repos/{owner}/{repo}/issues/{n}/labels", installation, 200, True),
        ("GET", "GET /repos/{owner}/{repo}/issues/{n}", "anonymous", 401, False),
    ]
    assert control.clear_requests() == 3
    assert control.requests() == []
    assert control.limits()["budgets"][0]["used"] == 2


def test_nonsense_limits_are_refused(control: SandboxControl) -> None:
    for bad in ({"budget": "lots"}, {"window_s": 0}, {"budget": -1}, {"nonsense": 1}):
        with pytest.raises(SandboxError) as refused:
            control.set_limits(**bad)
        assert refused.value.status == 422
    assert control.set_limits(budget=None)["settings"]["budget"] is None


def test_no_budget_means_no_refusal() -> None:
    limits = Limits(Settings(budget=None), clock=lambda: 100.0)
    for _ in range(10_000):
        limits.admit("installation:1", "core", "GET")
        limits.count("installation:1", "core")
    assert limits.headers("installation:1", "core")["x-ratelimit-used"] == "10000"


def test_etags_follow_the_content_and_if_none_match_is_read_as_github_reads_it() -> None:
    tag = etag_of([{"id": 1}])
    assert tag == etag_of([{"id": 1}]) != etag_of([{"id": 2}])
    assert etag_of([1], "link-a") != etag_of([1], "link-b")
    assert matches(tag, tag) and matches(tag.removeprefix("W/"), tag)
    assert matches(f'"x", {tag}', tag) and matches("*", tag)
    assert not matches(None, tag) and not matches('"other"', tag)


def test_the_cli_flags_set_the_limits() -> None:
    assert limit_settings(argparse.Namespace(rate_limit=5000, secondary_limit=0)) == {
        "budget": 5000,
        "secondary_per_minute": None,
    }
    assert limit_settings(argparse.Namespace(rate_limit=0, secondary_limit=80)) == {
        "budget": None,
        "secondary_per_minute": 80,
    }
