"""The offline advisor: Optuna's TPE over the problem's declared knobs, and the gate as reviewer.

It keeps no state of its own. Every call rebuilds an in-memory study from the
stored history (each measured experiment's knobs and mean metric, each failed
one as a failed trial), so it resumes after a restart exactly where it was, and
the same history with the same seed always yields the same proposal. The
sampler's seed also mixes in the number of trials and the student's name, so
two idle students asking at once are not handed the same configuration.
"""

from __future__ import annotations

import itertools
import math
import zlib
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from agents.advisor import AdvisorError, Proposal, Review
from agents.context import AdvisorContext, ExperimentRecord
from agents.student import knob_summary
from bot.gate import GateDecision
from bot.problem import Knob, Problem

optuna.logging.set_verbosity(optuna.logging.WARNING)

MAX_ASKS = 32
SIGNIFICANT_DIGITS = 4
_SEARCHING_STATES = ("proposed", "queued", "implementing", "training", "review")


class OfflineAdvisor:
    """Proposes by Bayesian optimisation over `[search]`; reviews by the gate's verdict alone."""

    def __init__(self, seed: int = 0, n_startup_trials: int = 5) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials

    async def propose(self, ctx: AdvisorContext, student: str) -> Proposal:
        return self.suggest(ctx, student)

    async def review(
        self, ctx: AdvisorContext, experiment: ExperimentRecord, gate: GateDecision
    ) -> Review:
        """Offline, the numbers are the whole review: merge what the gate merges, close the rest.

        The bot asks for a review once the gate has a final verdict (merge or
        close); "changes" needs an author of changes, which offline there is not.
        """
        verdict = "merge" if gate.verdict == "merge" else "close"
        return Review(verdict=verdict, rationale=gate.rationale, mode="offline")

    def suggest(self, ctx: AdvisorContext, student: str) -> Proposal:
        """The synchronous core of `propose`: deterministic for a history, seed and student."""
        problem = ctx.problem
        if not problem.knobs:
            raise AdvisorError(
                "the offline advisor searches the knobs declared in kohai.toml [search], "
                "and this problem declares none"
            )
        distributions = {k.name: distribution(k) for k in problem.knobs}
        trials = told_trials(ctx.history, distributions)
        tried = {_key(r.knobs) for r in ctx.history if r.knobs}
        sampler_seed = _mix(self.seed, len(trials), student)
        sampler = optuna.samplers.TPESampler(
            seed=sampler_seed, n_startup_trials=self.n_startup_trials
        )
        study = optuna.create_study(direction=problem.direction, sampler=sampler)
        for trial in trials:
            study.add_trial(trial)
        params, how = self._untried(study, distributions, problem, tried)
        measured = sum(1 for t in trials if t.state == TrialState.COMPLETE)
        return self._proposal(ctx, params, self._why(how, measured, len(trials), problem))

    def _why(self, how: str, measured: int, told: int, problem: Problem) -> str:
        names = ", ".join(k.name for k in problem.knobs)
        over = f"over {names} ({problem.direction} `{problem.metric}`)"
        if how == "grid":
            return (
                f"TPE kept suggesting configurations already tried, so this is the first untried "
                f"point of the finite search space {over}."
            )
        if how == "exhausted":
            return (
                f"Every configuration of the search space {over} has been tried; this repeats one."
            )
        if measured < self.n_startup_trials:
            return (
                f"This is an exploratory random sample of the TPE search {over}: it has "
                f"{measured} measured result(s) and starts modelling them at "
                f"{self.n_startup_trials}."
            )
        return (
            f"This is TPE's suggestion {over} after {told} trial(s) ({measured} measured): it "
            f"samples where the better-scoring configurations are dense relative to the worse."
        )

    def _untried(
        self,
        study: optuna.Study,
        distributions: dict[str, BaseDistribution],
        problem: Problem,
        tried: set[tuple[tuple[str, str], ...]],
    ) -> tuple[dict[str, Any], str]:
        first: dict[str, Any] | None = None
        for _ in range(MAX_ASKS):
            trial = study.ask(distributions)
            params = {k.name: _tidy(k, trial.params[k.name]) for k in problem.knobs}
            # Tell the study this one is taken so the next ask looks elsewhere.
            study.tell(trial, state=TrialState.FAIL)
            first = first or params
            if _key(params) not in tried:
                return params, "tpe"
        for params in _grid(problem):
            if _key(params) not in tried:
                return params, "grid"
        assert first is not None
        return first, "exhausted"

    def _proposal(self, ctx: AdvisorContext, params: dict[str, Any], why: str) -> Proposal:
        p = ctx.problem
        best = _best_record(ctx.history, p)
        lines = [f"Set {knob_summary(params)}.", why]
        if best is not None:
            lines.append(
                f"Best so far: {best.label} with {p.metric} = {best.metric_mean:.4g}"
                f" ({knob_summary(best.knobs)})."
            )
        else:
            lines.append("No experiment has been measured yet.")
        if ctx.baseline_mean is not None:
            lines.append(f"Current baseline: {p.metric} = {ctx.baseline_mean:.4g}.")
        if best is not None:
            moved = [k for k in params if best.knobs.get(k) != params[k]]
            rationale = (
                f"Differs from the best configuration in {', '.join(moved)}."
                if moved
                else "Re-measures the best configuration."
            )
        else:
            rationale = "Explores the search space before the model has data."
        return Proposal(
            title=f"Try {knob_summary(params)}"[:120],
            hypothesis=" ".join(lines),
            knobs=params,
            rationale=rationale,
            mode="offline",
        )


def distribution(knob: Knob) -> BaseDistribution:
    """The Optuna distribution of a declared knob."""
    if knob.choices is not None:
        return CategoricalDistribution(list(knob.choices))
    assert knob.low is not None and knob.high is not None
    if knob.integer:
        return IntDistribution(int(knob.low), int(knob.high), log=knob.log)
    return FloatDistribution(knob.low, knob.high, log=knob.log)


def told_trials(
    history: list[ExperimentRecord], distributions: dict[str, BaseDistribution]
) -> list[optuna.trial.FrozenTrial]:
    """One trial per experiment that has a result or failed, in the order they were made.

    Knob values outside today's ranges (the ranges may have been edited since)
    are left out of the trial rather than dropping the experiment.
    """
    trials = []
    for record in sorted(history, key=lambda r: r.id or 0):
        params, dists = {}, {}
        for name, value in record.knobs.items():
            dist = distributions.get(name)
            if dist is not None and _contains(dist, value):
                params[name], dists[name] = value, dist
        if not params:
            continue
        if record.metric_mean is not None and math.isfinite(record.metric_mean):
            trials.append(
                create_trial(params=params, distributions=dists, value=record.metric_mean)
            )
        elif record.n_failed or record.state not in _SEARCHING_STATES:
            trials.append(create_trial(params=params, distributions=dists, state=TrialState.FAIL))
    return trials


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (TypeError, ValueError):
        return False


def _tidy(knob: Knob, value: Any) -> Any:
    """Round floats to a few significant digits (readable titles), staying inside the range."""
    if knob.choices is not None or knob.integer or not isinstance(value, float):
        return value
    assert knob.low is not None and knob.high is not None
    digits = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value))) if value else 0
    return min(max(round(value, digits), knob.low), knob.high)


def _grid(problem: Problem) -> list[dict[str, Any]]:
    """Every configuration when all knobs are finite (choices or small int ranges)."""
    axes = []
    for knob in problem.knobs:
        if knob.choices is not None:
            axes.append(list(knob.choices))
        elif knob.integer and knob.low is not None and knob.high is not None:
            if knob.high - knob.low > 1000:
                return []
            axes.append(list(range(int(knob.low), int(knob.high) + 1)))
        else:
            return []
    names = [k.name for k in problem.knobs]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes)]


def _key(knobs: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in knobs.items()))


def _mix(seed: int, n_trials: int, student: str) -> int:
    return (seed * 1_000_003 + n_trials * 7_919 + zlib.crc32(student.encode())) % (2**32)


def _best_record(history: list[ExperimentRecord], problem: Problem) -> ExperimentRecord | None:
    measured = [r for r in history if r.metric_mean is not None and r.knobs]
    if not measured:
        return None
    pick = min if problem.minimize else max
    return pick(measured, key=lambda r: r.metric_mean)  # type: ignore[arg-type, return-value]
