"""The outbox worker: exactly once across crashes, retries, failures that stay visible."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bot.engine.bus import Bus
from bot.github.client import GitHubApp, GitHubWriteError
from bot.outbox import writes as w
from bot.outbox.worker import (
    OutboxWorker,
    failed_writes,
    failure_update,
    pending_count,
    requeue,
    retry_delay_s,
)
from bot.outbox.writes import enqueue
from bot.records import OutboxEntry
from bot.store import Store
from tests.support.github_mock import (
    BOT_USER,
    INSTALLATION,
    FakeTime,
    comment_json,
    commit_json,
    pull_json,
    ref_json,
    writes,
)

REPO = "lab/charlm"
BASE = "base111" + "1" * 33  # git object names: GitHub's models want all 40 characters
HEAD = "c0ffee" + "e" * 34


class FakeRepo:
    """Just enough of a GitHub repository to remember comments and pull requests."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.pulls: list[dict[str, Any]] = []
        self.refs = {"main": BASE}
        router.get(url__regex=rf"/repos/{REPO}/issues/(?P<n>\d+)/comments").mock(
            side_effect=self.list_comments
        )
        router.post(url__regex=rf"/repos/{REPO}/issues/(?P<n>\d+)/comments").mock(
            side_effect=self.create_comment
        )
        router.get(f"/repos/{REPO}/pulls").mock(side_effect=lambda request: self.json(self.pulls))
        router.get(url__regex=rf"/repos/{REPO}/git/ref/heads/(?P<ref>.+)").mock(
            side_effect=self.get_ref
        )
        router.get(f"/repos/{REPO}/git/commits/{BASE}").respond(
            200, json=commit_json(BASE, tree="tree222")
        )
        router.post(f"/repos/{REPO}/git/commits").respond(201, json=commit_json(HEAD))
        router.post(f"/repos/{REPO}/git/refs").mock(side_effect=self.create_ref)
        router.post(f"/repos/{REPO}/pulls").mock(side_effect=self.create_pull)
        router.post(url__regex=rf"/repos/{REPO}/issues/\d+/labels").respond(200, json=[])

    @staticmethod
    def json(body: Any, status: int = 200) -> httpx.Response:
        return httpx.Response(status, json=body)

    def list_comments(self, request: httpx.Request, n: str) -> httpx.Response:
        return self.json(self.comments.get(int(n), []))

    def create_comment(self, request: httpx.Request, n: str) -> httpx.Response:
        comment = comment_json(
            1000 + sum(map(len, self.comments.values())),
            json.loads(request.content)["body"],
            BOT_USER,  # written with the installation's token: the App's bot account
        )
        self.comments.setdefault(int(n), []).append(comment)
        return self.json(comment, 201)

    def get_ref(self, request: httpx.Request, ref: str) -> httpx.Response:
        if ref not in self.refs:
            return self.json({"message": "Not Found"}, 404)
        return self.json(ref_json(f"refs/heads/{ref}", self.refs[ref]))

    def create_ref(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.refs[body["ref"].removeprefix("refs/heads/")] = body["sha"]
        return self.json({"ref": body["ref"]}, 201)

    def create_pull(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        number = 100 + len(self.pulls)
        pull = pull_json(
            number=number,
            node_id=f"PR_{number}",
            html_url=f"https://github.com/{REPO}/pull/{number}",
            head={"ref": body["head"], "sha": self.refs[body["head"]]},
            draft=body["draft"],
        )
        self.pulls.append(pull)
        return self.json(pull, 201)


class Crash(BaseException):
    """The process dying: nothing after it runs, the open transaction is lost."""


def enqueue_now(store: Store, write: w.Write, installation_id: int | None = INSTALLATION) -> int:
    with store.transaction():
        return enqueue(store, REPO, installation_id, write)


async def test_crash_between_the_write_and_the_commit_writes_exactly_once(
    tmp_path: Path, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    repo = FakeRepo(gh_mock)
    path = tmp_path / "k.db"
    store = Store(path)
    comment_id = enqueue_now(store, w.Comment(number=3, kind="result", key="12-0", body="0.98"))
    pr_id = enqueue_now(
        store,
        w.OpenPullRequest(
            experiment_id=12,
            base="main",
            branch="kohai/12-wider",
            title="Wider",
            body="h",
            commit_message="kohai: wider",
            labels=["status:queued"],
            issue_number=3,
        ),
    )

    def die(row: OutboxEntry, result: dict[str, Any]) -> None:
        store.execute("INSERT INTO repos (full_name, created_at) VALUES ('lab/x', 0)")
        raise Crash

    with pytest.raises(Crash):
        await OutboxWorker(store, github, on_done=die).run_once()
    # The comment was posted, but its row (and the hook's own write) rolled back.
    assert len(repo.comments[3]) == 1
    assert store.query("SELECT state FROM outbox ORDER BY id") == [
        {"state": "pending"},
        {"state": "pending"},
    ]
    assert store.query("SELECT * FROM repos") == []
    store.close()

    restarted = Store(path)
    seen: list[tuple[int, dict[str, Any]]] = []
    worker = OutboxWorker(
        restarted, github, on_done=lambda row, result: seen.append((row.id, result))
    )
    assert await worker.run_once() == 2
    # The same write asked for again finds its marker rather than posting.
    again = enqueue_now(restarted, w.Comment(number=3, kind="result", key="12-0", body="x"))
    assert await OutboxWorker(restarted, github).run_once() == 1
    assert restarted.one("SELECT result FROM outbox WHERE id = ?", (again,)) == {
        "result": '{"comment_id":1000}'
    }
    assert [c["body"].splitlines()[0] for c in repo.comments[3]] == [
        "<!-- kohai:result:12-0 -->",
        "<!-- kohai:link:12 -->",
    ]
    assert len(repo.pulls) == 1
    assert seen == [
        (comment_id, {"comment_id": 1000}),
        (
            pr_id,
            {
                "number": 100,
                "node_id": "PR_100",
                "head_sha": HEAD,
                "html_url": f"https://github.com/{REPO}/pull/100",
            },
        ),
    ]
    restarted.close()


async def test_crash_after_the_pr_was_opened_does_not_open_another(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    repo = FakeRepo(gh_mock)
    enqueue_now(
        store,
        w.OpenPullRequest(
            experiment_id=7,
            base="main",
            branch="kohai/7-x",
            title="X",
            body="",
            commit_message="kohai: x",
            labels=[],
            issue_number=None,
        ),
    )
    calls = 0

    def die_once(row: OutboxEntry, result: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Crash

    worker = OutboxWorker(store, github, on_done=die_once)
    with pytest.raises(Crash):
        await worker.run_once()
    assert await worker.run_once() == 1
    assert len(repo.pulls) == 1
    assert [m for m, p, _ in writes(gh_mock) if p.endswith("/pulls")] == ["POST"]
    assert [p for m, p, _ in writes(gh_mock) if p.endswith("/git/refs")] == [
        f"/repos/{REPO}/git/refs"
    ]


async def test_a_failing_hook_keeps_the_row_and_the_retry_does_not_repost(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    repo = FakeRepo(gh_mock)
    row_id = enqueue_now(store, w.Comment(number=3, kind="result", key="1-0", body="r"))
    clock = FakeTime(5000.0)
    failing = OutboxWorker(store, github, on_done=lambda row, result: 1 / 0, clock=clock)
    assert await failing.run_once() == 0
    row = store.one("SELECT * FROM outbox WHERE id = ?", (row_id,))
    assert row is not None
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert "on_done: ZeroDivisionError" in row["last_error"]
    assert row["next_attempt_at"] == 5005.0

    clock.now = 5005.0
    assert await OutboxWorker(store, github, clock=clock).run_once() == 1
    assert len(repo.comments[3]) == 1


async def test_retryable_failure_backs_off_then_succeeds(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    route = gh_mock.patch(f"/repos/{REPO}/issues/9").mock(
        side_effect=[httpx.Response(502)] * 5 + [httpx.Response(200, json={})]
    )
    row_id = enqueue_now(store, w.Close(number=9))
    clock = FakeTime(100.0)
    worker = OutboxWorker(store, github, clock=clock)
    assert await worker.run_once() == 0
    row = store.one("SELECT * FROM outbox WHERE id = ?", (row_id,))
    assert row is not None
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 1, 105.0)
    assert "502" in row["last_error"]
    assert pending_count(store) == 1
    assert await worker.run_once() == 0  # not due yet: no request made
    assert route.call_count == 5  # the client's own five tries, then nothing
    clock.now = 105.0
    assert await worker.run_once() == 1
    assert pending_count(store) == 0 and failed_writes(store) == []


async def test_permanent_error_fails_the_row_with_githubs_message(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.post(f"/repos/{REPO}/issues/4/labels").respond(
        422, json={"message": "Validation Failed", "errors": [{"message": "name is too long"}]}
    )
    row_id = enqueue_now(store, w.AddLabels(number=4, labels=["x" * 100]))
    assert await OutboxWorker(store, github).run_once() == 0
    [failed] = failed_writes(store)
    assert failed.id == row_id and failed.op == "add_labels"
    assert failed.args == {"number": 4, "labels": ["x" * 100]}
    assert failed.last_error == "GitHub 422: Validation Failed (name is too long)"
    assert pending_count(store) == 0
    assert requeue(store, row_id)
    assert pending_count(store) == 1 and failed_writes(store) == []


async def test_too_many_attempts_fail_the_row(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.patch(f"/repos/{REPO}/issues/9").respond(503)
    enqueue_now(store, w.Close(number=9))
    clock = FakeTime(0.0)
    worker = OutboxWorker(store, github, clock=clock, max_attempts=3)
    for _ in range(3):
        await worker.run_once()
        clock.now += 10_000
    [failed] = failed_writes(store)
    assert failed.attempts == 3 and "after 3 attempts" in failed.last_error


async def test_missing_installation_is_looked_up(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    lookup = gh_mock.get(f"/repos/{REPO}/installation").respond(200, json={"id": INSTALLATION})
    gh_mock.patch(f"/repos/{REPO}/issues/9").respond(200, json={})
    enqueue_now(store, w.Close(number=9), installation_id=None)
    enqueue_now(store, w.Close(number=9), installation_id=None)
    assert await OutboxWorker(store, github).run_once() == 2
    assert lookup.call_count == 1


async def test_a_bad_row_fails_at_once(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    with store.transaction():  # a row without its number, as no typed write can make it
        store.insert(
            "outbox",
            {"repo": REPO, "installation_id": INSTALLATION, "op": "close", "args": "{}"}
            | {"state": "pending", "created_at": 0, "next_attempt_at": 0},
        )
    assert await OutboxWorker(store, github).run_once() == 0
    [failed] = failed_writes(store)
    assert failed.attempts == 1 and failed.last_error.startswith("bad outbox row: KeyError")


async def test_rows_run_in_order_and_a_retrying_repo_waits(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.patch(f"/repos/{REPO}/issues/1").respond(502)
    gh_mock.patch(f"/repos/{REPO}/issues/2").respond(200, json={})
    gh_mock.patch("/repos/lab/other/issues/3").respond(200, json={})
    enqueue_now(store, w.Close(number=1))
    enqueue_now(store, w.Close(number=2))
    with store.transaction():
        enqueue(store, "lab/other", INSTALLATION, w.Close(number=3))
    assert await OutboxWorker(store, github).run_once() == 1
    states = store.query("SELECT repo, state FROM outbox ORDER BY id")
    assert [s["state"] for s in states] == ["pending", "pending", "done"]
    assert [p for _, p, _ in writes(gh_mock)][-1] == "/repos/lab/other/issues/3"


async def test_run_forever_wakes_on_the_event_and_publishes(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.patch(f"/repos/{REPO}/issues/9").respond(200, json={})
    bus = Bus()
    wake = asyncio.Event()
    worker = OutboxWorker(store, github, bus=bus, idle_s=30.0)
    async with bus.subscribe() as messages:
        task = asyncio.create_task(worker.run_forever(wake))
        try:
            await asyncio.sleep(0.05)
            enqueue_now(store, w.Close(number=9))
            wake.set()
            message = await asyncio.wait_for(messages.get(), timeout=5)
        finally:
            task.cancel()
    assert message == {"topic": "outbox", "id": 1, "op": "close", "repo": REPO, "state": "done"}
    assert pending_count(store) == 0


@pytest.mark.parametrize(
    ("attempts", "retryable", "retry_after", "expected"),
    [
        (0, True, None, {"attempts": 1, "next_attempt_at": 1005.0}),
        (3, True, None, {"attempts": 4, "next_attempt_at": 1040.0}),
        (1, True, 1800.0, {"attempts": 2, "next_attempt_at": 2800.0}),
        (7, True, None, {"attempts": 8, "state": "failed", "done_at": 1000.0}),
        (0, False, None, {"attempts": 1, "state": "failed", "done_at": 1000.0}),
    ],
)
def test_failure_update(
    attempts: int, retryable: bool, retry_after: float | None, expected: dict[str, Any]
) -> None:
    values = failure_update(attempts, "boom", retryable, retry_after, 1000.0, 8)
    assert {k: v for k, v in values.items() if k != "last_error"} == expected
    assert values["last_error"].startswith("boom")


def test_retry_delay_grows_and_is_capped() -> None:
    assert [retry_delay_s(n) for n in (1, 2, 3, 8, 20)] == [5, 10, 20, 600, 600]


def test_github_write_error_says_what_happened() -> None:
    assert str(GitHubWriteError(409, "Head branch was modified", False)) == (
        "GitHub 409: Head branch was modified"
    )


async def test_a_failed_row_does_not_hold_back_the_next(
    store: Store, github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    gh_mock.patch(f"/repos/{REPO}/issues/1").respond(404, json={"message": "Not Found"})
    gh_mock.patch(f"/repos/{REPO}/issues/2").respond(200, json={})
    enqueue_now(store, w.Close(number=1))
    enqueue_now(store, w.Close(number=2))
    assert await OutboxWorker(store, github).run_once() == 1
    assert [r["state"] for r in store.query("SELECT state FROM outbox ORDER BY id")] == [
        "failed",
        "done",
    ]
