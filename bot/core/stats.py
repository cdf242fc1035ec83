"""Seed-noise statistics for the merge gate: means, spreads, a one-sided Welch test and
a one-sided paired test.

Pure functions over plain sequences of floats. Training runs are few (three to
five seeds), so the edge cases are the normal cases here: a single seed, runs
that are bit-for-bit deterministic, groups of different sizes. None of them may
turn into a NaN that would silently compare false and slip past the gate.

Candidate and baseline run the same seeds (same initialisation, same data
order), so much of one seed's luck is shared by both sides. The paired test
looks at the per-seed differences, where that shared part cancels; Welch
compares two independent samples and must pay for it twice.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.special import stdtr


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the spread of a single value is 0."""
    values = [float(x) for x in xs]
    if not values:
        raise ValueError("mean_std needs at least one value")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"mean_std needs finite values (a crashed run is no value): {values}")
    if min(values) == max(values):  # one value, or deterministic runs: exactly no spread
        return values[0], 0.0
    mean = statistics.fmean(values)
    variance = math.fsum((x - mean) ** 2 for x in values) / (len(values) - 1)
    return mean, math.sqrt(variance)


@dataclass(frozen=True)
class WelchResult:
    """A one-sided test (Welch, or paired) of "the candidate is better than the baseline".

    `delta` is candidate mean minus baseline mean (negative is better when
    minimizing); `p_value` is the probability of a delta at least this good if
    the candidate were no better. `delta_se` is `inf` and `p_value` 1.0 when no
    spread can be estimated at all (one value on each side).
    """

    t: float
    df: float
    p_value: float
    delta: float
    delta_se: float


def welch_one_sided(
    candidate: Sequence[float], baseline: Sequence[float], *, minimize: bool
) -> WelchResult:
    """One-sided Welch t-test in the direction of improvement.

    With one value on one side and several on the other, the single run's seed
    noise is taken to be the other side's: the test becomes the classic check of
    one new observation against a reference sample (df = n - 1). With no spread
    on either side (deterministic runs), any difference is certain: p is 0 or 1,
    and 0.5 for an exact tie.
    """
    if not candidate or not baseline:
        raise ValueError("welch_one_sided needs at least one value on each side")
    n_c, n_b = len(candidate), len(baseline)
    mean_c, std_c = mean_std(candidate)
    mean_b, std_b = mean_std(baseline)
    delta = mean_c - mean_b
    if n_c < 2 and n_b < 2:
        return WelchResult(t=0.0, df=0.0, p_value=1.0, delta=delta, delta_se=math.inf)
    if n_c < 2:
        var_c = var_b = std_b**2
        df = float(n_b - 1)
    elif n_b < 2:
        var_c = var_b = std_c**2
        df = float(n_c - 1)
    else:
        var_c, var_b = std_c**2, std_b**2
        df = _welch_df(var_c, n_c, var_b, n_b) if var_c or var_b else float(n_c + n_b - 2)
    se = math.sqrt(var_c / n_c + var_b / n_b)
    improvement = -delta if minimize else delta
    if se == 0.0:
        p = 0.0 if improvement > 0 else 1.0 if improvement < 0 else 0.5
        t_stat = math.copysign(math.inf, delta) if delta else 0.0
        return WelchResult(t=t_stat, df=float(n_c + n_b - 2), p_value=p, delta=delta, delta_se=0.0)
    t_stat = delta / se
    # stdtr is Student's t CDF; the upper tail is the lower tail of -t by symmetry.
    p = float(stdtr(df, t_stat if minimize else -t_stat))
    return WelchResult(t=t_stat, df=df, p_value=p, delta=delta, delta_se=se)


def _welch_df(var_c: float, n_c: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom."""
    a, b = var_c / n_c, var_b / n_b
    denominator = a**2 / (n_c - 1) + b**2 / (n_b - 1)
    if denominator == 0.0:  # spreads so small their squares underflow
        return float(n_c + n_b - 2)
    return (a + b) ** 2 / denominator


# Fewer degrees of freedom than this say too little about a lab's paired noise.
MIN_POOLED_DF = 10


def paired_one_sided(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    minimize: bool,
    pooled: tuple[float, float] | None = None,
) -> WelchResult:
    """One-sided paired t-test of "the candidate is better" on matched seeds.

    `candidate[i]` and `baseline[i]` are the same seed. The test is a one-sample
    t-test of the differences (df = n - 1). One pair gives no spread (p = 1,
    `delta_se` inf); differences without any spread make any improvement certain
    (p 0 or 1, 0.5 for an exact tie), as in `welch_one_sided`.

    `pooled` is (std, df) of paired differences the lab measured in earlier
    comparisons (`pooled_paired_spread`). The variance is then pooled with this
    candidate's own (weighted by degrees of freedom, df added up): on three
    seeds alone the t-test has 2 df and needs t > 2.92, while the lab already
    knows its seed noise. A candidate that is noisier than the lab still shows
    it through its own share of the variance.
    """
    if len(candidate) != len(baseline):
        raise ValueError("paired_one_sided needs one baseline value per candidate value")
    if not candidate:
        raise ValueError("paired_one_sided needs at least one pair")
    diffs = [float(c) - float(b) for c, b in zip(candidate, baseline, strict=True)]
    mean_d, std_d = mean_std(diffs)
    n = len(diffs)
    if n < 2:
        return WelchResult(t=0.0, df=0.0, p_value=1.0, delta=mean_d, delta_se=math.inf)
    df = float(n - 1)
    if pooled is not None and pooled[1] > 0 and math.isfinite(pooled[0]) and pooled[0] > 0:
        sd, pooled_df = pooled
        std_d = math.sqrt(((n - 1) * std_d**2 + pooled_df * sd**2) / (n - 1 + pooled_df))
        df += pooled_df
    se = std_d / math.sqrt(n)
    improvement = -mean_d if minimize else mean_d
    if se == 0.0:
        p = 0.0 if improvement > 0 else 1.0 if improvement < 0 else 0.5
        t_stat = math.copysign(math.inf, mean_d) if mean_d else 0.0
        return WelchResult(t=t_stat, df=df, p_value=p, delta=mean_d, delta_se=0.0)
    t_stat = mean_d / se
    p = float(stdtr(df, t_stat if minimize else -t_stat))
    return WelchResult(t=t_stat, df=df, p_value=p, delta=mean_d, delta_se=se)


def pooled_paired_spread(
    groups: Sequence[Sequence[tuple[float, float]]], *, min_df: int = MIN_POOLED_DF
) -> tuple[float, float] | None:
    """The std of a paired difference (candidate minus its seed's baseline), pooled, and its df.

    Each group holds (candidate, baseline) values of one earlier comparison, one
    pair per shared seed; each group's differences are centred on their own
    mean, so an experiment's true effect is not counted as noise. None below
    `min_df` degrees of freedom: too little to lean on.
    """
    ss = 0.0
    df = 0
    for group in groups:
        diffs = [float(c) - float(b) for c, b in group]
        if len(diffs) < 2 or not all(math.isfinite(d) for d in diffs):
            continue
        mean = statistics.fmean(diffs)
        ss += math.fsum((d - mean) ** 2 for d in diffs)
        df += len(diffs) - 1
    if df < min_df or ss <= 0.0:
        return None
    return math.sqrt(ss / df), float(df)


# Fewer matched pairs than this say too little about a lab's seed correlation.
MIN_CORRELATION_PAIRS = 20


def pooled_seed_correlation(
    groups: Sequence[Sequence[tuple[float, float]]], *, min_pairs: int = MIN_CORRELATION_PAIRS
) -> float | None:
    """The correlation of matched seeds, pooled over several comparisons.

    Each group holds (candidate, baseline) values of one comparison, one pair per
    shared seed. Each group is centred on its own means first, so an experiment's
    true effect (a shift of one side) does not count as correlation. None when
    there are fewer than `min_pairs` pairs in groups of two or more, or no spread.
    """
    sxy = sxx = syy = 0.0
    pairs = 0
    for group in groups:
        if len(group) < 2:
            continue
        xs = [float(x) for x, _ in group]
        ys = [float(y) for _, y in group]
        if not all(math.isfinite(v) for v in (*xs, *ys)):
            continue
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxy += math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
        sxx += math.fsum((x - mx) ** 2 for x in xs)
        syy += math.fsum((y - my) ** 2 for y in ys)
        pairs += len(group)
    if pairs < min_pairs or sxx <= 0.0 or syy <= 0.0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))
