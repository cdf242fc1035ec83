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

from bot.core.gate import GateDecision, SeedRun, decide, needs_rerun_on_new_base
from bot.core.stats import mean_std, paired_one_sided, pooled_seed_correlation, welch_one_sided

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
    ("a crash counts: 1 of 3 is above the bound", [0.90, None, 0.91], BASE, True, {}, "close", 0),
    ("NaN is a crash", [0.90, math.nan, 0.91], BASE, True, {}, "close", 0),
    (
        "a tolerated crash uses up its seed",
        [0.90, None, 0.91],
        BASE,
        True,
        {"max_failure_rate": 0.5},
        "close",  # the crash counts as no improvement: 0.90, 1.0, 0.91 is within noise
        0,
    ),
    (
        "a tolerated crash is not replaced by a confirmation seed",
        [0.90, None],
        BASE,
        True,
        {"max_failure_rate": 0.5},
        "confirm",
        1,
    ),
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
    assert decision.n_failed == len(candidate) - decision.n_candidate
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
    assert "all 2 candidate run(s) failed (2 crash)" in decision.rationale


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


# --- the honest gate: failures, pairing, hardware, bounds -----------------------


def runs(values: list[float | str | None], *, gpu: str = "", start: int = 0) -> list[SeedRun]:
    """Seeded runs: a float is an ok run, a status string a run without a metric."""
    out = []
    for seed, value in enumerate(values, start=start):
        if isinstance(value, str):
            out.append(SeedRun(seed, value, None, gpu))
        elif value is None:
            out.append(SeedRun(seed, "crash", None, gpu))
        else:
            out.append(SeedRun(seed, "ok", value, gpu))
    return out


# Seed luck shared by both sides: seed 3 is a bad seed for everyone.
SHARED = [0.00, 0.03, -0.02, 0.08, -0.04]
BASE5 = [1.0 + s for s in SHARED]
CAND5_SMALL = [
    0.99 + s + e for s, e in zip(SHARED, [0.001, -0.002, 0.002, -0.001, 0.0], strict=True)
]
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"

# (name, candidate, baseline, extra kwargs, verdict, reason, seeds_needed)
HONEST = [
    (
        "5 good seeds plus 15 crashes close on the failure rate",
        runs([0.90, 0.91, 0.89, 0.90, 0.91] + [None] * 15),
        runs([1.00, 1.01, 0.99, 1.00, 1.01]),
        {},
        "close",
        "failure rate",
        0,
    ),
    (
        "1 good seed plus 20 crashes closes, never asks for confirmation",
        runs([0.90] + [None] * 20),
        runs([1.00, 1.01, 0.99, 1.00, 1.01]),
        {},
        "close",
        "failure rate",
        0,
    ),
    (
        "invalid and timeout count as failures",
        runs([0.90, "invalid", "timeout", 0.91, 0.9]),
        runs([1.00, 1.01, 0.99, 1.00, 1.01]),
        {},
        "close",
        "failure rate",
        0,
    ),
    (
        "one failure in five is within the default bound and counted",
        runs([0.90, "crash", 0.89, 0.90, 0.91]),
        runs([1.00, 1.01, 0.99, 1.00, 1.01]),
        {"confirm_seeds": 5},
        "merge",
        "significant",
        0,
    ),
    (
        "a stricter bound closes the same candidate",
        runs([0.90, "crash", 0.89, 0.90, 0.91]),
        runs([1.00, 1.01, 0.99, 1.00, 1.01]),
        {"confirm_seeds": 5, "max_failure_rate": 0.1},
        "close",
        "failure rate",
        0,
    ),
    (
        "cancelled runs never count: not a failure, not a seed",
        runs([0.90, "cancelled", "cancelled", "cancelled"]),
        runs([1.00, 1.01, 0.99]),
        {},
        "confirm",
        "confirming",
        2,
    ),
    (
        "only cancelled runs: no measurement",
        runs(["cancelled", "cancelled"]),
        runs([1.00, 1.01, 0.99]),
        {},
        "close",
        "no measurement",
        0,
    ),
    (
        "stopped early everywhere closes as not measured better",
        runs(["stopped-early", "stopped-early"]),
        runs([1.00, 1.01, 0.99]),
        {},
        "close",
        "no measurement",
        0,
    ),
    (
        "stopped early counts as not better (no improvement on that seed)",
        runs([0.98, 0.985, "stopped-early"]),
        runs([1.00, 1.01, 0.99]),
        {},
        "close",
        "within noise",
        0,
    ),
    (
        "stopped early is not a failure",
        runs([0.90, "stopped-early", 0.89, 0.90, 0.91]),
        runs([1.00, 1.01, 0.99, 1.00, 1.01]),
        {"confirm_seeds": 5, "max_failure_rate": 0.0},
        "merge",
        "significant",
        0,
    ),
    (
        "paired: a small effect under shared seed luck merges",
        runs(CAND5_SMALL),
        runs(BASE5),
        {"confirm_seeds": 5, "baseline_seeds": 5},
        "merge",
        "significant",
        0,
    ),
    (
        "Welch on the same values (no seeds) cannot see it",
        CAND5_SMALL,
        BASE5,
        {"confirm_seeds": 5, "baseline_seeds": 5},
        "close",
        "within noise",
        0,
    ),
    (
        "unmatched seeds fall back to Welch",
        runs(CAND5_SMALL, start=10),
        runs(BASE5),
        {"confirm_seeds": 5, "baseline_seeds": 5},
        "close",
        "within noise",
        0,
    ),
    (
        "a lab whose seeds do not correlate uses Welch",
        runs(CAND5_SMALL),
        runs(BASE5),
        {"confirm_seeds": 5, "baseline_seeds": 5, "seed_correlation": 0.05},
        "close",
        "within noise",
        0,
    ),
    (
        "the first seed is judged against its own baseline seed",
        runs([1.075]),  # worse than the baseline mean 1.01, better than seed 0's 1.0 + 0.08
        runs(BASE5, start=0)[3:4] + runs(BASE5)[:3] + runs(BASE5)[4:],
        {"confirm_seeds": 5, "baseline_seeds": 5},
        "close",
        "not better",
        0,
    ),
    (
        "hardware: only a baseline on other hardware waits for one on ours",
        runs([0.90], gpu=H100),
        runs([1.00, 1.01, 0.99], gpu=A100),
        {},
        "wait",
        "baseline hardware",
        0,
    ),
    (
        "hardware: the baseline of our class is used, the other is ignored",
        runs([0.90, 0.91, 0.89], gpu=H100),
        runs([1.00, 1.01, 0.99], gpu=H100) + runs([0.5, 0.5, 0.5], gpu=A100),
        {},
        "merge",
        "significant",
        0,
    ),
    (
        "hardware: too few baseline seeds of our class wait",
        runs([0.90, 0.91, 0.89], gpu=H100),
        runs([1.00], gpu=H100) + runs([1.0, 1.01, 0.99], gpu=A100, start=1),
        {},
        "wait",
        "baseline",
        0,
    ),
    (
        "hardware unknown (older runs) compares with every baseline run",
        runs([0.90, 0.91, 0.89]),
        runs([1.00, 1.01, 0.99], gpu=A100),
        {},
        "merge",
        "significant",
        0,
    ),
    (
        "confirmation capped: after the last round it is decided on what it has",
        runs([0.90, 0.91]),
        runs([1.00, 1.01, 0.99]),
        {"confirm_rounds": 2},
        "merge",
        "significant",
        0,
    ),
    (
        "confirmation below the cap asks for more",
        runs([0.90, 0.91]),
        runs([1.00, 1.01, 0.99]),
        {"confirm_rounds": 1},
        "confirm",
        "confirming",
        1,
    ),
]


@pytest.mark.parametrize(
    ("candidate", "baseline", "extra", "verdict", "reason", "needed"),
    [row[1:] for row in HONEST],
    ids=[row[0] for row in HONEST],
)
def test_honest_gate_table(
    candidate: list,
    baseline: list,
    extra: dict,
    verdict: str,
    reason: str,
    needed: int,
) -> None:
    kwargs = {"confirm_seeds": 3, "baseline_seeds": 3, **extra}
    decision = decide(candidate, baseline, minimize=True, **kwargs)
    assert (decision.verdict, decision.reason) == (verdict, reason), decision.rationale
    assert decision.seeds_needed == needed
    json.dumps(decision.stats(), allow_nan=False)


def test_failure_close_states_the_reason_and_counts() -> None:
    decision = decide(
        runs([0.90, 0.91, 0.89, 0.90, 0.91] + [None] * 15),
        runs([1.00, 1.01, 0.99, 1.00, 1.01]),
        minimize=True,
        confirm_seeds=5,
        baseline_seeds=5,
    )
    assert decision.n_failed == 15 and decision.failure_rate == 0.75
    assert "15 of 20 candidate seeds failed (75%; 15 crash)" in decision.rationale
    assert "above the bound of 25%" in decision.rationale


def test_rationale_says_which_test_was_used() -> None:
    paired = decide(
        runs(CAND5_SMALL), runs(BASE5), minimize=True, confirm_seeds=5, baseline_seeds=5
    )
    assert paired.method == "paired" and paired.n_matched == 5
    assert "one-sided paired t-test on 5 matched seeds" in paired.rationale
    ref = scipy_stats.ttest_rel(CAND5_SMALL, BASE5, alternative="less")
    assert paired.p_value == pytest.approx(ref.pvalue)
    welch = decide(CAND5_SMALL, BASE5, minimize=True, confirm_seeds=5, baseline_seeds=5)
    assert welch.method == "welch" and "one-sided Welch test (no matched seeds)" in welch.rationale
    low = decide(
        runs(CAND5_SMALL),
        runs(BASE5),
        minimize=True,
        confirm_seeds=5,
        baseline_seeds=5,
        seed_correlation=0.05,
    )
    assert low.method == "welch" and "correlate at 0.05" in low.rationale
    extra = decide(
        runs(CAND5_SMALL) + runs([0.95, 0.96], start=7),
        runs(BASE5),
        minimize=True,
        confirm_seeds=5,
        baseline_seeds=5,
    )
    assert extra.method == "paired"
    assert "2 unmatched candidate seed(s) left out" in extra.rationale


def test_failed_matched_seed_enters_the_paired_test_as_no_improvement() -> None:
    cand = runs([0.90, "crash", 0.89, 0.90, 0.91])
    base = runs([1.00, 1.01, 0.99, 1.00, 1.01])
    decision = decide(cand, base, minimize=True, confirm_seeds=5, baseline_seeds=5)
    diffs = [-0.10, 0.0, -0.10, -0.10, -0.10]  # the crashed seed: its baseline value
    ref = scipy_stats.ttest_1samp(diffs, 0.0, alternative="less")
    assert decision.method == "paired"
    assert decision.p_value == pytest.approx(ref.pvalue)
    assert decision.delta == pytest.approx(np.mean(diffs))
    assert "1 failed seed(s) (1 crash) count as no improvement" in decision.rationale


def test_hardware_wait_names_the_class() -> None:
    decision = decide(
        runs([0.90], gpu=H100),
        runs([1.00, 1.01, 0.99], gpu=A100),
        minimize=True,
        confirm_seeds=3,
        baseline_seeds=3,
    )
    assert decision.baseline_hardware == H100
    assert f"`{H100}`" in decision.rationale and f"`{A100}`" in decision.rationale


def test_seed_run_from_a_runs_row() -> None:
    row = {
        "seed": 2,
        "status": "ok",
        "metric": 1.5,
        "gpu_kind": "cpu",
        "host": "",
        "student": "fern",
    }
    assert SeedRun.coerce(row) == SeedRun(2, "ok", 1.5, "cpu", "fern")
    assert SeedRun.coerce({"seed": 1, "status": "ok", "metric": None}).outcome == "failed"
    assert SeedRun.coerce({"seed": 1, "status": "weird"}).outcome == "failed"
    assert SeedRun.coerce(math.inf).outcome == "failed"
    assert SeedRun.coerce({"seed": 0, "status": "refused"}).outcome == "ignored"


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


@pytest.mark.parametrize("minimize", [True, False])
def test_paired_matches_scipy(minimize: bool) -> None:
    rng = np.random.default_rng(7)
    for n in (2, 3, 5, 8):
        shared = rng.normal(0.0, 1.0, n)
        cand = (shared + rng.normal(-0.3, 0.3, n)).tolist()
        base = (shared + rng.normal(0.0, 0.3, n)).tolist()
        ours = paired_one_sided(cand, base, minimize=minimize)
        ref = scipy_stats.ttest_rel(cand, base, alternative="less" if minimize else "greater")
        assert ours.t == pytest.approx(ref.statistic, rel=1e-9)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert ours.df == n - 1


def test_paired_edge_cases() -> None:
    one = paired_one_sided([0.5], [1.0], minimize=True)
    assert one.p_value == 1.0 and math.isinf(one.delta_se)
    same = paired_one_sided([0.5, 1.5], [1.0, 2.0], minimize=True)  # identical differences
    assert same.p_value == 0.0 and same.delta_se == 0.0
    tie = paired_one_sided([1.0, 2.0], [1.0, 2.0], minimize=True)
    assert tie.p_value == 0.5
    with pytest.raises(ValueError):
        paired_one_sided([1.0], [1.0, 2.0], minimize=True)


def test_pooled_seed_correlation() -> None:
    rng = np.random.default_rng(3)
    groups = []
    for effect in (0.0, -0.5, 2.0, 0.3):  # each experiment's own shift must not count
        shared = rng.normal(0.0, 1.0, 5)
        groups.append(
            list(
                zip(
                    (shared + effect + rng.normal(0, 0.3, 5)).tolist(), shared.tolist(), strict=True
                )
            )
        )
    r = pooled_seed_correlation(groups)
    assert r is not None and r > 0.8
    assert pooled_seed_correlation(groups[:1]) is None  # five pairs are too few
    assert pooled_seed_correlation([[(1.0, 2.0)]] * 20) is None  # single pairs say nothing
    flat = [[(1.0, 1.0), (1.0, 2.0)]] * 10  # no spread on one side
    assert pooled_seed_correlation(flat) is None


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
    path = Path(__file__).resolve().parents[2] / "bench" / "decisions.py"
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
    # Seed-correlated noise: the paired gate sees a 1-sigma effect the Welch gate misses.
    paired = bench.gate_policy(5, 5)
    welch = bench.gate_policy(5, 5, paired=False)
    paired_power, _ = bench.simulate(paired, 1.0, 300, seed=4, rho=0.89)
    welch_power, _ = bench.simulate(welch, 1.0, 300, seed=4, rho=0.89)
    assert paired_power > 0.85 and welch_power < 0.6
    # Failing seeds count: a null candidate that crashes often never merges.
    null_merges, _ = bench.simulate(paired, 0.0, 300, seed=5, rho=0.89, fail=0.5)
    assert null_merges < 0.02
