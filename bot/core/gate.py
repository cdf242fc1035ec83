"""The merge gate: the bot's verdict on an experiment from its seeds and the baseline's.

Agents propose, code decides. Whatever an advisor says, a pull request merges
only when its improvement over the baseline survives a one-sided test on
`confirm_seeds` seeds, or when a human with write access says `/merge` (and
that is recorded as an override, with the numbers it overrode).

The rules, and why:

- **Failures count.** A seed that crashed, timed out or was found invalid is
  evidence about the candidate, not noise to be re-rolled: it uses up a seed,
  it counts as "no improvement" on that seed in the test, and a candidate whose
  failure rate is above `max_failure_rate` closes for that reason. A seed
  stopped early (trailing the baseline's curve) counts as "not better" the same
  way; a cancelled (or refused) run is no measurement and never counts.
- **Paired when the seeds match.** Candidate and baseline run the same seeds
  (same initialisation and data order), so their seed luck is shared. On two or
  more matched seeds the test is a paired t-test of the per-seed differences;
  Welch's unpaired test is used only when the seeds do not match.
- **Same hardware.** Under a time budget a faster GPU trains more steps, so a
  candidate is compared only with baseline runs of its own hardware class
  (`gpu_kind`); when there are none, the gate waits and says which class it
  needs instead of comparing across machines.
- **Bounded confirmation.** A promising candidate gets confirmation seeds up to
  `confirm_seeds`, at most `max_confirm_rounds` times; after that it is decided
  on what it has.

A pure function of the runs: the caller reads them from the store, calls
`decide`, and records the decision with its rationale and `stats()`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.core import bayes
from bot.core.stats import WelchResult, mean_std, paired_one_sided, welch_one_sided
from bot.protocol import FAILED_RUN_STATUSES
from bot.render import numbers

Verdict = Literal["merge", "confirm", "close", "wait"]
Method = Literal["paired", "welch", "bayes"]

DEFAULT_ALPHA = 0.05
# More than one seed in four failing closes a candidate: with the default five
# confirmation seeds, one flaky seed is tolerated (and counted), two are not.
DEFAULT_MAX_FAILURE_RATE = 0.25
# Confirmation normally takes one round; a second covers a round that was
# cancelled or cut short. After that the candidate is decided on what it has.
DEFAULT_MAX_CONFIRM_ROUNDS = 2
# Statuses that are no measurement at all: a run stopped by a human or the bot,
# or one the diff check refused before training.
# Pairing pays when matched seeds share enough of their noise; with none shared
# it halves the degrees of freedom for nothing. The lab's estimate is noisy, so
# the bar sits above the break-even (near 0.15 at five seeds): at 0.3, a lab whose
# seeds do not correlate keeps the Welch gate's power (bench/decisions.py).
MIN_PAIRING_CORRELATION = 0.3
NOT_COUNTED_STATUSES = frozenset({"cancelled", "refused"})
NOT_BETTER_STATUSES = frozenset({"stopped-early"})


@dataclass(frozen=True)
class SeedRun:
    """One seed's run as the gate sees it: the seed, how it ended, where it ran.

    `seed` None means the seed is unknown (a bare value), which rules out pairing.
    `gpu_kind` "" means the hardware class is unknown (runs from before it was
    recorded), which matches any class.
    """

    seed: int | None
    status: str
    metric: float | None = None
    gpu_kind: str = ""
    host: str = ""

    @classmethod
    def coerce(cls, value: SeedRun | Mapping[str, Any] | float | None) -> SeedRun:
        """A run from a `SeedRun`, a `runs` row, or a bare value (None or NaN: a crash)."""
        if isinstance(value, SeedRun):
            return value
        if isinstance(value, Mapping):
            return cls(
                seed=value.get("seed"),
                status=str(value.get("status") or "crash"),
                metric=value.get("metric"),
                gpu_kind=str(value.get("gpu_kind") or ""),
                host=str(value.get("host") or value.get("student") or ""),
            )
        finite = value is not None and math.isfinite(float(value))
        return cls(seed=None, status="ok" if finite else "crash", metric=value)

    @property
    def value(self) -> float | None:
        """The metric if the run measured one, else None."""
        if self.status != "ok" or self.metric is None:
            return None
        metric = float(self.metric)
        return metric if math.isfinite(metric) else None

    @property
    def outcome(self) -> Literal["ok", "failed", "not-better", "ignored"]:
        """What the run is to the gate. An `ok` without a finite metric is a failure."""
        if self.status in NOT_COUNTED_STATUSES:
            return "ignored"
        if self.status in NOT_BETTER_STATUSES:
            return "not-better"
        if self.status == "ok" and self.value is not None:
            return "ok"
        return "failed"  # FAILED_RUN_STATUSES, a metric-less ok, or a status we do not know


RunLike = SeedRun | Mapping[str, Any] | float | None


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why, with the numbers a results comment shows.

    `seeds_needed` is how many more candidate seeds a "confirm" asks for.
    `override_by` is the login of the human whose `/merge` this records.
    `method` is the test used ("paired" or "welch"); `baseline_hardware` is set
    on a "wait" for a baseline measured on that hardware class.
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
    method: Method | None = None
    n_matched: int = 0
    n_stopped_early: int = 0
    n_cancelled: int = 0
    failure_rate: float = 0.0
    hardware: str = ""
    baseline_hardware: str | None = None
    reason: str = ""
    bayes: dict[str, Any] | None = None  # the Bayesian gate's numbers (`decide_bayes`)

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
            "method",
            "n_matched",
            "n_stopped_early",
            "n_cancelled",
            "failure_rate",
            "hardware",
            "baseline_hardware",
            "reason",
        )
        out = {key: _finite_or_none(getattr(self, key)) for key in keys}
        if self.bayes is not None:
            out["bayes"] = {key: _finite_or_none(value) for key, value in self.bayes.items()}
        return out


def decide(
    candidate: Sequence[RunLike],
    baseline: Sequence[RunLike],
    *,
    minimize: bool,
    confirm_seeds: int,
    baseline_seeds: int,
    alpha: float = DEFAULT_ALPHA,
    human_override: str | None = None,
    max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE,
    confirm_rounds: int = 0,
    max_confirm_rounds: int = DEFAULT_MAX_CONFIRM_ROUNDS,
    pairing: bool = True,
    seed_correlation: float | None = None,
    screen_margin: float = 0.0,
    sequential: bool = False,
    paired_spread: tuple[float, float] | None = None,
) -> GateDecision:
    """The verdict on a candidate's runs against the current baseline's.

    Runs are `SeedRun`s, `runs` rows, or bare values (None or NaN is a failed
    seed; bare values have no seed and are never paired). The rules, in order:
    a human override merges; a candidate with no measured seed closes; one whose
    failure rate is above `max_failure_rate` closes; without baseline seeds of
    its hardware class (at least `baseline_seeds`) it waits; a candidate that is
    not better closes; a better one short of `confirm_seeds` counted seeds gets
    more (unless `confirm_rounds` has reached `max_confirm_rounds`); then it
    merges only if p < alpha.

    `seed_correlation` is the correlation of matched seeds the lab has seen in
    earlier comparisons (`bot.core.stats.pooled_seed_correlation`), None when it has
    too few. Below `MIN_PAIRING_CORRELATION` pairing would only cost degrees of
    freedom, so the test is Welch; otherwise matched seeds are paired.
    `pairing=False` forces Welch (the benchmark's comparison with the unpaired
    gate).

    `screen_margin` (in units of the baseline seeds' std) screens on the first
    seed: a candidate whose one counted seed is not ahead of its matched
    baseline seed (or, unmatched, of the baseline mean) by that margin closes
    without confirmation seeds. Most ideas are null or harmful, and a null one
    that is barely ahead would otherwise cost its confirmation seeds.
    `sequential` asks for confirmation one seed at a time: after each, a
    candidate no longer ahead closes at once, and the test itself is still made
    only at `confirm_seeds` (stopping for futility never raises false merges).
    `paired_spread` is the lab's pooled (std, df) of paired differences from
    earlier comparisons (`bot.core.stats.pooled_paired_spread`): the paired test
    pools its variance with the candidate's own.
    """
    unpaired_because = "" if pairing else "pairing off"
    if pairing and seed_correlation is not None and seed_correlation < MIN_PAIRING_CORRELATION:
        pairing = False
        unpaired_because = (
            f"matched seeds in this lab correlate at {seed_correlation:.2f}, too little for "
            "pairing to help"
        )
    cand_all = [SeedRun.coerce(v) for v in candidate]
    base_all = [SeedRun.coerce(v) for v in baseline]
    tally = _Tally.of(cand_all)
    hw = _Hardware.choose(tally.counted, [r for r in base_all if r.value is not None])
    cand = [r for r in tally.counted if hw.matches(r.gpu_kind)]
    base = hw.baseline
    cmp = _Comparison.of(
        cand,
        base,
        minimize=minimize,
        alpha=alpha,
        pairing=pairing,
        because=unpaired_because,
        pooled=paired_spread if pairing else None,
    )
    common: dict[str, Any] = {
        "n_candidate": len([r for r in cand if r.outcome == "ok"]),
        "n_baseline": len(base),
        "n_failed": tally.failed,
        "n_stopped_early": tally.not_better,
        "n_cancelled": tally.ignored,
        "failure_rate": tally.failure_rate,
        "alpha": alpha,
        "hardware": hw.name,
        **cmp.fields(),
    }
    notes = " ".join(n for n in (tally.describe(), hw.note) if n)
    numbers = f"{cmp.describe()}{f' {notes}' if notes else ''}"

    def verdict(v: Verdict, reason: str, text: str, **extra: Any) -> GateDecision:
        return GateDecision(verdict=v, reason=reason, rationale=text, **{**common, **extra})

    first = _before_comparing(
        verdict, tally, hw, len(base), baseline_seeds, max_failure_rate, human_override, numbers
    )
    if first is not None:
        return first
    if not cmp.better(minimize):
        return verdict(
            "close",
            "not better",
            f"Closed: the candidate is not better than the baseline. {numbers}",
        )
    counted = len(cand)
    scale = cmp.baseline_stats[1]
    if (
        screen_margin > 0
        and counted == 1
        and confirm_seeds > 1
        and cmp.promising is not None
        and scale is not None
        and math.isfinite(scale)
    ):
        ahead = -cmp.promising if minimize else cmp.promising
        if ahead <= screen_margin * scale:
            return verdict(
                "close",
                "screened out",
                f"Closed: the first seed is ahead by {_g4(ahead)}, not by the screening margin "
                f"of {screen_margin:g} × the baseline's std ({_g4(screen_margin * scale)}); "
                f"an idea this close to the baseline is not worth its confirmation seeds. "
                f"{numbers}",
            )
    if sequential:
        max_confirm_rounds += max(0, confirm_seeds - 2)
    if counted < confirm_seeds:
        needed = 1 if sequential else confirm_seeds - counted
        if confirm_rounds < max_confirm_rounds:
            return verdict(
                "confirm",
                "confirming",
                f"Promising: better than the baseline on {counted} seed(s); running {needed} "
                f"more {'(one at a time) ' if sequential else ''}to reach {confirm_seeds} "
                f"before deciding. {numbers}",
                seeds_needed=needed,
            )
        numbers = (
            f"{numbers} Confirmation is capped at {max_confirm_rounds} round(s): decided on "
            f"{counted} of {confirm_seeds} seeds."
        )
    assert cmp.result is not None  # both sides have values by now
    if cmp.result.p_value < alpha:
        return verdict(
            "merge",
            "significant",
            f"Merge: significant improvement (p < {alpha:g}). {numbers}",
        )
    return verdict(
        "close",
        "within noise",
        f"Closed: improvement within seed noise (p >= {alpha:g}). {numbers}",
    )


@dataclass(frozen=True)
class BudgetSpent:
    """The lab's false-merge budget so far: its gate merges' posterior chances of being null or
    harmful, summed, and how many merges that is (`bot.engine.evidence.lab_budget`)."""

    chance_false: float = 0.0
    merges: int = 0


@dataclass(frozen=True)
class ClosedOnBase:
    """An idea the Bayesian gate closed on the base now being judged: its runs there, and its
    effect's posterior mean and variance when it closed (improvement, metric units)."""

    runs: Sequence[RunLike]
    effect: float
    effect_var: float


def decide_bayes(
    candidate: Sequence[RunLike],
    baseline: Sequence[RunLike],
    *,
    minimize: bool,
    baseline_seeds: int,
    prior: bayes.EffectPrior | None = None,
    false_merges: float = bayes.DEFAULT_FALSE_MERGES,
    spent: BudgetSpent = BudgetSpent(),
    human_override: str | None = None,
    max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE,
    closed: Sequence[ClosedOnBase] = (),
) -> GateDecision:
    """The Bayesian gate's verdict (`[gate] method = "bayes"`): merge, close or one more seed.

    The base's runs give a belief about its value on each seed; the candidate's seeds give a
    precision-weighted mean improvement over it; the lab's prior over effects (learned from
    its decided ideas, `bot.core.bayes.learn_prior`; None: the vague start from the
    baseline's spread) turns that into a posterior, and the decision table
    (`bot.core.bayes.decision_table`) picks the action worth most: the expected true gain,
    less a penalty for the chance of a false merge above the lab's budget `false_merges`,
    less the price of more seeds. A merge must also fit the budget: the lab's merges'
    chances of being null or harmful, this one included, may add up to at most
    `false_merges` per merge (`spent`). The hardware, failure and baseline rules are the
    same as `decide`'s; a failed or stopped seed counts as no improvement on that seed.
    `closed`: the ideas the gate closed on this same base, oldest first; their runs re-measure
    the base less each one's effect (`bot.core.bayes.BaseBelief.closed`), so a lab whose
    ideas are mostly null learns its base's seeds from them for free.
    """
    cand_all = [SeedRun.coerce(v) for v in candidate]
    base_all = [SeedRun.coerce(v) for v in baseline]
    tally = _Tally.of(cand_all)
    hw = _Hardware.choose(tally.counted, [r for r in base_all if r.value is not None])
    cand = [r for r in tally.counted if hw.matches(r.gpu_kind)]
    base = hw.baseline
    base_values = [r.value for r in base if r.value is not None]
    ok_values = [r.value for r in cand if r.value is not None]
    c_stats = mean_std(ok_values) if ok_values else (None, None)
    b_stats = mean_std(base_values) if base_values else (None, None)
    common: dict[str, Any] = {
        "n_candidate": len(ok_values),
        "n_baseline": len(base),
        "n_failed": tally.failed,
        "n_stopped_early": tally.not_better,
        "n_cancelled": tally.ignored,
        "failure_rate": tally.failure_rate,
        "alpha": false_merges,
        "hardware": hw.name,
        "candidate_mean": c_stats[0],
        "candidate_std": c_stats[1],
        "baseline_mean": b_stats[0],
        "baseline_std": b_stats[1],
        "method": "bayes",
        "p_value": None,
        "delta": None,
        "delta_se": None,
    }

    def verdict(v: Verdict, reason: str, text: str, **extra: Any) -> GateDecision:
        return GateDecision(verdict=v, reason=reason, rationale=text, **{**common, **extra})

    notes = " ".join(n for n in (tally.describe(), hw.note) if n)
    first = _before_comparing(
        verdict,
        tally,
        hw,
        len(base_values),
        baseline_seeds,
        max_failure_rate,
        human_override,
        notes,
    )
    if first is not None:
        return first
    index: dict[Any, int] = {}

    def slot(seed: int | None) -> int:
        key = ("unseeded", len(index)) if seed is None else seed
        return index.setdefault(key, len(index))

    base_by_seed: dict[int, float] = {}
    for r in base:
        if r.value is not None and (r.seed is None or slot(r.seed) not in base_by_seed):
            base_by_seed.setdefault(slot(r.seed), r.value)
    prior = prior or bayes.EffectPrior.vague(b_stats[1] or 0.0, len(base_values))
    remeasures = []
    for other in closed:
        seen: dict[int, float] = {}
        for r in (SeedRun.coerce(v) for v in other.runs):
            if r.value is not None and r.seed is not None and hw.matches(r.gpu_kind):
                seen.setdefault(slot(r.seed), r.value)
        if seen and math.isfinite(other.effect) and math.isfinite(other.effect_var):
            remeasures.append((seen, other))
    cand_slots = [(slot(r.seed), r) for r in cand]
    belief = bayes.BaseBelief.of_runs(base_by_seed, prior, seeds=len(index))
    for seen, other in remeasures:
        post = bayes.Posterior(0.0, 0.0, other.effect, max(other.effect_var, 0.0))
        belief = belief.closed(seen, prior.noise**2, post, minimize=minimize)
    runs: dict[int, float] = {}
    for i, r in cand_slots:
        if i in runs:
            continue  # a seed counts once (deterministic training: a re-run adds nothing)
        runs[i] = r.value if r.value is not None else float(belief.mean[i])
    mean, precision = bayes.evidence(belief, runs, prior.noise**2, minimize=minimize)
    budget = bayes.budget_for(prior, false_merges)
    table = bayes.decision_table(prior, budget)
    choice = table.choose(mean, precision, len(runs))
    post = choice.posterior
    allowed = budget * (spent.merges + 1)
    over_budget = choice.action == "merge" and spent.chance_false + post.null_or_worse > allowed
    action = choice.action
    if over_budget:
        action = "seed" if len(runs) < bayes.MAX_SEEDS else "close"
    signed = -mean if minimize else mean  # candidate minus baseline, as `delta` elsewhere
    se = 1 / math.sqrt(precision) if precision > 0 else math.inf
    numbers_ = {
        "mean_improvement": mean,
        "precision": precision,
        "chance_positive": post.positive,
        "chance_null_or_worse": post.null_or_worse,
        "chance_null": post.null,
        "expected_gain": post.mean,
        "effect_var": post.var,
        "merge_value": choice.merge_value,
        "one_more_seed_value": choice.seed_value,
        "one_more_seed_buys": choice.one_more_seed_buys,
        "price_per_run": table.price,
        "budget": budget,
        "budget_spent": spent.chance_false,
        "budget_allowed": allowed,
        "merges_so_far": spent.merges,
        "noise": prior.noise,
        "seed_spread": prior.seed_spread,
        "prior_null": prior.null,
        "prior_helpful": prior.chance_helpful(),
        "prior_learned_from": prior.learned_from,
        "seeds": len(runs),
        "over_budget": over_budget,
    }
    explain = _explain_bayes(numbers_, len(runs), over_budget)
    extra = {"delta": signed, "delta_se": se, "bayes": numbers_}
    if notes:
        explain = f"{explain} {notes}"
    if action == "merge":
        return verdict("merge", "posterior", f"Merge: {explain}", **extra)
    if action == "seed":
        return verdict(
            "confirm",
            "one more seed",
            f"Promising: one more seed before deciding. {explain}",
            seeds_needed=1,
            **extra,
        )
    return verdict("close", "posterior", f"Closed: {explain}", **extra)


def _explain_bayes(n: Mapping[str, Any], seeds: int, over_budget: bool) -> str:
    """The Bayesian verdict's numbers in the words a researcher checks them by."""
    buys = n["one_more_seed_buys"]
    seed_text = (
        "no more seeds are allowed"
        if not math.isfinite(n["one_more_seed_value"])
        else f"one more seed would be worth {_g4(buys)} more than deciding now, net of its "
        f"price of {_g4(n['price_per_run'])} per run"
    )
    budget_text = (
        f"the lab's false-merge budget: {n['budget_spent']:.2f} expected false merges spent "
        f"over {n['merges_so_far']} merge(s), {n['budget']:.1%} of merges allowed"
        + (" (this merge would overspend it)" if over_budget else "")
    )
    prior_text = (
        f"the prior learned from {n['prior_learned_from']} decided ideas"
        if n["prior_learned_from"]
        else "the vague starting prior (the lab has decided fewer than 40 ideas)"
    )
    return (
        f"after {seeds} seed(s) the chance that the effect is positive is "
        f"{n['chance_positive']:.0%} (null or worse {n['chance_null_or_worse']:.0%}); expected "
        f"gain {_g4(n['expected_gain'])} (improvement {_g4(n['mean_improvement'])} ± "
        f"{_g4(1 / math.sqrt(n['precision'])) if n['precision'] > 0 else 'unknown'}); "
        f"{seed_text}; {budget_text}; {prior_text}, per-run noise {_g4(n['noise'])}."
    )


def _before_comparing(
    verdict: Callable[..., GateDecision],
    tally: _Tally,
    hw: _Hardware,
    n_base: int,
    baseline_seeds: int,
    max_failure_rate: float,
    human_override: str | None,
    numbers: str,
) -> GateDecision | None:
    """What both gates (`decide`, `decide_bayes`) settle before comparing anything: a
    human override, no measurement, too many failed seeds, a baseline missing on the
    candidate's hardware or short of seeds. One home for these rules; None: compare."""
    tail = f" {numbers}" if numbers else ""
    if human_override:
        return verdict(
            "merge",
            "human override",
            f"Merged by @{human_override} (human override of the gate).{tail}",
            override_by=human_override,
        )
    if not tally.ok:
        if tally.failed:
            what = f"all {tally.failed} candidate run(s) failed ({tally.breakdown()})"
        elif tally.not_better:
            what = f"every candidate seed ({tally.not_better}) was stopped early, trailing the baseline"
        else:
            what = "no candidate runs"
        return verdict("close", "no measurement", f"Closed: {what}.")
    if tally.failure_rate > max_failure_rate:
        return verdict(
            "close",
            "failure rate",
            f"Closed: {tally.failed} of {len(tally.counted)} candidate seeds failed "
            f"({tally.failure_rate:.0%}; {tally.breakdown()}), above the bound of "
            f"{max_failure_rate:.0%}. A change that breaks runs is not an improvement.{tail}",
        )
    if hw.missing:
        return verdict(
            "wait",
            "baseline hardware",
            f"Waiting for the baseline on `{hw.name}`: the candidate ran there, but the "
            f"baseline of this base was measured only on {hw.others()}. Under a time budget "
            f"different hardware trains a different amount, so they are not compared.{tail}",
            baseline_hardware=hw.name,
        )
    if n_base < baseline_seeds:
        return verdict(
            "wait",
            "baseline",
            f"Waiting for the baseline: {n_base} of {baseline_seeds} seeds measured on the "
            f"current base{f' on `{hw.name}`' if hw.name else ''}.{tail}",
            baseline_hardware=hw.name or None,
        )
    return None


def needs_rerun_on_new_base(measured_base_sha: str | None, current_base_sha: str | None) -> bool:
    """True when results were measured on a base that is no longer the current one.

    After a winner merges, the comparison with the new baseline is what counts;
    a result from the old base (or from an unknown base) must be re-measured
    before it can merge. With no current base there is nothing to compare to.
    """
    if not current_base_sha:
        return False
    return measured_base_sha != current_base_sha


# -- the parts of a decision -------------------------------------------------------


@dataclass(frozen=True)
class _Tally:
    """The candidate's runs by outcome; cancelled and refused runs are not counted."""

    counted: list[SeedRun]
    ok: int
    failed: int
    not_better: int
    ignored: int
    statuses: Counter[str]

    @classmethod
    def of(cls, runs: list[SeedRun]) -> _Tally:
        outcomes = Counter(r.outcome for r in runs)
        counted = [r for r in runs if r.outcome != "ignored"]
        statuses = Counter(
            r.status if r.status in FAILED_RUN_STATUSES else "no metric"
            for r in runs
            if r.outcome == "failed"
        )
        return cls(
            counted,
            outcomes["ok"],
            outcomes["failed"],
            outcomes["not-better"],
            outcomes["ignored"],
            statuses,
        )

    @property
    def failure_rate(self) -> float:
        return self.failed / len(self.counted) if self.counted else 0.0

    def breakdown(self) -> str:
        return ", ".join(f"{n} {status}" for status, n in sorted(self.statuses.items()))

    def describe(self) -> str:
        parts = []
        if self.failed:
            parts.append(
                f"{self.failed} failed seed(s) ({self.breakdown()}) count as no improvement"
            )
        if self.not_better:
            parts.append(f"{self.not_better} seed(s) stopped early count as not better")
        if self.ignored:
            parts.append(f"{self.ignored} cancelled run(s) not counted")
        text = "; ".join(parts)
        return f"{text[:1].upper()}{text[1:]}." if text else ""


@dataclass(frozen=True)
class _Hardware:
    """The hardware class the comparison is made on, and the baseline runs of that class."""

    name: str  # "" when unknown
    baseline: list[SeedRun]
    missing: bool  # the baseline has runs, none of this class
    baseline_classes: tuple[str, ...]
    note: str = ""

    @classmethod
    def choose(cls, candidate: list[SeedRun], baseline: list[SeedRun]) -> _Hardware:
        kinds = Counter(r.gpu_kind for r in candidate if r.gpu_kind)
        base_kinds = tuple(sorted({r.gpu_kind for r in baseline if r.gpu_kind}))
        if not kinds:
            note = "Hardware class unknown: compared with every baseline run." if base_kinds else ""
            return cls("", baseline, False, base_kinds, note)
        # The class with most candidate seeds (ties: alphabetical, to be deterministic).
        name = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        same = [r for r in baseline if r.gpu_kind in (name, "")]
        notes = []
        if len(kinds) > 1:
            others = sum(n for kind, n in kinds.items() if kind != name)
            notes.append(
                f"{others} candidate seed(s) on other hardware left out of the comparison."
            )
        if same and any(not r.gpu_kind for r in same):
            notes.append("Some baseline runs have no recorded hardware class.")
        return cls(name, same, bool(baseline) and not same, base_kinds, " ".join(notes))

    def matches(self, kind: str) -> bool:
        return not self.name or kind in (self.name, "")

    def others(self) -> str:
        return ", ".join(f"`{k}`" for k in self.baseline_classes) or "unknown hardware"


@dataclass(frozen=True)
class _Comparison:
    """The test between candidate and baseline values, whatever is available of it.

    Failed and stopped-early candidate seeds enter as "no improvement": on a
    matched seed the baseline's own value of that seed, otherwise the
    baseline's mean. `promising` is the direction seen so far: the mean paired
    difference when any seed matches (one matched seed already cancels the
    shared seed luck), else the difference of means.
    """

    method: Method | None
    result: WelchResult | None
    candidate: list[float]  # the measured values (the test also has the failed seeds)
    baseline: list[float]
    n_matched: int
    n_unmatched: int
    alpha: float
    promising: float | None
    candidate_stats: tuple[float | None, float | None] = field(default=(None, None))
    baseline_stats: tuple[float | None, float | None] = field(default=(None, None))
    unpaired_because: str = ""

    @classmethod
    def of(
        cls,
        cand: list[SeedRun],
        base: list[SeedRun],
        *,
        minimize: bool,
        alpha: float,
        pairing: bool,
        because: str = "",
        pooled: tuple[float, float] | None = None,
    ) -> _Comparison:
        base_values = [r.value for r in base if r.value is not None]
        ok_values = [r.value for r in cand if r.value is not None]
        c_stats = mean_std(ok_values) if ok_values else (None, None)
        b_stats = mean_std(base_values) if base_values else (None, None)
        if not ok_values or not base_values:
            return cls(
                None, None, ok_values, base_values, 0, 0, alpha, None, c_stats, b_stats, because
            )
        b_mean = b_stats[0]
        assert b_mean is not None
        by_seed: dict[int, float] = {}
        for r in base:  # the first baseline run of each seed
            if r.seed is not None and r.value is not None:
                by_seed.setdefault(r.seed, r.value)
        pairs: list[tuple[float, float]] = []
        unmatched: list[float] = []
        seen: set[int] = set()
        for r in cand:
            if pairing and r.seed is not None and r.seed in by_seed and r.seed not in seen:
                seen.add(r.seed)
                b = by_seed[r.seed]
                pairs.append((r.value if r.value is not None else b, b))
            else:
                unmatched.append(r.value if r.value is not None else b_mean)
        if len(pairs) >= 2:
            cs, bs = zip(*pairs, strict=True)
            result = paired_one_sided(list(cs), list(bs), minimize=minimize, pooled=pooled)
            method: Method = "paired"
        else:
            values = [c for c, _ in pairs] + unmatched
            result = welch_one_sided(values, base_values, minimize=minimize)
            method = "welch"
        promising = math.fsum(c - b for c, b in pairs) / len(pairs) if pairs else result.delta
        n_unmatched = len(unmatched) if method == "paired" else 0
        return cls(
            method,
            result,
            ok_values,
            base_values,
            len(pairs),
            n_unmatched,
            alpha,
            promising,
            c_stats,
            b_stats,
            because,
        )

    def better(self, minimize: bool) -> bool:
        """Strictly better in the metric's direction; unknown is never better."""
        if self.promising is None:
            return False
        return self.promising < 0 if minimize else self.promising > 0

    def fields(self) -> dict[str, Any]:
        r = self.result
        return {
            "p_value": r.p_value if r else None,
            "delta": r.delta if r else None,
            "delta_se": r.delta_se if r else None,
            "candidate_mean": self.candidate_stats[0],
            "candidate_std": self.candidate_stats[1],
            "baseline_mean": self.baseline_stats[0],
            "baseline_std": self.baseline_stats[1],
            "method": self.method,
            "n_matched": self.n_matched,
        }

    def describe(self) -> str:
        parts = [
            f"candidate {_mean_pm(*self.candidate_stats, len(self.candidate))}",
            f"baseline {_mean_pm(*self.baseline_stats, len(self.baseline))}",
        ]
        r = self.result
        if r is not None:
            parts.append(
                f"delta {'+' if r.delta >= 0 else ''}{_g4(r.delta)} ± {numbers.number(r.delta_se, '.2g', missing='unknown')} (se)"
            )
            if self.method == "paired":
                test = f"one-sided paired t-test on {self.n_matched} matched seeds"
                if self.n_unmatched:
                    test += f" ({self.n_unmatched} unmatched candidate seed(s) left out)"
            else:
                why = self.unpaired_because or (
                    "a single matched seed cannot be paired"
                    if self.n_matched == 1
                    else "no matched seeds"
                )
                test = f"one-sided Welch test ({why})"
            parts.append(f"{test}: p = {r.p_value:.3g}, alpha = {self.alpha:g}")
        return "; ".join(parts) + "."


def _mean_pm(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "(no values)"
    if n == 1:
        return f"{_g4(mean)} (n=1)"
    return f"{_g4(mean)} ± {numbers.number(std, '.2g', missing='unknown')} (n={n})"


def _g4(value: float) -> str:
    """Four significant digits, trailing zeros kept: 1.000, 0.9967, 1235."""
    return f"{value:#.4g}".rstrip(".")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
