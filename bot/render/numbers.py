"""How every number a person reads is written: one home, so comments, the dashboard,
the CLI, the report and the agents' prompts agree on what a metric looks like."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def number(value: Any, spec: str = ".4f", missing: str = MISSING) -> str:
    """`value` formatted with `spec`; `missing` for None, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return missing
    if not math.isfinite(value):
        return missing
    return format(value, spec)


def metric(value: float | None, std: float | None = None, digits: int = 4) -> str:
    """A metric, with its seed spread when there is one: `1.2345 ± 0.0123`."""
    text = number(value, f".{digits}f")
    if text == MISSING or not std:
        return text
    return f"{text} ± {number(std, f'.{digits}f')}"


def delta(value: float | None, digits: int = 4) -> str:
    """A signed difference: `+0.0123`."""
    return number(value, f"+.{digits}f")


def measured(gain: float | None, seeds: int, digits: int = 4) -> str:
    """A winner's measured gain: the re-measured baseline after its merge minus the old one."""
    if gain is None:
        return "not yet measured"
    return f"{number(gain, f'+.{digits}f')} (n={seeds})"


def mean_spread(mean: float | None, std: float | None, n: int, missing: str = MISSING) -> str:
    """A mean over seeds for a prompt: `1.234 ± 0.012 (n=3)`."""
    if mean is None:
        return missing
    return f"{number(mean, '.4g')} ± {number(std or 0.0, '.2g')} (n={n})"
