"""How often does a merge policy merge noise, and how often does it catch a real win?

Simulates experiments whose true effect is known and runs each through a merge
policy exactly as the bot would: kohai's gate (`bot.core.gate.decide`: one seed
first, confirmation seeds for a promising candidate, then a one-sided test
against a baseline of `baseline_seeds` seeds) and, for comparison, greedy
keep-if-better on one seed against a one-seed baseline (the autoresearch /
senpai policy) and the unpaired Welch gate kohai used before (failed seeds
replaced, not counted).

The seed noise has standard deviation 1 (sigma) per run and is correlated
between matched seeds: a run's noise is a per-seed component shared by every
run of that seed (same initialisation, same data order; variance `rho`) plus
its own (variance `1 - rho`). Candidate seeds are 0, 1, 2, ... as the bot picks
them; the baseline runs seeds 0 .. baseline_seeds - 1. A candidate seed fails
(crash, timeout, invalid) with probability `--fail` whatever the effect.

Reports, per correlation and policy: the false-merge rate when the true effect
is zero, the power (merge rate) at true effects of 0.5, 1 and 2 sigma, the
training runs a null candidate costs on average (failed ones included), and
power per run: true merges per 100 candidate runs over the lab benchmark's mix
of ideas (60 % null, 25 % harmful at -1 sigma, 15 % helpful, spread evenly over
0.5, 1 and 2 sigma). The RNG seed is fixed, so the table is reproducible.

`--levers` compares the gate's opt-in levers (`[gate]` in kohai.toml) one at a
time and together: first-seed screening, sequential confirmation, and the lab's
pooled paired spread (from the same earlier comparisons that give its seed
correlation).

Usage: python bench/decisions.py [--experiments N] [--seed S] [--fail P] [--rho R ...]
       [--levers]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bot.core import bayes
from bot.core.gate import SeedRun, decide, decide_bayes
from bot.core.stats import pooled_paired_spread, pooled_seed_correlation
from bot.problem import Problem

EFFECTS = (0.0, 0.5, 1.0, 2.0)  # true improvement, in units of the seed noise sigma
HARMFUL = -1.0  # a harmful idea of the lab mix
# The lab benchmark's mix of ideas (bench/lab.py): shares of null, harmful, helpful.
MIX_NULL, MIX_HARMFUL, MIX_HELPFUL = 0.60, 0.25, 0.15
FIRST_SEEDS = 1  # `train.seeds`: seeds of an ordinary run before any confirmation
# Matched-seed correlation of val_bpb on the reference problem (charlm, 150 steps,
# seeds 0-5, learning rate 3e-3 against 2e-3): 0.89.
CHARLM_RHO = 0.89
RHOS = (0.0, 0.5, CHARLM_RHO)
# The lab's estimate of the correlation comes from its earlier comparisons: here,
# eight earlier experiments of five matched seeds each (40 pairs).
HISTORY_COMPARISONS = 8
HISTORY_SEEDS = 5
TARGET_FALSE_MERGE = 0.05
TARGET_POWER_1 = 0.80
TARGET_POWER_2 = 0.95
TARGET_RUNS = 3.0


@dataclass(frozen=True)
class Outcome:
    merged: bool
    candidate_runs: int


@dataclass(frozen=True)
class World:
    """One simulated experiment's noise: the true effect, seed correlation, failure rate."""

    effect: float
    rho: float
    fail: float
    rng: np.random.Generator
    history: int = HISTORY_COMPARISONS

    def __post_init__(self) -> None:
        object.__setattr__(self, "_shared", {})

    def shared(self, seed: int) -> float:
        cache: dict[int, float] = self._shared  # type: ignore[attr-defined]
        if seed not in cache:
            cache[seed] = float(self.rng.normal(0.0, np.sqrt(self.rho)))
        return cache[seed]

    def run(self, seed: int, mean: float, *, may_fail: bool) -> SeedRun:
        if may_fail and self.rng.random() < self.fail:
            return SeedRun(seed, "crash")
        own = float(self.rng.normal(0.0, np.sqrt(1.0 - self.rho)))
        return SeedRun(seed, "ok", mean + self.shared(seed) + own)

    def baseline(self, n: int) -> list[SeedRun]:
        return [self.run(s, 0.0, may_fail=False) for s in range(n)]

    def lab_history(self) -> list[list[tuple[float, float]]]:
        """The lab's earlier comparisons: (candidate, baseline) per matched seed."""
        cov = [[1.0, self.rho], [self.rho, 1.0]]
        return [
            [tuple(p) for p in self.rng.multivariate_normal([0.0, 0.0], cov, HISTORY_SEEDS)]
            for _ in range(self.history)
        ]

    def lab_correlation(self) -> float | None:
        """What the lab has learnt of the seed correlation from earlier comparisons."""
        return pooled_seed_correlation(self.lab_history())

    def candidate(self, seeds: range) -> list[SeedRun]:
        # minimize: an improvement of `effect` sigma lowers the metric
        return [self.run(s, -self.effect, may_fail=True) for s in seeds]


Policy = Callable[[World], Outcome]


def gate_policy(
    confirm_seeds: int,
    baseline_seeds: int,
    alpha: float = 0.05,
    *,
    paired: bool = True,
    max_failure_rate: float | None = None,
    screen: float = 0.0,
    sequential: bool = False,
    pooled: bool = False,
) -> Policy:
    """kohai: a first run, confirmation seeds if it looks better, then the gate's test.

    `screen`, `sequential` and `pooled` are the `[gate]` levers, as
    `bot.engine.evidence.gate_decision` passes them.
    """
    extra: dict[str, object] = {}
    if max_failure_rate is not None:
        extra["max_failure_rate"] = max_failure_rate

    def run(world: World) -> Outcome:
        history = world.lab_history() if paired else []
        correlation = pooled_seed_correlation(history) if paired else None
        spread = pooled_paired_spread(history) if pooled else None
        baseline = world.baseline(baseline_seeds)
        candidate = world.candidate(range(FIRST_SEEDS))
        rounds = 0
        while True:
            decision = decide(
                candidate,
                baseline,
                minimize=True,
                confirm_seeds=confirm_seeds,
                baseline_seeds=baseline_seeds,
                alpha=alpha,
                confirm_rounds=rounds,
                pairing=paired,
                seed_correlation=correlation,
                screen_margin=screen,
                sequential=sequential,
                paired_spread=spread,
                **extra,  # type: ignore[arg-type]
            )
            if decision.verdict != "confirm":
                return Outcome(decision.verdict == "merge", len(candidate))
            rounds += 1
            start = len(candidate)
            candidate += world.candidate(range(start, start + decision.seeds_needed))

    return run


def bayes_policy(*, known_prior: bool, false_merges: float = 0.05) -> Policy:
    """The Bayesian gate (`[gate] method = "bayes"`): one seed at a time until it decides.

    `known_prior`: the prior is the lab mix of ideas and the noise split is the world's (what
    a lab that has learned its prior knows); otherwise the vague start a lab has before 40
    decided ideas, from a seed spread measured as 1 sigma (its budget halved, as the gate
    does until it has learned).
    """

    def run(world: World) -> Outcome:
        if known_prior:
            prior = _mix_prior(world.rho)
        else:
            prior = bayes.EffectPrior.vague(1.0)
        baseline = world.baseline(5)
        candidate = world.candidate(range(FIRST_SEEDS))
        while True:
            decision = decide_bayes(
                candidate,
                baseline,
                minimize=True,
                baseline_seeds=5,
                prior=prior,
                false_merges=false_merges,
            )
            if decision.verdict != "confirm":
                return Outcome(decision.verdict == "merge", len(candidate))
            candidate += world.candidate(range(len(candidate), len(candidate) + 1))

    return run


@functools.lru_cache(maxsize=8)
def _mix_prior(rho: float) -> bayes.EffectPrior:
    """The lab mix (60 % null, 25 % harmful at -1 sigma, 15 % helpful at 0.5, 1, 2 sigma)."""
    noise = max(float(np.sqrt(1.0 - rho)), 0.05)
    vague = bayes.EffectPrior.vague(1.0)
    grid = np.asarray(vague.grid)
    weights = np.zeros(len(grid))
    for effect, share in ((HARMFUL, MIX_HARMFUL), *((e, MIX_HELPFUL / 3) for e in EFFECTS[1:])):
        weights[int(np.argmin(np.abs(grid - effect)))] += share
    return bayes.EffectPrior(
        MIX_NULL,
        vague.grid,
        tuple(float(w) for w in weights / weights.sum()),
        noise,
        float(np.sqrt(max(rho, 0.0025))),
        learned_from=1,
    )


def welch_replace_policy(confirm_seeds: int, baseline_seeds: int, alpha: float = 0.05) -> Policy:
    """The earlier gate: unpaired Welch, failed seeds dropped and replaced by new ones."""

    def run(world: World) -> Outcome:
        baseline = [r.value for r in world.baseline(baseline_seeds)]
        runs = world.candidate(range(FIRST_SEEDS))
        while True:
            values = [r.value for r in runs if r.value is not None]
            decision = decide(
                values or [None] * len(runs),
                baseline,
                minimize=True,
                confirm_seeds=confirm_seeds,
                baseline_seeds=baseline_seeds,
                alpha=alpha,
                pairing=False,
                max_failure_rate=1.0,
                max_confirm_rounds=10**6,
            )
            if decision.verdict != "confirm":
                return Outcome(decision.verdict == "merge", len(runs))
            start = len(runs)
            runs += world.candidate(range(start, start + decision.seeds_needed))

    return run


def greedy_policy(world: World) -> Outcome:
    """Keep if better: one candidate seed against one baseline seed, no test."""
    baseline = world.baseline(1)[0]
    candidate = world.candidate(range(1))[0]
    if candidate.value is None or baseline.value is None:
        return Outcome(False, 1)
    return Outcome(bool(candidate.value < baseline.value), 1)


def simulate(
    policy: Policy,
    effect: float,
    experiments: int,
    seed: int,
    *,
    rho: float = 0.0,
    fail: float = 0.0,
    history: int = HISTORY_COMPARISONS,
) -> tuple[float, float]:
    """Merge rate and mean candidate runs over `experiments` simulated experiments."""
    rng = np.random.default_rng(seed)
    merged = runs = 0
    for _ in range(experiments):
        outcome = policy(World(effect, rho, fail, rng, history))
        merged += outcome.merged
        runs += outcome.candidate_runs
    return merged / experiments, runs / experiments


def lever_policies() -> list[tuple[str, Policy]]:
    """The `[gate]` levers off, one at a time, and together, at 5/5 and at the demo's 3/3."""
    rows: list[tuple[str, Policy]] = []
    for c, b in ((5, 5), (3, 3)):
        rows += [
            (f"gate {c}/{b}, levers off", gate_policy(c, b)),
            (f"gate {c}/{b}, screen 0.5", gate_policy(c, b, screen=0.5)),
            (f"gate {c}/{b}, sequential", gate_policy(c, b, sequential=True)),
            (f"gate {c}/{b}, pooled", gate_policy(c, b, pooled=True)),
            (f"gate {c}/{b}, sequential+pooled", gate_policy(c, b, sequential=True, pooled=True)),
            (
                f"gate {c}/{b}, all three",
                gate_policy(c, b, screen=0.5, sequential=True, pooled=True),
            ),
        ]
    return rows


def policies() -> list[tuple[str, Policy]]:
    default = Problem()
    c, b = default.confirm_seeds, default.baseline_seeds
    return [
        ("greedy keep-if-better, 1 seed", greedy_policy),
        (f"earlier Welch gate {c}/{b}, fails replaced", welch_replace_policy(c, b)),
        (f"gate {c}/{b}, Welch only", gate_policy(c, b, paired=False)),
        (f"gate {c}/{b}, paired (defaults)", gate_policy(c, b)),
        ("gate 4/4, paired", gate_policy(4, 4)),
        ("gate 5/8, paired", gate_policy(5, 8)),
        ("gate 6/6, paired", gate_policy(6, 6)),
        ("bayes gate, vague start", bayes_policy(known_prior=False)),
        ("bayes gate, prior of the lab mix", bayes_policy(known_prior=True)),
    ]


@dataclass(frozen=True)
class Row:
    rho: float
    policy: str
    rates: list[float]  # merge rate at each of EFFECTS
    cost: float  # candidate runs per null experiment
    per_100_runs: float  # true merges per 100 candidate runs over the lab mix


def power_per_run(rates: list[float], runs: list[float], harmful_runs: float) -> float:
    """True merges per 100 candidate runs over the lab mix of ideas (harmful ones never count).

    `rates` and `runs` are the merge rate and mean runs at each of EFFECTS.
    """
    helpful = [i for i, e in enumerate(EFFECTS) if e > 0]
    power = sum(rates[i] for i in helpful) / len(helpful)
    helpful_runs = sum(runs[i] for i in helpful) / len(helpful)
    null_runs = runs[EFFECTS.index(0.0)]
    spent = MIX_NULL * null_runs + MIX_HARMFUL * harmful_runs + MIX_HELPFUL * helpful_runs
    return 100.0 * MIX_HELPFUL * power / spent


def table(
    experiments: int,
    seed: int,
    rhos: tuple[float, ...],
    fail: float,
    chosen: list[tuple[str, Policy]] | None = None,
) -> list[Row]:
    rows = []
    for rho in rhos:
        for name, policy in chosen if chosen is not None else policies():
            rates, runs = [], []
            for i, effect in enumerate(EFFECTS):
                rate, cost = simulate(policy, effect, experiments, seed + i, rho=rho, fail=fail)
                rates.append(rate)
                runs.append(cost)
            _, harmful_runs = simulate(
                policy, HARMFUL, experiments, seed + len(EFFECTS), rho=rho, fail=fail
            )
            rows.append(Row(rho, name, rates, runs[0], power_per_run(rates, runs, harmful_runs)))
    return rows


def meets_goal(rates: list[float], cost: float) -> bool:
    false_merge, _, power_1, power_2 = rates
    return (
        false_merge <= TARGET_FALSE_MERGE
        and power_1 >= TARGET_POWER_1
        and power_2 >= TARGET_POWER_2
        and cost <= TARGET_RUNS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10000, help="per policy and effect")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--fail", type=float, default=0.0, help="chance a candidate seed fails")
    parser.add_argument("--rho", type=float, nargs="*", default=list(RHOS))
    parser.add_argument(
        "--levers", action="store_true", help="compare the [gate] levers instead of the policies"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    header = (
        f"{'rho':>4}  {'policy':<40} {'false merge':>11} "
        + " ".join(f"{f'power {e:g}σ':>10}" for e in EFFECTS[1:])
        + f" {'runs/null':>9} {'merges/100 runs':>15}  goal"
    )
    print(
        f"{args.experiments} simulated experiments per cell; seed noise σ = 1, correlation rho "
        f"between matched seeds; each candidate seed fails with p = {args.fail:g}; "
        f"rng seed {args.seed}"
    )
    print(
        f"goal: false merges <= {TARGET_FALSE_MERGE:.0%}, power >= {TARGET_POWER_1:.0%} at 1σ "
        f"and >= {TARGET_POWER_2:.0%} at 2σ, <= {TARGET_RUNS:g} runs per null candidate"
    )
    print(header)
    print("-" * len(header))
    chosen = lever_policies() if args.levers else None
    for row in table(args.experiments, args.seed, tuple(args.rho), args.fail, chosen):
        print(
            f"{row.rho:>4.2f}  {row.policy:<40} {row.rates[0]:>11.1%} "
            + " ".join(f"{r:>10.1%}" for r in row.rates[1:])
            + f" {row.cost:>9.2f} {row.per_100_runs:>15.2f}"
            + f"  {'yes' if meets_goal(row.rates, row.cost) else 'no'}"
        )
    print(
        f"({time.perf_counter() - started:.1f}s; runs/null: candidate runs per null experiment; "
        f"merges/100 runs: true merges per 100 candidate runs, ideas {MIX_NULL:.0%} null, "
        f"{MIX_HARMFUL:.0%} harmful at {HARMFUL:g}σ, {MIX_HELPFUL:.0%} helpful)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
