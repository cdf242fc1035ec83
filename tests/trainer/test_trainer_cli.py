"""`kohai init` and `kohai train` on the reference problem (one real, short training run)."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from bot.cli import main
from bot.problem import load_problem
from trainer.cli import REFERENCE_PROBLEM


@pytest.mark.slow
def test_init_then_train_gives_a_finite_val_bpb(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "lab"
    assert main(["init", str(repo)]) == 0
    assert {"kohai.toml", "program.md", "train.py", "prepare.py"} <= {
        p.name for p in repo.iterdir()
    }
    log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True)
    assert log.stdout.strip() == "Reference problem: charlm"
    problem = load_problem(repo)
    assert (problem.metric, problem.direction, problem.budget_s) == ("val_bpb", "minimize", 30.0)

    capsys.readouterr()
    assert main(["train", str(repo), "--budget", "5s", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("val_bpb: "))
    val_bpb = float(row.split()[1])
    assert math.isfinite(val_bpb) and 0.5 < val_bpb < 8.0
    assert "status: ok" in out.splitlines()
    assert "sealed: yes" in out.splitlines()
    assert "sandboxed: yes" in out.splitlines()
    clean = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True
    )
    assert clean.stdout == "", "run artefacts must be ignored by git"


def test_init_example_refuses_a_non_empty_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["init", "--example", "charlm", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_train_fails_on_a_crashing_script(tmp_path: Path, capsys) -> None:
    (tmp_path / "kohai.toml").write_text(
        '[metric]\nname = "val_bpb"\n[train]\ncommand = "python train.py"\nbudget = "5s"\n'
    )
    (tmp_path / "train.py").write_text("raise SystemExit('no data')\n")
    assert main(["train", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "crash" in out and "no data" in out


def test_reference_problem_knobs_are_train_py_constants() -> None:
    source = (REFERENCE_PROBLEM / "train.py").read_text()
    problem = load_problem(REFERENCE_PROBLEM)
    assert problem.knobs
    for knob in problem.knobs:
        assert f"\n{knob.name} = " in source, knob.name


def test_train_refuses_without_a_sandbox_unless_told_unsandboxed(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kohai train` behaves as a host does: no sandbox, no run, unless --unsandboxed."""
    from trainer import sandbox

    (tmp_path / "kohai.toml").write_text(
        '[metric]\nname = "val_bpb"\n[train]\ncommand = "python train.py"\nbudget = "5s"\n'
    )
    (tmp_path / "train.py").write_text("print('val_bpb: 1.5')\n")
    monkeypatch.setattr(sandbox, "probe", lambda: "bubblewrap (bwrap) is not installed")
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the job sandbox cannot start: bubblewrap (bwrap) is not installed" in err
    assert "--unsandboxed" in err
    assert main(["train", str(tmp_path), "--unsandboxed"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "sandboxed: no (unsandboxed)" in out and "status: ok" in out
