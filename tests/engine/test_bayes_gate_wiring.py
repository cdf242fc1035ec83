"""The running bot with `[gate] method = "bayes"`: a helpful idea merges, a null one closes.

A real SQLite file, the real engine, job book and reviewer (the set-up of
test_gate_levers_wiring): seeds are leased and completed as a host would, the reviewer
asks the Bayesian gate from the store, one more seed at a time, and the decision, its
stats and its PR comment are read back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from agents import notebook
from agents.context import build_context, describe_gate_state
from bot.core import bayes
from bot.core.gate import BudgetSpent, decide_bayes
from bot.engine import evidence
from bot.engine.evidence import GateState
from tests.engine.test_gate_levers_wiring import BASELINE, Lab

BAYES = '[gate]\nmethod = "bayes"\n'


def _drive(lab: Lab, exp_id: int, value_on: dict[int, float], head: str) -> tuple[str, list[int]]:
    """Review until the gate decides, running each seed it asks for; the outcome and seeds."""
    asked: list[int] = []
    while (outcome := lab.review(exp_id)) == "confirm":
        seeds = lab.queued_seeds(exp_id)
        assert seeds is not None and len(seeds) == 1  # one more seed at a time
        asked += seeds
        lab.complete((value_on.get(seeds[0], value_on[0]),), head=head)
    return outcome, asked


def _comment(lab: Lab) -> str:
    bodies = [
        json.loads(r["args"])["body"]
        for r in lab.store.query("SELECT args FROM outbox WHERE op = 'comment' ORDER BY id")
        if json.loads(r["args"])["kind"] == "decision"
    ]
    return bodies[-1]


def test_a_helpful_idea_merges_with_its_explanation(tmp_path: Path) -> None:
    lab = Lab(tmp_path, BAYES)
    lab.baseline(*BASELINE)
    better = {s: v - 0.4 for s, v in enumerate(BASELINE)} | {s: 1.6 for s in range(3, 8)}
    exp_id = lab.experiment(7, better[0])
    outcome, asked = _drive(lab, exp_id, better, "7" * 40)
    assert outcome == "merge"
    assert len(asked) + 1 <= 8
    decision = lab.last_decision(exp_id)
    stats = decision["stats"]
    assert stats["method"] == "bayes" and stats["reason"] == "posterior"
    assert stats["bayes"]["chance_positive"] > 0.95
    assert stats["bayes"]["budget"] == 0.025  # the vague start: half the lab's 5 % budget
    body = _comment(lab)
    for words in ("chance that the effect is positive", "expected gain", "one more seed", "budget"):
        assert words in body


def test_a_null_idea_closes_with_its_explanation(tmp_path: Path) -> None:
    lab = Lab(tmp_path, BAYES)
    lab.baseline(*BASELINE)
    same = {s: v + 0.01 for s, v in enumerate(BASELINE)} | {s: 2.0 for s in range(3, 8)}
    exp_id = lab.experiment(8, same[0])
    outcome, _ = _drive(lab, exp_id, same, "8" * 40)
    assert outcome == "close"
    assert lab.exp(exp_id).state == "closed"
    stats = lab.last_decision(exp_id)["stats"]
    assert stats["method"] == "bayes" and stats["bayes"]["chance_positive"] < 0.5
    assert "chance that the effect is positive" in _comment(lab)


def test_an_idea_closed_on_the_base_re_measures_it_for_the_next(tmp_path: Path) -> None:
    """The engine hands the gate the ideas closed on the same base: their runs, with the effect's
    posterior their last decision recorded. The next candidate's evidence on those seeds is
    more precise than from the baseline's runs alone."""
    lab = Lab(tmp_path, BAYES)
    lab.baseline(*BASELINE)
    same = {s: v + 0.01 for s, v in enumerate(BASELINE)} | {s: 2.0 for s in range(3, 8)}
    first = lab.experiment(8, same[0])
    assert _drive(lab, first, same, "8" * 40)[0] == "close"
    numbers = lab.last_decision(first)["stats"]["bayes"]
    base_sha = lab.exp(first).base_sha
    closed = evidence.closed_on_base(lab.store, lab.repo_id, base_sha)
    assert len(closed) == 1
    assert closed[0].effect == numbers["expected_gain"]
    assert closed[0].effect_var == numbers["effect_var"]
    assert len(closed[0].runs) == numbers["seeds"]
    # another base: nothing closed there
    assert evidence.closed_on_base(lab.store, lab.repo_id, "c" * 40) == []
    second = lab.experiment(9, 1.95)
    lab.review(second)
    precision = lab.last_decision(second)["stats"]["bayes"]["precision"]
    alone = decide_bayes(
        evidence.candidate_runs(lab.store, lab.exp(second)),
        evidence.baseline_runs(lab.store, lab.repo_id, base_sha),
        minimize=True,
        baseline_seeds=3,
    ).stats()["bayes"]["precision"]
    assert precision > alone * 1.05
    # the idea being decided is not its own re-measure
    others = evidence.closed_on_base(lab.store, lab.repo_id, base_sha, exclude=first)
    assert all(r.metric != same[0] for c in others for r in c.runs)


def test_the_lab_state_counts_the_budget_spent_by_its_merges(tmp_path: Path) -> None:
    lab = Lab(tmp_path, BAYES)
    lab.baseline(*BASELINE)
    better = {s: v - 0.4 for s, v in enumerate(BASELINE)} | {s: 1.6 for s in range(3, 8)}
    exp_id = lab.experiment(7, better[0])
    assert _drive(lab, exp_id, better, "7" * 40)[0] == "merge"
    state = evidence.lab_gate_state(lab.store, lab.repo_id)
    merged = lab.last_decision(exp_id)["stats"]["bayes"]["chance_null_or_worse"]
    assert state.spent.merges == 1 and abs(state.spent.chance_false - merged) < 1e-12
    assert state.decided == 1 and state.prior is None  # fewer than 40 decided: still vague


def test_the_advisor_notebook_shows_the_gate_state(tmp_path: Path) -> None:
    """The advisor's baseline tool says what the gate has learned and spent, so it can size ideas."""
    lab = Lab(tmp_path, BAYES)
    lab.baseline(*BASELINE)
    better = {s: v - 0.4 for s, v in enumerate(BASELINE)} | {s: 1.6 for s in range(3, 8)}
    exp_id = lab.experiment(7, better[0])
    assert _drive(lab, exp_id, better, "7" * 40)[0] == "merge"
    ctx = build_context(lab.store, lab.repo_id, lab.repo.problem, "", "")
    text = notebook.baseline(ctx)
    assert "## The merge gate" in text
    assert "vague starting prior: 1 of 40 decided ideas" in text
    assert "over 1 merge(s), 5% of merges allowed" in text
    assert notebook.gate_state(replace(ctx, gate_state="")) == ""  # the test gate: nothing


def test_a_learned_prior_is_described_with_its_noise() -> None:
    prior = bayes.learn_prior(
        [(0.0, 4.0, 0.5)] * 30 + [(1.5, 4.0, 0.5)] * 10, bayes.EffectPrior.vague(0.7)
    )
    text = describe_gate_state(GateState(prior, BudgetSpent(0.12, 5), 40), 0.05)
    assert "Learned from this lab's 40 decided ideas" in text
    assert "of the time, by" in text and "per-run noise" in text
    assert "0.12 expected false merges spent over 5 merge(s)" in text
