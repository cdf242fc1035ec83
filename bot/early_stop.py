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

Configured per problem as `[train] early_stop` in kohai.toml:

    early_stop = { after = 0.3, band = 2.0, patience = 2 }   # or true / false

Pure and standard-library only: the harness on a GPU host calls it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Point = Sequence[float]  # [x, value]: x a budget fraction or a step, as the baseline's are

DEFAULT_AFTER = 0.3
DEFAULT_BAND = 2.0
DEFAULT_PATIENCE = 2
MIN_BAND_REL = 0.002  # the band is at least 0.2 % of the baseline mean


class EarlyStopConfigError(ValueError):
    """`[train] early_stop` cannot be used; the message names the field."""


@dataclass(frozen=True)
class EarlyStopConfig:
    """`[train] early_stop`: off by default until a lab chooses the trade of power for GPU-hours."""

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


def parse_config(value: Any) -> EarlyStopConfig:
    """`[train] early_stop` as TOML gives it: absent, a boolean, or a table."""
    if value is None or value is False:
        return EarlyStopConfig()
    if value is True:
        return EarlyStopConfig(enabled=True)
    if not isinstance(value, dict):
        raise EarlyStopConfigError(
            f"train.early_stop: expected true, false or a table, got {value!r}"
        )
    unknown = set(value) - {"enabled", "after", "band", "patience"}
    if unknown:
        raise EarlyStopConfigError(f"train.early_stop: unknown keys {sorted(unknown)}")
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise EarlyStopConfigError(f"train.early_stop.enabled: expected a boolean, got {enabled!r}")
    after = _number(value.get("after", DEFAULT_AFTER), "after")
    band = _number(value.get("band", DEFAULT_BAND), "band")
    patience = value.get("patience", DEFAULT_PATIENCE)
    if not 0.0 <= after < 1.0:
        raise EarlyStopConfigError(f"train.early_stop.after: a fraction in [0, 1), got {after!r}")
    if band <= 0:
        raise EarlyStopConfigError(f"train.early_stop.band: must be positive, got {band!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise EarlyStopConfigError(
            f"train.early_stop.patience: a positive integer, got {patience!r}"
        )
    return EarlyStopConfig(enabled, after, band, patience)


def decide(
    run: Sequence[Point],
    baselines: Sequence[Sequence[Point]],
    fraction_used: float,
    config: EarlyStopConfig,
    *,
    minimize: bool = True,
    metric: str = "metric",
) -> StopDecision:
    """Stop when the run trails the baseline by more than its seeds' noise band, past `after`.

    `run` and each baseline curve are [x, value] points in increasing x (a
    budget fraction or a step; the same unit on both sides); non-finite values
    are dropped. `fraction_used` is the run's elapsed share of its budget.
    """
    if not config.enabled:
        return StopDecision(False, "early stopping is off")
    if fraction_used < config.after_fraction:
        return StopDecision(
            False, f"{fraction_used:.0%} of the budget used, before {config.after_fraction:.0%}"
        )
    points = _clean(run)
    curves = [c for c in (_clean(b) for b in baselines) if len(c) >= 2]
    if len(curves) < 2:
        return StopDecision(False, "fewer than two baseline curves: no noise band")
    if len(points) < config.patience:
        return StopDecision(False, f"fewer than {config.patience} progress points")
    checked: StopDecision | None = None
    for x, value in points[-config.patience :]:
        at_x = [v for v in (_interpolate(c, x) for c in curves) if v is not None]
        if len(at_x) < 2:
            return StopDecision(False, f"fewer than two baseline seeds reach {x:g}", at=x)
        mean = sum(at_x) / len(at_x)
        std = math.sqrt(sum((v - mean) ** 2 for v in at_x) / (len(at_x) - 1))
        band = max(config.band * std, MIN_BAND_REL * abs(mean))
        behind = value - mean if minimize else mean - value
        numbers = dict(
            at=x, value=value, baseline_mean=mean, baseline_std=std, n_baseline=len(at_x)
        )
        if behind <= band:
            return StopDecision(
                False,
                f"{metric} {value:.4g} at {x:g} is within {band:.2g} of the baseline's "
                f"{mean:.4g} ± {std:.2g}",
                **numbers,
            )
        checked = StopDecision(
            True,
            f"stopped early at {fraction_used:.0%} of the budget: {metric} {value:.4g} at {x:g} "
            f"trails the baseline's {mean:.4g} ± {std:.2g} ({len(at_x)} seeds) by {behind:.3g}, "
            f"more than the band {config.band:g} × std = {band:.2g}, for the last "
            f"{config.patience} point(s)",
            **numbers,
        )
    assert checked is not None
    return checked


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EarlyStopConfigError(f"train.early_stop.{name}: expected a number, got {value!r}")
    return float(value)


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
