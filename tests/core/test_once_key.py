"""What identifies a human's command across deliveries (`once_key`), case by case. Pure."""

from __future__ import annotations

import pytest

from bot.core.events import Event
from bot.core.router import once_key

COMMENT = Event(
    name="issue_comment",
    action="created",
    repo="o/r",
    number=5,
    comment_id=9,
    comment_body="/rerun",
)
LABEL = Event(
    name="pull_request",
    action="labeled",
    repo="o/r",
    number=5,
    label="hold",
    updated_at="2026-01-01T00:00:01Z",
)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # One comment is one command, whichever delivery (or action) carries it.
        (COMMENT, Event(**{**COMMENT.__dict__, "delivery_id": "other"}), True),
        (COMMENT, Event(**{**COMMENT.__dict__, "action": "edited"}), True),
        (COMMENT, Event(**{**COMMENT.__dict__, "comment_body": "/stop"}), True),  # edited text
        (COMMENT, Event(**{**COMMENT.__dict__, "comment_id": 10}), False),
        (COMMENT, Event(**{**COMMENT.__dict__, "repo": "o/other"}), False),
        # A label change is its issue, action, label and time.
        (LABEL, Event(**{**LABEL.__dict__, "delivery_id": "other"}), True),
        (LABEL, Event(**{**LABEL.__dict__, "action": "unlabeled"}), False),
        (LABEL, Event(**{**LABEL.__dict__, "updated_at": "2026-01-01T00:00:02Z"}), False),
        (LABEL, Event(**{**LABEL.__dict__, "label": "student:fern"}), False),
        (LABEL, Event(**{**LABEL.__dict__, "number": 6}), False),
        # Issues and PRs share their numbers: issue #5 and PR #5 are one thing.
        (LABEL, Event(**{**LABEL.__dict__, "name": "issues"}), True),
    ],
)
def test_once_key(a: Event, b: Event, same: bool) -> None:
    assert once_key(a) is not None
    assert (once_key(a) == once_key(b)) is same


@pytest.mark.parametrize(
    "event",
    [
        Event(name="push", repo="o/r", after="a" * 40),  # not a command
        Event(name="issue_comment", action="created", repo="o/r", comment_body="/rerun"),  # no id
        Event(  # a comment without a command runs nothing: nothing to remember
            name="issue_comment", action="created", repo="o/r", comment_id=9, comment_body="nice"
        ),
        Event(name="pull_request", action="labeled", repo="o/r", number=5, label="hold"),  # no time
        Event(name="issue_comment", action="created", comment_id=9),  # no repository
    ],
)
def test_without_an_identity_an_event_runs_once_per_delivery(event: Event) -> None:
    assert once_key(event) is None
