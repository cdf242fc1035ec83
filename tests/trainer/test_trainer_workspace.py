"""The repo cache, worktrees, commits and the diff check, on real git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_helpers import git, make_origin, push_branch

from bot.problem import load_problem
from trainer import workspace
from trainer.workspace import GitError, Workspace, auth_env, check_diff


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, str]:
    return make_origin(tmp_path)


def checkout(tmp_path: Path, bare: Path, sha: str) -> tuple[Workspace, Path, Path]:
    ws = Workspace(tmp_path / "host")
    cache = ws.fetch("lab/toy", f"file://{bare}", "ghs_secret", [sha])
    return ws, cache, ws.worktree(cache, sha, "job1")


def test_editable_only_change_passes(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(tmp_path, bare, "kohai/1-lr", {"train.py": "LR = 0.5\n"})
    _, _, tree = checkout(tmp_path, bare, head)
    assert (tree / "train.py").read_text() == "LR = 0.5\n"
    assert check_diff(tree, base, head, load_problem(tree)) is None


def test_frozen_file_edit_is_refused(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(tmp_path, bare, "kohai/2-cheat", {"prepare.py": "OFFSET = -100.0\n"})
    _, _, tree = checkout(tmp_path, bare, head)
    reason = check_diff(tree, base, head, load_problem(tree))
    assert reason is not None and "prepare.py" in reason


def test_uncommitted_frozen_edit_is_refused(tmp_path: Path, origin: tuple[Path, str]) -> None:
    """What runs is the working tree, so an edit that was never committed counts."""
    bare, base = origin
    _, _, tree = checkout(tmp_path, bare, base)
    (tree / "prepare.py").write_text("OFFSET = 0.0\n")
    reason = check_diff(tree, base, base, load_problem(tree))
    assert reason is not None and "prepare.py" in reason


def test_non_editable_file_is_refused(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(
        tmp_path, bare, "kohai/3-toml", {"kohai.toml": "[train]\nbudget = '1h'\n", "notes.txt": "x"}
    )
    _, _, tree = checkout(tmp_path, bare, head)
    reason = check_diff(tree, base, head, load_problem(tree))
    assert reason is not None
    assert "kohai.toml" in reason and "notes.txt" in reason


def test_fetch_updates_the_cache_and_token_stays_off_disk(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    bare, base = origin
    ws = Workspace(tmp_path / "host")
    cache = ws.fetch("lab/toy", str(bare), "ghs_secret", [base])
    later = push_branch(tmp_path, bare, "kohai/4-later", {"train.py": "LR = 0.2\n"})
    assert not ws.has_commit(cache, later)
    ws.fetch("lab/toy", str(bare), "ghs_secret", [later])
    assert ws.has_commit(cache, later)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "host").rglob("*") if p.is_file())
    assert b"ghs_secret" not in on_disk
    with pytest.raises(GitError, match="not in lab/toy"):
        ws.fetch("lab/toy", str(bare), None, ["0" * 40])


def test_auth_header_is_basic_x_access_token() -> None:
    env = auth_env("abc")
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    # base64("x-access-token:abc")
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic eC1hY2Nlc3MtdG9rZW46YWJj"


def test_commit_and_push_as_the_student(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(tmp_path, bare, "kohai/5-push", {"train.py": "LR = 0.3\n"})
    ws, cache, tree = checkout(tmp_path, bare, head)
    (tree / "train.py").write_text("LR = 0.05\n")
    sha = workspace.commit_changes(tree, ["train.py"], student="fern", message="Lower LR")
    assert sha is not None and sha != head
    workspace.push(tree, "kohai/5-push", "ghs_secret")
    assert git(bare, "rev-parse", "refs/heads/kohai/5-push") == sha
    assert git(bare, "log", "-1", "--format=%an|%s", sha) == "kohai student fern|Lower LR"
    assert workspace.commit_changes(tree, ["train.py"], student="fern", message="again") is None
    ws.remove(cache, tree)
    assert not tree.exists()
    assert "job1" not in git(cache, "worktree", "list")
