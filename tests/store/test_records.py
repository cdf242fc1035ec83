"""Rows read back as typed records from a real SQLite file, damaged columns included."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.records import Decision, Experiment, Job, Repository, Run, Student, Track
from bot.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "k.db")
    with store.transaction():
        store.insert("repos", {"full_name": "lab/x", "created_at": 1.0, "base_files": "{bad"})
    return store


def _experiment(store: Store, **columns: object) -> int:
    with store.transaction():
        return store.insert(
            "experiments",
            {
                "repo_id": 1,
                "state": "queued",
                "source": "human",
                "title": "t",
                "created_at": 1.0,
                "updated_at": 1.0,
            }
            | columns,
        )


def _job(store: Store, **columns: object) -> int:
    with store.transaction():
        return store.insert(
            "jobs",
            {"kind": "experiment", "repo_id": 1, "state": "queued", "created_at": 1.0}
            | {"updated_at": 1.0}
            | columns,
        )


def test_json_columns_decode_and_flags_are_booleans(store: Store) -> None:
    exp_id = _experiment(store, knobs='{"LR": 0.003}', hold=1, implemented=0)
    exp = store.get(Experiment, exp_id)
    assert exp is not None
    assert exp.knobs == {"LR": 0.003}
    assert exp.hold is True and exp.implemented is False and exp.review_requested is False
    assert exp.track == "default" and not exp.final


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '"a string"', "null"], ids=repr)
def test_a_damaged_json_column_reads_as_empty_never_as_a_crash(store: Store, text: str) -> None:
    exp_id = _experiment(store, knobs=text)
    job_id = _job(store, experiment_id=exp_id, seeds=text, payload=text, result=text)
    exp, job = store.get(Experiment, exp_id), store.get(Job, job_id)
    assert exp is not None and job is not None
    assert exp.knobs == {}
    seeds = [1, 2] if text == "[1, 2]" else []  # a list is what `seeds` holds
    assert (job.seeds, job.payload, job.implement) == (seeds, {}, {})
    assert job.result == {}  # a result was stored, but it is not an object: nothing in it


def test_a_job_without_a_result_reads_none_and_its_implement_spec(store: Store) -> None:
    job_id = _job(store, seeds="[0, 1, 2]", payload='{"implement": {"title": "t"}}')
    job = store.get(Job, job_id)
    assert job is not None
    assert job.result is None and job.seeds == [0, 1, 2] and job.implement == {"title": "t"}


def test_a_narrow_select_leaves_defaults_and_a_join_its_extra_columns(store: Store) -> None:
    with store.transaction():
        store.insert(
            "runs",
            {
                "repo_id": 1,
                "kind": "baseline",
                "seed": 3,
                "status": "ok",
                "metric": 1.5,
                "curve": "[[10, 2.0]]",
                "log_tail": "x" * 100,
                "sealed": 0,
                "created_at": 2.0,
            },
        )
    [light] = [
        Run.from_row(row)
        for row in store.query("SELECT id, repo_id, kind, seed, status, metric, sealed FROM runs")
    ]
    assert (light.metric, light.curve, light.log_tail, light.sealed) == (1.5, [], "", False)
    [full] = store.rows(Run)
    assert full.curve == [[10, 2.0]] and full.ok and not full.sealed and full.sandboxed is False
    job_id = _job(store)
    [row] = store.query(
        "SELECT j.*, r.full_name AS lab_name FROM jobs j JOIN repos r ON r.id = j.repo_id"
    )
    assert Job.from_row(row) == store.get(Job, job_id)


def test_rows_filter_order_and_limit_and_first_and_composite_keys(store: Store) -> None:
    ids = [_experiment(store, title=f"e{i}", pr_number=10 + i) for i in range(4)]
    newest = store.rows(Experiment, "pr_number >= ?", (11,), order_by="id DESC", limit=2)
    assert [e.id for e in newest] == [ids[3], ids[2]]
    assert store.first(Experiment, "title = ?", ("e0",)) == store.get(Experiment, ids[0])
    assert store.first(Experiment, "title = ?", ("nope",)) is None
    with store.transaction():
        store.insert(
            "tracks",
            {"repo_id": 1, "name": "wide", "base_branch": "track/wide", "created_at": 1.0},
        )
        store.insert("students", {"name": "fern", "gpus": 2, "created_at": 1.0})
        store.insert(
            "decisions",
            {
                "experiment_id": ids[0],
                "verdict": "close",
                "actor": "gate",
                "rationale": "not better",
                "stats": '{"p": 0.4}',
                "created_at": 3.0,
            },
        )
    track = store.get(Track, 1, "wide")
    assert track is not None and track.base_branch == "track/wide" and track.base_files == {}
    assert store.get(Track, 1, "deep") is None
    student = store.get(Student, "fern")
    assert student is not None and (student.gpus, student.state, student.labs) == (2, "idle", None)
    [decision] = store.rows(Decision, "experiment_id = ?", (ids[0],))
    assert decision.stats == {"p": 0.4}
    repo = store.get(Repository, 1)
    assert repo is not None and repo.base_files == {} and repo.default_branch == "main"


def test_records_other_than_the_experiment_are_frozen(store: Store) -> None:
    job = store.get(Job, _job(store))
    assert job is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = "done"  # type: ignore[misc]
    exp = store.get(Experiment, _experiment(store))
    assert exp is not None
    exp.state = "training"  # the engine's moves keep the caller's record current
    assert exp.state == "training"
