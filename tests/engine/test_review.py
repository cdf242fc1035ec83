"""The bot's decisions after results: serialized merges, real reasons, conflicts, retries.

Runs the engine, job book and reviewer on a real SQLite file; GitHub is the
outbox rows they leave behind (what would be written, and why).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.core.gate import GateDecision
from bot.engine import write_results
from bot.engine.engine import BASE_MOVED
from bot.engine.jobs import MAX_BASELINE_JOBS, validate_result
from bot.engine.review import Ask, Opinion, gate_reason, review_outcome
from bot.protocol import JobResult, RunResult
from bot.records import Job, OutboxEntry
from tests.support.engine_lab import Lab, ok


@pytest.mark.parametrize(
    ("gate", "opinion", "rounds", "outcome"),
    [
        ("merge", None, 0, "merge"),  # the advisor failed N times: the gate alone
        ("merge", "merge", 0, "merge"),
        ("merge", "close", 0, "close"),  # the advisor may close what the gate would merge
        ("close", "merge", 0, "close"),  # ... never merge what the gate refused
        ("close", "changes", 0, "changes"),
        ("close", "changes", 2, "close"),  # change rounds are capped
        ("merge", "changes", 2, "merge"),
        ("close", None, 0, "close"),
    ],
)
def test_review_outcome(gate: str, opinion: str | None, rounds: int, outcome: str) -> None:
    assert review_outcome(gate, opinion, rounds) == outcome


def test_gate_reason_drops_the_verdict_word() -> None:
    assert gate_reason("Closed: the candidate is not better.") == "The candidate is not better."
    assert gate_reason("Waiting for the baseline") == "Waiting for the baseline"


def test_merges_are_serialized_and_checked_against_the_measured_base(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    first, second = lab.experiment(5), lab.experiment(6)
    lab.run(ok(1.0, head="5" * 40))
    lab.run(ok(1.0, head="6" * 40))
    assert lab.review(first) == "merge"
    # The first merge is in flight: the second candidate waits, still requested.
    assert lab.review(second) == "wait-merge"
    assert lab.exp(second).review_requested
    [merge] = lab.store.rows(OutboxEntry, "op = 'merge'")
    assert merge.args["base_sha"] == "b" * 40
    # The merge landed; until the new base is synced, nothing else is decided.
    with lab.store.transaction():
        lab.store.update("outbox", merge.id, {"state": "done"})
        write_results.write_done(lab.engine, merge, {"merged": True})
    assert lab.exp(first).state == "merged"
    assert lab.review(second) == "wait-merge"
    # Synced onto the new base: the second is re-measured there, not merged.
    lab.store.update("repos", lab.repo_id, {"base_sha": "c" * 40, "synced_at": 2.0})
    assert lab.review(second) == "rerun"
    assert lab.exp(second).state == "queued"


def test_a_merge_whose_base_moved_goes_back_to_be_re_measured(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    lab.run(ok(1.0, head="5" * 40))
    assert lab.review(exp_id) == "merge"
    merge = lab.store.first(OutboxEntry, "op = 'merge'")
    message = f"GitHub 409: {BASE_MOVED} (measured on bbbbbbbbbb, main is now at cccccccccc)"
    with lab.store.transaction():
        lab.store.update("outbox", merge.id, {"state": "failed"})
        write_results.write_failed(lab.engine, merge, message)
    exp = lab.exp(exp_id)
    assert exp.state == "review" and exp.review_requested
    assert lab.store.one("SELECT synced_at FROM repos")["synced_at"] is None
    [comment] = lab.comments("decision")[-1:]
    assert "Not merged: the base moved" in comment and "Closed" not in comment


def test_no_runs_close_with_the_real_reason_and_changes_never_say_closed(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    lab.run(JobResult(status="implement_failed", reason="knob 'lr' not found"))
    assert lab.review(exp_id) == "close"
    [closing] = lab.comments("decision")
    assert "could not implement the hypothesis: knob 'lr' not found" in closing
    assert "significant" not in closing

    other = lab.experiment(6)
    lab.run(ok(3.0, head="6" * 40))
    opinion = Opinion("changes", rationale="try a smaller step", feedback="halve lr", by="advisor")
    assert lab.review(other, opinion) == "changes"
    changes = lab.comments("decision")[-1]
    assert changes.startswith("### Changes requested")
    assert "Closed" not in changes and "halve lr" in changes
    assert lab.exp(other).state == "queued"


def test_a_conflict_goes_to_the_student_and_an_empty_diff_closes_as_already_in_base(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    lab.run(
        JobResult(
            status="refused",
            reason="the branch conflicts with the new base bbbbbbbbbb: CONFLICT (content)",
        )
    )
    assert lab.exp(exp_id).state == "queued"
    job = lab.store.one(
        "SELECT * FROM jobs WHERE experiment_id = ? AND state = 'queued'", (exp_id,)
    )
    implement = json.loads(job["payload"])["implement"]
    assert implement["onto_base"] is True and implement["hypothesis"] == "h"
    assert "brings this hypothesis onto the new base" in lab.comments("decision")[-1]

    lab.run(JobResult(status="refused", reason="already in base: no change left against bbbb"))
    exp = lab.exp(exp_id)
    assert exp.state == "closed"
    assert "already in base" in lab.comments("decision")[-1]
    assert "close" in [r["op"] for r in lab.store.query("SELECT op FROM outbox")]


def test_a_rerun_queued_during_training_runs_first_and_a_dropped_one_is_answered(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    leased = lab.jobs.take("fern")
    assert leased is not None
    with lab.store.transaction():  # /rerun while the job trains
        lab.engine.queue_experiment_job(
            lab.repo, lab.exp(exp_id), seeds=[1], actor="human:ann", requested_by="ann"
        )
    assert lab.exp(exp_id).state == "training"  # the new job waits behind the running one
    result = ok(3.0, head="5" * 40)
    result.lease_id = leased.job.lease_id
    lab.jobs.complete(leased.job.id, "fern", result)
    # The gate does not decide (and close) while the human's rerun waits.
    assert lab.exp(exp_id).state == "queued"
    with lab.store.transaction():
        lab.engine.finish(
            lab.repo, lab.exp(exp_id), "closed", actor="human:bob", rationale="/close"
        )
    [answer] = lab.comments("reply")
    assert answer.startswith("@ann: the job your command queued") and "/close" in answer


def test_failed_baseline_seeds_are_requeued_then_shown_as_unmeasurable(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    exp_id = lab.experiment(5)
    with lab.store.transaction():
        lab.engine.queue_baseline(lab.repo)
    crashed = JobResult(
        status="ok",
        runs=[RunResult(seed=0, status="ok", metric=2.0), RunResult(seed=1, status="crash")],
    )
    # Baselines have priority over the experiment's job.
    job = lab.run(crashed)
    assert job.kind == "baseline"
    for _ in range(MAX_BASELINE_JOBS - 1):
        requeued = lab.store.one("SELECT * FROM jobs WHERE kind = 'baseline' AND state = 'queued'")
        assert requeued is not None and json.loads(requeued["seeds"]) == [1]
        lab.run(JobResult(status="ok", runs=[RunResult(seed=1, status="crash")]))
    assert lab.store.one("SELECT * FROM jobs WHERE kind = 'baseline' AND state = 'queued'") is None
    problem = lab.store.one("SELECT baseline_problem FROM repos")["baseline_problem"]
    assert "cannot be measured" in problem
    sticky = [
        json.loads(r["args"])["body"]
        for r in lab.store.query("SELECT args FROM outbox WHERE op = 'sticky' ORDER BY id")
    ]
    assert "cannot be measured" in sticky[-1]
    assert lab.exp(exp_id).state in ("queued", "implementing", "training")


def test_review_requested_is_cleared_only_when_the_review_is_recorded(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    lab.run(ok(1.0, head="5" * 40))
    ask = lab.reviewer.begin(lab.exp(exp_id))
    assert isinstance(ask, Ask) and ask.gate.verdict == "merge"
    # The advisor fails: the review is still requested, retried after a backoff.
    assert lab.reviewer.advisor_failed(lab.exp(exp_id), "HTTP 529 overloaded", 30.0) == 1
    exp = lab.exp(exp_id)
    assert exp.review_requested and exp.advisor_failures == 1
    assert lab.reviewer.due() == []  # backing off
    sticky = lab.store.query("SELECT args FROM outbox WHERE op = 'sticky' ORDER BY id DESC LIMIT 1")
    assert "advisor failed 1 time" in json.loads(sticky[0]["args"])["body"]
    # After N failures the gate alone decides, and says so.
    assert lab.reviewer.conclude(ask, None) == "merge"
    assert not lab.exp(exp_id).review_requested
    assert "the gate alone decided" in lab.comments("decision")[-1]


def test_validate_result_refuses_an_infinite_metric() -> None:
    job = Job(id=1, kind="experiment", repo_id=1, state="leased", seeds=[0], leased_by="fern")
    bad = JobResult(status="ok", runs=[RunResult(seed=0, status="ok", metric=float("inf"))])
    assert "finite" in (validate_result(job, "fern", bad) or "")
    assert validate_result(job, "fern", ok(1.0)) is None


def test_gate_decision_type_is_what_conclude_expects() -> None:
    assert "verdict" in GateDecision.__dataclass_fields__


class BrokenAdvisor:
    """An advisor whose model keeps answering off-schema (each failed call cost money)."""

    calls = 0

    async def propose(self, ctx: Any, student: str) -> Any:
        raise AssertionError("not asked to propose here")

    async def review(self, ctx: Any, experiment: Any, gate: Any) -> Any:
        from agents.advisor import AdvisorError

        BrokenAdvisor.calls += 1
        error = AdvisorError("the model answered off-schema")
        error.cost_usd = 0.01  # type: ignore[attr-defined]
        raise error


async def test_a_failing_advisor_backs_off_is_counted_then_the_gate_decides(
    tmp_path: Path,
) -> None:
    from agents.loop import MAX_ADVISOR_FAILURES, AdvisorLoop

    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    lab.run(ok(1.0, head="5" * 40))
    loop = AdvisorLoop(lab.engine, BrokenAdvisor(), propose=False)
    for attempt in range(1, MAX_ADVISOR_FAILURES + 1):
        await loop.review_pending()
        assert BrokenAdvisor.calls == attempt
        await loop.review_pending()  # backing off: not asked again yet
        assert BrokenAdvisor.calls == attempt
        lab.store.execute("UPDATE experiments SET advisor_retry_at = 0")  # time passes
    calls = lab.store.query("SELECT error, cost_usd FROM advisor_calls")
    assert len(calls) == MAX_ADVISOR_FAILURES
    assert all("off-schema" in c["error"] and c["cost_usd"] == 0.01 for c in calls)
    exp = lab.exp(exp_id)
    assert not exp.review_requested
    assert lab.store.one("SELECT verdict, actor FROM decisions ORDER BY id DESC LIMIT 1") == {
        "verdict": "merge",
        "actor": "gate",
    }
