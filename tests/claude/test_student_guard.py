"""The coding agent's per-call guard and its prompts, as pure decisions on real paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.claude import briefs, guard
from bot.problem import loads_problem
from bot.protocol import Implement

PROBLEM = loads_problem(
    '[metric]\nname = "val_bpb"\n[train]\nbudget = "30s"\n[files]\neditable = ["train.py", "model/"]\nfrozen = ["prepare.py"]\n'
)


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "model").mkdir(parents=True)
    (root / "train.py").write_text("X = 1\n")
    (root / "escape").symlink_to(tmp_path)  # a link inside that points outside
    return root


@pytest.mark.parametrize(
    "tool, tool_input, denied_because",
    [
        ("Read", {"file_path": "train.py"}, None),
        ("Read", {"file_path": "{root}/model/block.py"}, None),
        ("Edit", {"file_path": "{root}/train.py"}, None),
        ("Write", {"file_path": "{root}/prepare.py"}, None),  # inside: the revert rule handles it
        ("Glob", {"pattern": "**/*.py"}, None),
        ("Grep", {"pattern": "LEARNING_RATE"}, None),
        ("Read", {"file_path": "/etc/passwd"}, "outside the repository"),
        ("Read", {"file_path": "../secret.txt"}, "outside the repository"),
        ("Read", {"file_path": "escape/secret.txt"}, "outside the repository"),
        ("Write", {"file_path": "{root}/.git/hooks/pre-commit"}, ".git directory"),
        ("Edit", {"file_path": ".git/config"}, ".git directory"),
        ("Grep", {"pattern": "key", "path": "/"}, "outside the repository"),
        ("Glob", {"pattern": "/etc/*"}, "outside the repository"),
        ("Glob", {"pattern": "../**"}, "outside the repository"),
        ("mcp__kohai__smoke_run", {}, None),
        ("mcp__other__smoke_run", {}, "not available"),
        # The old syntax-check rule ran a py_compile.py the agent could write: no shell at all.
        ("Bash", {"command": "python -m py_compile train.py"}, "no shell here"),
        ("Bash", {"command": "python train.py"}, "no shell here"),
        ("Bash", {"command": "touch hacked"}, "no shell here"),
        ("WebFetch", {"url": "https://example.com"}, "not available"),
        ("Agent", {"prompt": "help"}, "not available"),
    ],
)
def test_deny_reason(
    worktree: Path, tool: str, tool_input: dict, denied_because: str | None
) -> None:
    filled = {k: v.replace("{root}", str(worktree)) for k, v in tool_input.items()}
    reason = guard.deny_reason(tool, filled, worktree)
    if denied_because is None:
        assert reason is None
    else:
        assert reason is not None and denied_because in reason


def test_edit_warning_names_the_file_and_the_editable_ones(worktree: Path) -> None:
    note = guard.edit_warning(
        "Write", {"file_path": str(worktree / "prepare.py")}, worktree, PROBLEM
    )
    assert note.startswith("prepare.py is not an editable file")
    assert "train.py, model/" in note
    assert guard.edit_warning("Edit", {"file_path": "model/block.py"}, worktree, PROBLEM) == ""
    assert guard.edit_warning("Read", {"file_path": "prepare.py"}, worktree, PROBLEM) == ""


@pytest.mark.parametrize(
    "feedback, crash",
    [
        ("", False),
        ("Please also scale the warmup with the batch size.", False),
        ("Traceback (most recent call last):\n  File 'train.py'\nValueError: bad", True),
        ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("crash: exit code 1\nsegfault", True),
        ("timeout: the run passed budget + grace", True),
    ],
)
def test_is_crash_report(feedback: str, crash: bool) -> None:
    assert briefs.is_crash_report(feedback) is crash


def test_implement_prompt_states_the_limits_knobs_and_review() -> None:
    spec = Implement(
        hypothesis="Use a cosine learning-rate schedule in train.py.",
        title="Cosine schedule",
        knobs={"LEARNING_RATE": 0.002},
        mode="claude",
        feedback="Decay to 10% of the peak, not to zero.",
    )
    prompt = briefs.task_prompt(spec, PROBLEM, max_turns=12, budget_usd=1.5)
    assert "## Cosine schedule" in prompt and spec.hypothesis in prompt
    assert "Set these values exactly: LEARNING_RATE=0.002." in prompt
    assert "Review of the previous attempt" in prompt and "10% of the peak" in prompt
    assert "`train.py`, `model/`" in prompt and "`prepare.py`" in prompt
    assert "at most 12 turns" in prompt and "$1.50" in prompt
    assert "$" not in prompt.replace("$1.50", "")  # no unfilled placeholder


def test_debug_prompt_carries_the_end_of_a_long_log() -> None:
    log = "step 1\n" * 3000 + "Traceback (most recent call last):\nKeyError: 'lr'\n"
    spec = Implement(hypothesis="Add label smoothing.", mode="claude", feedback=log)
    prompt = briefs.task_prompt(spec, PROBLEM, max_turns=5, budget_usd=1.0)
    assert "last training run of this experiment failed" in prompt
    assert "KeyError: 'lr'" in prompt and "earlier output cut" in prompt
    assert len(prompt) < briefs.LOG_CHARS + 2000


def test_system_prompt_states_the_rules_from_the_problem() -> None:
    text = briefs.system_prompt(PROBLEM)
    assert "`train.py`, `model/`" in text and "`prepare.py`" in text
    assert "30 seconds" in text and "`python train.py`" in text
    assert "val_bpb" in text and "minimize" in text
    assert "not negotiable" in text and "one hypothesis" in text.lower()


def test_the_student_imports_nothing_of_the_server() -> None:
    """GPU hosts install neither the server's dependencies nor the anthropic SDK."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('anthropic', 'litestar', 'githubkit', 'sqlite_utils'):\n"
        "    sys.modules[name] = None\n"
        "import agents.claude.student\n"
        "loaded = {m.split('.')[0] + '.' + m.split('.')[1] for m in sys.modules\n"
        "          if m.startswith('bot.')}\n"
        "print(sorted(loaded))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['bot.problem', 'bot.protocol']"
