"""bench/lab.py on a small sample: the simulated lab drives the real gate and early stopping."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[2] / "bench" / "lab.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lab", PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lab"] = module
    spec.loader.exec_module(module)
    return module


def lab_of(bench, effect: float, n: int = 60, seed: int = 1):
    lab = bench.make_lab(seed, 0.5, n)
    lab.ideas = [bench.Idea(effect, 0.5) for _ in range(n)]
    return lab


def test_null_ideas_greedy_merges_noise_kohai_does_not(bench) -> None:
    greedy = [bench.greedy(lab_of(bench, 0.0, seed=s), 40) for s in range(5)]
    kohai = [bench.kohai(lab_of(bench, 0.0, seed=s), 40, bench.KohaiConfig()) for s in range(5)]
    assert sum(r.merges for r in greedy) > 3 * max(1, sum(r.merges for r in kohai))
    assert all(r.gain == 0.0 for r in greedy + kohai)  # null merges move nothing in truth
    assert all(r.gpu_hours <= 40 + 1e-9 for r in kohai + greedy)


def test_a_clearly_helpful_idea_merges_through_the_gate(bench) -> None:
    result = bench.kohai(
        lab_of(bench, 3.0), 40, bench.KohaiConfig(confirm_seeds=3, baseline_seeds=3)
    )
    assert result.merges >= 2 and result.false_merges == 0 and result.gain >= 6.0


def test_early_stopping_cuts_harmful_runs_and_saves_gpu_hours(bench) -> None:
    """Over a few labs of clearly harmful ideas: some runs stop early, none merges, and the
    same GPU-hours try more ideas (how many stop depends on the baseline seeds' spread)."""
    on = bench.KohaiConfig(early=bench.EarlyStopConfig(enabled=True))
    stopped = [bench.kohai(lab_of(bench, -2.0, n=100, seed=s), 80, on) for s in range(5)]
    full = [
        bench.kohai(lab_of(bench, -2.0, n=100, seed=s), 80, bench.KohaiConfig()) for s in range(5)
    ]
    assert sum(r.stopped for r in stopped) >= 10 and sum(r.stopped for r in full) == 0
    assert sum(r.ideas for r in stopped) > sum(r.ideas for r in full)
    assert sum(r.merges for r in stopped + full) == 0


def test_the_table_prints_every_policy(bench, capsys) -> None:
    assert bench.main(["--labs", "2", "--gpu-hours", "30"]) == 0
    out = capsys.readouterr().out
    for name in (
        "greedy keep-if-better",
        "random search",
        "gate 5/5, early stop",
        "vs greedy",
        "oracle ceiling",
        "oracle curiosity",
        "kohai bayes, learned",
        "kohai bayes, learned, 4 st.",
        "kohai bayes, known prior (bound)",
        "kohai bayes, learned, noise by design",
    ):
        assert name in out


def test_oracle_ceilings_merge_exactly_the_helpful_ideas(bench) -> None:
    lab = bench.make_lab(7, 0.5, 400)
    helpful = [i.effect for i in lab.ideas[:50] if i.effect > 0]
    full = bench.oracle(lab, 50)
    assert full.ideas == 50 and full.gpu_hours == 50 and full.false_merges == 0
    assert full.merges == len(helpful) and math.isclose(full.gain, sum(helpful))
    early = bench.oracle(bench.make_lab(7, 0.5, 400), 50, stop_early=True)
    assert early.false_merges == 0 and early.gpu_hours <= 50 + 1e-9
    assert early.ideas > 2 * full.ideas and early.gain > 2 * full.gain
    assert early.stopped == early.ideas - early.merges


def test_the_research_levers_keep_false_merges_down_on_null_ideas(bench) -> None:
    cfg = bench.KohaiConfig(
        screen_margin=0.5,
        sequential=True,
        reuse_baseline=True,
        pooled=True,
        paired_stop=True,
        early=bench.EarlyStopConfig(enabled=True, band=1.0),
    )
    results = [bench.kohai(lab_of(bench, 0.0, n=300, seed=s), 60, cfg) for s in range(8)]
    today = [
        bench.kohai(lab_of(bench, 0.0, n=300, seed=s), 60, bench.KohaiConfig()) for s in range(8)
    ]
    # More null ideas tried for the same GPU-hours, no more of them merged.
    assert sum(r.ideas for r in results) > 1.5 * sum(r.ideas for r in today)
    assert sum(r.merges for r in results) <= sum(r.merges for r in today)
    assert all(r.gpu_hours <= 60 + 1e-9 for r in results)
    helpful = bench.kohai(lab_of(bench, 3.0), 40, cfg)
    assert helpful.merges >= 2 and helpful.false_merges == 0


def test_the_table_has_the_oracle_rows(bench, capsys) -> None:
    assert bench.main(["--labs", "2", "--gpu-hours", "20", "--rho", "0.89"]) == 0
    out = capsys.readouterr().out
    for name in ("oracle ceiling: truth after 1 run", "truth at first checkpoint", "kohai+"):
        assert name in out


def test_seed_luck_builds_up_over_a_run(bench) -> None:
    """A run's deviation at 10 % of training keeps about 0.1**0.39 of its final luck, not all
    of it (the calibrated curve model): early checkpoints are a weak guide to the end."""
    lab = bench.make_lab(3, 0.5, 1)
    finals, early, late = [], [], []
    for seed in range(64):
        for _ in range(6):
            final, curve = lab.run(0.0, None, seed)
            finals.append(final)
            early.append(curve[0][1])
            late.append(curve[-1][1])
    corr_early = float(np.corrcoef(early, finals)[0, 1])
    corr_late = float(np.corrcoef(late, finals)[0, 1])
    assert abs(corr_early - 0.1**bench.LUCK_EXPONENT) < 0.12
    assert corr_late > 0.95


def test_an_idea_transient_fades_by_the_end(bench) -> None:
    lab = bench.make_lab(4, 0.5, 1)
    idea = bench.Idea(0.0, 0.5, transient=5.0)
    gaps = []
    for seed in range(40):
        _, base = lab.run(0.0, None, seed)
        _, cand = lab.run(0.0, idea, seed)
        gaps.append([c[1] - b[1] for c, b in zip(cand, base, strict=True)])
    mean = np.mean(gaps, axis=0)
    assert mean[0] < -3.0  # 5 x 0.81 ahead at 10 %
    assert abs(mean[-1]) < 0.5  # and nothing left at the end


def test_the_bayes_gate_merges_clear_wins_and_few_nulls(bench) -> None:
    nulls = [
        bench.kohai_bayes(lab_of(bench, 0.0, seed=s), 40, bench.BayesConfig()) for s in range(3)
    ]
    # every idea null: the merges (all false) stay within the budget's share of the ideas
    assert sum(r.merges for r in nulls) <= 0.05 * sum(r.ideas for r in nulls)
    assert all(r.gpu_hours <= 40 + 1e-9 for r in nulls)
    wins = bench.kohai_bayes(lab_of(bench, 3.0), 40, bench.BayesConfig())
    assert wins.merges >= 3 and wins.false_merges == 0 and wins.gain >= 9.0
    four = bench.kohai_bayes(lab_of(bench, 3.0), 40, bench.BayesConfig(students=4))
    assert four.merges >= 3 and four.false_merges == 0


@pytest.mark.parametrize(
    ("noise_df", "known", "runs", "decision"),
    [
        (0, False, 1, "close"),  # no design: a clearly harmful idea closes on one seed
        (15, False, 1, "seed"),  # the design: a second seed for the contrast
        (15, False, 2, "close"),  # one contrast an idea, then the table decides
        (15, True, 1, "close"),  # the known-prior bound knows its noise
    ],
)
def test_the_noise_design_buys_a_second_seed_until_it_has_its_df(
    bench, noise_df: int, known: bool, runs: int, decision: str
) -> None:
    """`BayesConfig.noise_df`: while the lab's within-idea contrasts have fewer degrees of
    freedom than asked, an idea the table would decide on one seed runs a second one."""
    lab = lab_of(bench, -6.0)
    cfg = bench.BayesConfig(noise_df=noise_df, known_prior=known)
    state = bench._BayesLab(lab, 40, cfg, bench.Result())
    taken: dict[int, float] = {}
    for _ in range(runs):
        seed = state.next_seed(taken)
        taken[seed] = state.run(lab.ideas[0], seed)
    assert state.verdict(taken).action == decision


def test_the_noise_design_stops_at_its_df_and_learns_the_noise_from_it(bench) -> None:
    """A lab run with the design: the contrasts reach the asked df, and the noise the gate
    learned from them is near the simulation's own (rho 0.5: per-run noise 0.71)."""
    lab = bench.make_lab(3, 0.5, 400)
    state = bench.bayes_lab(lab, 60, bench.BayesConfig(noise_df=15))
    plain = bench.bayes_lab(bench.make_lab(3, 0.5, 400), 60, bench.BayesConfig())
    assert state.out.gpu_hours == plain.out.gpu_hours == 60
    assert state.out.ideas < plain.out.ideas  # the second seeds are paid for in ideas
    assert state.noise_df >= 15
    assert 0.5 * math.sqrt(0.5) < state.prior.noise < 2.0 * math.sqrt(0.5)
    assert not state.wants_contrast({})
