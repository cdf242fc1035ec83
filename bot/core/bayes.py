"""The Bayesian gate's arithmetic: beliefs about the base, a prior over effects, a decision table.

Pure functions and small immutable values; `bot.core.gate.decide_bayes` turns them into a
verdict with its explanation, the bench (`bench/lab.py`) drives the same code.

The model, in metric units, with "effect" meaning improvement (positive is better):

- The current base has a value on every seed: its level plus that seed's luck, which
  matched seeds share across every code version (same initialisation and data order).
  `BaseBelief` is a Gaussian belief over those values (a mean per seed, a covariance across
  seeds). A run of the base on seed s measures its value there plus per-run noise.
- A candidate's run on seed s is the base's value there minus (for a metric to minimise)
  the candidate's effect, plus per-run noise. Given the belief, the candidate's seeds give a
  precision-weighted mean effect and its precision (`evidence`): one number and its weight,
  whatever the seeds were.
- The effect's prior (`EffectPrior`) is a spike at zero (most ideas change nothing) plus a
  slab on a grid. It is learned from the lab's own decided ideas by maximising the marginal
  likelihood (`learn_prior`), and the per-run noise from the lab's paired differences, at a
  conservative quantile (`learn_noise`).
- `DecisionTable` is computed once per prior by backward induction over (precision, mean):
  merge, close, or one more seed, maximising the expected true gain, minus a penalty per merge
  for its posterior chance of being null or harmful above the lab's false-merge budget, minus
  a price per run set where starting a new idea breaks even.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import chi2

from bot.core.stats import MIN_POOLED_DF, pooled_paired_spread

MAX_SEEDS = 8  # a candidate's seeds before the gate must decide
DEFAULT_FALSE_MERGES = 0.05  # the lab's budget: expected false merges per merge
LEARN_FROM = 40  # decided ideas before the prior is learned from the lab
LEARN_EVERY = 20  # refitted every this many decided ideas after that
NOISE_EVERY = 10  # the noise alone, before that
VAGUE_BUDGET_FACTOR = 0.5  # until then the budget is this much stricter
NOISE_QUANTILE = 0.2
MIN_NOISE_PAIRS = 10  # single-seed differences before their spread says anything
MAD_EFFICIENCY = 0.37  # the median absolute deviation's efficiency against a std, normal data  # the noise is the upper 80 % confidence bound of the lab's estimate
SEED_UNIT = 1.25  # one seed's evidence variance, in per-run noise variances (see `unit`)
PENALTY = 6.0  # the price of one expected false merge beyond the budget, in paired-noise units
SLAB_HALF_WIDTH = 8.0  # the effect grid spans this many paired-noise units either way
SLAB_POINTS = 33
PRIOR_PSEUDO_COUNT = 4.0
VAGUE_SLAB = 2.5  # the vague prior's slab: a normal of this many paired-noise units
NOISE_SCALES = tuple(float(x) for x in np.exp(np.linspace(0.0, math.log(3.0), 12)))
NOISE_LIKELIHOOD_DROP = 0.35  # half the square of the one-sided 80 % normal quantile  # how many ideas' worth of the vague prior a learned one keeps


@dataclass(frozen=True)
class EffectPrior:
    """What the lab believes about ideas before measuring one, and its noise.

    `null` is the chance an idea changes nothing; `grid`/`weights` the slab (effects in metric
    units, improvement positive; weights sum to one). `noise` is the per-run noise std (the
    part matched seeds do not share), `seed_spread` the std of a seed's luck (the part they
    share). `learned_from` counts the decided ideas behind it (0: the vague start).
    """

    null: float
    grid: tuple[float, ...]
    weights: tuple[float, ...]
    noise: float
    seed_spread: float
    learned_from: int = 0

    @classmethod
    def vague(cls, spread: float, runs: int = 0) -> EffectPrior:
        """Half the ideas null, the rest spread widely either way, from the base's seed spread.

        `spread` is the std of the base's runs across seeds (`runs` of them: it is raised to
        its conservative quantile). Without paired data its split between seed luck and run
        noise is unknown: half each, which overstates the noise of a lab whose seeds
        correlate strongly (safe).
        """
        spread = spread if math.isfinite(spread) and spread > 0 else 1.0
        if runs >= 2:
            spread *= math.sqrt((runs - 1) / float(chi2.ppf(NOISE_QUANTILE, runs - 1)))
        noise = spread / math.sqrt(2)
        unit = noise * math.sqrt(2)  # the std of a paired difference
        grid = slab_grid(unit)
        weights = np.exp(-0.5 * (np.asarray(grid) / (VAGUE_SLAB * unit)) ** 2)
        return cls(0.5, grid, _normalised(weights), noise, noise)

    @property
    def unit(self) -> float:
        """The table's unit of effect: the std of one seed's evidence on a seed the base knows
        well (its run noise, plus what is left of the base's uncertainty there)."""
        return self.noise * math.sqrt(SEED_UNIT)

    def chance_helpful(self) -> float:
        return (1 - self.null) * float(
            sum(w for g, w in zip(self.grid, self.weights, strict=True) if g > 0)
        )

    def mean_helpful(self) -> float:
        """The mean improvement of a helpful idea (0 when the prior has none)."""
        pairs = [(g, w) for g, w in zip(self.grid, self.weights, strict=True) if g > 0]
        total = sum(w for _, w in pairs)
        return sum(g * w for g, w in pairs) / total if total else 0.0

    def describe(self) -> str:
        source = (
            f"learned from {self.learned_from} decided ideas"
            if self.learned_from
            else "vague (fewer than 40 decided ideas)"
        )
        return (
            f"ideas help {self.chance_helpful():.0%} of the time, by {self.mean_helpful():.3g} "
            f"on average; {self.null:.0%} change nothing; per-run noise {self.noise:.3g}, "
            f"seed luck {self.seed_spread:.3g} ({source})"
        )


def slab_grid(unit: float) -> tuple[float, ...]:
    """The slab's effects: `SLAB_POINTS` across +-`SLAB_HALF_WIDTH` units, zero left out."""
    xs = np.linspace(-SLAB_HALF_WIDTH, SLAB_HALF_WIDTH, SLAB_POINTS) * unit
    return tuple(float(x) for x in xs if abs(x) > 1e-12)


def _normalised(weights: np.ndarray) -> tuple[float, ...]:
    weights = np.clip(weights, 0.0, None)
    return tuple(float(w) for w in weights / weights.sum())


# ------------------------------------------------------------------- beliefs


@dataclass(frozen=True)
class BaseBelief:
    """A Gaussian belief over the base's value on seeds 0..n-1: means and their covariance."""

    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def fresh(cls, seeds: int, level: float, level_var: float, seed_var: float) -> BaseBelief:
        """Before any run: every seed at `level` (uncertain as one), each with its own luck."""
        return cls(
            np.full(seeds, float(level)),
            level_var * np.ones((seeds, seeds)) + seed_var * np.eye(seeds),
        )

    @classmethod
    def of_runs(cls, runs: Mapping[int, float], prior: EffectPrior, seeds: int = 16) -> BaseBelief:
        """The belief from one base's own runs (seed -> value), the level vague."""
        seeds = max(seeds, max(runs, default=-1) + 1)
        values = list(runs.values())
        level = float(np.mean(values)) if values else 0.0
        belief = cls.fresh(seeds, level, 200.0 * prior.noise**2, prior.seed_spread**2)
        return belief.observe(runs, prior.noise**2)

    def variance(self, seed: int) -> float:
        return float(self.cov[seed, seed])

    def observe(
        self, runs: Mapping[int, float], noise_var: float, shared_var: float = 0.0
    ) -> BaseBelief:
        """Condition on runs measuring the base's value on their seeds.

        `shared_var` is error common to all of them (a candidate's runs used as the base's,
        shifted by its effect's posterior mean: the effect's own uncertainty).
        """
        if not runs:
            return self
        seeds = np.fromiter(runs, dtype=int)
        values = np.fromiter(runs.values(), dtype=float)
        k = len(seeds)
        s = self.cov[seeds][:, seeds] + noise_var * np.eye(k) + shared_var * np.ones((k, k))
        gain = np.linalg.solve(s, self.cov[seeds]).T  # cov[:, S] s^-1
        mean = self.mean + gain @ (values - self.mean[seeds])
        cov = self.cov - gain @ self.cov[seeds]
        return BaseBelief(mean, (cov + cov.T) / 2)

    def shift(self, by: float, var: float) -> BaseBelief:
        """Every seed moves by `by` and gains `var` (a merged effect's mean and variance)."""
        return BaseBelief(self.mean + by, self.cov + var)

    def _gain(self, seeds: np.ndarray, noise_var: float) -> np.ndarray:
        s = self.cov[seeds][:, seeds] + noise_var * np.eye(len(seeds))
        return np.linalg.solve(s, self.cov[seeds]).T  # cov[:, S] s^-1

    def merged(
        self, runs: Mapping[int, float], noise_var: float, post: Posterior, *, minimize: bool
    ) -> BaseBelief:
        """The new base's belief after merging a candidate with these runs and posterior.

        Given the effect d, the runs measure the old base (run + d for a metric to minimise)
        and the new base is the old one less d; averaged over d's posterior (moment-matched):
        every seed shifts by the effect's posterior mean and gains its variance, except where
        the merged runs measured the new base directly. The runs count once, not twice.
        """
        if not runs:
            return self.shift(-post.mean if minimize else post.mean, post.var)
        sign = 1.0 if minimize else -1.0
        seeds = np.fromiter(runs, dtype=int)
        values = np.fromiter(runs.values(), dtype=float)
        gain = self._gain(seeds, noise_var)
        loading = gain @ np.ones(len(seeds)) - 1.0  # how the new base moves with d
        mean = self.mean + gain @ (values - self.mean[seeds]) + sign * post.mean * loading
        cov = self.cov - gain @ self.cov[seeds] + post.var * np.outer(loading, loading)
        return BaseBelief(mean, (cov + cov.T) / 2)

    def closed(
        self, runs: Mapping[int, float], noise_var: float, post: Posterior, *, minimize: bool
    ) -> BaseBelief:
        """After a close: the runs measured the base itself, less the idea's effect.

        Given the effect d, a run is the base's value there less d (for a metric to minimise):
        the base given d and the runs is Gaussian, and d given the runs is the posterior the
        gate decided on (it already averages over the base's belief, so the runs count once).
        Moment-matched over d: observe the runs shifted by the effect's posterior mean, plus
        its posterior variance along the direction the runs move the base. A posterior too
        vague for the runs (decided against a vaguer belief than this one) would make some
        seed vaguer than it is: then the runs are left out, the belief unchanged.
        """
        if not runs:
            return self
        sign = 1.0 if minimize else -1.0
        seeds = np.fromiter(runs, dtype=int)
        values = np.fromiter(runs.values(), dtype=float) + sign * post.mean
        gain = self._gain(seeds, noise_var)
        along = gain @ np.ones(len(seeds))
        mean = self.mean + gain @ (values - self.mean[seeds])
        cov = self.cov - gain @ self.cov[seeds] + post.var * np.outer(along, along)
        if np.any(np.diag(cov) > np.diag(self.cov) * (1 + 1e-9)):
            return self
        return BaseBelief(mean, (cov + cov.T) / 2)


def evidence(
    belief: BaseBelief, runs: Mapping[int, float], noise_var: float, *, minimize: bool
) -> tuple[float, float]:
    """The candidate's precision-weighted mean improvement over the base, and its precision.

    Generalised least squares on the candidate's runs against the base's belief on their
    seeds: a seed the base has measured weighs more than one it has not.
    """
    if not runs:
        return 0.0, 0.0
    seeds = np.fromiter(runs, dtype=int)
    values = np.fromiter(runs.values(), dtype=float)
    sigma = belief.cov[seeds][:, seeds] + noise_var * np.eye(len(seeds))
    ones = np.ones(len(seeds))
    weights = np.linalg.solve(sigma, ones)
    precision = float(ones @ weights)
    diff = float(weights @ (values - belief.mean[seeds])) / precision
    return (-diff if minimize else diff), precision


@dataclass(frozen=True)
class Posterior:
    """The effect after the evidence: chance it helps, it is null, its mean and variance."""

    positive: float
    null_or_worse: float
    mean: float
    var: float
    null: float = 0.0  # the chance of exactly no effect (the spike)


def posterior(prior: EffectPrior, mean: float, precision: float) -> Posterior:
    """Spike-and-slab posterior of the effect given its mean and precision."""
    grid = np.asarray((0.0, *prior.grid))
    weights = np.asarray((prior.null, *(np.asarray(prior.weights) * (1 - prior.null))))
    log = np.log(np.maximum(weights, 1e-300)) - 0.5 * precision * (mean - grid) ** 2
    post = np.exp(log - log.max())
    post /= post.sum()
    m = float(post @ grid)
    return Posterior(
        float(post[grid > 0].sum()),
        float(post[grid <= 0].sum()),
        m,
        float(post @ grid**2 - m * m),
        float(post[0]),
    )


# -------------------------------------------------------------- the table

N_STEP = 0.5  # precision grid, in seeds of one paired-noise unit each
N_MAX = 12.0
M_POINTS = 101
M_LOW, M_HIGH = -6.0, 9.0
_NODES, _NODE_WEIGHTS = np.polynomial.hermite_e.hermegauss(11)
_NODE_WEIGHTS = _NODE_WEIGHTS / _NODE_WEIGHTS.sum()
PRICE_STEPS = 10  # bisection steps for the break-even price (1/1024 of its range)

Action = str  # "merge", "close", "seed"


@dataclass(frozen=True)
class Choice:
    """The table's answer in one state, with the values it weighed (in metric units)."""

    action: Action
    merge_value: float
    seed_value: float  # -inf when no more seeds are allowed
    posterior: Posterior

    @property
    def one_more_seed_buys(self) -> float:
        """What one more seed is worth over deciding now (net of its price); negative: nothing."""
        return self.seed_value - max(self.merge_value, 0.0)


@dataclass(frozen=True)
class DecisionTable:
    """Merge / close / one more seed over (precision, mean), in units of one paired difference.

    `price` is the price of one run, where starting a new idea breaks even; `penalty` the
    price of a merge's chance of being null or harmful above `budget`.
    """

    prior: EffectPrior
    budget: float
    penalty: float
    price: float
    n: np.ndarray
    m: np.ndarray
    merge: np.ndarray  # value of merging now
    seed: np.ndarray  # value of one more seed (then acting optimally); -inf at the grid's end
    root: float  # value of starting a new idea at `price`

    def choose(self, mean: float, precision: float, seeds: int) -> Choice:
        """The best action for a candidate with `seeds` runs, mean improvement and precision."""
        unit = self.prior.unit
        post = posterior(self.prior, mean, precision)
        if seeds <= 0 or precision <= 0:
            return Choice("seed", -math.inf, math.inf, post)
        n = min(precision * unit * unit, N_MAX)
        x = min(max(mean / unit, M_LOW), M_HIGH)
        merge_v = _bilinear(self.n, self.m, self.merge, n, x) * unit
        seed_v = (
            _bilinear(self.n, self.m, self.seed, n, x) * unit if seeds < MAX_SEEDS else -math.inf
        )
        if not math.isfinite(seed_v):
            seed_v = -math.inf
        if seed_v > max(merge_v, 0.0):
            return Choice("seed", merge_v, seed_v, post)
        return Choice("merge" if merge_v > 0 else "close", merge_v, seed_v, post)


def _bilinear(ns: np.ndarray, ms: np.ndarray, table: np.ndarray, n: float, m: float) -> float:
    i = min(max(int(np.searchsorted(ns, n)) - 1, 0), len(ns) - 2)
    t = min(max(float((n - ns[i]) / (ns[i + 1] - ns[i])), 0.0), 1.0)
    low = float(np.interp(m, ms, table[i]))
    high = float(np.interp(m, ms, table[i + 1]))
    if not math.isfinite(high):
        return low if t < 1 else high
    if not math.isfinite(low):
        return high if t > 0 else low
    return (1 - t) * low + t * high


@dataclass(frozen=True)
class _Kernel:
    """What backward induction needs that does not depend on the price: computed once per table.

    The posterior over the effect at every (precision, mean), the merge value, and for every
    precision step the next seed's predictive means as interpolation indices and fractions on
    the mean grid (so the induction at each trial price is gathers and sums, not searches).
    """

    ns: np.ndarray
    ms: np.ndarray
    post: np.ndarray  # (N, M, D)
    merge: np.ndarray  # (N, M)
    low: np.ndarray  # (N, M, D, nodes) lower interpolation index, the last step unused
    frac: np.ndarray  # (N, M, D, nodes)
    root_low: np.ndarray  # (D, nodes): the first seed, from the prior predictive
    root_frac: np.ndarray
    prior_w: np.ndarray
    step: int


def _positions(points: np.ndarray, ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation on the uniform grid `ms`, clamped at its ends as np.interp does."""
    at = (np.clip(points, ms[0], ms[-1]) - ms[0]) / (ms[1] - ms[0])
    low = np.minimum(np.floor(at).astype(np.intp), len(ms) - 2)
    return low, at - low


def _kernel(grid: np.ndarray, prior_w: np.ndarray, budget: float, penalty: float) -> _Kernel:
    ns = np.arange(N_STEP, N_MAX + 1e-9, N_STEP)
    ms = np.linspace(M_LOW, M_HIGH, M_POINTS)
    logw = np.log(np.maximum(prior_w, 1e-300))
    null_mask = grid <= 0
    # posterior over the effect at every (n, m): shape (N, M, D)
    log = logw[None, None, :] - 0.5 * ns[:, None, None] * (ms[None, :, None] - grid) ** 2
    post = np.exp(log - log.max(axis=2, keepdims=True))
    post /= post.sum(axis=2, keepdims=True)
    gain = post @ grid
    false = post[:, :, null_mask].sum(axis=2)
    merge = gain - penalty * (false - budget)
    step = int(round(1 / N_STEP))
    # the next seed's observation given effect d: mean' ~ N((n m + d) / (n + 1), 1 / (n + 1)^2)
    nxt = ns + 1.0
    centre = (ns[:, None, None] * ms[None, :, None] + grid[None, None, :]) / nxt[:, None, None]
    points = centre[..., None] + _NODES[None, None, None, :] / nxt[:, None, None, None]
    low, frac = _positions(points, ms)
    # the root: a first seed drawn from the prior predictive, mean ~ N(d, 1) at n = 1
    root_low, root_frac = _positions(grid[:, None] + _NODES[None, :], ms)
    return _Kernel(ns, ms, post, merge, low, frac, root_low, root_frac, prior_w, step)


def _induction(k: _Kernel, price: float) -> tuple[np.ndarray, float]:
    """Backward induction in paired-noise units at `price`: the seed value, and the root's."""
    seed = np.full_like(k.merge, -np.inf)
    value = np.maximum(k.merge, 0.0)
    for i in range(len(k.ns) - k.step - 1, -1, -1):
        ahead = value[i + k.step]
        low, frac = k.low[i], k.frac[i]
        expected = ((1 - frac) * ahead[low] + frac * ahead[low + 1]) @ _NODE_WEIGHTS  # (M, D)
        seed[i] = -price + np.sum(k.post[i] * expected, axis=1)
        value[i] = np.maximum(value[i], seed[i])
    first = value[k.step - 1]
    at_root = (1 - k.root_frac) * first[k.root_low] + k.root_frac * first[k.root_low + 1]
    root = -price + float(k.prior_w @ (at_root @ _NODE_WEIGHTS))
    return seed, root


@functools.lru_cache(maxsize=64)
def decision_table(
    prior: EffectPrior,
    budget: float = DEFAULT_FALSE_MERGES,
    penalty: float | None = None,
    price: float | None = None,
) -> DecisionTable:
    """The table for `prior`; `price` None sets it where starting a new idea breaks even.

    `penalty` (None: `PENALTY`) is in units of one paired difference's std.
    """
    penalty = PENALTY if penalty is None else penalty
    unit = prior.unit
    grid = np.asarray((0.0, *prior.grid)) / unit
    prior_w = np.asarray((prior.null, *(np.asarray(prior.weights) * (1 - prior.null))))
    kernel = _kernel(grid, prior_w, budget, penalty)
    if price is None:
        # the root's value falls as the price rises: bisect its zero, the price where starting
        # a new idea breaks even
        low, high = 0.0, float(np.abs(grid).max())
        for _ in range(PRICE_STEPS):
            mid = (low + high) / 2
            if _induction(kernel, mid)[1] > 0:
                low = mid
            else:
                high = mid
        price = low
    seed, root = _induction(kernel, price)
    return DecisionTable(
        prior, budget, penalty, price * unit, kernel.ns, kernel.ms, kernel.merge, seed, root * unit
    )


# ------------------------------------------------------------------ learning


def learn_noise(
    groups: Sequence[Sequence[tuple[float, float]]], *, min_df: int = MIN_POOLED_DF
) -> float | None:
    """Per-run noise std from the lab's paired (candidate, base) runs, at a conservative bound.

    Each group holds one decided candidate's runs with the base's run on the same seed and
    base. A paired difference carries the noise of two runs. With enough candidates of two
    or more such seeds, each group is centred on its own mean (so an idea's effect is not
    counted as noise; `bot.core.stats.pooled_paired_spread`) and the answer is the upper
    80 % confidence bound. Before that, most candidates have one seed: the median absolute
    deviation of their first differences: ideas' effects can only widen it, but from ten
    differences of a lab of null ideas it is a rough point estimate, not a bound (taking its
    upper bound cost power in bench/lab.py's tuning labs). None with fewer than
    `MIN_NOISE_PAIRS` of either. `min_df` is the pooled groups' degrees of freedom before
    they replace the median absolute deviation (bench/lab.py's "noise by design" row buys
    them with a second seed per idea: a within-idea contrast carries no effect).
    """
    pooled = pooled_paired_spread(groups, min_df=min_df)
    if pooled is not None:
        std, df = pooled
        return std * math.sqrt(df / float(chi2.ppf(NOISE_QUANTILE, df))) / math.sqrt(2)
    firsts = np.asarray([c - b for group in groups if group for c, b in group[:1]], dtype=float)
    firsts = firsts[np.isfinite(firsts)]
    if len(firsts) < MIN_NOISE_PAIRS:
        return None
    mad = float(np.median(np.abs(firsts - np.median(firsts))))
    return 1.4826 * mad / math.sqrt(2) if mad > 0 else None


def learn_seed_spread(groups: Sequence[Sequence[float]], noise: float) -> float | None:
    """The std of a seed's luck: bases' runs across seeds (each base centred), less the noise.

    Taken at the upper 80 % confidence bound of the runs' spread: a seed's luck that is
    thought smaller than it is makes every unmeasured seed look known, the evidence look
    more precise than it is. None with fewer than four degrees of freedom.
    """
    ss, df = 0.0, 0
    for values in groups:
        if len(values) >= 2:
            v = np.asarray(values, dtype=float)
            ss += float(((v - v.mean()) ** 2).sum())
            df += len(v) - 1
    if df < 4:
        return None
    upper = ss / float(chi2.ppf(NOISE_QUANTILE, df))
    return math.sqrt(max(upper - noise * noise, 0.05 * noise * noise))


def learn_prior(
    decided: Sequence[tuple[float, float, float]],
    start: EffectPrior,
    *,
    noise: float | None = None,
    seed_spread: float | None = None,
    iterations: int = 200,
) -> EffectPrior:
    """The spike-and-slab prior that best explains the decided ideas' evidence.

    `decided` holds each idea's evidence: (mean, precision, the noise std it was computed
    with); its precision is rescaled to `noise` (the lab's current estimate), so ideas judged
    under an older, more cautious noise do not look too alike. EM on the grid of `start`
    (maximising the marginal likelihood of every idea's evidence), smoothed towards it by a
    few ideas' worth of pseudo-counts so forty ideas do not make a spiky prior. The noise and
    seed spread are replaced when given.
    """
    base = replace(
        start,
        noise=noise if noise else start.noise,
        seed_spread=seed_spread if seed_spread else start.seed_spread,
    )
    data = [
        (m, p * (n / base.noise) ** 2)
        for m, p, n in decided
        if p > 0 and n > 0 and math.isfinite(m)
    ]
    if not data:
        return base
    grid = np.asarray((0.0, *base.grid))
    w0 = np.asarray((base.null, *(np.asarray(base.weights) * (1 - base.null))))
    means = np.asarray([m for m, _ in data])[:, None]
    precs = np.asarray([p for _, p in data])[:, None]
    like = np.sqrt(precs) * np.exp(-0.5 * precs * (means - grid[None, :]) ** 2)
    w = w0.copy()
    for _ in range(iterations):
        r = like * w
        r /= r.sum(axis=1, keepdims=True)
        w = (r.sum(axis=0) + PRIOR_PSEUDO_COUNT * w0) / (len(data) + PRIOR_PSEUDO_COUNT)
    null = float(w[0])
    return replace(
        base,
        null=null,
        weights=_normalised(w[1:] / max(1 - null, 1e-12)),
        learned_from=len(decided),
    )


def due_for_learning(decided: int) -> bool:
    """Whether the prior is refitted after `decided` ideas: at 40, then every 20."""
    return decided >= LEARN_FROM and (decided - LEARN_FROM) % LEARN_EVERY == 0


def due_for_noise(decided: int) -> bool:
    """Whether the noise alone is re-estimated: every `NOISE_EVERY` decided ideas before the
    prior is learned (the noise is taken at a conservative bound, so it may be learned early)."""
    return 0 < decided < LEARN_FROM and decided % NOISE_EVERY == 0


def budget_for(prior: EffectPrior, false_merges: float) -> float:
    """The lab's budget: stricter while the prior is still the vague one."""
    return false_merges if prior.learned_from else false_merges * VAGUE_BUDGET_FACTOR
