"""The typed writes: one coroutine each, rows that round-trip, old rows that still decode."""

from __future__ import annotations

import inspect
import json
import typing
from typing import Any

import pytest
import respx

from bot.github.client import GitHubApp
from bot.outbox import worker
from bot.outbox import writes as w
from bot.outbox.worker import PERFORMERS, OutboxWorker, failed_writes, performs
from bot.store import Store
from tests.support.github_mock import INSTALLATION, api_calls, comment_json, pull_json

REPO = "lab/charlm"
HEAD = "c0ffee" + "e" * 34

EXAMPLES: list[w.Write] = [
    w.StartBranch(experiment_id=1, base="main", branch="kohai/1-x", base_sha=HEAD),
    w.CreateBranch(branch="track/deep", sha=HEAD, track="deep"),
    w.EnsureLabels(labels=[{"name": "hold", "color": "b60205", "description": "held"}]),
    w.OpenPullRequest(
        experiment_id=1, base="main", branch="kohai/1-x", title="X", labels=["status:queued"]
    ),
    w.AddLabels(number=3, labels=["hold"]),
    w.RemoveLabel(number=3, label="hold"),
    w.Comment(number=3, kind="reply", key="d1:k", body="hi"),
    w.StatusComment(number=3, kind="status", key=3, body="queued"),
    w.React(comment_id=9, content="eyes"),
    w.MarkReady(number=3),
    w.ConvertToDraft(number=3),
    w.Merge(number=3, sha=HEAD, title="X (#3)", experiment_id=1, base="main", base_sha=HEAD),
    w.Close(number=3),
    w.CheckRun(
        head_sha=HEAD,
        name="kohai / kohai.toml",
        key=f"kohai.toml@{HEAD}",
        conclusion="failure",
        title="kohai.toml is invalid (line 3)",
        path="kohai.toml",
        line=3,
    ),
    w.IssueReport(kind="config-error", key="kohai.toml", title="kohai: configuration error"),
]


def all_write_types() -> set[type[w.Write]]:
    found: set[type[w.Write]] = set()
    todo = list(w.Write.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_write_type_is_registered_under_its_own_op() -> None:
    assert set(w.WRITES.values()) == all_write_types()
    assert all(w.WRITES[cls.op] is cls for cls in all_write_types())
    assert {type(example) for example in EXAMPLES} == all_write_types()


def test_every_write_type_has_exactly_one_coroutine_taking_it() -> None:
    assert set(PERFORMERS) == set(w.WRITES.values())
    for write_type, perform in PERFORMERS.items():
        assert inspect.iscoroutinefunction(perform), perform
        hints = typing.get_type_hints(perform, vars(worker))
        assert hints["write"] is write_type, (perform.__name__, hints["write"])
    with pytest.raises(ValueError, match="Close is performed twice"):
        performs(w.Close)(PERFORMERS[w.Close])


def test_the_app_is_every_client_a_write_needs() -> None:
    app = GitHubApp(1, "unused", "http://127.0.0.1:9")
    for client in (
        worker.CommentClient,
        worker.LabelCatalogClient,
        worker.PullClient,
        worker.DraftClient,
    ):
        assert isinstance(app, client), client.__name__


@pytest.mark.parametrize("write", EXAMPLES, ids=lambda write: type(write).__name__)
def test_a_row_decodes_to_the_write_that_made_it(store: Store, write: w.Write) -> None:
    with store.transaction():
        row_id = w.enqueue(store, REPO, INSTALLATION, write)
    row = store.one("SELECT op, args FROM outbox WHERE id = ?", (row_id,))
    assert row is not None and row["op"] == write.op
    assert w.decode(row["op"], row["args"]) == write


def test_an_old_row_decodes_ignoring_unknown_keys_and_defaulting_missing_ones() -> None:
    old = {"number": 21, "sha": HEAD, "method": "squash", "title": "", "retired_field": 1}
    assert w.decode("merge", json.dumps(old)) == w.Merge(number=21, sha=HEAD)


@pytest.mark.parametrize(
    ("op", "args", "error"),
    [
        ("launch_missiles", {}, ValueError),
        ("close", {}, KeyError),  # its number is required
        ("close", [21], TypeError),
        ("comment", {"number": 1, "kind": "x", "key": "y"}, KeyError),
    ],
)
def test_a_malformed_row_does_not_decode(op: str, args: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        w.decode(op, json.dumps(args))


def insert_row(store: Store, op: str, args: Any) -> int:
    """A row as an older bot (or a damaged database) left it: op and JSON args as stored."""
    with store.transaction():
        return store.insert(
            "outbox",
            {
                "repo": REPO,
                "installation_id": INSTALLATION,
                "op": op,
                "args": json.dumps(args),
                "state": "pending",
                "created_at": 0,
                "next_attempt_at": 0,
            },
        )


async def test_an_old_row_with_an_unknown_key_is_still_performed(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.get(f"/repos/{REPO}/pulls/21").respond(
        200, json=pull_json(number=21, merged=False, draft=False, head={"sha": HEAD})
    )
    gh_mock.put(f"/repos/{REPO}/pulls/21/merge").respond(
        200, json={"sha": "m3rg3", "merged": True, "message": "merged"}
    )
    gh_mock.get(f"/repos/{REPO}/issues/4/comments").respond(200, json=[])
    gh_mock.post(f"/repos/{REPO}/issues/4/comments").respond(201, json=comment_json(88))
    merge_row = insert_row(
        store, "merge", {"number": 21, "sha": HEAD, "method": "squash", "from_v0": True}
    )
    comment_row = insert_row(
        store, "comment", {"number": 4, "kind": "result", "key": "1-0", "body": "ok", "x": None}
    )

    assert await OutboxWorker(store, github).run_once() == 2, failed_writes(store)

    results = {
        row["id"]: json.loads(row["result"])
        for row in store.query("SELECT id, result FROM outbox WHERE state = 'done'")
    }
    assert results == {merge_row: {"sha": "m3rg3", "merged": True}, comment_row: {"comment_id": 88}}
    assert [call for call in api_calls(gh_mock) if call[0] != "GET"] == [
        ("PUT", f"/repos/{REPO}/pulls/21/merge", {"merge_method": "squash", "sha": HEAD}),
        ("POST", f"/repos/{REPO}/issues/4/comments", {"body": "<!-- kohai:result:1-0 -->\nok"}),
    ]


async def test_hostile_rows_fail_for_good_without_a_request(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    insert_row(store, "launch_missiles", {"number": 1})
    insert_row(store, "close", "not an object")
    insert_row(store, "react", {"comment_id": 5, "content": "<script>"})
    assert await OutboxWorker(store, github).run_once() == 0
    errors = [row.last_error for row in reversed(failed_writes(store))]
    assert errors[0].startswith("bad outbox row: ValueError: unknown outbox op 'launch_missiles'")
    assert errors[1].startswith("bad outbox row: TypeError: outbox args of close")
    assert errors[2].startswith("GitHub: githubkit refused the request")  # not a reaction
    assert [row.attempts for row in failed_writes(store)] == [1, 1, 1]
    assert api_calls(gh_mock) == []


def test_writes_are_values() -> None:
    one, two = w.AddLabels(number=1, labels=["a"]), w.AddLabels(number=1, labels=("a",))
    assert one == two and hash(one) == hash(two)
    with pytest.raises(AttributeError):
        one.number = 2  # type: ignore[misc]


def test_the_engine_drops_a_write_to_a_pr_that_is_not_open_yet(store: Store) -> None:
    """`number=None`: the PR is still being opened; `_pr_caught_up` writes it later."""
    from types import SimpleNamespace

    from bot.engine.engine import Engine

    woken: list[int] = []
    fake = SimpleNamespace(store=store, _on_outbox=lambda: woken.append(1))
    repo = SimpleNamespace(full_name=REPO, installation_id=INSTALLATION)
    Engine.write(fake, repo, w.Close(number=None))  # type: ignore[arg-type]
    with store.transaction():
        Engine.write(fake, repo, w.Close(number=7))  # type: ignore[arg-type]
    assert [r["args"] for r in store.query("SELECT args FROM outbox")] == ['{"number":7}']
    assert woken == [1]
