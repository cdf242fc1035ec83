"""Every outbox op: the exact requests it makes, and that a second run changes nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from bot.github.client import GitHubApp
from bot.outbox import writes as w
from bot.outbox.worker import OutboxWorker, is_marked_by
from bot.outbox.writes import enqueue, marker, with_marker
from bot.store import Store
from tests.support.github_mock import (
    BOT_USER,
    INSTALLATION,
    api_calls,
    comment_json,
    commit_json,
    pull_json,
    ref_json,
    writes,
)

REPO = "lab/charlm"
BASE = "base111" + "1" * 33  # git object names: GitHub's models want all 40 characters
HEAD = "c0ffee" + "e" * 34


async def perform(
    store: Store, github: GitHubApp, write: w.Write, *, retried: bool = False
) -> dict[str, Any]:
    """Enqueue `write` and run the outbox once; `retried`: an earlier attempt of the row
    began and was cut short (a crash), so the write must look for it on GitHub first."""
    with store.transaction():
        row_id = enqueue(store, REPO, INSTALLATION, write)
        if retried:
            store.update("outbox", row_id, {"result": json.dumps({"attempted_at": 1.0})})
    await OutboxWorker(store, github).run_once()
    row = store.one("SELECT * FROM outbox WHERE id = ?", (row_id,))
    assert row is not None
    if row["result"]:
        row["result"] = json.loads(row["result"])
    return row


async def test_comment_is_created_with_its_marker(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(
        200, json=[{"id": 1, "body": "someone else"}]
    )
    gh_mock.post(f"/repos/{REPO}/issues/4/comments").respond(201, json=comment_json(77))
    row = await perform(store, github, w.Comment(number=4, kind="result", key="9-1", body="hi"))
    assert (row["state"], row["result"]) == ("done", {"comment_id": 77})
    # Never attempted and no other row with its marker: nothing to look for first.
    assert api_calls(gh_mock) == [
        (
            "POST",
            f"/repos/{REPO}/issues/4/comments",
            {"body": "<!-- kohai:result:9-1 -->\nhi"},
        ),
    ]


async def test_marker_already_there_prevents_a_second_comment(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(
        200, json=[{"id": 55, "user": BOT_USER, "body": with_marker("hi", "result", "9-1")}]
    )
    create = gh_mock.post(f"/repos/{REPO}/issues/4/comments").respond(201, json=comment_json(78))
    row = await perform(
        store, github, w.Comment(number=4, kind="result", key="9-1", body="hi"), retried=True
    )
    assert (row["state"], row["result"]) == ("done", {"comment_id": 55})
    assert create.call_count == 0


async def test_marker_is_found_on_a_later_page(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    page2 = "https://api.github.com/repositories/1/issues/4/comments?page=2&per_page=100"
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(
        200,
        json=[{"id": n, "body": "chatter"} for n in range(100)],
        headers={"link": f'<{page2}>; rel="next"'},
    )
    gh_mock.get("/repositories/1/issues/4/comments").respond(
        200, json=[{"id": 500, "user": BOT_USER, "body": with_marker("old", "result", "9-1")}]
    )
    row = await perform(
        store, github, w.Comment(number=4, kind="result", key="9-1", body="hi"), retried=True
    )
    assert row["result"] == {"comment_id": 500}
    assert writes(gh_mock) == []


async def test_sticky_is_edited_in_place(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(
        200, json=[{"id": 31, "user": BOT_USER, "body": with_marker("queued", "status", 4)}]
    )
    gh_mock.patch(f"/repos/{REPO}/issues/comments/31").respond(200, json={"id": 31})
    row = await perform(
        store,
        github,
        w.StatusComment(number=4, kind="status", key=4, body="training"),
        retried=True,
    )
    assert row["result"] == {"comment_id": 31}
    assert writes(gh_mock) == [
        (
            "PATCH",
            f"/repos/{REPO}/issues/comments/31",
            {"body": "<!-- kohai:status:4 -->\ntraining"},
        )
    ]


async def test_sticky_unchanged_is_not_rewritten(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(
        200, json=[{"id": 31, "user": BOT_USER, "body": with_marker("same", "status", 4)}]
    )
    row = await perform(
        store, github, w.StatusComment(number=4, kind="status", key=4, body="same"), retried=True
    )
    assert row["state"] == "done" and writes(gh_mock) == []


async def test_sticky_is_created_when_missing(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(200, json=[])
    gh_mock.post(f"/repos/{REPO}/issues/4/comments").respond(201, json=comment_json(40))
    row = await perform(
        store, github, w.StatusComment(number=4, kind="status", key=4, body="queued")
    )
    assert row["result"] == {"comment_id": 40}
    assert writes(gh_mock) == [
        ("POST", f"/repos/{REPO}/issues/4/comments", {"body": "<!-- kohai:status:4 -->\nqueued"})
    ]


OPEN_PR_ARGS: dict[str, Any] = {
    "experiment_id": 12,
    "base": "main",
    "branch": "kohai/12-wider-mlp",
    "title": "Wider MLP",
    "body": "Hypothesis: a wider MLP lowers val_bpb.",
    "commit_message": "kohai: wider MLP\n\nHypothesis: a wider MLP lowers val_bpb.",
    "labels": ["student:fern", "status:queued"],
    "issue_number": 3,
}
PULL = {
    "number": 21,
    "node_id": "PR_kw21",
    "html_url": "https://github.com/lab/charlm/pull/21",
    "head": {"ref": "kohai/12-wider-mlp", "sha": HEAD, "repo": {"full_name": REPO}},
    "draft": True,
}


def mock_open_pr_world(router: respx.MockRouter) -> None:
    router.get(f"/repos/{REPO}/pulls").respond(200, json=[])
    router.get(f"/repos/{REPO}/git/ref/heads/kohai/12-wider-mlp").respond(
        404, json={"message": "Not Found"}
    )
    router.get(f"/repos/{REPO}/git/ref/heads/main").respond(
        200, json=ref_json("refs/heads/main", BASE)
    )
    router.get(f"/repos/{REPO}/git/commits/{BASE}").respond(
        200, json=commit_json(BASE, tree="tree222")
    )
    router.post(f"/repos/{REPO}/git/commits").respond(201, json=commit_json(HEAD))
    router.post(f"/repos/{REPO}/git/refs").respond(201, json={"ref": "refs/heads/kohai/12"})
    router.post(f"/repos/{REPO}/pulls").respond(201, json=pull_json(**PULL))
    router.post(f"/repos/{REPO}/issues/21/labels").respond(200, json=[])
    router.get(f"/repos/{REPO}/issues/3/comments").respond(200, json=[])
    router.post(f"/repos/{REPO}/issues/3/comments").respond(201, json=comment_json(900))


async def test_open_pr_starts_the_branch_with_an_empty_commit_then_a_draft_pr(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    mock_open_pr_world(gh_mock)
    row = await perform(store, github, w.OpenPullRequest(**OPEN_PR_ARGS))
    assert row["state"] == "done", row["last_error"]
    assert row["result"] == {
        "number": 21,
        "node_id": "PR_kw21",
        "head_sha": HEAD,
        "html_url": "https://github.com/lab/charlm/pull/21",
    }
    # Never attempted: no PR and no link comment of ours can exist yet; the branch is
    # looked up (the StartBranch lane may have made it).
    assert api_calls(gh_mock) == [
        ("GET", f"/repos/{REPO}/git/ref/heads/kohai/12-wider-mlp", None),
        ("GET", f"/repos/{REPO}/git/ref/heads/main", None),
        ("GET", f"/repos/{REPO}/git/commits/{BASE}", None),
        (
            "POST",
            f"/repos/{REPO}/git/commits",
            {
                "message": OPEN_PR_ARGS["commit_message"],
                "tree": "tree222",
                "parents": [BASE],
            },
        ),
        (
            "POST",
            f"/repos/{REPO}/git/refs",
            {"ref": "refs/heads/kohai/12-wider-mlp", "sha": HEAD},
        ),
        (
            "POST",
            f"/repos/{REPO}/pulls",
            {
                "title": "Wider MLP",
                "head": "kohai/12-wider-mlp",
                "base": "main",
                "body": "<!-- kohai:experiment:12 -->\nHypothesis: a wider MLP lowers val_bpb.",
                "draft": True,
            },
        ),
        ("POST", f"/repos/{REPO}/issues/21/labels", {"labels": ["student:fern", "status:queued"]}),
        (
            "POST",
            f"/repos/{REPO}/issues/3/comments",
            {
                "body": "<!-- kohai:link:12 -->\n"
                "Opened #21 for this hypothesis: https://github.com/lab/charlm/pull/21"
            },
        ),
    ]


async def test_open_pr_when_the_pr_exists_only_repairs_labels_and_link(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    mock_open_pr_world(gh_mock)
    gh_mock.get(f"/repos/{REPO}/pulls").respond(
        200, json=[{**PULL, "number": 5, "head": {"ref": "other", "sha": "x"}}, PULL]
    )
    gh_mock.get(f"/repos/{REPO}/issues/3/comments").respond(
        200, json=[{"id": 900, "user": BOT_USER, "body": with_marker("Opened #21", "link", 12)}]
    )
    row = await perform(store, github, w.OpenPullRequest(**OPEN_PR_ARGS), retried=True)
    assert row["result"]["number"] == 21
    assert writes(gh_mock) == [
        ("POST", f"/repos/{REPO}/issues/21/labels", {"labels": ["student:fern", "status:queued"]})
    ]


async def test_open_pr_reuses_an_existing_branch(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    mock_open_pr_world(gh_mock)
    gh_mock.get(f"/repos/{REPO}/git/ref/heads/kohai/12-wider-mlp").respond(
        200, json=ref_json("refs/heads/kohai/12-wider-mlp", HEAD)
    )
    args = {**OPEN_PR_ARGS, "labels": [], "issue_number": None}
    row = await perform(store, github, w.OpenPullRequest(**args))
    assert row["state"] == "done"
    assert [(m, p) for m, p, _ in writes(gh_mock)] == [("POST", f"/repos/{REPO}/pulls")]


async def test_ensure_labels_creates_only_missing_ones(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/labels").respond(200, json=[{"name": "Hold"}])
    gh_mock.post(f"/repos/{REPO}/labels").mock(
        side_effect=[
            httpx.Response(201, json={}),
            httpx.Response(
                422,
                json={"message": "Validation Failed", "errors": [{"code": "already_exists"}]},
            ),
        ]
    )
    labels = [
        {"name": "hold", "color": "b60205", "description": "nothing new starts"},
        {"name": "status:queued", "color": "#fbca04", "description": "waiting for a host"},
        {"name": "student:fern", "color": "1d76db", "description": ""},
    ]
    row = await perform(store, github, w.EnsureLabels(labels=labels))
    assert row["state"] == "done", row["last_error"]
    assert writes(gh_mock) == [
        (
            "POST",
            f"/repos/{REPO}/labels",
            {"name": "status:queued", "color": "fbca04", "description": "waiting for a host"},
        ),
        ("POST", f"/repos/{REPO}/labels", {"name": "student:fern", "color": "1d76db"}),
    ]


async def test_add_and_remove_labels(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.post(f"/repos/{REPO}/issues/21/labels").respond(200, json=[])
    gh_mock.delete(f"/repos/{REPO}/issues/21/labels/status%3Aqueued").respond(200, json=[])
    gh_mock.delete(f"/repos/{REPO}/issues/21/labels/hold").respond(
        404, json={"message": "Label does not exist"}
    )
    added = await perform(store, github, w.AddLabels(number=21, labels=["status:wip"]))
    removed = await perform(store, github, w.RemoveLabel(number=21, label="status:queued"))
    absent = await perform(store, github, w.RemoveLabel(number=21, label="hold"))
    assert [added["state"], removed["state"], absent["state"]] == ["done"] * 3
    assert writes(gh_mock) == [
        ("POST", f"/repos/{REPO}/issues/21/labels", {"labels": ["status:wip"]}),
        ("DELETE", f"/repos/{REPO}/issues/21/labels/status%3Aqueued", None),
        ("DELETE", f"/repos/{REPO}/issues/21/labels/hold", None),
    ]


async def test_react(store: Store, github: GitHubApp, gh_mock: respx.MockRouter) -> None:
    gh_mock.post(f"/repos/{REPO}/issues/comments/555/reactions").respond(201, json={"id": 1})
    row = await perform(store, github, w.React(comment_id=555, content="eyes"))
    assert row["state"] == "done"
    assert writes(gh_mock) == [
        ("POST", f"/repos/{REPO}/issues/comments/555/reactions", {"content": "eyes"})
    ]


async def test_mark_ready_goes_through_graphql(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/pulls/21").respond(200, json=pull_json(**PULL))
    gh_mock.post("/graphql").respond(
        200,
        json={"data": {"markPullRequestReadyForReview": {"pullRequest": {"isDraft": False}}}},
    )
    row = await perform(store, github, w.MarkReady(number=21))
    assert row["state"] == "done", row["last_error"]
    [(method, path, body)] = writes(gh_mock)
    assert (method, path) == ("POST", "/graphql")
    assert "markPullRequestReadyForReview" in body["query"]
    assert body["variables"] == {"id": "PR_kw21"}


async def test_mark_ready_on_a_ready_pr_does_nothing(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/pulls/21").respond(200, json=pull_json(**{**PULL, "draft": False}))
    row = await perform(store, github, w.MarkReady(number=21))
    assert row["state"] == "done" and writes(gh_mock) == []


async def test_convert_to_draft(store: Store, github: GitHubApp, gh_mock: respx.MockRouter) -> None:
    gh_mock.get(f"/repos/{REPO}/pulls/21").respond(200, json=pull_json(**{**PULL, "draft": False}))
    gh_mock.post("/graphql").respond(200, json={"data": {"convertPullRequestToDraft": {}}})
    row = await perform(store, github, w.ConvertToDraft(number=21))
    assert row["state"] == "done"
    [(_, _, body)] = writes(gh_mock)
    assert "convertPullRequestToDraft" in body["query"]


async def test_merge(store: Store, github: GitHubApp, gh_mock: respx.MockRouter) -> None:
    gh_mock.get(f"/repos/{REPO}/pulls/21").respond(200, json=pull_json(**{**PULL, "merged": False}))
    gh_mock.put(f"/repos/{REPO}/pulls/21/merge").respond(
        200, json={"sha": "m3rg3", "merged": True, "message": "Pull Request successfully merged"}
    )
    row = await perform(
        store, github, w.Merge(number=21, sha=HEAD, method="squash", title="Wider MLP (#21)")
    )
    assert (row["state"], row["result"]) == ("done", {"sha": "m3rg3", "merged": True})
    assert writes(gh_mock) == [
        (
            "PUT",
            f"/repos/{REPO}/pulls/21/merge",
            {"merge_method": "squash", "sha": HEAD, "commit_title": "Wider MLP (#21)"},
        )
    ]


async def test_merge_of_a_merged_pr_is_done(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/pulls/21").respond(
        200, json=pull_json(**{**PULL, "merged": True, "merge_commit_sha": "m3rg3"})
    )
    row = await perform(store, github, w.Merge(number=21, sha=HEAD, method="squash", title=""))
    assert row["result"] == {"sha": "m3rg3", "merged": True}
    assert writes(gh_mock) == []


async def test_merge_refused_is_a_permanent_failure_with_githubs_message(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/pulls/21").respond(200, json=pull_json(**{**PULL, "merged": False}))
    gh_mock.put(f"/repos/{REPO}/pulls/21/merge").respond(
        409, json={"message": "Head branch was modified. Review and try the merge again."}
    )
    row = await perform(store, github, w.Merge(number=21, sha=HEAD, method="squash", title="t"))
    assert row["state"] == "failed" and row["attempts"] == 1
    assert "Head branch was modified" in row["last_error"]


async def test_close(store: Store, github: GitHubApp, gh_mock: respx.MockRouter) -> None:
    gh_mock.patch(f"/repos/{REPO}/issues/21").respond(200, json={"state": "closed"})
    row = await perform(store, github, w.Close(number=21))
    assert row["state"] == "done"
    assert writes(gh_mock) == [("PATCH", f"/repos/{REPO}/issues/21", {"state": "closed"})]


def test_marker_format_is_the_documented_one() -> None:
    assert marker("status", 4) == "<!-- kohai:status:4 -->"


async def test_an_over_long_comment_is_cut_to_what_github_accepts(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(200, json=[])
    gh_mock.post(f"/repos/{REPO}/issues/4/comments").respond(201, json=comment_json(1))
    row = await perform(store, github, w.Comment(number=4, kind="log", key=1, body="x" * 70_000))
    assert row["state"] == "done"
    [(_, _, body)] = writes(gh_mock)
    assert len(body["body"]) == 65_536
    assert body["body"].startswith("<!-- kohai:log:1 -->") and body["body"].endswith("(truncated)")


MARK = marker("status", 4)


@pytest.mark.parametrize(
    ("comment", "counts"),
    [
        ({"user": BOT_USER, "body": f"{MARK}\nqueued"}, True),
        ({"user": BOT_USER, "body": MARK}, True),
        ({"user": BOT_USER, "body": f"{MARK}\r\nedited on the web"}, True),
        # A user pasted the marker: theirs, whatever it says.
        ({"user": {"login": "mallory", "type": "User"}, "body": f"{MARK}\nmine"}, False),
        # A user named like the bot is still a user.
        ({"user": {"login": "kohai[bot]", "type": "User"}, "body": f"{MARK}\nx"}, False),
        # Another App's bot.
        ({"user": {"login": "other[bot]", "type": "Bot"}, "body": f"{MARK}\nx"}, False),
        # The bot's own comment quoting someone's marker further down is not that comment.
        ({"user": BOT_USER, "body": f"{marker('reply', 1)}\n> {MARK}"}, False),
        ({"body": f"{MARK}\nno author"}, False),
    ],
)
def test_only_the_apps_own_comment_carries_a_marker(comment: dict, counts: bool) -> None:
    assert is_marked_by(comment, MARK, "kohai[bot]") is counts


async def test_a_users_copied_marker_is_passed_over(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(
        200,
        json=[
            {"id": 5, "user": {"login": "mallory", "type": "User"}, "body": f"{MARK}\nmine"},
            {"id": 31, "user": BOT_USER, "body": f"{MARK}\nqueued"},
        ],
    )
    edit = gh_mock.patch(f"/repos/{REPO}/issues/comments/31").respond(200, json={"id": 31})
    spoofed = gh_mock.patch(f"/repos/{REPO}/issues/comments/5").respond(200, json={"id": 5})
    row = await perform(
        store,
        github,
        w.StatusComment(number=4, kind="status", key=4, body="training"),
        retried=True,
    )
    assert row["result"] == {"comment_id": 31}
    assert (edit.call_count, spoofed.call_count) == (1, 0)
