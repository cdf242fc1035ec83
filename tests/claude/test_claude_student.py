"""The Claude student: the real bundled Claude Code CLI, scripted through a loopback API.

The scripted server plays the model; the CLI runs its real tools (Read, Edit,
Write, Bash) on a real git repository, and kohai's hooks and editable-files
rule act on what it does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.scripted_anthropic import (
    RecordedRequest,
    Reply,
    ScriptedAnthropic,
    error,
    text,
    tool_use,
    uses_tools,
)

from agents import student as student_dispatch
from agents.claude import student
from bot.problem import Problem, loads_problem
from bot.protocol import Implement

pytestmark = pytest.mark.timeout(120)

TRAIN = "import prepare\n\nLEARNING_RATE = 3e-3\nN_LAYER = 2\n"
PREPARE = "VOCAB_SIZE = 256\n"
TOML = '[metric]\nname = "val_bpb"\n[files]\neditable = ["train.py"]\nfrozen = ["prepare.py"]\n'
MODEL = "claude-sonnet-5-5"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "charlm"
    path.mkdir()
    for name, body in {"train.py": TRAIN, "prepare.py": PREPARE, "kohai.toml": TOML}.items():
        (path / name).write_text(body)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def problem() -> Problem:
    return loads_problem(TOML)


def cli_env(api: ScriptedAnthropic, home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {
        "ANTHROPIC_BASE_URL": api.url,
        "ANTHROPIC_API_KEY": "test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HOME": str(home),
    }


def for_agent(*replies: Reply) -> list[Reply]:
    """Replies for the agent's working turns; side calls without tools get the default."""
    for reply in replies:
        reply.when = uses_tools
    return list(replies)


def tool_results(request: RecordedRequest) -> dict[str, dict]:
    """The tool_result blocks a request carries, by tool_use_id."""
    found = {}
    for message in request.body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if block.get("type") == "tool_result":
                    found[block["tool_use_id"]] = block
    return found


def result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content)
    return str(content)


def test_real_tool_calls_edit_train_py_and_a_frozen_write_is_reverted(
    repo: Path, problem: Problem, tmp_path: Path
) -> None:
    train, prepare = str(repo / "train.py"), str(repo / "prepare.py")
    touch = tool_use("Bash", {"command": "touch hacked", "description": "x"})
    outside = tool_use("Read", {"file_path": str(tmp_path / "secret.txt")})
    (tmp_path / "secret.txt").write_text("host secrets\n")
    check = tool_use("mcp__kohai__smoke_run", {})
    script = for_agent(
        tool_use("Read", {"file_path": train}, say="Let me look at the training script."),
        tool_use(
            "Edit",
            {
                "file_path": train,
                "old_string": "LEARNING_RATE = 3e-3",
                "new_string": "LEARNING_RATE = 1e-3",
            },
        ),
        tool_use("Read", {"file_path": prepare}),
        tool_use("Write", {"file_path": prepare, "content": "VOCAB_SIZE = 512\n"}),
        touch,
        outside,
        check,
        text("Lowered LEARNING_RATE to 1e-3 in train.py."),
    )
    spec = Implement(
        hypothesis="Lower the learning rate in train.py to 1e-3 for a smoother loss.",
        title="Lower the learning rate",
        mode="claude",
    )
    with ScriptedAnthropic(script) as api:
        outcome = student.implement(
            repo, spec, problem, model=MODEL, max_turns=15, env=cli_env(api, tmp_path / "home")
        )

    assert api.remaining == [], "the CLI did not play the whole script"
    assert outcome.error is None, outcome.error
    # The real Edit tool changed train.py on disk; the frozen file was put back.
    assert (repo / "train.py").read_text() == TRAIN.replace("3e-3", "1e-3")
    assert (repo / "prepare.py").read_text() == PREPARE
    assert outcome.changed_files == ["train.py"]
    assert outcome.reverted_files == ["prepare.py"]
    assert "prepare.py" in outcome.notes and "Lowered LEARNING_RATE" in outcome.notes
    assert git(repo, "status", "--porcelain").strip() == "M train.py"
    # The guard refused the shell command and the read outside the worktree.
    assert not (repo / "hacked").exists()
    assert not (repo / "__pycache__").exists()  # the smoke run wrote no bytecode
    final = api.requests[-1]
    results = tool_results(final)
    touch_id, outside_id, check_id = (r.content[0]["id"] for r in (touch, outside, check))
    assert results[touch_id].get("is_error") is True
    assert "No such tool available: Bash" in result_text(results[touch_id])
    assert results[outside_id].get("is_error") is True
    assert "outside the repository" in result_text(results[outside_id])
    assert "host secrets" not in json.dumps(final.body)
    assert not results[check_id].get("is_error"), result_text(results[check_id])
    assert "smoke run: exited 0" in result_text(results[check_id])
    assert outcome.smoke_s > 0 and "Smoke runs: 1" in outcome.notes
    # The agent was told early that its prepare.py change would not stick.
    assert "prepare.py is not an editable file" in json.dumps(final.body)
    # What the CLI sent: kohai's prompts, the chosen model, only the student's tools.
    first = api.requests[0].body
    assert first["model"] == MODEL
    assert "not negotiable" in json.dumps(first["system"])
    assert spec.hypothesis in json.dumps(first["messages"])
    offered = {t["name"] for t in first["tools"]}
    assert {"Read", "Edit", "Write", "Glob", "Grep", "mcp__kohai__smoke_run"} <= offered
    assert not offered & {"Bash", "WebFetch", "WebSearch", "Agent", "Task"}
    # Cost comes from the CLI's own accounting of the scripted usage.
    assert outcome.cost_usd > 0


def test_a_crash_log_gets_the_debug_prompt(repo: Path, problem: Problem, tmp_path: Path) -> None:
    log = (
        'Traceback (most recent call last):\n  File "train.py", line 3\n'
        "ZeroDivisionError: division by zero\n"
    )
    script = for_agent(
        tool_use("Read", {"file_path": str(repo / "train.py")}),
        tool_use(
            "Edit",
            {
                "file_path": str(repo / "train.py"),
                "old_string": "N_LAYER = 2",
                "new_string": "N_LAYER = 3",
            },
        ),
        text("Cause: bad layer count. Fix: N_LAYER = 3."),
    )
    spec = Implement(hypothesis="Use three layers.", title="Deeper", mode="claude", feedback=log)
    with ScriptedAnthropic(script) as api:
        outcome = student.implement(
            repo, spec, problem, max_turns=5, env=cli_env(api, tmp_path / "home")
        )
    assert outcome.error is None, outcome.error
    assert outcome.changed_files == ["train.py"] and outcome.reverted_files == []
    prompt = json.dumps(api.requests[0].body["messages"])
    assert "ZeroDivisionError: division by zero" in prompt
    assert "last training run of this experiment failed" in prompt


def test_finishing_without_an_editable_change_is_an_error(
    repo: Path, problem: Problem, tmp_path: Path
) -> None:
    script = for_agent(
        tool_use("Write", {"file_path": str(repo / "notes.md"), "content": "thoughts\n"}),
        text("I wrote down my thoughts instead."),
    )
    spec = Implement(hypothesis="Try a cosine schedule.", mode="claude")
    with ScriptedAnthropic(script) as api:
        outcome = student.implement(
            repo, spec, problem, max_turns=5, env=cli_env(api, tmp_path / "h")
        )
    assert outcome.error is not None
    assert "without changing an editable file" in outcome.error
    assert outcome.reverted_files == ["notes.md"] and not (repo / "notes.md").exists()
    assert outcome.cost_usd > 0


def test_an_api_refusal_is_reported_not_raised(
    repo: Path, problem: Problem, tmp_path: Path
) -> None:
    refusal = error(400, "invalid_request_error", "this key cannot use the model")
    with ScriptedAnthropic([], default=refusal) as api:
        outcome = student.implement(
            repo,
            Implement(hypothesis="Anything.", mode="claude"),
            problem,
            max_turns=3,
            env=cli_env(api, tmp_path / "home"),
            timeout_s=60,
        )
    assert outcome.error is not None
    assert outcome.error.startswith("the coding agent stopped (API error 400)")
    assert "this key cannot use the model" in outcome.error
    assert outcome.changed_files == []
    assert (repo / "train.py").read_text() == TRAIN


@pytest.mark.parametrize(
    "limits, usage, stopped",
    [
        ({"max_turns": 2, "max_budget_usd": 5.0}, 100, "(error_max_turns)"),
        ({"max_turns": 10, "max_budget_usd": 0.5}, 2_000_000, "(error_max_budget_usd)"),
    ],
    ids=["turns", "dollars"],
)
def test_the_turn_and_dollar_limits_stop_the_agent_and_keep_the_cost(
    repo: Path, problem: Problem, tmp_path: Path, limits: dict, usage: int, stopped: str
) -> None:
    read = {"file_path": str(repo / "train.py")}
    script = for_agent(*(tool_use("Read", read, input_tokens=usage) for _ in range(6)))
    with ScriptedAnthropic(script) as api:
        outcome = student.implement(
            repo,
            Implement(hypothesis="Read forever.", mode="claude"),
            problem,
            model=MODEL,
            env=cli_env(api, tmp_path / "home"),
            **limits,
        )
    assert outcome.error is not None and stopped in outcome.error
    assert outcome.changed_files == []
    assert outcome.cost_usd > 0  # what was spent before the stop is still reported
    if usage > 1_000_000:  # one call at the scripted usage already blew the budget
        assert outcome.cost_usd > limits["max_budget_usd"] and len(api.requests) == 1


def test_a_stuck_agent_is_stopped_at_the_timeout(
    repo: Path, problem: Problem, tmp_path: Path
) -> None:
    stalled = text("too late", delay_s=30)
    with ScriptedAnthropic([], default=stalled) as api:
        outcome = student.implement(
            repo,
            Implement(hypothesis="Anything.", mode="claude"),
            problem,
            max_turns=3,
            env=cli_env(api, tmp_path / "home"),
            timeout_s=2,
        )
    assert outcome.error == "the coding agent did not finish within 2s"
    assert outcome.changed_files == []


def test_the_dispatcher_runs_the_claude_student(
    repo: Path, problem: Problem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agents.student.implement` with mode "claude" reaches the CLI (env from the host)."""
    script = for_agent(
        tool_use("Read", {"file_path": str(repo / "train.py")}),
        tool_use(
            "Edit",
            {
                "file_path": str(repo / "train.py"),
                "old_string": "N_LAYER = 2",
                "new_string": "N_LAYER = 1",
            },
        ),
        text("Done."),
    )
    with ScriptedAnthropic(script) as api:
        for key, value in cli_env(api, tmp_path / "home").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("KOHAI_STUDENT_MODEL", "claude-haiku-4-5")
        monkeypatch.setenv("KOHAI_STUDENT_MAX_TURNS", "4")
        outcome = student_dispatch.implement(
            repo, Implement(hypothesis="One layer is enough.", mode="claude"), problem
        )
    assert outcome.error is None, outcome.error
    assert outcome.changed_files == ["train.py"]
    assert "N_LAYER = 1" in (repo / "train.py").read_text()
    assert api.requests[0].body["model"] == "claude-haiku-4-5"
    assert "at most 4 turns" in json.dumps(api.requests[0].body["messages"])


def test_a_bad_limit_in_the_environment_is_an_error(
    repo: Path, problem: Problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOHAI_STUDENT_BUDGET_USD", "two dollars")
    outcome = student.implement(repo, Implement(hypothesis="x", mode="claude"), problem)
    assert outcome.error is not None and "KOHAI_STUDENT_BUDGET_USD" in outcome.error
    assert outcome.changed_files == []


def test_a_host_without_the_sdk_gets_a_clear_error(
    repo: Path, problem: Problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "claude_agent_sdk", None)
    outcome = student.implement(repo, Implement(hypothesis="x", mode="claude"), problem)
    assert outcome.error is not None
    assert outcome.error.startswith("claude-agent-sdk is not installed on this host")
    assert (repo / "train.py").read_text() == TRAIN
