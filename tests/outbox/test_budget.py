"""The outbox within GitHub's rate limit: against the sandbox with a small budget on.

The sandbox enforces a budget of requests per window (`sandbox.limits`) and
records every request; the outbox must finish everything it was asked to
without a single 403/429, deferring progress writes (the sticky status,
status-label moves) while it spends ahead of pace, and making them once the
window resets. The pure decisions behind that are pinned at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.github.client import Budget, GitHubApp, on_pace, read_budget
from bot.outbox import writes as w
from bot.outbox.worker import (
    OutboxWorker,
    budget_status,
    failed_writes,
    failure_update,
    hold_back,
    low_value,
    net_labels,
)
from bot.outbox.writes import enqueue
from bot.store import Store
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer

REPO = "lab/budget"
LABELS = [
    {"name": name, "color": "ededed", "description": ""}
    for name in ("status:queued", "status:wip", "status:review", "student:fern")
]


@pytest.fixture
def box(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "gh") as server:
        server.create_repo(REPO, files={"README.md": "# budget\n", "train.py": "lr = 0.01\n"})
        yield server


@pytest.fixture
def control(box: SandboxServer) -> Iterator[SandboxControl]:
    with SandboxControl(box.url) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(tmp_path / "kohai.db")
    yield db
    db.close()


def app_for(box: SandboxServer, window_s: float) -> GitHubApp:
    """The App as the bot runs it (real sleeps: the window is real), told the window."""
    return GitHubApp(box.app_id, box.private_key_pem, box.url, rate_window_s=window_s)


def add(store: Store, box: SandboxServer, write: w.Write) -> int:
    with store.transaction():
        return enqueue(store, REPO, box.installation_id(REPO), write)


def pending(store: Store) -> int:
    return store.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")


def refused(control: SandboxControl) -> list[dict[str, object]]:
    return [r for r in control.requests() if r["status"] in (403, 429)]


async def test_a_small_budget_is_never_exceeded_and_every_experiment_finishes(
    box: SandboxServer, control: SandboxControl, store: Store
) -> None:
    window_s, budget, experiments = 3.0, 24, 3
    control.set_limits(budget=budget, window_s=window_s, graphql_budget=budget, reset=True)
    app = app_for(box, window_s)
    worker = OutboxWorker(store, app)
    add(store, box, w.EnsureLabels(labels=LABELS))
    opened = {
        i: add(
            store,
            box,
            w.OpenPullRequest(
                experiment_id=i,
                base="main",
                branch=f"kohai/{i}-idea",
                title=f"Idea {i}",
                body=f"Hypothesis {i}",
                labels=["status:queued", "student:fern"],
            ),
        )
        for i in range(1, experiments + 1)
    }
    numbers: dict[int, int] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        await worker.run_once()
        for i, row_id in opened.items():
            row = store.one("SELECT state, result FROM outbox WHERE id = ?", (row_id,))
            if i in numbers or row is None or row["state"] != "done":
                continue
            # What the engine writes over the experiment's life, all at once here: the
            # outbox sees a burst far above the budget's pace.
            number = numbers[i] = int(json.loads(row["result"])["number"])
            for phase, old, new in (
                ("queued", None, None),
                ("implementing", "status:queued", "status:wip"),
                ("training", None, None),
                ("review", "status:wip", "status:review"),
            ):
                add(
                    store,
                    box,
                    w.StatusComment(number=number, kind="status", key=number, body=phase),
                )
                if old and new:
                    add(store, box, w.RemoveLabel(number=number, label=old))
                    add(store, box, w.AddLabels(number=number, labels=[new]))
            add(store, box, w.Comment(number=number, kind="result", key=f"{i}-0", body="2.0"))
            add(store, box, w.MarkReady(number=number))
            add(store, box, w.RemoveLabel(number=number, label="status:review"))
            add(
                store, box, w.StatusComment(number=number, kind="status", key=number, body="closed")
            )
            add(store, box, w.Close(number=number))
        if len(numbers) == experiments and not pending(store):
            break
        await asyncio.sleep(0.1)
    await app.aclose()
    assert not pending(store) and not failed_writes(store)
    assert refused(control) == []  # not one 403/429
    counted = [r for r in control.requests() if r["who"].startswith("installation:")]
    assert len(counted) > budget  # the work needed more than one window's budget
    for i, number in numbers.items():
        pull = control.pull(REPO, number)
        assert pull["state"] == "closed" and pull["draft"] is False
        assert control.labels_of(REPO, number) == ["student:fern"]
        bodies = [c["body"] for c in control.comments(REPO, number)]
        statuses = [b for b in bodies if b.startswith(w.marker("status", number))]
        assert statuses == [w.with_marker("closed", "status", number)]
        assert [b for b in bodies if b.startswith(w.marker("result", f"{i}-0"))]
    # Progress writes were coalesced: fewer sticky and label requests than rows asking.
    sticky_rows = store.count("SELECT COUNT(*) FROM outbox WHERE op = 'sticky'")
    comment_writes = [
        r for r in counted if r["route"].endswith("/comments") or "/comments/{n}" in r["route"]
    ]
    assert len(comment_writes) < sticky_rows + experiments


async def test_content_creation_is_paced_at_the_secondary_limit_so_it_is_never_refused(
    box: SandboxServer, control: SandboxControl, store: Store
) -> None:
    """GitHub limits content-generating requests (80 a minute, 500 an hour), not every
    write: the client paces what creates content at the sandbox's secondary limit and
    never meets its 403, while edits, label moves and closes are not held to it."""
    minute_s, per_minute = 2.0, 3
    control.set_limits(budget=None, secondary_per_minute=per_minute, minute_s=minute_s, reset=True)
    app = GitHubApp(
        box.app_id,
        box.private_key_pem,
        box.url,
        content_per_minute=per_minute,
        minute_s=minute_s,
    )
    worker = OutboxWorker(store, app)
    issues = [control.open_issue(REPO, f"idea {i}")["number"] for i in range(3)]
    control.clear_requests()
    add(store, box, w.EnsureLabels(labels=LABELS))  # creates four labels: content
    for i, number in enumerate(issues):
        add(store, box, w.Comment(number=number, kind="result", key=f"{i}-0", body="2.0"))
        add(store, box, w.AddLabels(number=number, labels=["student:fern"]))
        add(store, box, w.Close(number=number))
    started = time.monotonic()
    while pending(store) and time.monotonic() < started + 60:
        await worker.run_once()
        await asyncio.sleep(0.05)
    await app.aclose()
    assert not pending(store) and not failed_writes(store)
    assert refused(control) == []
    record = [r for r in control.requests() if r["who"].startswith("installation:")]
    content = [r["at"] for r in record if r["content"]]
    assert len(content) == 4 + len(issues)  # the labels and the comments
    for at in content:  # never more than the limit inside any of the sandbox's minutes
        assert sum(1 for t in content if at <= t < at + minute_s) <= per_minute
    others = [r for r in record if r["write"] and not r["content"]]
    assert {r["route"] for r in others} == {
        "POST /repos/{owner}/{repo}/issues/{n}/labels",
        "PATCH /repos/{owner}/{repo}/issues/{n}",
    }
    for number in issues:
        assert control.labels_of(REPO, number) == ["student:fern"]
        assert len(control.comments(REPO, number)) == 1


async def test_deferred_writes_are_made_once_the_budget_resets(
    box: SandboxServer, control: SandboxControl, store: Store
) -> None:
    window_s = 4.0
    control.set_limits(budget=4, window_s=window_s, reset=True)
    app = app_for(box, window_s)
    installation = box.installation_id(REPO)
    issue = control.open_issue(REPO, "an idea")["number"]
    worker = OutboxWorker(store, app)
    add(store, box, w.Comment(number=issue, kind="result", key="1-0", body="2.0"))
    sticky = add(store, box, w.StatusComment(number=issue, kind="status", key=issue, body="wip"))
    await worker.run_once()
    # One request spent at the window's start is ahead of its pace: the result went,
    # the progress write waits, neither failed nor counted as an attempt.
    row = store.one("SELECT state, attempts FROM outbox WHERE id = ?", (sticky,))
    assert row == {"state": "pending", "attempts": 0}
    [shown] = [b for b in budget_status(app, store) if b["installation_id"] == installation]
    assert (shown["remaining"], shown["deferred"], shown["on_pace"]) == (3, 1, False)
    # Spend the rest: now everything waits, a result too, and nothing is refused.
    for path in ("", "/labels", f"/issues/{issue}"):  # three reads (a repeat would be free)
        await app.request(installation, "GET", f"/repos/{REPO}{path}")
    second = add(store, box, w.Comment(number=issue, kind="result", key="1-1", body="2.1"))
    await worker.run_once()
    assert store.one("SELECT state FROM outbox WHERE id = ?", (second,)) == {"state": "pending"}
    assert [c["body"].split("\n")[0] for c in control.comments(REPO, issue)] == [
        w.marker("result", "1-0")
    ]
    # The window resets: what waited is written.
    deadline = time.monotonic() + 3 * window_s
    while pending(store) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        await worker.run_once()
    await app.aclose()
    assert not pending(store)
    firsts = sorted(c["body"].split("\n")[0] for c in control.comments(REPO, issue))
    assert firsts == sorted(
        [w.marker("result", "1-0"), w.marker("result", "1-1"), w.marker("status", issue)]
    )
    assert refused(control) == []


async def test_a_decided_prs_last_writes_go_while_progress_elsewhere_waits(
    box: SandboxServer, control: SandboxControl, store: Store
) -> None:
    """Behind pace, progress waits; but once a PR's close is written, its sticky status
    and status label are its final state, not progress: they go at once. Otherwise a lab
    spending its whole budget on new experiments would leave decided PRs without them."""
    window_s = 60.0
    control.set_limits(budget=10, window_s=window_s, reset=True)
    app = app_for(box, window_s)
    installation = box.installation_id(REPO)
    worker = OutboxWorker(store, app)
    decided = control.open_issue(REPO, "decided", labels=["status:wip"])["number"]
    running = control.open_issue(REPO, "still running")["number"]
    for path in ("", "/labels"):  # two requests at the window's start: ahead of pace
        await app.request(installation, "GET", f"/repos/{REPO}{path}")
    assert not app.on_pace(installation)
    progress = add(
        store, box, w.StatusComment(number=running, kind="status", key=running, body="wip")
    )
    add(store, box, w.StatusComment(number=decided, kind="status", key=decided, body="closed"))
    add(store, box, w.RemoveLabel(number=decided, label="status:wip"))
    add(store, box, w.Close(number=decided))
    await worker.run_once()
    assert control.issue(REPO, decided)["state"] == "closed"
    assert control.labels_of(REPO, decided) == []
    assert [c["body"] for c in control.comments(REPO, decided)] == [
        w.with_marker("closed", "status", decided)
    ]
    assert store.one("SELECT state FROM outbox WHERE id = ?", (progress,)) == {"state": "pending"}
    [shown] = [b for b in budget_status(app, store) if b["installation_id"] == installation]
    assert shown["deferred_by_op"] == {"sticky": 1}
    await app.aclose()
    assert refused(control) == []


# -- the decisions, pinned ------------------------------------------------------------


def budget(remaining: int, reset: float, limit: int = 5000) -> Budget:
    return Budget(limit=limit, remaining=remaining, used=limit - remaining, reset=reset)


def test_read_budget_takes_githubs_headers_and_ignores_missing_ones() -> None:
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4990",
        "x-ratelimit-used": "10",
        "x-ratelimit-reset": "1700003600",
        "x-ratelimit-resource": "core",
    }
    assert read_budget(headers) == Budget(5000, 4990, 10, 1700003600.0, "core")
    assert read_budget({"x-ratelimit-limit": "5000"}) is None
    assert read_budget({**headers, "x-ratelimit-remaining": "lots"}) is None


@pytest.mark.parametrize(
    ("remaining", "seconds_left", "expected"),
    [
        (5000, 3600, True),  # nothing spent
        (4600, 3600, True),  # a burst within the slack (10 % of the budget)
        (4400, 3600, False),  # ahead of pace at the window's start
        (2600, 1800, True),  # half spent at half time
        (1000, 1800, False),
        (0, 0, True),  # the window has reset
    ],
)
def test_on_pace_compares_what_is_left_with_an_even_spend(
    remaining: int, seconds_left: float, expected: bool
) -> None:
    now = 1_000_000.0
    assert on_pace(budget(remaining, now + seconds_left), now) is expected


def test_hold_back_stops_everything_when_spent_and_progress_when_ahead() -> None:
    now = 1_000_000.0
    assert hold_back(False, None, now) is None
    assert hold_back(True, budget(4400, now + 3600), now) == "behind pace"
    assert hold_back(False, budget(4400, now + 3600), now) is None
    assert hold_back(False, budget(0, now + 60), now) == "budget spent"
    assert hold_back(True, budget(0, now - 1), now) is None  # reset: all of it is back


def test_progress_on_a_decided_pr_is_its_final_state() -> None:
    assert not low_value("sticky", {"number": 7, "body": "closed"}, frozenset({7}))
    assert not low_value("remove_label", {"number": 7, "label": "status:wip"}, frozenset({7}))
    assert low_value("sticky", {"number": 8, "body": "wip"}, frozenset({7}))


def test_progress_writes_are_the_low_value_ones() -> None:
    assert low_value("sticky", {"number": 1, "body": "x"})
    assert low_value("remove_label", {"number": 1, "label": "status:wip"})
    assert low_value("add_labels", {"number": 1, "labels": ["status:review"]})
    assert not low_value("add_labels", {"number": 1, "labels": ["status:review", "hold"]})
    assert not low_value("remove_label", {"number": 1, "label": "hold"})
    for op in ("comment", "merge", "close", "open_pr", "mark_ready"):
        assert not low_value(op, {"number": 1})
    assert not low_value("add_labels", "not json")


def test_label_moves_collapse_to_their_net_effect() -> None:
    moves: list[w.AddLabels | w.RemoveLabel] = [
        w.RemoveLabel(number=7, label="status:queued"),
        w.AddLabels(number=7, labels=["status:wip"]),
        w.RemoveLabel(number=7, label="status:wip"),
        w.AddLabels(number=7, labels=["status:review"]),
    ]
    assert net_labels(moves) == (["status:review"], ["status:queued"])
    assert net_labels(
        [w.AddLabels(number=7, labels=["hold"]), w.RemoveLabel(number=7, label="hold")]
    ) == ([], [])
    # Removed, then added back: the last word is "on".
    assert net_labels(
        [w.RemoveLabel(number=7, label="hold"), w.AddLabels(number=7, labels=["hold"])]
    ) == (["hold"], [])


def test_a_rate_limit_wait_is_not_an_attempt() -> None:
    waited = failure_update(3, "GitHub 403: rate limit", True, 120.0, 1000.0, 8, rate_limited=True)
    assert waited == {"last_error": "GitHub 403: rate limit", "next_attempt_at": 1120.0}
    counted = failure_update(3, "GitHub 502", True, None, 1000.0, 8)
    assert counted["attempts"] == 4


def test_the_dashboard_shows_each_installations_budget_and_what_waits() -> None:
    from webhooks.dashboard.pages import budget_table

    now = 1_000_000.0
    shown = [
        {
            "installation_id": 42,
            "resource": "core",
            "limit": 5000,
            "remaining": 120,
            "used": 4880,
            "reset": now + 600,
            "on_pace": False,
            "deferred": 3,
            "deferred_by_op": {"sticky": 2, "remove_label": 1},
        },
        {"installation_id": None, "resource": "core"},  # the App's own JWT budget: not shown
    ]
    html = budget_table(shown, now)
    assert "120 / 5000" in html and "600 s" in html and "ahead of pace" in html
    assert "3 (remove_label ×1, sticky ×2)" in html
    assert "No answer from GitHub yet." in budget_table([], now)


def test_answers_out_of_order_never_raise_what_is_left_within_a_window() -> None:
    from bot.github.client import merge_budget

    earlier, later = budget(10, 2000.0), budget(9, 2000.0)
    assert merge_budget(earlier, later) == later
    assert merge_budget(later, earlier) == later  # a slow answer to an older request
    fresh = budget(4999, 5600.0)  # a new window: what it says holds
    assert merge_budget(later, fresh) == fresh
    assert merge_budget(None, earlier) == earlier
