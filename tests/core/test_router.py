"""The routing table, case by case: event + state -> intents (pure)."""

from __future__ import annotations

import pytest

from bot import intents as i
from bot.events import Event
from bot.router import SUBSCRIBED_EVENTS, ExperimentView, RouteState, route

BOT = "kohai[bot]"
STUDENTS = frozenset({"fern", "frieren"})


def exp(state: str = "review", student: str | None = "fern", hold: bool = False) -> ExperimentView:
    return ExperimentView(
        id=7, state=state, student=student, hold=hold, pr_number=12, issue_number=3
    )


def st(
    experiment: ExperimentView | None = None, permission: str | None = None, known: bool = True
) -> RouteState:
    return RouteState(
        bot_login=BOT,
        students=STUDENTS,
        experiment=experiment,
        sender_permission=permission,
        known_repo=known,
    )


def ev(name: str, action: str | None = None, **kw: object) -> Event:
    base: dict[str, object] = {
        "repo": "lab/charlm",
        "sender": "bob",
        "sender_type": "User",
        "number": 3,
    }
    base.update(kw)
    return Event(name=name, action=action, **base)  # type: ignore[arg-type]


CASES = [
    # (id, event, state, expected intents)
    ("ping", ev("ping"), st(), [i.Pong()]),
    (
        "issue labelled student:fern opens an experiment",
        ev(
            "issues",
            "labeled",
            label="student:fern",
            labels=("student:fern",),
            title="Try lr",
            body="LEARNING_RATE = 0.01",
        ),
        st(),
        [i.OpenFromIssue(3, "Try lr", "LEARNING_RATE = 0.01", "fern", "bob")],
    ),
    (
        "student:any opens for whoever is free",
        ev("issues", "labeled", label="student:any", labels=("student:any",), title="T"),
        st(),
        [i.OpenFromIssue(3, "T", "", None, "bob")],
    ),
    (
        "an unknown student gets a reply",
        ev("issues", "labeled", label="student:nobody", labels=("student:nobody",)),
        st(),
        "Reply",
    ),
    (
        "a held issue waits",
        ev("issues", "labeled", label="student:fern", labels=("student:fern", "hold")),
        st(),
        "Ignore",
    ),
    (
        "hold removed from a labelled issue opens it",
        ev("issues", "unlabeled", label="hold", labels=("student:fern",), title="T"),
        st(),
        [i.OpenFromIssue(3, "T", "", "fern", "bob")],
    ),
    (
        "an issue that already has an experiment is not opened twice",
        ev("issues", "labeled", label="student:fern", labels=("student:fern",)),
        st(exp()),
        "Ignore",
    ),
    ("unrelated label", ev("issues", "labeled", label="bug"), st(), "Ignore"),
    (
        "PR relabelled to another student reassigns",
        ev(
            "pull_request",
            "labeled",
            number=12,
            label="student:frieren",
            labels=("student:frieren",),
        ),
        st(exp()),
        [i.Assign(12, "frieren", "bob")],
    ),
    (
        "student label removed leaves it to any student",
        ev("pull_request", "unlabeled", number=12, label="student:fern", labels=()),
        st(exp()),
        [i.Assign(12, None, "bob")],
    ),
    (
        "hold on a PR",
        ev("pull_request", "labeled", number=12, label="hold"),
        st(exp()),
        [i.SetHold(12, True, "bob", False)],
    ),
    (
        "hold off a PR",
        ev("pull_request", "unlabeled", number=12, label="hold"),
        st(exp(hold=True)),
        [i.SetHold(12, False, "bob", False)],
    ),
    (
        "a human touching status labels gets them repaired",
        ev("pull_request", "unlabeled", number=12, label="status:review"),
        st(exp()),
        [i.RepairLabels(12)],
    ),
    (
        "merged by a human",
        ev("pull_request", "closed", number=12, merged=True),
        st(exp()),
        [i.RecordOutcome(12, True, "bob")],
    ),
    (
        "closed by a human",
        ev("pull_request", "closed", number=12, merged=False),
        st(exp()),
        [i.RecordOutcome(12, False, "bob")],
    ),
    ("a PR that is not an experiment", ev("pull_request", "closed", number=99), st(), "Ignore"),
    (
        "push to the default branch moves the base",
        ev("push", ref="refs/heads/main", after="a" * 40),
        st(),
        [i.BaseMoved("a" * 40, "bob")],
    ),
    ("push elsewhere", ev("push", ref="refs/heads/kohai/1-x", after="b" * 40), st(), "Ignore"),
    (
        "installation created records repos",
        ev("installation", "created", installation_id=5, repos_added=("lab/charlm",)),
        st(),
        [i.RecordInstallation(5, ("lab/charlm",), (), True)],
    ),
    (
        "installation_repositories removed",
        ev("installation_repositories", "removed", installation_id=5, repos_removed=("lab/x",)),
        st(),
        [i.RecordInstallation(5, (), ("lab/x",), None)],
    ),
    (
        "the bot's own label is ignored",
        ev(
            "pull_request",
            "labeled",
            number=12,
            label="status:review",
            sender=BOT,
            sender_type="Bot",
        ),
        st(exp()),
        "Ignore",
    ),
    (
        "the bot's own comment is ignored even with a command",
        ev(
            "issue_comment",
            "created",
            number=12,
            comment_body="/merge",
            sender=BOT,
            sender_type="Bot",
            comment_id=1,
        ),
        st(exp(), "admin"),
        "Ignore",
    ),
    (
        "events of repos the App is not installed on",
        ev("issues", "labeled", label="student:fern"),
        st(known=False),
        "Ignore",
    ),
    (
        "a writer's /rerun",
        ev(
            "issue_comment",
            "created",
            number=12,
            comment_body="/rerun seeds=3",
            comment_id=9,
            is_pull_request=True,
        ),
        st(exp(), "write"),
        [i.Acknowledge(9), i.Rerun(12, 3, "bob")],
    ),
    (
        "a read-only user's /rerun is refused with a reason",
        ev(
            "issue_comment",
            "created",
            number=12,
            comment_body="/rerun",
            comment_id=9,
            sender="carol",
        ),
        st(exp(), "read"),
        "Reply",
    ),
    (
        "several commands, one per line",
        ev(
            "issue_comment",
            "created",
            number=12,
            comment_body="thanks!\n/hold\n/status",
            comment_id=9,
        ),
        st(exp(), "maintain"),
        [i.Acknowledge(9), i.SetHold(12, True, "bob"), i.PostStatus(12)],
    ),
    (
        "/stop /review /merge /close by an admin",
        ev(
            "issue_comment",
            "created",
            number=12,
            comment_body="/stop\n/review\n/merge\n/close",
            comment_id=9,
        ),
        st(exp(), "admin"),
        [
            i.Acknowledge(9),
            i.Stop(12, "bob"),
            i.Review(12, "bob"),
            i.Merge(12, "bob"),
            i.Close(12, "bob"),
        ],
    ),
    (
        "/assign on an experiment",
        ev("issue_comment", "created", number=12, comment_body="/assign frieren", comment_id=9),
        st(exp(), "write"),
        [i.Acknowledge(9), i.Assign(12, "frieren", "bob")],
    ),
    (
        "/assign on a plain issue opens an experiment",
        ev(
            "issue_comment",
            "created",
            number=3,
            comment_body="/assign any",
            comment_id=9,
            title="Idea",
            body="x",
        ),
        st(None, "write"),
        [i.Acknowledge(9), i.OpenFromIssue(3, "Idea", "x", None, "bob")],
    ),
    (
        "/unhold",
        ev("issue_comment", "created", number=12, comment_body="/unhold", comment_id=9),
        st(exp(hold=True), "write"),
        [i.Acknowledge(9), i.SetHold(12, False, "bob")],
    ),
    (
        "a comment without commands",
        ev("issue_comment", "created", comment_body="nice"),
        st(exp()),
        "Ignore",
    ),
    (
        "a command in a code block is not a command",
        ev("issue_comment", "created", comment_body="```\n/merge\n```"),
        st(exp(), "admin"),
        "Ignore",
    ),
    ("unknown events are ignored", ev("check_run", "completed"), st(), "Ignore"),
    ("unknown actions are ignored", ev("issues", "pinned"), st(), "Ignore"),
]


@pytest.mark.parametrize("event,state,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_route(event: Event, state: RouteState, expected: object) -> None:
    got = route(event, state)
    if isinstance(expected, str):
        assert [type(x).__name__ for x in got] == [expected], got
    else:
        assert got == expected


def test_bad_commands_get_a_reply_that_says_why() -> None:
    got = route(
        ev(
            "issue_comment",
            "created",
            number=12,
            comment_body="/rerun seeds=lots\n/assign ghost",
            comment_id=1,
        ),
        st(exp(), "admin"),
    )
    replies = [x for x in got if isinstance(x, i.Reply)]
    assert len(replies) == 2
    assert "seeds=N" in replies[0].body
    assert "no student `ghost`" in replies[1].body


def test_pr_only_commands_on_plain_issues_are_refused() -> None:
    got = route(
        ev("issue_comment", "created", number=3, comment_body="/merge", comment_id=1),
        st(None, "admin"),
    )
    assert isinstance(got[-1], i.Reply) and "experiment pull request" in got[-1].body


def test_help_lists_every_command() -> None:
    got = route(
        ev("issue_comment", "created", number=3, comment_body="/help", comment_id=1),
        st(None, "write"),
    )
    body = got[-1].body  # type: ignore[union-attr]
    for name in (
        "rerun",
        "stop",
        "assign",
        "review",
        "merge",
        "close",
        "hold",
        "unhold",
        "status",
        "help",
    ):
        assert f"/{name}" in body


def test_manifest_events_come_from_the_table() -> None:
    assert set(SUBSCRIBED_EVENTS) == {
        "issues",
        "issue_comment",
        "pull_request",
        "push",
        "installation",
        "installation_repositories",
    }
