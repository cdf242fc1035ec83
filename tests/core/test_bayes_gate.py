"""The Bayesian gate (`bot.core.bayes`, `bot.core.gate.decide_bayes`): its decision table, its
false-merge budget on null ideas, and the learning of a lab's prior and noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.core import bayes
from bot.core.gate import BudgetSpent, ClosedOnBase, SeedRun, decide_bayes
from bot.problem import ProblemError, loads_problem

RANK = {"close": 0, "seed": 1, "merge": 2}


def known_prior(noise: float = 0.5) -> bayes.EffectPrior:
    """60 % null, 25 % harmful, 15 % helpful, |effect| about one to four noise units."""
    vague = bayes.EffectPrior.vague(noise * math.sqrt(2))
    grid = np.asarray(vague.grid)
    size = np.abs(grid) / noise
    weights = np.where((size >= 1) & (size <= 4), np.where(grid > 0, 0.15, 0.25), 0.0)
    return bayes.EffectPrior(
        0.6, vague.grid, tuple(weights / weights.sum()), noise, noise, learned_from=40
    )


PRIOR = known_prior()
TABLE = bayes.decision_table(PRIOR, 0.05)
UNIT_PRECISION = 1 / PRIOR.unit**2  # one seed's worth


@pytest.mark.parametrize("seeds", [1, 2, 3, 5, 7])
def test_the_table_is_monotone_in_the_mean(seeds: int) -> None:
    """More improvement never turns a merge into a close or one more seed, nor a seed into a close."""
    means = np.linspace(-2.0, 3.0, 51) * PRIOR.unit
    choices = [TABLE.choose(float(m), seeds * UNIT_PRECISION, seeds) for m in means]
    ranks = [RANK[c.action] for c in choices]
    assert ranks == sorted(ranks)
    assert ranks[0] == RANK["close"] and ranks[-1] >= RANK["seed"]
    assert seeds == 1 or ranks[-1] == RANK["merge"]  # one seed: the table may want a second
    values = [c.merge_value for c in choices]
    assert all(b >= a - 1e-9 for a, b in zip(values, values[1:], strict=False))
    chances = [c.posterior.positive for c in choices]
    assert all(b >= a - 1e-9 for a, b in zip(chances, chances[1:], strict=False))


@pytest.mark.parametrize(
    ("mean_units", "never", "ends_with"),
    [
        (2.5, "close", "merge"),  # clearly better: more precision only makes it surer
        (-1.0, "merge", "close"),  # clearly worse: never merges, however precise
    ],
)
def test_the_table_is_monotone_in_the_precision(
    mean_units: float, never: str, ends_with: str
) -> None:
    choices = [TABLE.choose(mean_units * PRIOR.unit, n * UNIT_PRECISION, n) for n in range(1, 9)]
    actions = [c.action for c in choices]
    assert never not in actions and actions[-1] == ends_with
    ranks = [RANK[a] for a in actions]
    assert ranks == (sorted(ranks) if ends_with == "merge" else sorted(ranks, reverse=True))
    sure = [c.posterior.positive for c in choices]
    assert sure == (sorted(sure) if mean_units > 0 else sorted(sure, reverse=True))


def test_the_eighth_seed_is_the_last() -> None:
    choice = TABLE.choose(0.6 * PRIOR.unit, 8 * UNIT_PRECISION, bayes.MAX_SEEDS)
    assert choice.action in ("merge", "close") and choice.seed_value == -math.inf


def test_the_price_is_where_a_new_idea_breaks_even() -> None:
    assert TABLE.price > 0 and abs(TABLE.root) < 0.05 * PRIOR.unit
    dearer = bayes.decision_table(PRIOR, 0.05, price=2 * TABLE.price)
    assert dearer.root < TABLE.root


def _null_lab_merges(rho: float, candidates: int, rng: np.random.Generator) -> tuple[int, int]:
    """Null candidates on one base through `decide_bayes`, one seed at a time: (merges, candidates).

    Seed luck (correlation `rho` between matched seeds) is the lab's; every run adds its own.
    """
    merges = 0
    spent = BudgetSpent()
    luck = rng.normal(size=8) * math.sqrt(rho)
    base = [SeedRun(s, "ok", 10 + luck[s] + rng.normal() * math.sqrt(1 - rho)) for s in range(5)]
    for _ in range(candidates):
        runs: list[SeedRun] = []
        while True:
            s = len(runs)
            runs.append(SeedRun(s, "ok", 10 + luck[s] + rng.normal() * math.sqrt(1 - rho)))
            verdict = decide_bayes(runs, base, minimize=True, baseline_seeds=5, spent=spent)
            if verdict.verdict != "confirm":
                break
        if verdict.verdict == "merge":
            merges += 1
            assert verdict.bayes is not None
            spent = BudgetSpent(
                spent.chance_false + verdict.bayes["chance_null_or_worse"], spent.merges + 1
            )
    return merges, candidates


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.89])
def test_null_ideas_merge_within_the_budget(rho: float) -> None:
    """Every idea null: merges (all false) stay under the budget's share of the candidates."""
    for lab in range(3):
        merges, n = _null_lab_merges(rho, 100, np.random.default_rng(int(rho * 100) + lab))
        assert merges / n <= 0.05


def test_a_clear_improvement_merges_and_explains_itself() -> None:
    base = [SeedRun(s, "ok", 1.0 + 0.01 * ((s * 7) % 5 - 2)) for s in range(5)]
    runs: list[SeedRun] = []
    for s in range(8):
        runs.append(SeedRun(s, "ok", (base[s].metric if s < 5 else 1.0) - 0.08))  # type: ignore[operator]
        verdict = decide_bayes(runs, base, minimize=True, baseline_seeds=5)
        if verdict.verdict != "confirm":
            break
    assert verdict.verdict == "merge"
    for words in ("chance that the effect is positive", "expected gain", "one more seed", "budget"):
        assert words in verdict.rationale
    stats = verdict.stats()
    assert stats["method"] == "bayes" and stats["bayes"]["chance_positive"] > 0.95
    assert stats["delta"] < 0  # the candidate is lower (better) than the base


def test_ideas_closed_on_the_base_re_measure_it_for_the_next_candidate() -> None:
    """A closed idea's runs on seeds the base never ran make a later candidate there better
    known (higher precision); a likely-harmful one counts less its effect; runs of another
    hardware class say nothing about this one's base."""
    base = [SeedRun(s, "ok", 1.0 + 0.01 * (s - 1), gpu_kind="a100") for s in range(3)]
    cand = [SeedRun(3, "ok", 0.9, gpu_kind="a100"), SeedRun(4, "ok", 0.9, gpu_kind="a100")]

    def precision_and_mean(*closed: ClosedOnBase) -> tuple[float, float]:
        bayes_numbers = decide_bayes(
            cand, base, minimize=True, baseline_seeds=3, closed=closed
        ).stats()["bayes"]
        return bayes_numbers["precision"], bayes_numbers["mean_improvement"]

    alone = precision_and_mean()
    null = ClosedOnBase([SeedRun(3, "ok", 1.0), SeedRun(4, "ok", 1.0)], 0.0, 1e-6)
    with_null = precision_and_mean(null)
    assert with_null[0] > 1.5 * alone[0]
    assert abs(with_null[1] - 0.1) < 0.02  # the base there is ~1.0, the candidate 0.9
    # the same runs from an idea that made things 0.2 worse: they say the base there is 0.8
    # (the belief weighs that against the base's level, 1.0, known from seeds 0-2)
    harmful = ClosedOnBase([SeedRun(3, "ok", 1.0), SeedRun(4, "ok", 1.0)], -0.2, 1e-6)
    assert -0.1 - 1e-9 < precision_and_mean(harmful)[1] < with_null[1] - 0.1
    unsure = ClosedOnBase([SeedRun(3, "ok", 1.0), SeedRun(4, "ok", 1.0)], 0.0, 1e-4)
    assert alone[0] < precision_and_mean(unsure)[0] < with_null[0]  # an unsure effect: less
    # a posterior far vaguer than these runs allow (judged against an older, vaguer belief)
    # would blur the base: it is left out
    vague = ClosedOnBase([SeedRun(3, "ok", 1.0), SeedRun(4, "ok", 1.0)], 0.0, 1.0)
    assert precision_and_mean(vague) == alone
    other_hw = ClosedOnBase([SeedRun(3, "ok", 1.0, gpu_kind="h100")], 0.0, 1e-6)
    assert precision_and_mean(other_hw) == alone


def test_failures_count_against_the_candidate_and_the_baseline_is_awaited() -> None:
    base = [SeedRun(s, "ok", 1.0 + 0.01 * s) for s in range(5)]
    waiting = decide_bayes([SeedRun(0, "ok", 0.5)], base[:2], minimize=True, baseline_seeds=5)
    assert (waiting.verdict, waiting.reason) == ("wait", "baseline")
    broken = [SeedRun(0, "crash"), SeedRun(1, "crash"), SeedRun(2, "ok", 0.5)]
    closed = decide_bayes(broken, base, minimize=True, baseline_seeds=5)
    assert (closed.verdict, closed.reason) == ("close", "failure rate")
    # a failed seed counts as no improvement on that seed
    one_fail = [
        SeedRun(0, "ok", 0.9),
        SeedRun(1, "timeout"),
        SeedRun(2, "ok", 1.0),
        SeedRun(3, "ok", 1.0),
        SeedRun(4, "ok", 1.0),
    ]
    verdict = decide_bayes(one_fail, base, minimize=True, baseline_seeds=5)
    assert verdict.n_failed == 1 and verdict.bayes is not None and verdict.bayes["seeds"] == 5


def test_the_budget_holds_back_a_merge_that_would_overspend_it() -> None:
    """A merge the table wants, in a lab that has spent its budget (0.5 expected false merges
    over 4 merges, against 2.5 % of 5 allowed while the prior is vague), buys a seed instead."""
    base = [SeedRun(s, "ok", 1.0 + 0.01 * ((s * 7) % 5 - 2)) for s in range(5)]
    runs = [SeedRun(s, "ok", float(base[s].metric or 0.0) - 0.05) for s in range(2)]
    free = decide_bayes(runs, base, minimize=True, baseline_seeds=5)
    spent = decide_bayes(runs, base, minimize=True, baseline_seeds=5, spent=BudgetSpent(0.5, 4))
    assert free.verdict == "merge" and free.bayes is not None and not free.bayes["over_budget"]
    assert (spent.verdict, spent.seeds_needed) == ("confirm", 1)
    assert spent.bayes is not None and spent.bayes["over_budget"]
    assert "this merge would overspend it" in spent.rationale


def test_a_closed_candidate_re_measures_the_base_less_its_effect() -> None:
    """A close is a measurement of the base: exactly a base run when the idea is surely null,
    shifted by the effect's posterior mean and vaguer by its variance otherwise, never more
    certain than a base run, and checked against brute force over the effect's posterior."""
    noise_var = 0.3**2
    belief = bayes.BaseBelief.fresh(4, 1.0, 0.5, 0.4).observe({1: 1.2}, noise_var)
    runs = {0: 1.5, 2: 0.7}
    surely_null = bayes.Posterior(0.0, 1.0, 0.0, 0.0, 1.0)
    same = belief.closed(runs, noise_var, surely_null, minimize=True)
    base_runs = belief.observe(runs, noise_var)
    assert np.allclose(same.mean, base_runs.mean) and np.allclose(same.cov, base_runs.cov)
    # a harmful idea (metric to minimise: its runs are high): the base is the runs less it
    prior = known_prior(0.3)
    mean, precision = bayes.evidence(belief, runs, noise_var, minimize=True)
    post = bayes.posterior(prior, mean, precision)
    after = belief.closed(runs, noise_var, post, minimize=True)
    grid = np.asarray((0.0, *prior.grid))
    weights = np.asarray((prior.null, *(np.asarray(prior.weights) * (1 - prior.null))))
    like = weights * np.exp(-0.5 * precision * (mean - grid) ** 2)
    like /= like.sum()
    shifted = [belief.observe({s: v + d for s, v in runs.items()}, noise_var) for d in grid]
    brute_mean = sum(w * b.mean for w, b in zip(like, shifted, strict=True))
    brute_cov = sum(
        w * (b.cov + np.outer(b.mean - brute_mean, b.mean - brute_mean))
        for w, b in zip(like, shifted, strict=True)
    )
    assert np.allclose(after.mean, brute_mean) and np.allclose(after.cov, brute_cov)
    assert all(after.variance(s) >= base_runs.variance(s) - 1e-12 for s in range(4))
    assert after.variance(3) < belief.variance(3)  # the shared level is better known


def test_the_prior_is_learned_from_a_known_mix() -> None:
    """400 simulated decided ideas of a known mix: the learned null and helpful shares are
    within tolerance of the truth."""
    rng = np.random.default_rng(22)
    noise = 0.5
    start = bayes.EffectPrior.vague(noise * math.sqrt(2))
    u = rng.random(400)
    size = rng.uniform(2.0, 4.0, 400) * noise
    effects = np.where(u < 0.6, 0.0, np.where(u < 0.85, -size, size))
    seeds = rng.integers(1, 5, 400)
    precision = seeds / (noise**2 * 2)
    means = effects + rng.normal(size=400) / np.sqrt(precision)
    learned = bayes.learn_prior(
        [(float(m), float(p), noise) for m, p in zip(means, precision, strict=True)], start
    )
    assert abs(learned.null - 0.6) < 0.1
    assert abs(learned.chance_helpful() - 0.15) < 0.06
    assert abs(learned.mean_helpful() - 1.5) < 0.4
    assert learned.learned_from == 400


def test_the_noise_is_learned_at_a_conservative_bound() -> None:
    rng = np.random.default_rng(5)
    noise = 0.3
    groups = []
    for _ in range(30):
        effect = rng.choice([0.0, 1.0, -2.0])
        luck = rng.normal(size=3)
        groups.append(
            [
                (luck[s] - effect + noise * rng.normal(), luck[s] + noise * rng.normal())
                for s in range(3)
            ]
        )
    learned = bayes.learn_noise(groups)
    assert learned is not None and noise * 0.95 < learned < noise * 1.4
    assert bayes.learn_noise(groups[:2]) is None  # too few pairs to say


@pytest.mark.parametrize("effect", [0.0, 1.5, -4.0, 20.0])
def test_two_seed_contrasts_measure_the_noise_whatever_the_ideas_do(effect: float) -> None:
    """Within one idea, the difference of its two matched-seed differences carries no effect:
    the same runs shifted by any effect give the same noise, at its conservative bound (the
    bench's "noise by design" rows buy these contrasts with a second seed per idea)."""
    rng = np.random.default_rng(11)
    noise = 0.3
    groups = []
    for _ in range(12):  # twelve ideas of two seeds: 12 degrees of freedom
        luck = 3.0 * rng.normal(size=2)  # seed luck far above the noise: it must cancel
        groups.append(
            [
                (luck[s] - effect + noise * rng.normal(), luck[s] + noise * rng.normal())
                for s in range(2)
            ]
        )
    centred = [[(c + effect, b) for c, b in group] for group in groups]
    learned = bayes.learn_noise(groups)
    assert learned is not None and learned == pytest.approx(bayes.learn_noise(centred))
    assert noise * 0.8 < learned < noise * 2.0  # the upper 80 % bound from 12 df
    # below the pooled minimum the first differences' spread answers instead, unless the
    # caller accepts fewer degrees of freedom
    few = groups[:7]
    assert bayes.learn_noise(few, min_df=7) == pytest.approx(
        bayes.learn_noise([[(c + effect, b) for c, b in group] for group in few], min_df=7)
    )
    assert bayes.learn_noise(few) != bayes.learn_noise(few, min_df=7)


@pytest.mark.parametrize(
    ("decided", "due"), [(20, False), (39, False), (40, True), (50, False), (60, True), (80, True)]
)
def test_the_prior_is_refitted_every_twenty_ideas_from_forty(decided: int, due: bool) -> None:
    assert bayes.due_for_learning(decided) is due


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('method = "vote"', "gate.method"),
        ("false_merges = 0", "gate.false_merges"),
        ("false_merges = 0.9", "gate.false_merges"),
        ("false_merges = true", "gate.false_merges"),
    ],
)
def test_the_gate_table_refuses_bad_methods_and_budgets(table: str, error: str) -> None:
    toml = '[metric]\nname = "loss"\ndirection = "minimize"\n[gate]\n' + table + "\n"
    with pytest.raises(ProblemError, match=error):
        loads_problem(toml)


def test_the_gate_table_reads_the_bayes_method() -> None:
    toml = '[metric]\nname = "loss"\ndirection = "minimize"\n[gate]\nmethod = "bayes"\nfalse_merges = 0.1\n'
    gate = loads_problem(toml).gate
    assert (gate.method, gate.false_merges) == ("bayes", 0.1)
    assert loads_problem('[metric]\nname = "loss"\n').gate.method == "test"
