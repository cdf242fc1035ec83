"""The experiment lifecycle table: every legal move, and the ones that must be refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core import lifecycle
from bot.core.lifecycle import FINAL_STATES, STATES, transition
from bot.engine import handlers
from bot.engine.engine import Engine
from bot.records import Experiment
from bot.store import Store

ALLOWED = [
    ("proposed", "queue", "bot", "queued"),
    ("review", "queue", "advisor", "queued"),
    ("review", "queue", "human", "queued"),
    ("queued", "implement", "bot", "implementing"),
    ("queued", "train", "host", "training"),
    ("implementing", "train", "host", "training"),
    ("training", "requeue", "bot", "queued"),
    ("training", "results", "host", "review"),
    ("implementing", "fail", "bot", "review"),
    ("training", "stop", "bot", "review"),
    ("review", "merged", "bot", "merged"),
    ("training", "merged", "human", "merged"),  # merged by hand on GitHub
    ("review", "close", "advisor", "closed"),
    ("queued", "close", "human", "closed"),
    ("closed", "reopen", "human", "review"),
]

REFUSED = [
    # Final states stay final: a late host result or a stale verdict changes nothing.
    ("closed", "results", "host", "final"),
    ("closed", "queue", "advisor", "final"),
    ("merged", "close", "bot", "final"),
    ("merged", "reopen", "human", "final"),
    ("closed", "reopen", "bot", "for human"),
    # The bot merges only from review; a training PR cannot be merged by the gate.
    ("training", "merged", "bot", "for human"),
    # A host cannot decide: it reports phases and results only.
    ("review", "close", "host", "for advisor, bot, human"),
    ("review", "queue", "host", "for advisor, bot, human"),
    # Nothing skips review.
    ("proposed", "results", "host", "no transition"),
    ("review", "train", "host", "no transition"),
    ("proposed", "requeue", "bot", "no transition"),
]


@pytest.mark.parametrize(("state", "event", "actor", "to"), ALLOWED)
def test_allowed_moves(state: str, event: str, actor: str, to: str) -> None:
    move = transition(state, event, actor)
    assert move.allowed and move.to == to, move.reason


@pytest.mark.parametrize(("state", "event", "actor", "why"), REFUSED)
def test_refused_moves_keep_the_state(state: str, event: str, actor: str, why: str) -> None:
    move = transition(state, event, actor)
    assert not move.allowed
    assert move.to == state
    assert why in move.reason


def test_final_states_are_left_only_by_a_human_reopening() -> None:
    for state in FINAL_STATES:
        for event in lifecycle.EVENTS:
            for actor in ("bot", "host", "advisor", "human"):
                move = transition(state, event, actor)
                if move.changes:
                    assert (state, event, actor) == ("closed", "reopen", "human")


def test_every_open_state_can_be_closed_and_every_state_is_reachable() -> None:
    for state in STATES:
        if state not in FINAL_STATES:
            assert transition(state, "close", "human").to == "closed"
    reachable = {"proposed"}
    for _ in STATES:
        reachable |= {r.to for r in lifecycle.TABLE.values() if r.state in reachable}
    assert reachable == set(STATES)


def test_recorded_actors_map_to_table_actors() -> None:
    assert lifecycle.actor_kind("human:ann") == "human"
    assert lifecycle.actor_kind("gate") == "bot"
    assert lifecycle.actor_kind("advisor") == "advisor"


def test_table_rows_for_the_readme_are_complete() -> None:
    rows = lifecycle.table_rows()
    assert len(rows) == len(lifecycle.TABLE)
    assert ("closed", "reopen", "review", "human") in rows


def test_the_engine_refuses_and_logs_an_illegal_move(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "k.db")
    engine = Engine(store)
    with store.transaction():
        store.insert(
            "repos",
            {"full_name": "lab/x", "installation_id": 1, "base_sha": "b" * 40, "created_at": 0},
        )
        repo = engine.repo("lab/x")
        assert repo is not None
        exp_id = engine.open_experiment(
            repo, title="t", hypothesis="h", student="fern", source="human"
        )
        store.update("experiments", exp_id, {"pr_number": 3, "state": "closed"})
        exp = store.get(Experiment, exp_id)
        assert exp is not None
        writes = store.count("SELECT COUNT(*) AS n FROM outbox")
        assert engine.move(repo, exp, "results", "host") is False
        assert engine.queue_experiment_job(repo, exp, seeds=[0]) is None
        assert engine.finish(repo, exp, "closed", actor="gate", rationale="again") is False
    assert store.one("SELECT state FROM experiments WHERE id = ?", (exp_id,))["state"] == "closed"
    assert store.count("SELECT COUNT(*) AS n FROM jobs") == 0
    assert store.count("SELECT COUNT(*) AS n FROM outbox") == writes  # nothing written
    assert "refused results by host in state closed" in caplog.text


def test_a_human_reopening_a_closed_pr_brings_it_back_to_review(tmp_path: Path) -> None:
    from bot.core import intents as i

    store = Store(tmp_path / "k.db")
    engine = Engine(store)
    with store.transaction():
        store.insert(
            "repos",
            {"full_name": "lab/x", "installation_id": 1, "base_sha": "b" * 40, "created_at": 0},
        )
        repo = engine.repo("lab/x")
        exp_id = engine.open_experiment(
            repo, title="t", hypothesis="h", student="fern", source="human"
        )
        store.update("experiments", exp_id, {"pr_number": 3, "state": "closed"})
        note = handlers._on_Reopen(engine, i.Reopen(3, "ann"), None, repo)  # type: ignore[arg-type]
        assert note == "reopened"
        # Reopening what is not closed changes nothing.
        assert handlers._on_Reopen(engine, i.Reopen(3, "ann"), None, repo).startswith(
            "reopen refused"
        )  # type: ignore[arg-type]
    exp = store.one("SELECT state, review_requested, outcome FROM experiments")
    assert exp == {"state": "review", "review_requested": 1, "outcome": None}


def test_stop_on_a_queued_experiment_holds_it_in_review(tmp_path: Path) -> None:
    from bot.core import intents as i

    store = Store(tmp_path / "k.db")
    engine = Engine(store)
    with store.transaction():
        store.insert(
            "repos",
            {"full_name": "lab/x", "installation_id": 1, "base_sha": "b" * 40, "created_at": 0},
        )
        repo = engine.repo("lab/x")
        exp_id = engine.open_experiment(
            repo, title="t", hypothesis="h", student="fern", source="human"
        )
        store.update("experiments", exp_id, {"pr_number": 3})
        exp = store.get(Experiment, exp_id)
        engine.queue_experiment_job(repo, exp, seeds=[0])
        handlers._on_Stop(engine, i.Stop(3, "ann"), None, repo)  # type: ignore[arg-type]
    exp = store.one("SELECT state, hold FROM experiments")
    assert exp == {"state": "review", "hold": 1}  # not left queued with nothing to run
    assert store.one("SELECT state FROM jobs")["state"] == "cancelled"
