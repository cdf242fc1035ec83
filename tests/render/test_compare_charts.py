"""The pure chart pieces behind the results comment and the dashboard (table-driven)."""

from __future__ import annotations

import math
import re

import pytest

from bot.records import Run
from bot.render.charts import (
    BASELINE_COLOR,
    CANDIDATE_COLOR,
    MERMAID_MAX_POINTS,
    Curve,
    integer_ticks,
    mean_curve,
    mermaid_lines,
)
from bot.render.comments import compare_chart


@pytest.mark.parametrize(
    ("low", "high", "ticks"),
    [
        (-0.04, 2.04, [0.0, 1.0, 2.0]),  # 1-2-5 ticks would put 0.5 and 1.5 here
        (0.98, 1.02, [1.0]),  # one experiment
        (0.0, 40.0, [0.0, 10.0, 20.0, 30.0, 40.0]),
        (0.6, 0.9, [1.0]),  # no whole number inside: the nearest one
        (-math.inf, 3.0, []),
    ],
)
def test_integer_ticks(low: float, high: float, ticks: list[float]) -> None:
    assert integer_ticks(low, high, 6) == ticks


def test_mean_curve_counts_a_seed_only_where_it_logged() -> None:
    short, medium, long = [(1, 5.5)], [(1, 5.4), (10, 4.8)], [(1, 5.3), (10, 4.7), (20, 3.5)]
    means = mean_curve([short, medium, long])
    assert [x for x, _ in means] == [1.0, 10.0, 20.0]
    assert means[0][1] == pytest.approx(5.4)
    assert means[1][1] == pytest.approx(4.75)  # the short seed does not hold 5.5 at step 10
    assert means[2][1] == pytest.approx(3.5)
    assert mean_curve([]) == [] and mean_curve([[(0, math.nan)]]) == []


def _lines(block: str) -> list[list[float]]:
    return [
        [float(v) for v in m.group(1).split(", ")]
        for m in re.finditer(r"^    line \[(.*)\]$", block, re.M)
    ]


def test_mermaid_lines_fix_colours_in_order_and_name_them_below() -> None:
    long = [(float(s), 3.0 - s / 1000) for s in range(0, 1000, 10)]
    block = mermaid_lines(
        "t",
        [Curve("this PR", CANDIDATE_COLOR, long), Curve("baseline", BASELINE_COLOR, long[:50])],
        "train loss",
    )
    assert f'"plotColorPalette": "{CANDIDATE_COLOR}, {BASELINE_COLOR}"' in block
    categories = re.search(r'x-axis "step" \[(.*)\]', block)
    assert categories is not None
    count = len(categories.group(1).split(", "))
    assert count <= MERMAID_MAX_POINTS
    assert [len(values) for values in _lines(block)] == [count, count]
    assert block.endswith("<sub>Lines: 🟦 this PR · 🟧 baseline</sub>")
    assert mermaid_lines("t", [Curve("x", CANDIDATE_COLOR, [])], "y") == ""


def _run(seed: int, kind: str, curve: list[list[float]]) -> Run:
    return Run(id=seed, repo_id=1, kind=kind, seed=seed, status="ok", metric=1.0, curve=curve)


def test_compare_chart_says_which_baseline_seeds_it_drew() -> None:
    mine = [_run(0, "candidate", [[0, 3.0], [10, 2.0]]), _run(1, "candidate", [[0, 3.1]])]
    matched = [_run(1, "baseline", [[0, 3.2], [10, 2.5]]), _run(5, "baseline", [[0, 9.0]])]
    chart = compare_chart(mine, matched)
    assert "this PR (mean of seeds 0, 1)" in chart
    assert "baseline on the same base (matched seeds: 1)" in chart
    assert "9" not in "".join(str(v) for row in _lines(chart) for v in row), "seed 5 is not drawn"
    unmatched = compare_chart(mine, [_run(5, "baseline", [[0, 2.9], [10, 2.4]])])
    assert "(its seeds, none matched: 5)" in unmatched
    alone = compare_chart(mine, [])
    assert "no baseline curve on this base yet" in alone and len(_lines(alone)) == 1
    assert compare_chart([_run(0, "candidate", [])], matched) == ""
