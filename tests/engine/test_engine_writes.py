"""The engine's answers to the outbox: a new PR number, a merge done, a merge refused."""

from __future__ import annotations

import json
from pathlib import Path

from bot.engine import write_results
from bot.engine.engine import Engine
from bot.records import OutboxEntry
from bot.store import Store, dumps


def setup(tmp_path: Path) -> tuple[Store, Engine, int]:
    store = Store(tmp_path / "k.db")
    engine = Engine(store)
    with store.transaction():
        store.insert(
            "repos",
            {
                "full_name": "lab/charlm",
                "installation_id": 1,
                "base_sha": "b" * 40,
                "created_at": 0,
            },
        )
        exp_id = engine.open_experiment(
            engine.repo("lab/charlm"),
            title="Try it",
            hypothesis="h",
            student="fern",
            source="human",
        )
    return store, engine, exp_id


def ops(store: Store) -> list[str]:
    return [r["op"] for r in store.query("SELECT op FROM outbox ORDER BY id")]


def test_open_pr_done_records_the_number_and_queues_the_job(tmp_path: Path) -> None:
    store, engine, exp_id = setup(tmp_path)
    assert ops(store) == ["start_branch", "ensure_labels", "open_pr"]
    row = store.first(OutboxEntry, "op = 'open_pr'")
    with store.transaction():
        write_results.write_done(engine, row, {"number": 5, "head_sha": "h" * 40})
    exp = store.one("SELECT * FROM experiments WHERE id = ?", (exp_id,))
    assert (exp["pr_number"], exp["state"]) == (5, "queued")
    job = store.one("SELECT * FROM jobs WHERE experiment_id = ?", (exp_id,))
    assert job["state"] == "queued" and json.loads(job["payload"])["implement"]["hypothesis"] == "h"
    with store.transaction():  # a retried callback changes nothing
        write_results.write_done(engine, row, {"number": 5, "head_sha": "h" * 40})
    assert store.count("SELECT COUNT(*) AS n FROM jobs") == 1


def test_a_refused_merge_is_explained_on_the_pr(tmp_path: Path) -> None:
    store, engine, exp_id = setup(tmp_path)
    with store.transaction():
        store.update(
            "experiments", exp_id, {"pr_number": 5, "state": "review", "head_sha": "h" * 40}
        )
        row_id = store.insert(
            "outbox",
            {
                "repo": "lab/charlm",
                "installation_id": 1,
                "op": "merge",
                "created_at": 0,
                "args": dumps({"number": 5, "sha": "h" * 40, "experiment_id": exp_id}),
            },
        )
        write_results.write_failed(
            engine,
            store.get(OutboxEntry, row_id),
            "Pull Request is not mergeable",
        )
    comment = [
        json.loads(r["args"]) for r in store.query("SELECT args FROM outbox WHERE op = 'comment'")
    ]
    assert (
        comment and "not mergeable" in comment[0]["body"] and comment[0]["kind"] == "merge-failed"
    )
    decision = store.one("SELECT * FROM decisions WHERE experiment_id = ?", (exp_id,))
    assert decision["verdict"] == "wait" and "refused the merge" in decision["rationale"]


def test_a_newer_status_body_supersedes_an_unsent_one(tmp_path: Path) -> None:
    store, engine, exp_id = setup(tmp_path)
    with store.transaction():
        store.update("experiments", exp_id, {"pr_number": 5})
        repo = engine.repo("lab/charlm")
        engine.refresh_status(repo, exp_id, phase_note="first")
        engine.refresh_status(repo, exp_id, phase_note="second")
    rows = store.query("SELECT state, args FROM outbox WHERE op = 'sticky' ORDER BY id")
    assert [r["state"] for r in rows] == ["superseded", "pending"]
    assert "second" in json.loads(rows[1]["args"])["body"]


def test_the_job_is_queued_when_the_branch_exists_and_the_pr_catches_up(tmp_path: Path) -> None:
    """Branch first, job at once; the PR opened later gets the current label and late results."""
    from bot.engine.jobs import JobBook
    from bot.protocol import JobResult

    store, engine, exp_id = setup(tmp_path)
    book = JobBook(engine)
    branch = store.first(OutboxEntry, "op = 'start_branch'")
    assert branch.args["base_sha"] == "b" * 40
    with store.transaction():
        write_results.write_done(engine, branch, {"branch": "kohai/1-try-it", "head_sha": "s" * 40})
    exp = store.one("SELECT * FROM experiments WHERE id = ?", (exp_id,))
    assert (exp["state"], exp["pr_number"], exp["head_sha"]) == ("queued", None, "s" * 40)
    with store.transaction():  # a retried callback queues nothing more
        write_results.write_done(engine, branch, {"branch": "kohai/1-try-it", "head_sha": "s" * 40})
    leased = book.take("fern")
    assert leased is not None and leased.experiment.id == exp_id
    book.complete(
        leased.job.id,
        "fern",
        JobResult(
            status="refused", reason="diff touches a frozen file", lease_id=leased.job.lease_id
        ),
    )
    before = store.one("SELECT MAX(id) AS n FROM outbox")["n"]
    assert not store.query("SELECT id FROM outbox WHERE args LIKE '%\"number\":null%'")

    with store.transaction():
        write_results.write_done(
            engine,
            store.first(OutboxEntry, "op = 'open_pr'"),
            {"number": 5, "head_sha": "s" * 40},
        )
    exp = store.one("SELECT * FROM experiments WHERE id = ?", (exp_id,))
    assert exp["pr_number"] == 5 and exp["state"] == "review"
    later = store.query("SELECT op, args FROM outbox WHERE id > ? ORDER BY id", (before,))
    writes = [(r["op"], json.loads(r["args"])) for r in later]
    assert ("remove_label", {"number": 5, "label": "status:queued"}) in writes
    assert any(op == "add_labels" and a["labels"] == ["status:review"] for op, a in writes)
    results = [a for op, a in writes if op == "sticky" and a["kind"] == "results"]
    assert results and "frozen file" in results[0]["body"]
    assert store.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 1
