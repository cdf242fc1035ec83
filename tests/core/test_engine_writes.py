"""The engine's answers to the outbox: a new PR number, a merge done, a merge refused."""

from __future__ import annotations

import json
from pathlib import Path

from bot.engine import Engine
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
    assert ops(store) == ["ensure_labels", "open_pr"]
    row = store.one("SELECT * FROM outbox WHERE op = 'open_pr'")
    with store.transaction():
        engine.on_write_done(row, {"number": 5, "head_sha": "h" * 40})
    exp = store.one("SELECT * FROM experiments WHERE id = ?", (exp_id,))
    assert (exp["pr_number"], exp["state"]) == (5, "queued")
    job = store.one("SELECT * FROM jobs WHERE experiment_id = ?", (exp_id,))
    assert job["state"] == "queued" and json.loads(job["payload"])["implement"]["hypothesis"] == "h"
    with store.transaction():  # a retried callback changes nothing
        engine.on_write_done(row, {"number": 5, "head_sha": "h" * 40})
    assert store.one("SELECT COUNT(*) AS n FROM jobs")["n"] == 1


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
        engine.on_write_failed(
            store.one("SELECT * FROM outbox WHERE id = ?", (row_id,)),
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
