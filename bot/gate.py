"""The merge gate: the bot's verdict on an experiment from its seeds and the baseline's.

Agents propose, code decides. Whatever an advisor says, a pull request merges
only when its improvement over the baseline survives a one-sided Welch test on
`confirm_seeds` seeds, or when a human with write access says `/merge` (and
that is recorded as an override, with the numbers it overrode).

A pure function of the metric values: the engine reads the runs, calls
`decide`, and records the decision with its rationale and `stats()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.stats import WelchResult, mean_std, welch_one_sided

Verdict = Literal["merge", "confirm", "close", "wait"]

DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why, with the numbers a results comment shows.

    `seeds_needed` is how many more candidate seeds a "confirm" asks for.
    `override_by` is the login of the human whose `/merge` this records.
    """

    verdict: Verdict
    rationale: str
    p_value: float | None
    delta: float | None
    delta_se: float | None
    n_candidate: int
    n_baseline: int
    seeds_needed: int = 0
    candidate_mean: float | None = None
    candidate_std: float | None = None
    baseline_mean: float | None = None
    baseline_std: float | None = None
    n_failed: int = 0
    alpha: float = DEFAULT_ALPHA
    override_by: str | None = None

    @property
    def actor(self) -> str:
        """The `decisions.actor` column: `gate`, or `human:<login>` for an override."""
        return f"human:{self.override_by}" if self.override_by else "gate"

    def stats(self) -> dict[str, Any]:
        """JSON-safe numbers for `decisions.stats` (an infinite spread becomes null)."""
        keys = (
            "p_value",
            "delta",
            "delta_se",
            "n_candidate",
            "n_baseline",
            "seeds_needed",
            "candidate_mean",
            "candidate_std",
            "baseline_mean",
            "baseline_std",
            "n_failed",
            "alpha",
        )
        return {key: _finite_or_none(getattr(self, key)) for key in keys}


def decide(
    candidate: Sequence[float | None],
    baseline: Sequence[float | None],
    *,
    minimize: bool,
    confirm_seeds: int,
    baseline_seeds: int,
    alpha: float = DEFAULT_ALPHA,
    human_override: str | None = None,
) -> GateDecision:
    """The verdict on a candidate's per-seed metrics against the current baseline's.

    A value of None (or NaN) is a seed that crashed or timed out. The rules, in
    order: a human override merges; a candidate with no finished seed closes (no
    baseline is needed to see a crash); a baseline still short of
    `baseline_seeds` waits; a candidate whose mean is not better closes; a
    better one with fewer than `confirm_seeds` seeds gets more seeds; then it
    merges only if p < alpha.
    """
    cand = _finite(candidate)
    base = _finite(baseline)
    n_failed = len(candidate) - len(cand)
    numbers = _Numbers.of(cand, base, minimize=minimize, alpha=alpha)
    common: dict[str, Any] = {
        "n_candidate": len(cand),
        "n_baseline": len(base),
        "n_failed": n_failed,
        "alpha": alpha,
        **numbers.fields(),
    }
    if human_override:
        return GateDecision(
            verdict="merge",
            rationale=f"Merged by @{human_override} (human override of the gate). "
            f"{numbers.describe()}",
            override_by=human_override,
            **common,
        )
    if not cand:
        what = f"all {n_failed} candidate run(s) failed" if n_failed else "no candidate runs"
        return GateDecision(verdict="close", rationale=f"Closed: {what}.", **common)
    if len(base) < baseline_seeds:
        return GateDecision(
            verdict="wait",
            rationale=f"Waiting for the baseline: {len(base)} of {baseline_seeds} seeds "
            f"measured on the current base. {numbers.describe()}",
            **common,
        )
    better = _mean_better(numbers.candidate_mean, numbers.baseline_mean, minimize=minimize)
    if not better:
        return GateDecision(
            verdict="close",
            rationale=f"Closed: the candidate is not better than the baseline. "
            f"{numbers.describe()}",
            **common,
        )
    if len(cand) < confirm_seeds:
        needed = confirm_seeds - len(cand)
        return GateDecision(
            verdict="confirm",
            rationale=f"Promising: better than the baseline on {len(cand)} seed(s); "
            f"running {needed} more to reach {confirm_seeds} before deciding. "
            f"{numbers.describe()}",
            seeds_needed=needed,
            **common,
        )
    assert numbers.welch is not None  # both sides have values by now
    if numbers.welch.p_value < alpha:
        return GateDecision(
            verdict="merge",
            rationale=f"Merge: significant improvement (p < {alpha:g}). {numbers.describe()}",
            **common,
        )
    return GateDecision(
        verdict="close",
        rationale=f"Closed: improvement within seed noise (p >= {alpha:g}). {numbers.describe()}",
        **common,
    )


def _mean_better(candidate: float | None, baseline: float | None, *, minimize: bool) -> bool:
    """Strictly better in the metric's direction; unknown is never better."""
    if candidate is None or baseline is None:
        return False
    return candidate < baseline if minimize else candidate > baseline


def needs_rerun_on_new_base(measured_base_sha: str | None, current_base_sha: str | None) -> bool:
    """True when results were measured on a base that is no longer the current one.

    After a winner merges, the comparison with the new baseline is what counts;
    a result from the old base (or from an unknown base) must be re-measured
    before it can merge. With no current base there is nothing to compare to.
    """
    if not current_base_sha:
        return False
    return measured_base_sha != current_base_sha


@dataclass(frozen=True)
class _Numbers:
    """The summary numbers of one comparison, whatever is available of them."""

    candidate: list[float]
    baseline: list[float]
    alpha: float
    candidate_mean: float | None
    candidate_std: float | None
    baseline_mean: float | None
    baseline_std: float | None
    welch: WelchResult | None

    @classmethod
    def of(cls, cand: list[float], base: list[float], *, minimize: bool, alpha: float) -> _Numbers:
        c_mean, c_std = mean_std(cand) if cand else (None, None)
        b_mean, b_std = mean_std(base) if base else (None, None)
        welch = welch_one_sided(cand, base, minimize=minimize) if cand and base else None
        return cls(cand, base, alpha, c_mean, c_std, b_mean, b_std, welch)

    def fields(self) -> dict[str, Any]:
        welch = self.welch
        return {
            "p_value": welch.p_value if welch else None,
            "delta": welch.delta if welch else None,
            "delta_se": welch.delta_se if welch else None,
            "candidate_mean": self.candidate_mean,
            "candidate_std": self.candidate_std,
            "baseline_mean": self.baseline_mean,
            "baseline_std": self.baseline_std,
        }

    def describe(self) -> str:
        parts = [
            f"candidate {_mean_pm(self.candidate_mean, self.candidate_std, len(self.candidate))}",
            f"baseline {_mean_pm(self.baseline_mean, self.baseline_std, len(self.baseline))}",
        ]
        if self.welch:
            w = self.welch
            parts.append(
                f"delta {'+' if w.delta >= 0 else ''}{_g4(w.delta)} ± {_num(w.delta_se)} (se)"
            )
            parts.append(f"one-sided Welch p = {w.p_value:.3g}, alpha = {self.alpha:g}")
        return "; ".join(parts) + "."


def _mean_pm(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "(no values)"
    if n == 1:
        return f"{_g4(mean)} (n=1)"
    return f"{_g4(mean)} ± {_num(std)} (n={n})"


def _g4(value: float) -> str:
    """Four significant digits, trailing zeros kept: 1.000, 0.9967, 1235."""
    return f"{value:#.4g}".rstrip(".")


def _num(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "unknown"
    return f"{value:.2g}"


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
