"""The gate's screening, sequential confirmation and pooled paired variance; paired early stopping.

Table-driven where the rule is a threshold: each row is a case a lab meets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bot.core.early_stop import EarlyStopConfig
from bot.core.early_stop import decide as stop
from bot.core.gate import decide
from bot.core.stats import paired_one_sided, pooled_paired_spread


def runs(values: list[float], first_seed: int = 0) -> list[dict]:
    return [{"seed": first_seed + i, "status": "ok", "metric": v} for i, v in enumerate(values)]


BASE = runs([2.00, 2.10, 1.90])  # std 0.1


@pytest.mark.parametrize(
    ("name", "candidate", "margin", "verdict", "reason"),
    [
        ("screen off: barely ahead gets confirmation", [1.99], 0.0, "confirm", "confirming"),
        ("barely ahead is screened out", [1.99], 0.5, "close", "screened out"),
        ("ahead by more than the margin", [1.90], 0.5, "confirm", "confirming"),
        ("exactly at the margin is not ahead by it", [1.95], 0.5, "close", "screened out"),
        ("behind closes as before", [2.05], 0.5, "close", "not better"),
        # the screen is for the first seed: later seeds are judged by the test
        ("second seed: the test decides", [1.99, 2.09], 0.5, "confirm", "confirming"),
    ],
)
def test_screening_on_the_first_seed(name, candidate, margin, verdict, reason) -> None:
    d = decide(
        runs(candidate),
        BASE,
        minimize=True,
        confirm_seeds=3,
        baseline_seeds=3,
        screen_margin=margin,
    )
    assert (d.verdict, d.reason) == (verdict, reason), (name, d.rationale)


def test_screening_speaks_in_the_metric_direction() -> None:
    base = runs([0.80, 0.90, 0.70])  # accuracy, std 0.1
    ahead = decide(
        runs([0.86]), base, minimize=False, confirm_seeds=3, baseline_seeds=3, screen_margin=0.5
    )
    barely = decide(
        runs([0.81]), base, minimize=False, confirm_seeds=3, baseline_seeds=3, screen_margin=0.5
    )
    assert ahead.verdict == "confirm" and barely.reason == "screened out"
    assert "screening margin of 0.5" in barely.rationale


def test_sequential_confirmation_asks_one_seed_at_a_time_and_stops_on_futility() -> None:
    kw = dict(minimize=True, confirm_seeds=5, baseline_seeds=3, sequential=True)
    first = decide(runs([1.90]), BASE, **kw)
    assert (first.verdict, first.seeds_needed) == ("confirm", 1)
    assert "one at a time" in first.rationale
    # Rounds are not capped before confirm_seeds is reached: seed 4 of 5 still gets asked for.
    more = decide(runs([1.90, 2.00, 1.80, 1.95]), BASE, confirm_rounds=3, **kw)
    assert (more.verdict, more.seeds_needed) == ("confirm", 1)
    # No longer ahead on the mean of its matched seeds: closed without the rest.
    gone = decide(runs([1.95, 2.20]), BASE, confirm_rounds=1, **kw)
    assert gone.reason == "not better"
    batch = decide(runs([1.90]), BASE, **{**kw, "sequential": False})
    assert batch.seeds_needed == 4


def test_pooled_variance_gives_the_lab_s_noise_more_degrees_of_freedom() -> None:
    c, b = [1.0, 1.2, 0.9], [1.3, 1.4, 1.25]
    alone = paired_one_sided(c, b, minimize=True)
    pooled = paired_one_sided(c, b, minimize=True, pooled=(0.1, 40.0))
    assert alone.df == 2 and pooled.df == 42
    diffs = np.subtract(c, b)
    var = (2 * diffs.var(ddof=1) + 40 * 0.01) / 42
    t = diffs.mean() / math.sqrt(var / 3)
    assert math.isclose(pooled.p_value, scipy_stats.t.cdf(t, 42), rel_tol=1e-9)
    assert pooled.p_value < alone.p_value
    # A candidate noisier than the lab keeps its own variance's share.
    noisy = paired_one_sided([0.5, 1.9, 0.4], b, minimize=True, pooled=(0.1, 4.0))
    assert noisy.delta_se > 0.1 / math.sqrt(3)
    # Hostile or useless pooled numbers are ignored.
    for bad in ((math.nan, 10.0), (0.0, 10.0), (0.1, 0.0), (math.inf, 5.0)):
        assert paired_one_sided(c, b, minimize=True, pooled=bad).df == 2


def test_pooled_paired_spread_centres_each_comparison() -> None:
    rng = np.random.default_rng(3)
    groups = []
    for effect in rng.normal(0, 5, 40):  # big true effects must not count as noise
        base = rng.normal(0, 1, 3)
        groups.append(list(zip(base + effect + rng.normal(0, 0.2, 3), base, strict=True)))
    sd, df = pooled_paired_spread(groups)
    assert df == 80 and 0.15 < sd < 0.25
    assert pooled_paired_spread(groups[:4]) is None  # 8 df: too little
    assert pooled_paired_spread([[(1.0, math.nan), (2.0, 1.0)]] * 20) is None
    assert pooled_paired_spread([[(1.0, 1.0)]] * 50) is None  # single pairs carry no spread


def test_the_gate_merges_with_pooled_variance_where_two_df_cannot() -> None:
    base = runs([2.00, 2.10, 1.90])
    cand = runs([1.80, 1.95, 1.60])  # diffs -0.2, -0.15, -0.3: sd 0.076, t 4.6 on 2 df
    kw = dict(minimize=True, confirm_seeds=3, baseline_seeds=3, alpha=0.01)
    assert decide(cand, base, **kw).verdict == "close"
    merged = decide(cand, base, paired_spread=(0.08, 60.0), **kw)
    assert merged.verdict == "merge" and merged.method == "paired"


# -- paired early stopping ---------------------------------------------------------

XS = [i / 10 for i in range(1, 11)]
ON = EarlyStopConfig(enabled=True, after_fraction=0.3, band=1.0, patience=2)


def curve(offset: float, until: float = 0.5) -> list[list[float]]:
    return [[x, 1.5 + 3 * math.exp(-4 * x) + offset] for x in XS if x <= until + 1e-9]


SEEDS = [curve(-0.3, 1.0), curve(0.0, 1.0), curve(0.3, 1.0)]  # std 0.3 between seeds


@pytest.mark.parametrize(
    ("name", "run", "matched", "rho", "stop_"),
    [
        # A lucky seed (its baseline 0.3 below the mean) trailing its own baseline by 0.25:
        # against the mean it looks ahead; paired (rho 0.9: band 0.3 x 0.45) it is losing.
        ("paired catches a loser on a lucky seed", curve(-0.05), SEEDS[0], 0.9, True),
        ("unpaired misses it", curve(-0.05), None, 0.9, False),
        # An unlucky seed 0.25 behind the mean but 0.05 ahead of its own baseline.
        ("paired spares a winner on an unlucky seed", curve(0.25), SEEDS[2], 0.9, False),
        ("rho unknown: the widest paired band (sqrt 2)", curve(-0.05), SEEDS[0], None, False),
        ("a matched curve too short falls back", curve(-0.05), [[0.1, 9.0]], 0.9, False),
        ("a hostile rho is clipped", curve(-0.05), SEEDS[0], 7.0, True),
    ],
)
def test_paired_early_stopping(name, run, matched, rho, stop_) -> None:
    d = stop(run, SEEDS, 0.5, ON, matched=matched, seed_correlation=rho)
    assert d.stop is stop_, (name, d.reason)
    if matched is not None and d.stop:
        assert "its seed's baseline" in d.reason
