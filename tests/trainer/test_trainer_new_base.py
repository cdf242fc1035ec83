"""A PR measured on an old base is brought onto the new base before it is re-run."""

from __future__ import annotations

import subprocess
from pathlib import Path

from trainer.workspace import catch_up_with_base


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("LR = 1\nDEPTH = 2\n")
    (root / "README").write_text("a\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    return root, git(root, "rev-parse", "HEAD")


def test_a_clean_new_base_is_merged_in(tmp_path: Path) -> None:
    root, old = repo(tmp_path)
    git(root, "checkout", "-qb", "pr")
    (root / "train.py").write_text("LR = 2\nDEPTH = 2\n")
    git(root, "commit", "-qam", "pr")
    git(root, "checkout", "-q", "main")
    (root / "README").write_text("b\n")
    git(root, "commit", "-qam", "winner")
    new_base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "pr")
    assert catch_up_with_base(root, new_base, student="fern") is None
    git(root, "merge-base", "--is-ancestor", new_base, "HEAD")  # raises if not
    assert (root / "README").read_text() == "b\n" and "LR = 2" in (root / "train.py").read_text()
    assert catch_up_with_base(root, new_base, student="fern") is None  # idempotent
    del old


def test_a_conflicting_new_base_is_reported_and_leaves_the_branch_clean(tmp_path: Path) -> None:
    root, _ = repo(tmp_path)
    git(root, "checkout", "-qb", "pr")
    (root / "train.py").write_text("LR = 2\nDEPTH = 2\n")
    git(root, "commit", "-qam", "pr")
    head = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "main")
    (root / "train.py").write_text("LR = 3\nDEPTH = 2\n")
    git(root, "commit", "-qam", "winner")
    new_base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "pr")
    reason = catch_up_with_base(root, new_base, student="fern")
    assert reason is not None and "conflicts with the new base" in reason
    assert git(root, "rev-parse", "HEAD") == head
    assert git(root, "status", "--porcelain") == ""
