"""Early stopping, the decision: is this run clearly losing to the baseline at the same point?

A run's progress curve (the `KOHAI_METRICS_FILE` points, never the result) is
compared with the baseline's curves, one per seed, at the same point of
training: the same fraction of the budget, or the same step (both sides in the
same unit). The run is stopped when, past `after_fraction` of its budget, its
last `patience` points all trail the baseline seeds' mean at those points by
more than the noise band, `band` × the baseline seeds' standard deviation
there (with a small relative floor, so identical baseline seeds do not make a
hair's difference fatal). Without at least two baseline seeds covering the
point there is no noise band, and the run continues.

Why this rule: a null idea costs about three full runs through the gate
(`bench/decisions.py`), and most ideas are null or harmful; stopping the ones
that are clearly behind halfway recovers much of that. The band is measured,
not guessed: it is the spread the same code shows across seeds at that point,
so a curve inside it is indistinguishable from the baseline and keeps running.
The cost is power: a late bloomer (worse early, better at the end) is stopped.
That is why it is off by default, and the lab benchmark (`bench/lab.py`)
reports both ways.

Configured per problem as `[train] early_stop` in kohai.toml (parsed by
`bot.problem` into `EarlyStop`, which `decide` takes as it is):

    early_stop = { after = 0.3, band = 3 }   # or true / false

`stop_rule` turns it into the harness's `StopRule`: a function of the run's
curve so far and the fraction of the budget used, answering the reason to stop
or None. Pure and standard-library only: the harness on a GPU host calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Point = Sequence[float]  # [x, value]: x a budget fraction or a step, as the baseline's are

DEFAULT_AFTER = 0.3
DEFAULT_BAND = 3.0  # as `bot.problem.EarlyStop`
DEFAULT_PATIENCE = 2
MIN_BAND_REL = 0.002  # the band is at least 0.2 % of the baseline mean
MAX_RHO = 0.95  # a paired band never narrows below a third of the seeds' spread


class StopConfig(Protocol):
    """What `decide` reads of a config: `bot.problem.EarlyStop` or `EarlyStopConfig`.

    `enabled` (default True: an `EarlyStop` exists only when declared) and
    `patience` (default DEFAULT_PATIENCE) are read when present.
    """

    @property
    def after_fraction(self) -> float: ...

    @property
    def band(self) -> float: ...


@dataclass(frozen=True)
class EarlyStopConfig:
    """A full config for tests and the benchmark; off by default like `[train] early_stop`."""

    enabled: bool = False
    after_fraction: float = DEFAULT_AFTER
    band: float = DEFAULT_BAND
    patience: int = DEFAULT_PATIENCE


@dataclass(frozen=True)
class StopDecision:
    """Stop or continue, why, and the numbers the run's record shows."""

    stop: bool
    reason: str
    at: float | None = None  # the x of the run's last point
    value: float | None = None
    baseline_mean: float | None = None
    baseline_std: float | None = None
    n_baseline: int = 0


def decide(
    run: Sequence[Point],
    baselines: Sequence[Sequence[Point]],
    fraction_used: float,
    config: StopConfig,
    *,
    minimize: bool = True,
    metric: str = "metric",
    matched: Sequence[Point] | None = None,
    seed_correlation: float | None = None,
) -> StopDecision:
    """Stop when the run trails the baseline by more than its seeds' noise band, past `after`.

    `run` and each baseline curve are [x, value] points in increasing x (a
    budget fraction or a step; the same unit on both sides); non-finite values
    are dropped. `fraction_used` is the run's elapsed share of its budget.

    With `matched`, the baseline's curve of the run's own seed, the comparison
    is paired: the run is measured against that curve, whose seed luck it
    shares, and the band is `band` × the spread of a paired difference: the
    baseline seeds' std × sqrt(2 (1 - rho)), rho being the lab's matched-seed
    correlation (`seed_correlation`; unknown counts as 0, the widest band).
    Without it (or where the matched curve does not reach the point) the run is
    measured against the baseline seeds' mean, as before.
    """
    patience = max(1, int(getattr(config, "patience", DEFAULT_PATIENCE)))
    if not getattr(config, "enabled", True):
        return StopDecision(False, "early stopping is off")
    if fraction_used < config.after_fraction:
        return StopDecision(
            False, f"{fraction_used:.0%} of the budget used, before {config.after_fraction:.0%}"
        )
    points = _clean(run)
    curves = [c for c in (_clean(b) for b in baselines) if len(c) >= 2]
    if len(curves) < 2:
        return StopDecision(False, "fewer than two baseline curves: no noise band")
    if len(points) < patience:
        return StopDecision(False, f"fewer than {patience} progress points")
    mine = _clean(matched) if matched is not None else []
    rho = 0.0  # unknown or not a number: the widest band
    if seed_correlation is not None and math.isfinite(seed_correlation):
        rho = min(max(seed_correlation, 0.0), MAX_RHO)
    checked: StopDecision | None = None
    for x, value in points[-patience:]:
        at_x = [v for v in (_interpolate(c, x) for c in curves) if v is not None]
        if len(at_x) < 2:
            return StopDecision(False, f"fewer than two baseline seeds reach {x:g}", at=x)
        mean = sum(at_x) / len(at_x)
        std = math.sqrt(sum((v - mean) ** 2 for v in at_x) / (len(at_x) - 1))
        own = _interpolate(mine, x) if len(mine) >= 2 else None
        ref = f"the baseline's {mean:.4g} ± {std:.2g} ({len(at_x)} seeds)"
        if own is not None:  # paired: this seed's own baseline, the spread of a difference
            mean, std = own, std * math.sqrt(2 * (1 - rho))
            ref = f"its seed's baseline {mean:.4g} (paired spread {std:.2g})"
        band = max(config.band * std, MIN_BAND_REL * abs(mean))
        behind = value - mean if minimize else mean - value
        numbers: dict[str, Any] = dict(
            at=x, value=value, baseline_mean=mean, baseline_std=std, n_baseline=len(at_x)
        )
        if behind <= band:
            return StopDecision(
                False,
                f"{metric} {value:.4g} at {x:g} is within {band:.2g} of {ref}",
                **numbers,
            )
        checked = StopDecision(
            True,
            f"stopped early at {fraction_used:.0%} of the budget: {metric} {value:.4g} at {x:g} "
            f"trails {ref} by {behind:.3g}, "
            f"more than the band {config.band:g} × std = {band:.2g}, for the last "
            f"{patience} point(s)",
            **numbers,
        )
    assert checked is not None
    return checked


def stop_rule(
    baselines: Sequence[Sequence[Point]],
    config: StopConfig,
    *,
    minimize: bool = True,
    metric: str = "train_loss",
    matched: Sequence[Point] | None = None,
    seed_correlation: float | None = None,
) -> Callable[[list[list[float]], float], str | None]:
    """The harness's `StopRule` for one run: its reason to stop, or None to go on.

    `baselines` are the current base's baseline curves (`runs.curve`, one per
    seed) in the run's unit; `matched` is the one of the run's own seed, when
    the baseline has it (a paired comparison); the progress curve is a loss, so
    lower is better unless told otherwise.
    """
    curves = [list(c) for c in baselines]
    own = list(matched) if matched is not None else None

    def rule(curve: list[list[float]], fraction_used: float) -> str | None:
        decision = decide(
            curve,
            curves,
            fraction_used,
            config,
            minimize=minimize,
            metric=metric,
            matched=own,
            seed_correlation=seed_correlation,
        )
        return decision.reason if decision.stop else None

    return rule


def _clean(curve: Sequence[Point]) -> list[tuple[float, float]]:
    """Finite [x, value] pairs sorted by x (a malformed point is dropped, not fatal)."""
    out = []
    for point in curve:
        try:
            x, value = float(point[0]), float(point[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(x) and math.isfinite(value):
            out.append((x, value))
    return sorted(out)


def _interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    """The curve's value at x, linear between its points; None outside its range."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x0 <= x <= x1:
            if x1 == x0:
                return y1
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1] if x == curve[-1][0] else None
