"""The commit a job must report: the bot's record, never the host's word (pure rules)."""

from __future__ import annotations

import pytest

from bot.engine.jobs import expected_tip, tip_conflict
from bot.records import Experiment, Job

A, B, BASE = "a" * 40, "b" * 40, "c" * 40


def job(kind: str = "experiment", tip: str | None = None) -> Job:
    return Job(id=1, kind=kind, repo_id=1, state="leased", base_sha=BASE, tip_sha=tip)


def exp(head: str | None) -> Experiment:
    return Experiment(id=1, repo_id=1, state="training", head_sha=head)


@pytest.mark.parametrize(
    ("j", "e", "tip"),
    [
        (job(tip=B), exp(A), B),  # an accepted push wins over the head at lease time
        (job(), exp(A), A),  # a row from before tips were recorded: the head now
        (job("baseline"), None, BASE),
        (job(), None, None),
    ],
)
def test_expected_tip(j: Job, e: Experiment | None, tip: str | None) -> None:
    assert expected_tip(j, e) == tip


@pytest.mark.parametrize(
    ("reported", "expected", "refused"),
    [(None, A, False), (A, A, False), (B, A, True), (A, None, True)],
)
def test_a_result_naming_another_commit_is_refused(
    reported: str | None, expected: str | None, refused: bool
) -> None:
    why = tip_conflict(reported, expected)
    assert (why is not None) is refused
    if why:
        assert reported and reported[:12] in why
