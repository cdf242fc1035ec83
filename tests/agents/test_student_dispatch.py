"""The host-side student entry point and the editable-files rule, on real git repositories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agents.student import changed_files, enforce_editable, implement, is_editable
from bot.problem import Problem, loads_problem
from bot.protocol import Implement

FILES = {
    "train.py": "LEARNING_RATE = 3e-3\nN_LAYER = 2\n",
    "prepare.py": "VOCAB = 256\n",
    "kohai.toml": '[files]\neditable = ["train.py"]\n',
    "data/notes.txt": "frozen data\n",
}


def _git_out(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def test_enforce_editable_reverts_everything_outside_editable(
    tmp_path: Path, git_repo, problem: Problem
) -> None:
    repo = git_repo(tmp_path / "repo", FILES)
    (repo / "train.py").write_text("LEARNING_RATE = 1e-3\nN_LAYER = 2\n")  # allowed
    (repo / "prepare.py").write_text("VOCAB = 512\n")  # modified, not editable
    (repo / "kohai.toml").unlink()  # deleted, not editable
    (repo / "extra.py").write_text("print('sneaky')\n")  # untracked, not editable
    (repo / "staged.py").write_text("X = 1\n")
    _git_out(repo, "add", "staged.py")  # staged new file, not editable

    reverted = enforce_editable(repo, problem)

    assert reverted == ["extra.py", "kohai.toml", "prepare.py", "staged.py"]
    assert (repo / "prepare.py").read_text() == "VOCAB = 256\n"
    assert (repo / "kohai.toml").is_file()
    assert not (repo / "extra.py").exists() and not (repo / "staged.py").exists()
    assert (repo / "train.py").read_text().startswith("LEARNING_RATE = 1e-3")
    assert changed_files(repo) == ["train.py"]
    assert _git_out(repo, "status", "--porcelain").strip() == "M train.py"


def test_enforce_editable_catches_committed_changes(
    tmp_path: Path, git_repo, problem: Problem
) -> None:
    repo = git_repo(tmp_path / "repo", FILES)
    start = _git_out(repo, "rev-parse", "HEAD").strip()
    (repo / "prepare.py").write_text("VOCAB = 1\n")
    (repo / "new_module.py").write_text("Y = 2\n")
    _git_out(repo, "add", "-A")
    _git_out(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "agent commit")

    reverted = enforce_editable(repo, problem, since=start)

    assert reverted == ["new_module.py", "prepare.py"]
    assert (repo / "prepare.py").read_text() == "VOCAB = 256\n"
    assert not (repo / "new_module.py").exists()
    assert changed_files(repo, since=start) == []


def test_is_editable_patterns() -> None:
    problem = loads_problem(
        '[metric]\nname = "loss"\n[files]\neditable = ["train.py", "model/", "configs/*.yaml"]\n'
    )
    assert is_editable("train.py", problem)
    assert is_editable("model/layers.py", problem)
    assert is_editable("configs/small.yaml", problem)
    assert not is_editable("prepare.py", problem)
    assert not is_editable("train.py.bak", problem)
    assert not is_editable("modelx/a.py", problem)


def test_implement_offline_in_a_git_worktree(tmp_path: Path, git_repo, problem: Problem) -> None:
    repo = git_repo(tmp_path / "repo", FILES)
    (repo / "prepare.py").write_text("VOCAB = 1\n")  # left over from elsewhere: put back
    spec = Implement(hypothesis="deeper", knobs={"N_LAYER": 3}, mode="offline")

    outcome = implement(repo, spec, problem)

    assert outcome.error is None
    assert outcome.changed_files == ["train.py"]
    assert outcome.reverted_files == ["prepare.py"]
    assert "Reverted changes outside the editable files: prepare.py" in outcome.notes
    assert (repo / "train.py").read_text() == "LEARNING_RATE = 3e-3\nN_LAYER = 3\n"
    assert (repo / "prepare.py").read_text() == "VOCAB = 256\n"


def test_implement_offline_unknown_knob(tmp_path: Path, git_repo, problem: Problem) -> None:
    repo = git_repo(tmp_path / "repo", FILES)
    outcome = implement(repo, Implement(hypothesis="h", knobs={"DROPOUT": 0.1}), problem)
    assert outcome.error is not None and "DROPOUT" in outcome.error
    assert outcome.changed_files == []


def test_implement_unknown_mode(tmp_path: Path, git_repo, problem: Problem) -> None:
    repo = git_repo(tmp_path / "repo", FILES)
    spec = Implement(hypothesis="h", mode="telepathy")  # type: ignore[arg-type]
    assert "telepathy" in (implement(repo, spec, problem).error or "")


def test_host_side_imports_need_no_server_dependencies() -> None:
    """GPU hosts install neither the server's packages nor scipy: the student must not need them."""
    script = (
        "import sys\n"
        "for name in ('scipy', 'sqlite_utils', 'litestar', 'githubkit', 'anthropic'):\n"
        "    sys.modules[name] = None\n"
        "import agents.student, agents.offline.student\n"
        "blocked = {'bot.store', 'bot.core.stats', 'bot.core.gate', 'agents.context', 'agents.advisor'}\n"
        "print(sorted(blocked & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "[]"
