"""What people look at on the dashboard, over real HTTP on the seeded lab.

- an experiment page draws each candidate seed over the baseline's seed of the
  same number on the same base, shows the bot's own diff highlighted, and
  renders hypotheses and rationales as Markdown with raw HTML disabled;
- the experiments table says which base each result was measured on and flags
  the ones the lab's base has moved past;
- the best-so-far chart counts experiments in whole numbers;
- the header's live badge shows a dot, not the CSS escape as text.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from bot.records import Run
from bot.render.report import overlay_svg, progress_svg
from bot.store import Store
from tests.support.dashboard_seed import BASES, Lab, Seeded, Served, serve_dashboard
from tests.webhooks.dashboard.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

SVG = "{http://www.w3.org/2000/svg}"
SVG_BLOCK = re.compile(r"<svg .*?</svg>", re.S)


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(block) for block in SVG_BLOCK.findall(html)]


def _section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    end = html.find("<section", start)
    return html[start : end if end > 0 else None]


def _run(seed: int, base: str, kind: str, start: float) -> Run:
    curve = [[step, start - step / 1000] for step in (0, 100, 200)]
    return Run(
        id=seed,
        repo_id=1,
        kind=kind,
        seed=seed,
        status="ok",
        metric=start,
        commit_sha="c" * 40,
        base_sha=base,
        curve=curve,
    )


def test_overlay_pairs_each_seed_with_the_baselines_same_seed_on_the_same_base() -> None:
    candidate = [_run(0, "a" * 40, "candidate", 2.0), _run(1, "a" * 40, "candidate", 2.1)]
    baseline = [
        _run(0, "a" * 40, "baseline", 2.5),  # seed 0's twin
        _run(0, "b" * 40, "baseline", 9.0),  # the same seed on another base: not a twin
        _run(2, "a" * 40, "baseline", 7.0),  # a seed the candidate did not run
    ]
    chart = ET.fromstring(overlay_svg(candidate, baseline))
    groups = {g.get("data-name"): g for g in chart.iter(f"{SVG}g") if g.get("data-name")}
    assert set(groups) == {"seed 0 @ccccccc", "baseline 0", "seed 1 @ccccccc"}
    (solid,) = groups["seed 0 @ccccccc"].iter(f"{SVG}polyline")
    (dashed,) = groups["baseline 0"].iter(f"{SVG}polyline")
    assert dashed.get("stroke-dasharray") and not solid.get("stroke-dasharray")
    assert dashed.get("stroke") == solid.get("stroke"), "a pair shares its colour"
    # The y range covers 2.0..2.5 only: the other base's 9.0 and seed 2's 7.0 are not drawn.
    labels = [t.text or "" for t in chart.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert all(float(label) < 3 for label in labels if label)


def test_the_experiment_page_draws_the_baseline_twins(served: Served) -> None:
    html = httpx.get(served.url + "/experiments/6", timeout=10).text  # one seed, base b2
    (chart,) = _svgs(_section(html, "exp-curves"))
    names = [g.get("data-name") for g in chart.iter(f"{SVG}g") if g.get("data-name")]
    assert names == ["seed 0 @c6c6c6c", "baseline 0"]
    assert "Dashed, in the same colour" in html


def test_the_experiment_page_shows_the_bots_diff_highlighted(
    served: Served, seeded: Seeded
) -> None:
    diff = (
        "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n"
        "@@ -1,2 +1,2 @@\n-LEARNING_RATE = 1e-3\n+LEARNING_RATE = 3e-3  # <script>x</script>\n"
        " DEPTH = 2\n"
    )
    writer = Store(seeded.path)
    writer.execute(
        "UPDATE jobs SET tip_sha = ?, tip_diff = ? WHERE experiment_id = ?",
        ("02" * 20, diff, seeded.ids["lr"]),
    )
    writer.close()
    change = _section(httpx.get(served.url + "/experiments/2", timeout=10).text, "exp-diff")
    assert '<span class="gd">-LEARNING_RATE = 1e-3</span>' in change
    assert (
        '<span class="gi">+LEARNING_RATE = 3e-3  # &lt;script&gt;x&lt;/script&gt;</span>' in change
    )
    assert '<span class="gu">@@ -1,2 +1,2 @@</span>' in change
    assert "<script>" not in change
    # Without a diff the bot computed itself, the page says so rather than show a host's.
    other = _section(httpx.get(served.url + "/experiments/3", timeout=10).text, "exp-diff")
    assert "No diff" in other and 'class="diff"' not in other


def test_hypotheses_and_rationales_are_markdown_without_raw_html(
    served: Served, seeded: Seeded
) -> None:
    writer = Store(seeded.path)
    writer.update(
        "experiments",
        seeded.ids["lr"],
        {
            "hypothesis": "**Why**: the loss still falls at the end.\n\n- lr 1e-3 -> 3e-3\n"
            "- nothing else\n\n<script>alert(1)</script> [x](javascript:alert(1))"
        },
    )
    writer.execute(
        "UPDATE decisions SET rationale = ? WHERE experiment_id = ? AND verdict = 'merge'",
        ("Merged: `p = 0.001` *one-sided*.", seeded.ids["lr"]),
    )
    writer.close()
    html = httpx.get(served.url + "/experiments/2", timeout=10).text
    summary = _section(html, "exp-summary")
    assert "<strong>Why</strong>" in summary and "**Why**" not in summary
    assert "<li>lr 1e-3 -&gt; 3e-3</li>" in summary
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in summary
    assert 'href="javascript:' not in html
    decisions = _section(html, "exp-decisions")
    assert "<code>p = 0.001</code>" in decisions and "<em>one-sided</em>" in decisions


def test_the_experiments_table_shows_each_base_and_flags_older_ones(served: Served) -> None:
    table = _section(httpx.get(served.url + "/", timeout=10).text, "experiments")
    assert "<th>base</th>" in table
    rows = {
        title: row
        for row in table.split("<tr")[2:]
        for title in ("Deeper model", "Wider embeddings", "Raise learning rate")
        if title in row
    }
    # Closed on b1 (the lab is on b2 now): its 1.481 is not comparable with today's results.
    assert BASES[1][:7] in rows["Deeper model"] and "older base" in rows["Deeper model"]
    assert BASES[2][:7] in rows["Wider embeddings"] and "older base" not in rows["Wider embeddings"]
    # A merged winner changed the base it was measured on: not flagged.
    assert "older base" not in rows["Raise learning rate"]
    runs = _section(httpx.get(served.url + "/experiments/3", timeout=10).text, "exp-runs")
    assert runs.count(">older base</span>") == 3  # each of its seeds, measured on b1


def _x_tick_labels(svg: ET.Element) -> list[str]:
    return [
        t.text or ""
        for t in svg.iter(f"{SVG}text")
        if t.get("text-anchor") == "middle" and t.get("fill") == "#4b5563"
    ]


def test_best_so_far_counts_whole_experiments(tmp_path: Path) -> None:
    """Two finished experiments: the x axis runs 0..2, which 1-2-5 ticks would cut at 0.5."""
    store = Store(tmp_path / "k.db")
    lab = Lab(store, time.time() - 3600)
    lab.runs("baseline", [1.5, 1.5], base=BASES[0], at=0)
    for n, value in ((2, 1.49), (3, 1.47)):
        exp = lab.experiment(f"try {n}", "closed", "fern", n, 10 * n, BASES[0])
        lab.runs("candidate", [value], base=BASES[0], at=100 * n, experiment_id=exp)
    store.close()
    running, stop = serve_dashboard(tmp_path / "k.db")
    try:
        html = httpx.get(running.url + "/", timeout=10).text
    finally:
        stop()
    over_experiments = _svgs(_section(html, "charts"))[0]
    ticks = _x_tick_labels(over_experiments)
    assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
    assert "0.5" not in ticks and "1.5" not in ticks


def test_progress_over_time_keeps_fractional_ticks() -> None:
    """Hours are not counts: only the experiment axis is made whole."""
    from bot.queries import BestSoFar, ProgressPoint

    points = [
        ProgressPoint(0.25 * i, 1.5 - i / 100, 1.5 - i / 100, False, i, i, "t") for i in (1, 2, 3)
    ]
    chart = ET.fromstring(progress_svg(BestSoFar("m", True, "hours", 1.5, points), "t"))
    assert any("." in t for t in _x_tick_labels(chart))


def test_the_live_badge_shows_a_dot(served: Served) -> None:
    css = httpx.get(served.url + "/static/dashboard.css", timeout=10).text
    assert ".live::before" in css and "\\\\25CF" not in css


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing")
def test_the_live_badge_in_a_browser(served: Served) -> None:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(served.url + "/")
            page.wait_for_selector("#live.on", timeout=15_000)
            before = page.evaluate(
                "getComputedStyle(document.querySelector('#live'), '::before').content"
            )
            assert before == '"\u25cf\u00a0"', before
        finally:
            browser.close()
