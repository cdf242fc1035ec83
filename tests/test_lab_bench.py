"""bench/lab.py on a small sample: the simulated lab drives the real gate and early stopping."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "bench" / "lab.py"


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
    for name in ("greedy keep-if-better", "random search", "gate 5/5, early stop", "vs greedy"):
        assert name in out
