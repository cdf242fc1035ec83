"""The prompt templates (package data) and the cost arithmetic."""

from __future__ import annotations

import re

import pytest

import prompts
from agents.claude.pricing import PRICES, Usage, cost_usd, price_for, usage_from


@pytest.mark.parametrize("name", prompts.NAMES)
def test_every_template_fills_completely(name: str) -> None:
    values = {key: f"<{key}>" for key in prompts.placeholders(name)}
    text = prompts.load(name, **values)
    for key in values:
        assert f"<{key}>" in text
    assert not re.search(r"\$[A-Za-z_{]", text), "a placeholder was left unfilled"


@pytest.mark.parametrize("name", prompts.NAMES)
def test_every_template_states_the_rules(name: str) -> None:
    text = " ".join(prompts.template(name).template.lower().split())
    for word in ("budget", "metric", "frozen", "editable", "harness", "hypothesis"):
        assert word in text, f"{name} does not mention the {word}"
    if name.endswith("_system"):
        assert "not negotiable" in text and "one hypothesis per pull request" in text


def test_missing_values_are_named() -> None:
    with pytest.raises(prompts.PromptError, match="needs values for: student, plateau_note"):
        prompts.load("advisor_propose", context="x", metric="m", direction="d")


def test_unknown_template_is_a_clear_error() -> None:
    with pytest.raises(prompts.PromptError, match="no prompt template 'nope'"):
        prompts.load("nope")


def test_a_doubled_dollar_is_a_literal_dollar() -> None:
    values = {key: "v" for key in prompts.placeholders("student_implement")}
    values["budget_usd"] = "2.00"
    assert "about $2.00 of model usage" in prompts.load("student_implement", **values)


def test_cost_uses_separate_cache_prices() -> None:
    usage = Usage(
        input_tokens=1000, output_tokens=500, cache_read_tokens=10000, cache_write_tokens=2000
    )
    p = PRICES["claude-sonnet-4-5"]
    expected = (1000 * p.input + 500 * p.output + 10000 * p.cache_read + 2000 * p.cache_write) / 1e6
    assert cost_usd("claude-sonnet-4-5", usage) == pytest.approx(expected)
    assert cost_usd("claude-sonnet-4-5", usage) == pytest.approx(0.003 + 0.0075 + 0.003 + 0.0075)


def test_dated_ids_price_as_their_alias_and_unknown_ids_err_high() -> None:
    assert price_for("claude-sonnet-4-5-20250929") == PRICES["claude-sonnet-4-5"]
    assert price_for("claude-sonnet-5-5") == PRICES["claude-sonnet-5-5"]
    assert price_for("claude-sonnet-9") == PRICES["claude-sonnet-4-6"]  # family ceiling
    assert price_for("some-other-model").output >= max(p.output for p in PRICES.values())


def test_usage_from_reads_objects_and_dicts() -> None:
    raw = {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": None}
    assert usage_from(raw) == Usage(5, 7, 0, 0)
    assert usage_from(raw) + Usage(1, 1, 1, 1) == Usage(6, 8, 1, 1)
