"""`kohai status` and `kohai history` through the real CLI entry point over a seeded file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bot.cli import main
from tests.support.dashboard_seed import BASES, Seeded

COLUMNS = [
    "commit", "val_bpb", "memory_gb", "status", "description",
    "student", "seeds", "duration_s", "cost_usd", "pr", "parent", "trust",
]  # fmt: skip


@pytest.fixture
def db_env(seeded: Seeded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Seeded:
    monkeypatch.setenv("KOHAI_DB", str(seeded.path))
    monkeypatch.delenv("KOHAI_PROBLEM", raising=False)
    monkeypatch.chdir(tmp_path)  # no kohai.toml here: the default problem
    return seeded


def test_history_export_tsv_in_autoresearch_order(db_env: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "results.tsv"
    assert main(["history", "--export", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == COLUMNS
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 8
    assert rows[1] == [
        "c1c1c1c", "1.462", "2.2", "keep", "Raise learning rate to 3e-3",
        "fern", "3", "301.0", "0.6", "2", BASES[0][:7], "sealed",
    ]  # fmt: skip
    crash = rows[4]
    assert crash[1] == "" and crash[3] == "crash" and crash[9] == "5"
    assert [r[3] for r in rows].count("baseline") == 3


def test_history_export_csv_and_json_agree(db_env: Seeded, tmp_path: Path) -> None:
    assert main(["history", "--export", str(tmp_path / "h.csv")]) == 0
    assert main(["history", "--export", str(tmp_path / "h.json")]) == 0
    with open(tmp_path / "h.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    records = json.loads((tmp_path / "h.json").read_text())
    assert list(records[0]) == COLUMNS and list(csv_rows[0]) == COLUMNS
    assert [r["status"] for r in records] == [r["status"] for r in csv_rows]
    assert records[4]["val_bpb"] is None and csv_rows[4]["val_bpb"] == ""
    assert records[1]["val_bpb"] == 1.462 and records[1]["pr"] == 2


def test_history_best_only_and_the_metric_named_by_the_problem(
    db_env: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem_dir = tmp_path / "problem"
    problem_dir.mkdir()
    (problem_dir / "kohai.toml").write_text('[metric]\nname = "bpb"\ndirection = "minimize"\n')
    monkeypatch.setenv("KOHAI_PROBLEM", str(problem_dir))
    out = tmp_path / "best.json"
    assert main(["history", "--best", "--export", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["status"], round(r["bpb"], 4)) for r in records] == [
        ("baseline", 1.501), ("keep", 1.462), ("baseline", 1.4613), ("keep", 1.4283)]  # fmt: skip


def test_history_table_and_bad_export_name(db_env: Seeded, capsys, tmp_path: Path) -> None:
    assert main(["history"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == COLUMNS and len(table) == 2 + 8
    assert main(["history", "--export", str(tmp_path / "h.xlsx")]) == 1
    assert ".tsv, .csv or .json" in capsys.readouterr().err


def test_status_json_parses(db_env: Seeded, capsys) -> None:
    assert main(["status", "--json"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["metric"] == "val_bpb" and snapshot["direction"] == "minimize"
    assert len(snapshot["experiments"]) == 8
    assert snapshot["baseline"]["base_sha"] == BASES[2]
    assert round(snapshot["best"], 4) == 1.4283
    assert [s["name"] for s in snapshot["students"]] == ["fern", "frieren", "himmel", "stark"]
    assert [q["state"] for q in snapshot["queue"]] == ["leased", "leased", "queued"]


def test_status_table(db_env: Seeded, capsys) -> None:
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "baseline: 1.4287 ± 0.0015" in out
    assert "Cosine schedule with warmup" in out and "merge by human:alice" in out


def test_missing_database_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("KOHAI_DB", str(tmp_path / "absent.db"))
    monkeypatch.chdir(tmp_path)
    for command in (["status", "--json"], ["history"]):
        assert main(command) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "absent.db" in err
    assert not (tmp_path / "absent.db").exists()
