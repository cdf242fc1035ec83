"""A host's posted result is checked against its job before it is stored: a clear 400, not a 500."""

from __future__ import annotations

import pytest

from bot.engine.jobs import validate_result
from bot.protocol import JobResult, RunResult
from bot.records import Job

JOB = Job(id=7, kind="experiment", repo_id=1, state="leased", leased_by="fern", seeds=[0])


@pytest.mark.parametrize(
    "result,needle",
    [
        (JobResult(status="ok", runs=[RunResult(seed=0, status="ok", metric=1.0)]), None),
        (JobResult(status="implement_failed", reason="knob missing"), None),
        (JobResult(status="done"), "status must be one of"),
        (JobResult(status="ok", runs=[RunResult(seed="0", status="ok")]), "integer seed"),  # type: ignore[arg-type]
        (
            JobResult(
                status="ok", runs=[RunResult(seed=1, status="ok"), RunResult(seed=1, status="ok")]
            ),
            "twice",
        ),
        (JobResult(status="ok", runs=[RunResult(seed=0, status="exploded")]), "is not one of"),
        (
            JobResult(status="ok", runs=[RunResult(seed=0, status="ok", metric="low")]),
            "must be a finite number",
        ),  # type: ignore[arg-type]
    ],
)
def test_result_problems(result: JobResult, needle: str | None) -> None:
    problem = validate_result(JOB, "fern", result)
    assert (problem is None) if needle is None else (needle in (problem or ""))
