"""`kohai check` warns when a copy of the held-out data is readable from the training sandbox.

A tiny sealed problem whose `[eval] hide` names `heldout/`: with a second copy
of the held-out file committed elsewhere in the repository (which training's
checkout holds), the check finds it from inside the real sandbox and names it;
without one, it passes. The search matches content, so the copy's other name
does not hide it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.cli.check import check, held_out_verdicts
from bot.problem import load_problem
from trainer import sandbox

pytestmark = pytest.mark.timeout(180)

TOML = """
[metric]
name = "score"
direction = "minimize"
[train]
command = "python train.py"
budget = "5s"
[files]
editable = ["train.py"]
frozen = ["evaluate.py"]
[eval]
command = "python evaluate.py"
hide = ["heldout"]
"""
TRAIN = "import os\nopen(os.path.join(os.environ['KOHAI_RUN_DIR'], 'w.bin'), 'wb').write(b'1')\n"
EVALUATE = "import json, os\njson.dump({'score': 1.0}, open(os.environ['KOHAI_EVAL_FILE'], 'w'))\n"
HELD_OUT = "".join(f"held-out line {i}: the answers training must not see\n" for i in range(80))


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    assert sandbox.probe() is None, f"`make test` installs bubblewrap: {sandbox.probe()}"


def problem_repo(root: Path, *, copy: bool) -> Path:
    files = {
        "kohai.toml": TOML,
        "train.py": TRAIN,
        "evaluate.py": EVALUATE,
        "heldout/val.txt": HELD_OUT,
    }
    if copy:
        files["notes/renamed.txt"] = HELD_OUT
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for args in (
        ["init", "--quiet", "--initial-branch=main"],
        ["add", "--all"],
        ["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "--quiet", "-m", "x"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def test_a_copy_under_another_name_is_found_and_named(tmp_path: Path) -> None:
    repo = problem_repo(tmp_path / "lab", copy=True)
    (verdict,) = held_out_verdicts(load_problem(repo), repo)
    assert verdict.status == "warn"
    assert str((repo / "notes" / "renamed.txt").resolve()) in verdict.detail
    assert "heldout/val.txt" not in verdict.detail  # the hidden original is not readable


def test_no_copy_passes(tmp_path: Path) -> None:
    repo = problem_repo(tmp_path / "lab", copy=False)
    (verdict,) = held_out_verdicts(load_problem(repo), repo)
    assert verdict.status == "pass", verdict.detail
    assert "1 held-out file" in verdict.detail


def test_kohai_check_reports_it_beside_the_sandbox_step(tmp_path: Path) -> None:
    repo = problem_repo(tmp_path / "lab", copy=True)
    found = check(repo, budget_s=3)
    steps = {v.step: v.status for v in found}
    assert steps["sandbox"] == "pass" and steps["held-out data"] == "warn", found
