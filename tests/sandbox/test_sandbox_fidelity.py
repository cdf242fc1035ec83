"""Fidelity: githubkit's strict models must parse every response and webhook.

Each operation kohai uses is called through githubkit exactly as the bot calls
it against GitHub; `parsed_data` validates the whole response. The last test
parses every webhook the sandbox delivered along the way.
"""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from githubkit import GitHub, webhooks
from sandbox_helpers import NAME, OWNER, REPO, git, start_branch, token_url

from sandbox.control import SandboxControl
from sandbox.server import SandboxServer


def test_app_endpoints_parse(sandbox: SandboxServer, app_gh: GitHub[Any]) -> None:
    app = app_gh.rest.apps.get_authenticated().parsed_data
    assert (app.id, app.slug) == (sandbox.app_id, "kohai")
    installations = app_gh.rest.apps.list_installations().parsed_data
    assert [i.account.login for i in installations] == [OWNER]  # type: ignore[union-attr]
    one = app_gh.rest.apps.get_installation(installations[0].id).parsed_data
    assert one.app_slug == "kohai"
    repo_inst = app_gh.rest.apps.get_repo_installation(OWNER, NAME).parsed_data
    assert repo_inst.id == one.id
    token = app_gh.rest.apps.create_installation_access_token(
        one.id, repositories=[NAME], permissions={"issues": "write", "contents": "read"}
    ).parsed_data
    assert token.token.startswith("ghs_")
    assert token.permissions.issues == "write"
    assert [r.full_name for r in token.repositories or []] == [REPO]


def test_repo_branch_contents_permission_parse(gh: GitHub[Any]) -> None:
    repo = gh.rest.repos.get(OWNER, NAME).parsed_data
    assert repo.default_branch == "main" and repo.full_name == REPO
    branch = gh.rest.repos.get_branch(OWNER, NAME, "main").parsed_data
    assert len(branch.commit.sha) == 40
    content = gh.rest.repos.get_content(OWNER, NAME, "train.py", ref="main").parsed_data
    assert base64.b64decode(content.content).decode() == "lr = 0.01\ndepth = 2\n"  # type: ignore[union-attr]
    for login, expected in (("alice", "admin"), ("bob", "write"), ("carol", "read")):
        perm = gh.rest.repos.get_collaborator_permission_level(OWNER, NAME, login).parsed_data
        assert (perm.permission, perm.role_name) == (expected, expected)


def test_labels_parse(gh: GitHub[Any]) -> None:
    created = gh.rest.issues.create_label(
        OWNER, NAME, name="status:queued", color="fbca04", description="waiting for a host"
    ).parsed_data
    assert created.name == "status:queued"
    assert gh.rest.issues.get_label(OWNER, NAME, "status:queued").parsed_data.id == created.id
    names = [x.name for x in gh.rest.issues.list_labels_for_repo(OWNER, NAME).parsed_data]
    assert "status:queued" in names


def test_issue_operations_parse(gh: GitHub[Any], control: SandboxControl) -> None:
    issue = gh.rest.issues.create(
        OWNER, NAME, title="try a deeper model", body="depth 4"
    ).parsed_data
    n = issue.number
    assert gh.rest.issues.get(OWNER, NAME, n).parsed_data.title == "try a deeper model"
    labels = gh.rest.issues.add_labels(OWNER, NAME, n, labels=["student:fern"]).parsed_data
    assert [x.name for x in labels] == ["student:fern"]
    labels = gh.rest.issues.set_labels(OWNER, NAME, n, labels=["student:any", "hold"]).parsed_data
    assert sorted(x.name for x in labels) == ["hold", "student:any"]
    labels = gh.rest.issues.remove_label(OWNER, NAME, n, "hold").parsed_data
    assert [x.name for x in labels] == ["student:any"]
    closed = gh.rest.issues.update(OWNER, NAME, n, state="closed").parsed_data
    assert closed.state == "closed" and closed.state_reason == "completed"
    reopened = gh.rest.issues.update(OWNER, NAME, n, state="open", title="deeper").parsed_data
    assert reopened.state == "open" and reopened.title == "deeper"
    listed = gh.rest.issues.list_for_repo(OWNER, NAME, state="all").parsed_data
    assert n in [i.number for i in listed]
    human = control.open_issue(REPO, "from a human", labels=["student:fern"], as_user="bob")
    assert human["user"]["login"] == "bob"


def test_comment_operations_parse(gh: GitHub[Any], control: SandboxControl) -> None:
    n = gh.rest.issues.create(OWNER, NAME, title="comments").parsed_data.number
    ids = [
        gh.rest.issues.create_comment(OWNER, NAME, n, body=f"comment {i}").parsed_data.id
        for i in range(5)
    ]
    page2 = gh.rest.issues.list_comments(OWNER, NAME, n, per_page=2, page=2).parsed_data
    assert [c.body for c in page2] == ["comment 2", "comment 3"]
    got = gh.rest.issues.get_comment(OWNER, NAME, ids[0]).parsed_data
    assert got.user and got.user.login == "kohai[bot]" and got.user.type == "Bot"
    edited = gh.rest.issues.update_comment(OWNER, NAME, ids[0], body="edited").parsed_data
    assert edited.body == "edited"
    assert gh.rest.issues.delete_comment(OWNER, NAME, ids[1]).status_code == 204
    assert len(gh.rest.issues.list_comments(OWNER, NAME, n).parsed_data) == 4
    human = control.comment(REPO, n, "/rerun seeds=3", as_user="bob")
    first = gh.rest.reactions.create_for_issue_comment(OWNER, NAME, human["id"], content="eyes")
    again = gh.rest.reactions.create_for_issue_comment(OWNER, NAME, human["id"], content="eyes")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.parsed_data.id == again.parsed_data.id and first.parsed_data.content == "eyes"


def test_git_data_and_pull_operations_parse(
    gh: GitHub[Any], sandbox: SandboxServer, tmp_path: Path
) -> None:
    head_sha = start_branch(gh, "kohai/1-deeper", "Hypothesis: deeper is better\n")
    ref = gh.rest.git.get_ref(OWNER, NAME, "heads/kohai/1-deeper").parsed_data
    assert ref.object_.sha == head_sha
    commit = gh.rest.git.get_commit(OWNER, NAME, head_sha).parsed_data
    assert commit.message == "Hypothesis: deeper is better\n" and len(commit.parents) == 1
    pr = gh.rest.pulls.create(
        OWNER, NAME, title="deeper", head="kohai/1-deeper", base="main", body="h", draft=True
    ).parsed_data
    assert pr.draft and pr.head.sha == head_sha and pr.node_id and not pr.merged
    as_issue = gh.rest.issues.get(OWNER, NAME, pr.number).parsed_data
    assert as_issue.pull_request is not None
    gh.rest.issues.add_labels(OWNER, NAME, pr.number, labels=["status:queued"])
    sticky = gh.rest.issues.create_comment(OWNER, NAME, pr.number, body="<!-- kohai:status:1 -->")
    assert sticky.parsed_data.html_url.endswith(
        f"/pull/{pr.number}#issuecomment-{sticky.parsed_data.id}"
    )
    listed = gh.rest.pulls.list(
        OWNER, NAME, state="open", head=f"{OWNER}:kohai/1-deeper"
    ).parsed_data
    assert [p.number for p in listed] == [pr.number]
    assert gh.rest.pulls.list(OWNER, NAME, state="closed").parsed_data == []
    updated = gh.rest.pulls.update(OWNER, NAME, pr.number, title="deeper (d=4)").parsed_data
    assert updated.title == "deeper (d=4)"

    # A host pushes the implementation over smart HTTP with an installation token.
    push_token = sandbox.world.mint_installation_token(sandbox.installation_id(REPO) or 0, {})
    work = tmp_path / "work"
    git("clone", "-q", "-b", "kohai/1-deeper", token_url(sandbox, push_token["token"]), str(work))
    (work / "train.py").write_text("lr = 0.01\ndepth = 4\n")
    git("commit", "-qam", "depth 4", cwd=work)
    git("push", "-q", "origin", "kohai/1-deeper", cwd=work)
    new_head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert gh.rest.pulls.get(OWNER, NAME, pr.number).parsed_data.head.sha == new_head

    moved = start_branch(gh, "kohai/scratch", "scratch\n")
    tree = gh.rest.git.get_commit(OWNER, NAME, moved).parsed_data.tree.sha
    child = gh.rest.git.create_commit(
        OWNER, NAME, message="more", tree=tree, parents=[moved]
    ).parsed_data.sha
    patched = gh.rest.git.update_ref(OWNER, NAME, "heads/kohai/scratch", sha=child).parsed_data
    assert patched.object_.sha == child

    ready = gh.graphql(
        "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) "
        "{ pullRequest { id isDraft } } }",
        {"id": pr.node_id},
    )
    assert ready["markPullRequestReadyForReview"]["pullRequest"]["isDraft"] is False
    merged = gh.rest.pulls.merge(
        OWNER, NAME, pr.number, merge_method="squash", sha=new_head
    ).parsed_data
    assert merged.merged
    after = gh.rest.pulls.get(OWNER, NAME, pr.number).parsed_data
    assert after.merged and after.state == "closed"
    assert gh.rest.pulls.get(OWNER, NAME, pr.number).json()["merge_commit_sha"] == merged.sha


def test_delivery_log_parses(app_gh: GitHub[Any], sandbox: SandboxServer) -> None:
    sandbox.wait_deliveries()
    listed = app_gh.rest.apps.list_webhook_deliveries(per_page=100).parsed_data
    assert listed and all(d.status_code == 200 for d in listed)
    detail = app_gh.rest.apps.get_webhook_delivery(listed[0].id).parsed_data
    assert detail.request.payload is not None
    answer = app_gh.rest.apps.redeliver_webhook_delivery(listed[0].id)
    assert answer.status_code == 202
    sandbox.wait_deliveries()
    newest = app_gh.rest.apps.list_webhook_deliveries(per_page=1).parsed_data[0]
    assert newest.redelivery and newest.guid == listed[0].guid


def test_every_webhook_parses_with_githubkit(sandbox: SandboxServer, receiver: Any) -> None:
    sandbox.wait_deliveries()
    seen: Counter[str] = Counter()
    failures = []
    for item in receiver.received:
        event = item["headers"]["X-GitHub-Event"]
        try:
            parsed = webhooks.parse(event, item["body"])
        except Exception as exc:  # noqa: BLE001 - collect them all for one report
            failures.append(f"{event}: {exc}")
            continue
        seen[f"{event}.{getattr(parsed, 'action', '')}".rstrip(".")] += 1
    assert failures == []
    expected = {
        "ping",
        "installation.created",
        "issues.opened",
        "issues.labeled",
        "issues.unlabeled",
        "issues.closed",
        "issues.reopened",
        "issues.edited",
        "issue_comment.created",
        "issue_comment.edited",
        "issue_comment.deleted",
        "pull_request.opened",
        "pull_request.labeled",
        "pull_request.edited",
        "pull_request.synchronize",
        "pull_request.ready_for_review",
        "pull_request.closed",
        "push",
    }
    assert expected <= set(seen), expected - set(seen)


@pytest.mark.parametrize("event", ["installation_repositories", "pull_request"])
def test_more_events_parse(
    event: str, sandbox: SandboxServer, gh: GitHub[Any], receiver: Any
) -> None:
    """installation_repositories.added and pull_request.converted_to_draft."""
    if event == "installation_repositories":
        sandbox.create_repo("lab/second", files={"README.md": "two\n"})
        action = "added"
    else:
        start_branch(gh, "kohai/2-draft", "draft again\n")
        pr = gh.rest.pulls.create(
            OWNER, NAME, title="t", head="kohai/2-draft", base="main"
        ).parsed_data
        gh.graphql(
            f'mutation {{ convertPullRequestToDraft(input: {{pullRequestId: "{pr.node_id}"}}) '
            "{ pullRequest { isDraft } } }"
        )
        action = "converted_to_draft"
    sandbox.wait_deliveries()
    bodies = [
        i["body"]
        for i in receiver.received
        if i["headers"]["X-GitHub-Event"] == event and f'"action":"{action}"'.encode() in i["body"]
    ]
    assert bodies
    for body in bodies:
        webhooks.parse(event, body)
