"""The merge gate and its statistics: table-driven, and Welch checked against scipy."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bot.gate import GateDecision, decide, needs_rerun_on_new_base
from bot.stats import mean_std, welch_one_sided

BASE = [1.00, 1.01, 0.99]  # mean 1.0, std 0.01
BASE_MAX = [0.80, 0.81, 0.79]

# (name, candidate, baseline, minimize, extra kwargs, verdict, seeds_needed)
TABLE = [
    ("large effect merges", [0.90, 0.91, 0.89], BASE, True, {}, "merge", 0),
    ("small effect within noise closes", [0.995, 1.005, 0.99], BASE, True, {}, "close", 0),
    ("null effect: identical values close", [1.00, 1.01, 0.99], BASE, True, {}, "close", 0),
    ("worse closes", [1.05, 1.06, 1.04], BASE, True, {}, "close", 0),
    ("one promising seed asks for two more", [0.95], BASE, True, {}, "confirm", 2),
    ("two promising seeds ask for one more", [0.95, 0.96], BASE, True, {}, "confirm", 1),
    ("one worse seed closes without confirming", [1.02], BASE, True, {}, "close", 0),
    ("crashed seeds do not count as seeds", [0.90, None, 0.91], BASE, True, {}, "confirm", 1),
    ("NaN is a crash", [0.90, math.nan, 0.91], BASE, True, {}, "confirm", 1),
    ("no baseline yet waits", [0.90, 0.91, 0.89], [], True, {}, "wait", 0),
    ("short baseline waits", [0.90, 0.91, 0.89], [1.0, 1.01], True, {}, "wait", 0),
    ("baseline with a crash waits", [0.90, 0.91, 0.89], [1.0, None, 1.01], True, {}, "wait", 0),
    ("all crashed closes", [None, None], BASE, True, {}, "close", 0),
    ("all crashed closes even before the baseline", [None], [], True, {}, "close", 0),
    ("no runs at all closes", [], BASE, True, {}, "close", 0),
    ("maximize: higher merges", [0.90, 0.91, 0.89], BASE_MAX, False, {}, "merge", 0),
    ("maximize: lower closes", [0.70, 0.71, 0.69], BASE_MAX, False, {}, "close", 0),
    ("minimize: higher closes", [0.90, 0.91, 0.89], BASE_MAX, True, {}, "close", 0),
    ("zero variance, better: certain", [0.99] * 3, [1.0] * 3, True, {}, "merge", 0),
    ("zero variance, equal: close", [1.0] * 3, [1.0] * 3, True, {}, "close", 0),
    ("moderate effect merges at 0.05", [0.98, 0.985, 0.975], BASE, True, {}, "merge", 0),
    (
        "moderate effect closes at 0.01",
        [0.98, 0.985, 0.975],
        BASE,
        True,
        {"alpha": 0.01},
        "close",
        0,
    ),
    (
        "human override merges a worse one",
        [1.05],
        BASE,
        True,
        {"human_override": "alice"},
        "merge",
        0,
    ),
    (
        "human override merges without a baseline",
        [0.9],
        [],
        True,
        {"human_override": "bob"},
        "merge",
        0,
    ),
    (
        "more confirm seeds ask for more",
        [0.90, 0.91, 0.89],
        BASE,
        True,
        {"confirm": 5},
        "confirm",
        2,
    ),
]


@pytest.mark.parametrize(
    ("candidate", "baseline", "minimize", "extra", "verdict", "needed"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_gate_table(
    candidate: list[float | None],
    baseline: list[float | None],
    minimize: bool,
    extra: dict,
    verdict: str,
    needed: int,
) -> None:
    extra = dict(extra)
    confirm = extra.pop("confirm", 3)
    decision = decide(
        candidate, baseline, minimize=minimize, confirm_seeds=confirm, baseline_seeds=3, **extra
    )
    assert decision.verdict == verdict, decision.rationale
    assert decision.seeds_needed == needed
    assert decision.n_candidate == sum(1 for v in candidate if v is not None and math.isfinite(v))
    json.dumps(decision.stats(), allow_nan=False)  # JSON-safe whatever the case


def test_within_noise_rationale_states_the_numbers() -> None:
    decision = decide([0.995, 1.005, 0.99], BASE, minimize=True, confirm_seeds=3, baseline_seeds=3)
    assert decision.verdict == "close"
    assert "within seed noise" in decision.rationale
    welch = welch_one_sided([0.995, 1.005, 0.99], BASE, minimize=True)
    assert decision.p_value == pytest.approx(welch.p_value)
    assert decision.delta == pytest.approx(-0.01 / 3)
    assert f"p = {welch.p_value:.3g}" in decision.rationale
    assert "alpha = 0.05" in decision.rationale
    assert "candidate 0.9967 ± 0.0076 (n=3)" in decision.rationale  # mean ± std
    assert "baseline 1.000 ± 0.01 (n=3)" in decision.rationale
    assert f"delta -0.003333 ± {decision.delta_se:.2g} (se)" in decision.rationale


def test_merge_records_the_significance() -> None:
    decision = decide([0.90, 0.91, 0.89], BASE, minimize=True, confirm_seeds=3, baseline_seeds=3)
    assert decision.verdict == "merge"
    assert decision.actor == "gate"
    assert decision.p_value is not None and decision.p_value < 0.001
    assert decision.delta == pytest.approx(-0.1)
    assert decision.candidate_mean == pytest.approx(0.9)
    assert decision.baseline_std == pytest.approx(0.01)


def test_human_override_is_recorded_as_such() -> None:
    decision = decide(
        [1.05], BASE, minimize=True, confirm_seeds=3, baseline_seeds=3, human_override="alice"
    )
    assert decision.override_by == "alice"
    assert decision.actor == "human:alice"
    assert "human override" in decision.rationale
    assert "@alice" in decision.rationale
    assert decision.delta == pytest.approx(0.05)  # the numbers it overrode are kept


def test_crash_rationale_counts_the_failures() -> None:
    decision = decide([None, None], BASE, minimize=True, confirm_seeds=3, baseline_seeds=3)
    assert decision.n_failed == 2
    assert "all 2 candidate run(s) failed" in decision.rationale


def test_single_seeds_each_side_never_leak_nan() -> None:
    decision = decide([0.5], [1.0], minimize=True, confirm_seeds=1, baseline_seeds=1)
    assert decision.verdict == "close"  # better, but no spread is known: no evidence
    assert decision.p_value == 1.0
    stats = decision.stats()
    assert stats["delta_se"] is None
    assert "unknown" in decision.rationale
    json.dumps(stats, allow_nan=False)


@pytest.mark.parametrize(
    ("measured", "current", "rerun"),
    [("abc", "abc", False), ("abc", "def", True), (None, "def", True), ("abc", None, False)],
)
def test_needs_rerun_on_new_base(measured: str | None, current: str | None, rerun: bool) -> None:
    assert needs_rerun_on_new_base(measured, current) is rerun


def test_gate_decision_is_frozen() -> None:
    decision = decide([0.9], BASE, minimize=True, confirm_seeds=3, baseline_seeds=3)
    assert isinstance(decision, GateDecision)
    with pytest.raises(AttributeError):
        decision.verdict = "merge"  # type: ignore[misc]


# --- statistics ------------------------------------------------------------


@pytest.mark.parametrize("minimize", [True, False])
@pytest.mark.parametrize(("n_c", "n_b", "shift"), [(3, 3, 0.0), (3, 5, -0.7), (8, 4, 1.3)])
def test_welch_matches_scipy(n_c: int, n_b: int, shift: float, minimize: bool) -> None:
    rng = np.random.default_rng(n_c * 100 + n_b)
    for _ in range(20):
        cand = (rng.normal(shift, 1.0, n_c)).tolist()
        base = (rng.normal(0.0, 2.0, n_b)).tolist()
        ours = welch_one_sided(cand, base, minimize=minimize)
        alternative = "less" if minimize else "greater"
        ref = scipy_stats.ttest_ind(cand, base, equal_var=False, alternative=alternative)
        assert ours.t == pytest.approx(ref.statistic, rel=1e-9)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert ours.df == pytest.approx(ref.df, rel=1e-9)
        assert ours.delta == pytest.approx(np.mean(cand) - np.mean(base))


def test_welch_single_candidate_uses_the_baseline_spread() -> None:
    base = [1.0, 1.02, 0.98, 1.01]
    result = welch_one_sided([0.95], base, minimize=True)
    mean_b, std_b = mean_std(base)
    se = std_b * math.sqrt(1 + 1 / len(base))
    assert result.delta_se == pytest.approx(se)
    assert result.df == len(base) - 1
    assert result.p_value == pytest.approx(scipy_stats.t.cdf((0.95 - mean_b) / se, len(base) - 1))


def test_welch_single_baseline_uses_the_candidate_spread() -> None:
    cand = [0.9, 0.92, 0.91]
    result = welch_one_sided(cand, [1.0], minimize=True)
    assert result.df == 2
    assert 0.0 < result.p_value < 0.05


@pytest.mark.parametrize(
    ("cand", "base", "minimize", "p"),
    [
        ([1.0, 1.0], [2.0, 2.0], True, 0.0),
        ([1.0, 1.0], [2.0, 2.0], False, 1.0),
        ([2.0, 2.0], [2.0, 2.0], True, 0.5),
        ([1.0], [2.0, 2.0, 2.0], True, 0.0),
        ([1.0], [2.0], True, 1.0),
    ],
)
def test_welch_zero_variance(
    cand: list[float], base: list[float], minimize: bool, p: float
) -> None:
    result = welch_one_sided(cand, base, minimize=minimize)
    assert result.p_value == p
    assert not any(math.isnan(v) for v in (result.t, result.df, result.p_value, result.delta_se))


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy on a constant sample
def test_welch_zero_variance_on_one_side_is_a_plain_welch() -> None:
    cand, base = [0.5, 0.5, 0.5], [1.0, 1.1, 0.95]
    ours = welch_one_sided(cand, base, minimize=True)
    ref = scipy_stats.ttest_ind(cand, base, equal_var=False, alternative="less")
    assert ours.p_value == pytest.approx(ref.pvalue)


def test_mean_std() -> None:
    assert mean_std([2.0]) == (2.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert mean_std([0.1, 0.1, 0.1])[1] == 0.0  # exact for deterministic runs
    with pytest.raises(ValueError):
        mean_std([])
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, math.nan])
    with pytest.raises(ValueError, match="finite"):
        welch_one_sided([1.0, math.inf], [1.0, 2.0], minimize=True)


def test_decisions_benchmark_simulates_the_real_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's policies, on a small sample: greedy merges noise, the gate does not."""
    path = Path(__file__).resolve().parents[1] / "bench" / "decisions.py"
    spec = importlib.util.spec_from_file_location("bench_decisions", path)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    greedy_null, greedy_runs = bench.simulate(bench.greedy_policy, 0.0, 2000, seed=1)
    assert 0.45 < greedy_null < 0.55 and greedy_runs == 1.0
    gate = bench.gate_policy(3, 3)
    gate_null, gate_runs = bench.simulate(gate, 0.0, 300, seed=2)
    assert gate_null < 0.10
    assert 1.0 < gate_runs < 3.0  # only promising candidates get confirmation seeds
    gate_power, _ = bench.simulate(gate, 3.0, 200, seed=3)
    assert gate_power > 0.7
