"""Behaviour: the sandbox refuses, signs, persists and fails the way GitHub does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from githubkit import GitHub
from githubkit.exception import RequestFailed
from sandbox_helpers import NAME, OWNER, REPO, Receiver, git, start_branch, token_url

from sandbox.control import SandboxControl, SandboxError
from sandbox.server import SandboxServer


def _token(sandbox: SandboxServer, **body: Any) -> str:
    installation_id = sandbox.installation_id(REPO) or 0
    return str(sandbox.world.mint_installation_token(installation_id, body)["token"])


def _api(sandbox: SandboxServer, method: str, path: str, token: str | None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, sandbox.url + path, headers=headers, timeout=30, **kw)


def _wait_for(receiver: Any, event: str, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for payload in receiver.events(event):
            if predicate(payload):
                return payload
        time.sleep(0.05)
    raise AssertionError(f"no {event} webhook matched")


# -- webhooks ---------------------------------------------------------------------------


def test_webhooks_are_signed_and_attributed_like_githubs(
    sandbox: SandboxServer, gh: GitHub[Any], receiver: Any
) -> None:
    issue = gh.rest.issues.create(OWNER, NAME, title="signed").parsed_data
    payload = _wait_for(
        receiver,
        "issues",
        lambda p: p["action"] == "opened" and p["issue"]["number"] == issue.number,
    )
    item = next(i for i in receiver.received if json.loads(i["body"]) == payload)
    headers, body = item["headers"], item["body"]
    expected = (
        "sha256=" + hmac.new(sandbox.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    )
    assert headers["X-Hub-Signature-256"] == expected
    assert headers["X-GitHub-Event"] == "issues"
    assert uuid.UUID(headers["X-GitHub-Delivery"])
    assert headers["X-GitHub-Hook-ID"].isdigit()
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert headers["Content-Type"] == "application/json"
    assert payload["sender"]["login"] == "kohai[bot]" and payload["sender"]["type"] == "Bot"
    assert payload["installation"]["id"] == sandbox.installation_id(REPO)
    assert payload["repository"]["full_name"] == REPO


def test_a_label_added_through_the_api_emits_labeled(
    gh: GitHub[Any], control: SandboxControl, receiver: Any
) -> None:
    issue = control.open_issue(REPO, "human hypothesis", as_user="bob")
    control.add_labels(REPO, issue["number"], ["student:fern"], as_user="bob")
    labeled = _wait_for(
        receiver,
        "issues",
        lambda p: p["action"] == "labeled" and p["issue"]["number"] == issue["number"],
    )
    assert labeled["label"]["name"] == "student:fern"
    assert labeled["sender"]["login"] == "bob" and labeled["sender"]["type"] == "User"
    control.remove_label(REPO, issue["number"], "student:fern", as_user="bob")
    _wait_for(
        receiver,
        "issues",
        lambda p: p["action"] == "unlabeled" and p["issue"]["number"] == issue["number"],
    )
    assert control.labels_of(REPO, issue["number"]) == []
    with pytest.raises(SandboxError) as refused:
        control.add_labels(REPO, issue["number"], ["hold"], as_user="carol")
    assert refused.value.status == 403


def test_failed_deliveries_are_logged_not_retried_and_can_be_redelivered(
    sandbox: SandboxServer, control: SandboxControl, app_gh: GitHub[Any], receiver: Any
) -> None:
    sandbox.wait_deliveries()
    control.set_webhook_url("http://127.0.0.1:9/nowhere")  # nothing listens on port 9
    issue = control.open_issue(REPO, "while the bot is down", as_user="bob")
    log = control.deliveries()
    failed = [d for d in log if d["event"] == "issues" and d["status_code"] != 200]
    assert failed and failed[-1]["request"]["payload"]["issue"]["number"] == issue["number"]
    control.set_webhook_url(receiver.url)
    before = len(receiver.received)
    time.sleep(0.3)
    assert not [i for i in receiver.received[before:] if i["headers"]["X-GitHub-Event"] == "issues"]
    assert app_gh.rest.apps.redeliver_webhook_delivery(failed[-1]["id"]).status_code == 202
    again = _wait_for(
        receiver,
        "issues",
        lambda p: p["action"] == "opened" and p["issue"]["number"] == issue["number"],
    )
    assert again["issue"]["title"] == "while the bot is down"


# -- pull requests ----------------------------------------------------------------------


def test_a_pull_without_commits_beyond_base_is_refused(gh: GitHub[Any]) -> None:
    base = gh.rest.git.get_ref(OWNER, NAME, "heads/main").parsed_data.object_.sha
    gh.rest.git.create_ref(OWNER, NAME, ref="refs/heads/kohai/empty", sha=base)
    with pytest.raises(RequestFailed) as refused:
        gh.rest.pulls.create(OWNER, NAME, title="nothing", head="kohai/empty", base="main")
    assert refused.value.response.status_code == 422
    body = refused.value.response.json()
    assert body["message"] == "Validation Failed"
    assert body["errors"][0]["message"] == "No commits between main and kohai/empty"


def test_a_draft_merges_only_after_ready_for_review(gh: GitHub[Any], receiver: Any) -> None:
    head = start_branch(gh, "kohai/3-draft", "Hypothesis: lower lr\n")
    pr = gh.rest.pulls.create(
        OWNER, NAME, title="lower lr", head="kohai/3-draft", base="main", draft=True
    ).parsed_data
    with pytest.raises(RequestFailed) as refused:
        gh.rest.pulls.merge(OWNER, NAME, pr.number)
    assert refused.value.response.status_code == 405
    assert refused.value.response.json()["message"] == "Pull Request is still a draft"
    gh.graphql(
        "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) "
        "{ pullRequest { isDraft } } }",
        {"id": pr.node_id},
    )
    with pytest.raises(RequestFailed) as moved:
        gh.rest.pulls.merge(OWNER, NAME, pr.number, sha="0" * 40)
    assert moved.value.response.status_code == 409
    assert gh.rest.pulls.get(OWNER, NAME, pr.number).parsed_data.draft is False
    _wait_for(
        receiver,
        "pull_request",
        lambda p: p["action"] == "ready_for_review" and p["number"] == pr.number,
    )
    result = gh.rest.pulls.merge(OWNER, NAME, pr.number, merge_method="merge", sha=head)
    assert result.parsed_data.merged
    closed = _wait_for(
        receiver, "pull_request", lambda p: p["action"] == "closed" and p["number"] == pr.number
    )
    assert closed["pull_request"]["merged"] is True


def test_a_conflicting_merge_is_refused(
    sandbox: SandboxServer, gh: GitHub[Any], tmp_path: Path
) -> None:
    token = _token(sandbox)
    numbers = []
    for branch, value in (("kohai/4-a", "0.1"), ("kohai/5-b", "0.2")):
        start_branch(gh, branch, f"Hypothesis: lr {value}\n")
        work = tmp_path / branch.replace("/", "-")
        git("clone", "-q", "-b", branch, token_url(sandbox, token), str(work))
        (work / "train.py").write_text(f"lr = {value}\ndepth = 2\n")
        git("commit", "-qam", f"lr {value}", cwd=work)
        git("push", "-q", "origin", branch, cwd=work)
        pr = gh.rest.pulls.create(OWNER, NAME, title=branch, head=branch, base="main")
        numbers.append(pr.parsed_data.number)
    assert gh.rest.pulls.merge(OWNER, NAME, numbers[0]).parsed_data.merged
    second = gh.rest.pulls.get(OWNER, NAME, numbers[1]).parsed_data
    assert second.mergeable is False and second.mergeable_state == "dirty"
    with pytest.raises(RequestFailed) as refused:
        gh.rest.pulls.merge(OWNER, NAME, numbers[1])
    assert refused.value.response.status_code == 405
    assert refused.value.response.json()["message"] == "Pull Request is not mergeable"
    main = gh.rest.repos.get_content(OWNER, NAME, "train.py", ref="main").parsed_data
    assert base64.b64decode(main.content).decode().startswith("lr = 0.1")  # type: ignore[union-attr]


# -- git over HTTP ----------------------------------------------------------------------


def test_push_needs_a_valid_token_for_the_repo(
    sandbox: SandboxServer, gh: GitHub[Any], receiver: Any, tmp_path: Path
) -> None:
    start_branch(gh, "kohai/6-push", "Hypothesis: push\n")
    pr = gh.rest.pulls.create(OWNER, NAME, title="push", head="kohai/6-push", base="main")
    number = pr.parsed_data.number
    good = _token(sandbox)
    work = tmp_path / "work"
    git("clone", "-q", "-b", "kohai/6-push", token_url(sandbox, good), str(work))
    (work / "notes.md").write_text("more\n")
    git("add", "notes.md", cwd=work)
    git("commit", "-qm", "notes", cwd=work)

    expired = _token(sandbox)
    sandbox.world.expire_token(expired)
    sandbox.create_repo("lab/other", files={"README.md": "other\n"})
    foreign = _token(sandbox, repositories=["other"])
    read_only = _token(sandbox, permissions={"contents": "read"})
    for bad, expected in (
        (expired, "Authentication failed"),
        (foreign, "Repository not found"),
        (read_only, "denied"),
    ):
        refused = git("push", token_url(sandbox, bad), "kohai/6-push", cwd=work, check=False)
        assert refused.returncode != 0 and expected in refused.stderr, refused.stderr
    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert gh.rest.pulls.get(OWNER, NAME, number).parsed_data.head.sha != head

    git("push", "-q", token_url(sandbox, good), "kohai/6-push", cwd=work)
    assert gh.rest.pulls.get(OWNER, NAME, number).parsed_data.head.sha == head
    sync = _wait_for(
        receiver,
        "pull_request",
        lambda p: p["action"] == "synchronize" and p["number"] == number,
    )
    assert sync["after"] == head and sync["pull_request"]["head"]["sha"] == head
    push = _wait_for(receiver, "push", lambda p: p["after"] == head)
    assert push["ref"] == "refs/heads/kohai/6-push" and push["commits"][-1]["id"] == head


# -- auth -------------------------------------------------------------------------------


def test_auth_is_checked_as_github_checks_it(sandbox: SandboxServer) -> None:
    for token in (None, "ghs_nonsense", "not-a-token"):
        answer = _api(sandbox, "GET", f"/repos/{REPO}", token)
        assert answer.status_code == 401
        assert answer.json()["message"] in ("Bad credentials", "Requires authentication")
        assert "documentation_url" in answer.json()
    now = int(time.time())
    too_long = jwt.encode(
        {"iss": str(sandbox.app_id), "iat": now, "exp": now + 3600},
        sandbox.private_key_pem,
        "RS256",
    )
    assert _api(sandbox, "GET", "/app", too_long).status_code == 401
    wrong_issuer = jwt.encode(
        {"iss": "1", "iat": now, "exp": now + 300}, sandbox.private_key_pem, "RS256"
    )
    assert _api(sandbox, "GET", "/app", wrong_issuer).status_code == 401
    good = jwt.encode(
        {"iss": str(sandbox.app_id), "iat": now - 60, "exp": now + 540},
        sandbox.private_key_pem,
        "RS256",
    )
    assert _api(sandbox, "GET", "/app", good).status_code == 200
    installation = _token(sandbox)
    assert _api(sandbox, "GET", "/app/installations", installation).status_code == 401
    read_only = _token(sandbox, permissions={"issues": "read"})
    answer = _api(sandbox, "POST", f"/repos/{REPO}/issues", read_only, json={"title": "x"})
    assert answer.status_code == 403
    assert answer.json()["message"] == "Resource not accessible by integration"
    sandbox.create_repo("lab/third", files={"README.md": "3\n"})
    third_id = sandbox.world.data["repos"]["lab/third"]["id"]
    for narrowed in (
        _token(sandbox, repositories=["third"]),
        _token(sandbox, repository_ids=[third_id]),
    ):
        assert _api(sandbox, "GET", f"/repos/{REPO}", narrowed).status_code == 404
        assert _api(sandbox, "GET", "/repos/lab/third", narrowed).status_code == 200
    minted = _api(
        sandbox,
        "POST",
        f"/app/installations/{sandbox.installation_id(REPO)}/access_tokens",
        good,
        json={"permissions": {"administration": "write"}},
    )
    assert minted.status_code == 422
    bob = _api(sandbox, "GET", f"/repos/{REPO}", sandbox.user_token("bob"))
    assert bob.status_code == 200 and bob.json()["permissions"]["push"] is True


# -- fault switch -------------------------------------------------------------------------


def test_fault_switch_fails_the_next_api_requests_only(
    sandbox: SandboxServer, control: SandboxControl
) -> None:
    token = _token(sandbox)
    control.fault(2, kind="502")
    assert control.info()["app_slug"] == "kohai"  # the control API is never faulted
    assert [_api(sandbox, "GET", f"/repos/{REPO}", token).status_code for _ in range(3)] == [
        502,
        502,
        200,
    ]
    control.fault(1, kind="secondary_rate_limit", retry_after=7)
    limited = _api(sandbox, "GET", f"/repos/{REPO}", token)
    assert limited.status_code == 403
    assert limited.headers["retry-after"] == "7"
    assert "secondary rate limit" in limited.json()["message"]
    assert _api(sandbox, "GET", f"/repos/{REPO}", token).status_code == 200


# -- persistence ---------------------------------------------------------------------------


def test_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "state"
    with SandboxServer(data) as first:
        first.create_repo("lab/keep", files={"README.md": "keep\n"})
        with SandboxControl(first.url) as control:
            issue = control.open_issue("lab/keep", "remember me", labels=["hold"], as_user="bob")
            control.comment("lab/keep", issue["number"], "still here", as_user="alice")
        identity = (first.app_id, first.private_key_pem, first.webhook_secret)
        bob_token = first.user_token("bob")
        installation_token = str(
            first.world.mint_installation_token(first.installation_id("lab/keep") or 0, {})["token"]
        )
        first.wait_deliveries()
        deliveries = len(first.world.data["deliveries"])
    with SandboxServer(data) as second:
        assert (second.app_id, second.private_key_pem, second.webhook_secret) == identity
        assert second.user_token("bob") == bob_token
        with SandboxControl(second.url) as control:
            assert control.issue("lab/keep", issue["number"])["title"] == "remember me"
            assert control.labels_of("lab/keep", issue["number"]) == ["hold"]
            assert [c["body"] for c in control.comments("lab/keep", issue["number"])] == [
                "still here"
            ]
            assert len(control.deliveries()) >= deliveries > 0
        answer = _api(second, "GET", "/repos/lab/keep", installation_token)
        assert answer.status_code == 200
        clone = git("clone", "-q", token_url(second, bob_token, "lab/keep"), str(tmp_path / "c"))
        assert clone.returncode == 0 and (tmp_path / "c" / "README.md").read_text() == "keep\n"


# -- humans through the control API --------------------------------------------------------


def test_humans_act_through_the_control_api(
    gh: GitHub[Any], control: SandboxControl, receiver: Any
) -> None:
    issue = control.open_issue(REPO, "carol's idea", labels=["student:any"], as_user="carol")
    opened = _wait_for(
        receiver,
        "issues",
        lambda p: p["action"] == "opened" and p["issue"]["number"] == issue["number"],
    )
    assert [label["name"] for label in opened["issue"]["labels"]] == ["student:any"]
    _wait_for(
        receiver,
        "issues",
        lambda p: p["action"] == "labeled" and p["issue"]["number"] == issue["number"],
    )
    said = control.comment(REPO, issue["number"], "/status", as_user="carol")
    assert said["user"]["login"] == "carol" and said["author_association"] == "CONTRIBUTOR"
    assert [c["body"] for c in control.comments(REPO, issue["number"])] == ["/status"]
    closed = control.close(REPO, issue["number"], as_user="bob")
    assert (
        closed["state"] == "closed"
        and control.issue(REPO, issue["number"])["closed_by"]["login"] == "bob"
    )

    head = start_branch(gh, "kohai/7-human-merge", "Hypothesis: merged by a human\n")
    number = gh.rest.pulls.create(
        OWNER, NAME, title="human merge", head="kohai/7-human-merge", base="main"
    ).parsed_data.number
    with pytest.raises(SandboxError) as refused:
        control.merge(REPO, number, as_user="carol")
    assert refused.value.status == 403
    assert control.merge(REPO, number, as_user="bob")["merged"] is True
    merged = next(p for p in control.pulls(REPO) if p["number"] == number)
    assert merged == control.pull(REPO, number)
    assert merged["merged"] and merged["merged_by"]["login"] == "bob"
    assert merged["head"]["sha"] == head


def test_lists_carry_link_headers_to_the_next_page(sandbox: SandboxServer, gh: GitHub[Any]) -> None:
    number = gh.rest.issues.create(OWNER, NAME, title="many comments").parsed_data.number
    for i in range(5):
        gh.rest.issues.create_comment(OWNER, NAME, number, body=f"c{i}")
    token = _token(sandbox)
    url: str | None = f"{sandbox.url}/repos/{REPO}/issues/{number}/comments?per_page=2"
    bodies: list[str] = []
    while url:
        answer = httpx.get(url, headers={"Authorization": f"token {token}"}, timeout=30)
        bodies += [c["body"] for c in answer.json()]
        url = answer.links.get("next", {}).get("url")
    assert bodies == [f"c{i}" for i in range(5)]

    now = int(time.time())
    app_jwt = jwt.encode(
        {"iss": str(sandbox.app_id), "iat": now - 60, "exp": now + 540},
        sandbox.private_key_pem,
        "RS256",
    )
    sandbox.wait_deliveries()
    url = f"{sandbox.url}/app/hook/deliveries?per_page=3"
    ids: list[int] = []
    while url:
        answer = httpx.get(url, headers={"Authorization": f"Bearer {app_jwt}"}, timeout=30)
        ids += [d["id"] for d in answer.json()]
        url = answer.links.get("next", {}).get("url")
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == len(set(ids)) == len(sandbox.world.data["deliveries"])


def test_webhooks_go_out_in_order_without_holding_up_the_api(
    control: SandboxControl, receiver: Any
) -> None:
    with Receiver(delay_s=0.3) as slow:
        control.set_webhook_url(slow.url)
        try:
            started = time.monotonic()
            issue = control.open_issue(REPO, "ordered", as_user="bob")
            control.add_labels(REPO, issue["number"], ["hold"], as_user="bob")
            control.comment(REPO, issue["number"], "first", as_user="bob")
            control.close(REPO, issue["number"], as_user="bob")
            assert time.monotonic() - started < 1.0  # four deliveries take 1.2 s
            control.deliveries(wait=10)
        finally:
            control.set_webhook_url(receiver.url)
        mine = [
            (p.get("comment") and "comment") or p["action"]
            for p in slow.events("issues") + slow.events("issue_comment")
            if p["issue"]["number"] == issue["number"]
        ]
        order = [
            json.loads(i["body"]).get("action")
            for i in slow.received
            if i["headers"]["X-GitHub-Event"] in ("issues", "issue_comment")
        ]
    assert sorted(mine) == sorted(["opened", "labeled", "comment", "closed"])
    assert order == ["opened", "labeled", "created", "closed"]
