"""The session report: markdown with the leaderboard and decisions, and its two charts."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from bot.problem import Problem
from bot.render.report import write_report
from bot.store import Store
from tests.support.dashboard_seed import Seeded


def test_report_with_leaderboard_experiments_and_charts(seeded: Seeded, tmp_path: Path) -> None:
    store = Store(seeded.path)
    path = write_report(store, Problem(), tmp_path / "out", title="charlm session")
    store.close()
    text = path.read_text()
    assert path.name == "report.md" and text.startswith("# charlm session\n")
    assert "- Starting baseline: 1.5010" in text
    assert "- Current baseline: 1.4287 ± 0.0015 over 3 seeds on `b2b2b2b`" in text
    assert "- Best so far: 1.4283 (-0.0727 against the start)" in text
    leaderboard = text[text.index("## Leaderboard") : text.index("## Experiments")]
    rows = [
        line for line in leaderboard.splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert rows[1].startswith("| 1 | [#4](https://github.com/lab/charlm/pull/4) | Cosine")
    assert rows[2].startswith("| 2 | [#2](https://github.com/lab/charlm/pull/2) | Raise")
    assert "| claimed Δ | measured Δ |" in rows[0]
    assert "| -0.0330 | -0.0327 (n=3) |" in rows[1]  # what it claimed, what the lab then measured
    experiments = text[text.index("## Experiments") :]
    assert experiments.count("\n| [#") == 8
    assert "close (advisor) | Worse by 0.02" in experiments
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        chart = ET.parse(path.parent / image).getroot()
        assert chart.tag == "{http://www.w3.org/2000/svg}svg"
        dots = chart.findall(".//{*}g[@class='series']/{*}circle")
        assert len(dots) == 4  # the four experiments with results, merged or not
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "best_over_experiments.svg",
        "best_over_time.svg",
        "report.md",
    ]


def test_report_of_an_empty_lab(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty.db")
    store.insert("repos", {"full_name": "lab/x", "created_at": time.time()})
    path = write_report(store, None, tmp_path)
    store.close()
    text = path.read_text()
    assert "No winner merged yet." in text and "No experiments yet." in text
    assert "Current baseline: not measured yet" in text
    chart = ET.parse(tmp_path / "best_over_time.svg").getroot()
    assert "no data yet" in "".join(chart.itertext())
