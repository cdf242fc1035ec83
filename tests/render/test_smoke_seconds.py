"""The job's smoke-run seconds and its sandbox travel with its result into the results comment."""

from __future__ import annotations

from bot.protocol import JobResult
from bot.records import Run
from bot.render.comments import results_comment


def _comment(smoke_s: float, unsandboxed: bool = False) -> str:
    return results_comment(
        title="Lower the LR",
        metric="val_bpb",
        minimize=True,
        runs=[
            Run(id=1, repo_id=1, kind="candidate", seed=1, status="ok", metric=1.5, duration_s=10.0)
        ],
        baseline=[1.6],
        head_sha="a" * 40,
        base_sha="b" * 40,
        student="fern",
        job_status="ok",
        cost_usd=0.25,
        smoke_s=smoke_s,
        unsandboxed=unsandboxed,
    )


def test_smoke_seconds_show_beside_the_llm_cost() -> None:
    assert "LLM cost $0.2500 · smoke runs 7.5 s" in _comment(7.5)
    assert "smoke runs" not in _comment(0.0)


def test_smoke_seconds_survive_the_host_api_round_trip() -> None:
    result = JobResult(status="ok", smoke_s=4.25)
    assert JobResult.from_dict(result.to_dict()).smoke_s == 4.25
    assert JobResult.from_dict({"status": "ok"}).smoke_s == 0.0  # an older host


def test_a_result_from_an_unsandboxed_host_says_so() -> None:
    assert "**unsandboxed**" in _comment(0.0, unsandboxed=True)
    assert "unsandboxed" not in _comment(0.0)
