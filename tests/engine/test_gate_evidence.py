"""The gate's edge: what a host reports is stored with its hardware, and read back as seeded runs.

A real SQLite file, the real engine and job book: a baseline and a candidate
job are leased and completed as a host would, then the gate is asked from the
store (bot.engine.evidence) exactly as the advisor loop asks it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import evidence
from bot.engine.engine import Engine
from bot.engine.jobs import JobBook
from bot.protocol import JobResult, RunResult
from bot.records import Experiment
from bot.store import Store, dumps, now

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"
SHARED = [0.00, 0.03, -0.02, 0.08, -0.04]  # per-seed luck both sides share


@pytest.fixture
def lab(tmp_path: Path) -> tuple[Store, Engine, JobBook]:
    store = Store(tmp_path / "kohai.db")
    engine = Engine(store)
    t = now()
    with store.transaction():
        store.insert(
            "repos",
            {
                "full_name": "lab/charlm",
                "installation_id": 1,
                "base_sha": "b" * 40,
                "created_at": t,
            },
        )
        for name in ("fern", "frieren"):
            store.insert("students", {"name": name, "created_at": t})
    return store, engine, JobBook(engine)


def _experiment(store: Store, title: str = "lower lr") -> Experiment:
    t = now()
    with store.transaction():
        exp_id = store.insert(
            "experiments",
            {
                "repo_id": 1,
                "state": "queued",
                "source": "advisor",
                "title": title,
                "student": "fern",
                "head_sha": "c" * 40,
                "base_sha": "b" * 40,
                "implemented": 1,
                "created_at": t,
                "updated_at": t,
            },
        )
    return store.get(Experiment, exp_id)


def _run_job(
    store: Store, book: JobBook, student: str, values: list, gpu: str, exp: Experiment | None = None
) -> None:
    """Queue a job for `student`, lease it and complete it with these per-seed values."""
    t = now()
    with store.transaction():
        store.insert(
            "jobs",
            {
                "kind": "experiment" if exp else "baseline",
                "repo_id": 1,
                "experiment_id": exp.id if exp else None,
                "student": student,
                "state": "queued",
                "seeds": dumps(list(range(len(values)))),
                "base_sha": "b" * 40,
                "created_at": t,
                "updated_at": t,
            },
        )
    leased = book.take(student)
    assert leased is not None
    runs = [
        RunResult(
            seed=seed,
            status="ok" if isinstance(value, float) else value,
            metric=value if isinstance(value, float) else None,
            host=f"{student}-host",
            gpu_kind=gpu,
            sealed=True,
            sandboxed=True,
            train_s=30.0,
            eval_s=2.5,
        )
        for seed, value in enumerate(values)
    ]
    head = exp.head_sha if exp else None
    assert (
        book.complete(
            leased.job.id,
            student,
            JobResult("ok", runs, head_sha=head, lease_id=leased.job.lease_id),
        )
        == "stored"
    )


def test_runs_store_where_and_how_they_were_measured(lab) -> None:
    store, _, book = lab
    _run_job(store, book, "frieren", [1.0 + s for s in SHARED], H100)
    rows = store.query("SELECT * FROM runs ORDER BY seed")
    assert len(rows) == 5
    row = rows[0]
    assert (row["host"], row["gpu_kind"], row["sealed"], row["sandboxed"]) == (
        "frieren-host",
        H100,
        1,
        1,
    )
    assert (row["train_s"], row["eval_s"]) == (30.0, 2.5)


def test_gate_from_the_store_pairs_matched_seeds(lab) -> None:
    store, engine, book = lab
    _run_job(store, book, "frieren", [1.0 + s for s in SHARED], H100)
    exp = _experiment(store)
    small = [0.99 + s + e for s, e in zip(SHARED, [0.001, -0.002, 0.002, -0.001, 0], strict=True)]
    _run_job(store, book, "fern", small, H100, exp)
    exp = store.get(Experiment, exp.id)
    repo = engine.repo_by_id(1)
    gate = evidence.gate_decision(
        store, repo_id=1, base_sha=repo.base_sha, problem=repo.problem, exp=exp, alpha=0.05
    )
    assert gate.method == "paired" and gate.n_matched == 5
    assert gate.verdict == "merge", gate.rationale
    assert gate.hardware == H100


def test_failed_seeds_are_read_and_counted(lab) -> None:
    store, engine, book = lab
    _run_job(store, book, "frieren", [1.0 + s for s in SHARED], H100)
    exp = _experiment(store)
    _run_job(store, book, "fern", [0.9, "crash", "timeout", 0.9, "cancelled"], H100, exp)
    exp = store.get(Experiment, exp.id)
    runs = evidence.candidate_runs(store, exp)
    # A cancelled seed is not stored at all: it was never a measurement.
    assert [r.status for r in runs] == ["ok", "crash", "timeout", "ok"]
    repo = engine.repo_by_id(1)
    gate = evidence.gate_decision(
        store, repo_id=1, base_sha=repo.base_sha, problem=repo.problem, exp=exp, alpha=0.05
    )
    assert (gate.verdict, gate.reason) == ("close", "failure rate")
    assert gate.n_failed == 2 and gate.n_cancelled == 0


def test_baseline_on_other_hardware_waits_and_is_queued_for_our_student(lab) -> None:
    store, engine, book = lab
    _run_job(store, book, "frieren", [1.0 + s for s in SHARED], A100)
    exp = _experiment(store)
    _run_job(store, book, "fern", [0.9], H100, exp)
    exp = store.get(Experiment, exp.id)
    repo = engine.repo_by_id(1)
    gate = evidence.gate_decision(
        store, repo_id=1, base_sha=repo.base_sha, problem=repo.problem, exp=exp, alpha=0.05
    )
    assert (gate.verdict, gate.baseline_hardware) == ("wait", H100)
    student = evidence.student_on_hardware(store, exp, H100)
    assert student == "fern"
    with store.transaction():
        job_id = engine.queue_baseline(repo, student=student)
        again = engine.queue_baseline(repo, student=student)
    assert job_id is not None and again is None  # one hardware baseline per base and student
    job = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert (job["kind"], job["student"]) == ("baseline", "fern")


def test_confirm_rounds_count_the_gates_confirmations_on_this_measurement(lab) -> None:
    store, _, book = lab
    _run_job(store, book, "frieren", [1.0 + s for s in SHARED], H100)
    exp = _experiment(store)
    assert evidence.confirm_rounds(store, exp) == 0
    _run_job(store, book, "fern", [0.9], H100, exp)
    exp = store.get(Experiment, exp.id)
    with store.transaction():
        for actor in ("gate", "gate", "human:alice"):
            store.insert(
                "decisions",
                {
                    "experiment_id": exp.id,
                    "verdict": "confirm",
                    "actor": actor,
                    "rationale": "",
                    "created_at": now() + 1,
                },
            )
    assert evidence.confirm_rounds(store, exp) == 2


def test_lab_seed_correlation_comes_from_other_experiments(lab) -> None:
    store, _, book = lab
    base = [1.0 + s for s in SHARED]
    _run_job(store, book, "frieren", base, H100)
    others = []
    noises = [
        (-0.01, [0.002, -0.001, 0.0, 0.001, -0.002]),
        (0.02, [0.0, 0.001, -0.001, 0.0, 0.002]),
        (0.0, [0.001, 0.0, 0.002, -0.002, 0.0]),
        (-0.03, [-0.001, 0.002, 0.0, 0.001, 0.0]),
    ]
    for shift, noise in noises:
        other = _experiment(store, f"other {shift}")
        _run_job(
            store,
            book,
            "fern",
            [b + shift + e for b, e in zip(base, noise, strict=True)],
            H100,
            other,
        )
        others.append(other)
    r = evidence.lab_seed_correlation(store, 1)
    assert r is not None and r > 0.9
    # The experiment being decided does not choose its own test: without it, 15 pairs
    # are too few to say.
    assert evidence.lab_seed_correlation(store, 1, exclude=others[0].id) is None
