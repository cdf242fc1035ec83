"""`report.md`, its charts and `kohai status` keep two labs apart.

`lab/charlm` minimizes val_bpb (the seeded three-hour session) and
`lab/vision` maximizes accuracy. Before, the report and `kohai status`
without `--repo` mixed them: one lab's baseline beside the other's start, a
point of one lab on the other's chart. Now each lab is a section of its own,
its charts are its own files, and `--repo` narrows to one.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.render.report import write_report
from bot.store import Store
from tests.support.dashboard_seed import CHARLM_TOML, Seeded, seed_lab, seed_vision


@pytest.fixture
def two_labs(tmp_path: Path) -> Iterator[Seeded]:
    path = tmp_path / "kohai.db"
    store = Store(path)
    t0 = time.time() - 3 * 3600
    ids = seed_lab(store, t0)
    store.execute(
        "UPDATE repos SET problem_toml = ? WHERE full_name = 'lab/charlm'", (CHARLM_TOML,)
    )
    ids.update({f"vision_{k}": v for k, v in seed_vision(store, t0).items()})
    store.close()
    yield Seeded(path, ids)


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _dots(path: Path) -> int:
    chart = ET.parse(path).getroot()
    return len(chart.findall(".//{*}g[@class='series']/{*}circle"))


def test_the_report_has_a_section_and_charts_per_lab(two_labs: Seeded, tmp_path: Path) -> None:
    store = Store(two_labs.path)
    path = write_report(store, None, tmp_path / "out")
    store.close()
    text = path.read_text()
    charlm, vision = _section(text, "lab/charlm"), _section(text, "lab/vision")
    assert "`val_bpb` (lower is better)" in charlm and "accuracy" not in charlm
    assert "`accuracy` (higher is better)" in vision and "val_bpb" not in vision
    # Each lab's start and best are its own: vision starts at 0.70, not charlm's 1.50.
    assert "- Starting baseline: 1.5010" in charlm and "- Best so far: 1.4283" in charlm
    assert "- Starting baseline: 0.7000" in vision and "- Best so far: 0.9100" in vision
    assert "Wider convolutions" in vision and "Wider convolutions" not in charlm
    assert "Cosine schedule" in charlm and "Cosine schedule" not in vision
    # Each result says which base it was measured on; one the lab has left is marked.
    deeper = next(line for line in charlm.splitlines() if "Deeper model" in line)
    assert "`b1b1b1b` (older base)" in deeper
    wide = next(line for line in charlm.splitlines() if "Wider embeddings" in line)
    assert "`b2b2b2b`" in wide and "older base" not in wide
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(images) == [
        "lab-charlm-best_over_experiments.svg",
        "lab-charlm-best_over_time.svg",
        "lab-vision-best_over_experiments.svg",
        "lab-vision-best_over_time.svg",
    ]
    # charlm has four experiments with results, vision two: no point on the other's chart.
    assert _dots(path.parent / "lab-charlm-best_over_experiments.svg") == 4
    assert _dots(path.parent / "lab-vision-best_over_experiments.svg") == 2


def test_the_report_narrowed_to_one_lab(two_labs: Seeded, tmp_path: Path) -> None:
    store = Store(two_labs.path)
    path = write_report(store, None, tmp_path / "out", repo="lab/vision")
    store.close()
    text = path.read_text()
    assert "Lab: `lab/vision`." in text and "val_bpb" not in text
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "best_over_experiments.svg",
        "best_over_time.svg",
        "report.md",
    ]
    assert _dots(path.parent / "best_over_experiments.svg") == 2


def test_status_without_repo_is_a_section_per_lab(
    two_labs: Seeded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    from bot.cli import main

    monkeypatch.setenv("KOHAI_DB", str(two_labs.path))
    monkeypatch.delenv("KOHAI_PROBLEM", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["status", "--json"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    sections = {s["repo"]: s for s in snapshot["sections"]}
    assert set(sections) == {"lab/charlm", "lab/vision"}
    assert "metric" not in snapshot, "no lab's metric stands for all of them"
    vision, charlm = sections["lab/vision"], sections["lab/charlm"]
    assert (vision["metric"], vision["direction"]) == ("accuracy", "maximize")
    assert vision["best"] == pytest.approx(0.91) and round(charlm["best"], 4) == 1.4283
    assert vision["baseline"]["mean"] == pytest.approx(0.70)
    assert {e["title"] for e in vision["experiments"]} == {
        "Wider convolutions",
        "Mixup augmentation",
    }
    assert all(e["repo"] == "lab/charlm" for e in charlm["experiments"])
    assert [s["name"] for s in snapshot["students"]] == ["fern", "frieren", "himmel", "stark"]

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    vision_at, charlm_at = out.index("== lab lab/vision =="), out.index("== lab lab/charlm ==")
    charlm_text = out[charlm_at:vision_at] if charlm_at < vision_at else out[charlm_at:]
    assert "metric: val_bpb (minimize)" in charlm_text and "Wider convolutions" not in charlm_text
    assert "metric: accuracy (maximize)" in out[vision_at:]


def test_kohai_report_writes_the_report_of_a_lab_on_github(
    two_labs: Seeded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """Not only the demo: `kohai report` writes report.md and the charts from the database."""
    from bot.cli import main

    monkeypatch.setenv("KOHAI_DB", str(two_labs.path))
    monkeypatch.setenv("KOHAI_GITHUB_HTML_URL", "https://github.example.com")
    monkeypatch.delenv("KOHAI_PROBLEM", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--out", "all"]) == 0
    assert "wrote" in capsys.readouterr().out
    text = (tmp_path / "all" / "report.md").read_text()
    assert "\n## lab/charlm\n" in text and "\n## lab/vision\n" in text
    assert "https://github.example.com/lab/charlm/pull/" in text
    assert _dots(tmp_path / "all" / "lab-vision-best_over_experiments.svg") == 2
    assert main(["report", "--repo", "lab/vision", "--out", "one"]) == 0
    assert "Lab: `lab/vision`." in (tmp_path / "one" / "report.md").read_text()
    assert main(["report", "--repo", "lab/nowhere"]) == 1
    assert "kohai report:" in capsys.readouterr().err
