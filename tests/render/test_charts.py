"""SVG and mermaid charts: well-formed, labelled, escaped, scaled to the data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from bot.render.charts import Series, line_chart, mermaid_xychart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_line_chart_is_valid_svg_with_axes_ticks_and_legend() -> None:
    svg = line_chart(
        [
            Series("loss", [(0, 2.0), (100, 1.5), (200, 1.2)]),
            Series("best", [(0, 2.0), (200, 1.2)], step=True),
        ],
        title="training",
        x_label="step",
        y_label="train loss",
    )
    root = parse(svg)
    assert root.tag == f"{SVG}svg"
    labels = texts(root)
    assert "training" in labels and "step" in labels and "train loss" in labels
    assert "loss" in labels and "best" in labels  # legend
    assert "100" in labels and "200" in labels  # x ticks
    polylines = list(root.iter(f"{SVG}polyline"))
    assert len(polylines) == 2
    # a step series of two points draws three vertices (the staircase corner)
    assert len(polylines[1].get("points").split()) == 3


def test_points_are_scaled_inside_the_plot_and_lower_values_drawn_lower() -> None:
    root = parse(
        line_chart(
            [Series("m", [(1, 10.0), (2, 20.0)], markers=True)],
            title="t",
            x_label="x",
            y_label="y",
            width=400,
            height=200,
        )
    )
    circles = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")]
    assert len(circles) == 2
    (x1, y1), (x2, y2) = sorted(circles)
    assert 0 < x1 < x2 < 400 and 0 < y2 < y1 < 200  # SVG y grows downwards


def test_text_from_the_store_is_escaped() -> None:
    svg = line_chart(
        [Series("<script>&", [(0, 1.0), (1, 2.0)])],
        title='a "quoted" <b>',
        x_label="x",
        y_label="y",
    )
    root = parse(svg)
    assert "<script>&" in texts(root)
    assert "<script>" not in svg


def test_empty_and_degenerate_data() -> None:
    assert "no data yet" in texts(parse(line_chart([], title="t", x_label="x", y_label="y")))
    single = parse(line_chart([Series("one", [(3, 1.5)])], title="t", x_label="x", y_label="y"))
    assert len(list(single.iter(f"{SVG}circle"))) == 1
    nan = parse(
        line_chart(
            [Series("n", [(0, float("nan")), (1, 1.0), (2, 1.1)])],
            title="t",
            x_label="x",
            y_label="y",
        )
    )
    assert len(list(nan.iter(f"{SVG}polyline"))[0].get("points").split()) == 2


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 10, 6) == [0, 2, 4, 6, 8, 10]
    ticks = nice_ticks(1.4213, 1.5031, 5)
    assert ticks[0] >= 1.4213 and ticks[-1] <= 1.5031 and len(ticks) >= 3
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1


def test_mermaid_xychart_block() -> None:
    block = mermaid_xychart(
        'loss "seed 0"', list(range(0, 1000, 10)), [2 - i / 100 for i in range(100)], "train loss"
    )
    lines = block.splitlines()
    assert lines[0] == "```mermaid" and lines[1] == "xychart-beta" and lines[-1] == "```"
    assert lines[2] == "    title \"loss 'seed 0'\""
    categories = re.search(r'x-axis "step" \[(.*)\]', block).group(1).split(", ")
    values = re.search(r"line \[(.*)\]", block).group(1).split(", ")
    assert len(categories) == len(values) == 40  # thinned evenly, ends kept
    assert categories[0] == '"0"' and categories[-1] == '"990"'
    low, high = map(float, re.search(r'y-axis "train loss" (\S+) --> (\S+)', block).groups())
    assert low < 1.01 and high > 2.0
