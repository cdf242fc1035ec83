"""What a Messages API call cost, from its usage and the model's list prices.

Prices are US dollars per million tokens. Cache writes (5-minute ephemeral)
and cache reads are priced apart from plain input: with prompt caching the
stable part of a prompt is paid for at the write price once, then at the
read price. A model missing from the table is costed as the most expensive
family member we know, so an unknown id over-reports rather than hides cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float


@dataclass(frozen=True)
class Usage:
    """Token counts of one call; `input_tokens` excludes cached and cache-written tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


PRICES: dict[str, Price] = {
    "claude-haiku-4-5": Price(1.0, 5.0, 1.25, 0.10),
    "claude-haiku-5-5": Price(0.10, 0.50, 0.125, 0.01),
    "claude-sonnet-4-5": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-6": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-5": Price(2.0, 10.0, 2.5, 0.20),
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.5, 0.10),
    "claude-opus-4-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-7": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-8": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-5-5": Price(4.0, 20.0, 5.0, 0.20),
}

# The priciest known member of each family: the fallback for ids not in PRICES.
_FAMILY_CEILING = {
    "haiku": PRICES["claude-haiku-4-5"],
    "sonnet": PRICES["claude-sonnet-4-6"],
    "opus": Price(15.0, 75.0, 18.75, 1.50),
}
_UNKNOWN = Price(15.0, 75.0, 18.75, 1.50)


def price_for(model: str) -> Price:
    """The list price of `model`; dated ids (`...-20250929`) price as their alias."""
    if model in PRICES:
        return PRICES[model]
    for known in sorted(PRICES, key=len, reverse=True):
        suffix = model[len(known) + 1 :]
        if model.startswith(known + "-") and len(suffix) == 8 and suffix.isdigit():
            return PRICES[known]
    for family, price in _FAMILY_CEILING.items():
        if family in model:
            return price
    return _UNKNOWN


def usage_from(usage: Any) -> Usage:
    """Read an SDK `Usage` object (or a dict of the same fields); absent fields count as 0."""

    def field(name: str) -> int:
        value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
        return int(value or 0)

    return Usage(
        input_tokens=field("input_tokens"),
        output_tokens=field("output_tokens"),
        cache_read_tokens=field("cache_read_input_tokens"),
        cache_write_tokens=field("cache_creation_input_tokens"),
    )


def cost_usd(model: str, usage: Usage) -> float:
    price = price_for(model)
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * price.cache_write
        + usage.cache_read_tokens * price.cache_read
    )
    return total / 1_000_000
