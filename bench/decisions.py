"""How often does a merge policy merge noise, and how often does it catch a real win?

Simulates experiments whose true effect is known, with Gaussian seed noise of
standard deviation sigma, and runs each through a merge policy exactly as the
bot would: kohai's gate (`bot.gate.decide`: one seed first, confirmation seeds
for a promising candidate, a one-sided Welch test against a baseline of
`baseline_seeds` seeds) and, for comparison, greedy keep-if-better on one seed
against a one-seed baseline (the autoresearch / senpai policy).

Reports, per policy: the false-merge rate when the true effect is zero, the
power (merge rate) at true effects of 0.5, 1 and 2 sigma, and the training runs
a candidate costs on average. The RNG seed is fixed, so the table is
reproducible. Usage: python bench/decisions.py [--experiments N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.gate import decide  # noqa: E402
from bot.problem import Problem  # noqa: E402

EFFECTS = (0.0, 0.5, 1.0, 2.0)  # true improvement, in units of the seed noise sigma
FIRST_SEEDS = 1  # `train.seeds`: seeds of an ordinary run before any confirmation
TARGET_FALSE_MERGE = 0.05
TARGET_POWER = 0.80


@dataclass(frozen=True)
class Outcome:
    merged: bool
    candidate_runs: int


Policy = Callable[[float, np.random.Generator], Outcome]


def gate_policy(confirm_seeds: int, baseline_seeds: int, alpha: float = 0.05) -> Policy:
    """kohai: a first run, confirmation seeds if it looks better, then the Welch gate."""

    def run(effect: float, rng: np.random.Generator) -> Outcome:
        baseline = rng.normal(0.0, 1.0, baseline_seeds).tolist()
        # minimize: an improvement of `effect` sigma lowers the metric
        candidate = rng.normal(-effect, 1.0, FIRST_SEEDS).tolist()
        while True:
            decision = decide(
                candidate,
                baseline,
                minimize=True,
                confirm_seeds=confirm_seeds,
                baseline_seeds=baseline_seeds,
                alpha=alpha,
            )
            if decision.verdict != "confirm":
                return Outcome(decision.verdict == "merge", len(candidate))
            candidate += rng.normal(-effect, 1.0, decision.seeds_needed).tolist()

    return run


def greedy_policy(effect: float, rng: np.random.Generator) -> Outcome:
    """Keep if better: one candidate seed against one baseline seed, no test."""
    baseline, candidate = rng.normal(0.0, 1.0), rng.normal(-effect, 1.0)
    return Outcome(bool(candidate < baseline), 1)


def simulate(policy: Policy, effect: float, experiments: int, seed: int) -> tuple[float, float]:
    """Merge rate and mean candidate runs over `experiments` simulated experiments."""
    rng = np.random.default_rng(seed)
    merged = runs = 0
    for _ in range(experiments):
        outcome = policy(effect, rng)
        merged += outcome.merged
        runs += outcome.candidate_runs
    return merged / experiments, runs / experiments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10000, help="per policy and effect")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)

    default = Problem()
    policies: list[tuple[str, Policy]] = [
        ("greedy keep-if-better, 1 seed", greedy_policy),
        (
            f"kohai gate, defaults ({default.confirm_seeds} / {default.baseline_seeds})",
            gate_policy(default.confirm_seeds, default.baseline_seeds),
        ),
        ("kohai gate, confirm 3 / baseline 3", gate_policy(3, 3)),
        ("kohai gate, confirm 4 / baseline 4", gate_policy(4, 4)),
        ("kohai gate, confirm 5 / baseline 5", gate_policy(5, 5)),
        ("kohai gate, confirm 6 / baseline 6", gate_policy(6, 6)),
        ("kohai gate, confirm 5 / baseline 3", gate_policy(5, 3)),
        # The baseline is measured once per merge and shared by every candidate
        # until the next one, so its seeds are cheap next to a candidate's.
        ("kohai gate, confirm 3 / baseline 8", gate_policy(3, 8)),
        ("kohai gate, confirm 4 / baseline 8", gate_policy(4, 8)),
    ]
    started = time.perf_counter()
    header = (
        f"{'policy':<36} {'false merge':>11} "
        + " ".join(f"{f'power {e:g}σ':>10}" for e in EFFECTS[1:])
        + f" {'runs/cand':>9}  meets goal"
    )
    print(
        f"{args.experiments} simulated experiments per cell, seed noise σ = 1, rng seed {args.seed}"
    )
    print(f"goal: false merges <= {TARGET_FALSE_MERGE:.0%} at power >= {TARGET_POWER:.0%} for 2σ")
    print(header)
    print("-" * len(header))
    for name, policy in policies:
        rates, cost = [], 0.0
        for i, effect in enumerate(EFFECTS):
            rate, runs = simulate(policy, effect, args.experiments, args.seed + i)
            rates.append(rate)
            cost = runs if effect == 0.0 else cost
        false_merge, power_2 = rates[0], rates[-1]
        ok = false_merge <= TARGET_FALSE_MERGE and power_2 >= TARGET_POWER
        print(
            f"{name:<36} {false_merge:>11.1%} "
            + " ".join(f"{r:>10.1%}" for r in rates[1:])
            + f" {cost:>9.2f}  {'yes' if ok else 'no'}"
        )
    print(f"({time.perf_counter() - started:.1f}s; runs/cand: candidate runs per null experiment)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
