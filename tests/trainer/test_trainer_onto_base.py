"""Bringing a conflicting hypothesis onto a new base, and seeing that nothing is left to test."""

from __future__ import annotations

from pathlib import Path

from agents.offline.student import implement
from bot.problem import loads_problem
from bot.protocol import Implement
from tests.trainer.test_trainer_new_base import git, repo
from trainer.workspace import catch_up_with_base, changed_since

PROBLEM = loads_problem(
    '[metric]\nname = "loss"\n[train]\ncommand = "true"\n[files]\neditable = ["train.py"]\n'
    "[search]\nLR = { min = 0.1, max = 10.0 }\n"
)


def conflicting(tmp_path: Path) -> tuple[Path, str]:
    root, _ = repo(tmp_path)
    git(root, "checkout", "-qb", "pr")
    (root / "train.py").write_text("LR = 2\nDEPTH = 2\n")
    git(root, "commit", "-qam", "pr: LR 2")
    git(root, "checkout", "-q", "main")
    (root / "train.py").write_text("LR = 3\nDEPTH = 4\n")
    git(root, "commit", "-qam", "winner: LR 3, DEPTH 4")
    new_base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "pr")
    return root, new_base


def test_onto_base_keeps_the_base_then_the_student_reapplies_the_hypothesis(
    tmp_path: Path,
) -> None:
    root, new_base = conflicting(tmp_path)
    assert catch_up_with_base(root, new_base, student="fern", prefer_base=True) is None
    git(root, "merge-base", "--is-ancestor", new_base, "HEAD")  # a fast-forward push later
    assert (root / "train.py").read_text() == "LR = 3\nDEPTH = 4\n"
    outcome = implement(root, Implement(hypothesis="LR 2", knobs={"LR": 2}), PROBLEM)
    assert outcome.error is None and outcome.changed_files == ["train.py"]
    # The hypothesis, on top of what the base gained.
    assert (root / "train.py").read_text() == "LR = 2\nDEPTH = 4\n"


def test_an_empty_diff_against_the_base_is_seen(tmp_path: Path) -> None:
    root, _ = repo(tmp_path)
    git(root, "checkout", "-qb", "pr")
    (root / "train.py").write_text("LR = 2\nDEPTH = 2\n")
    git(root, "commit", "-qam", "pr")
    git(root, "checkout", "-q", "main")
    (root / "train.py").write_text("LR = 2\nDEPTH = 2\n")  # the same change landed on main
    git(root, "commit", "-qam", "same change")
    new_base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "pr")
    assert changed_since(root, new_base) == []
    assert catch_up_with_base(root, new_base, student="fern") is None
    assert changed_since(root, new_base) == []
