"""What the coding agent may do, decided per tool call before the call runs.

Claude Code's permission modes are coarse: "acceptEdits" also lets simple
filesystem commands through, and a tool allowed by name may touch any path.
So every call goes through `deny_reason` (a PreToolUse hook): file tools must
stay inside the worktree and out of `.git`, and there is no shell at all: the
one way to run code is kohai's own `smoke_run` tool, which runs the training
command for a few seconds in the job sandbox (`agents.claude.smoke`). A shell
rule such as `python -m py_compile FILE` could be hijacked by a `py_compile.py`
the agent wrote next to it. Which files inside the worktree may change is not decided here
but after the run, by `agents.student.enforce_editable`, the same rule for
every student; `edit_warning` only tells the agent early that an edit will be
put back.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from agents.student.rules import is_editable
from bot.problem import Problem

FILE_TOOLS = ("Read", "Edit", "Write", "Glob", "Grep")
TOOLS = list(FILE_TOOLS)  # the CLI's built-in tools; no Bash
MCP_SERVER = "kohai"
SMOKE_TOOL_NAME = "smoke_run"
SMOKE_TOOL = f"mcp__{MCP_SERVER}__{SMOKE_TOOL_NAME}"
# The permission rules handed to the CLI; `deny_reason` is the stricter check behind them.
ALLOWED_RULES = [*FILE_TOOLS, SMOKE_TOOL]
PATH_KEYS = ("file_path", "path", "notebook_path")


def deny_reason(tool: str, tool_input: dict[str, Any], worktree: Path) -> str | None:
    """Why the call must not run, or None to let the CLI's own permission rules decide."""
    if tool in FILE_TOOLS:
        for key in PATH_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                reason = _path_reason(value, worktree)
                if reason:
                    return reason
        pattern = tool_input.get("pattern")
        if tool == "Glob" and isinstance(pattern, str) and _escapes(pattern):
            return f"glob pattern {pattern!r} reaches outside the repository"
        return None
    if tool == SMOKE_TOOL:
        return None
    if tool == "Bash":
        return (
            f"there is no shell here; to check that the script runs, call {SMOKE_TOOL_NAME} "
            "(it runs the training command for a few seconds in the sandbox)"
        )
    return f"the {tool} tool is not available to students"


def edit_warning(tool: str, tool_input: dict[str, Any], worktree: Path, problem: Problem) -> str:
    """A note for the agent after it wrote a file it may not change; "" when the edit is fine."""
    if tool not in ("Edit", "Write"):
        return ""
    path = relative_path(str(tool_input.get("file_path", "")), worktree)
    if path is None or is_editable(path, problem):
        return ""
    return (
        f"{path} is not an editable file (editable: {', '.join(problem.editable)}). "
        "This change will be reverted after you finish; make the change in an editable file."
    )


def relative_path(value: str, worktree: Path) -> str | None:
    """`value` as a path relative to the worktree, or None when it is outside it."""
    root = worktree.resolve()
    candidate = Path(value)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        return None


def _path_reason(value: str, worktree: Path) -> str | None:
    relative = relative_path(value, worktree)
    if relative is None:
        return f"{value} is outside the repository; work only inside {worktree}"
    if relative == ".git" or relative.startswith(".git/"):
        return "the .git directory is managed by the harness"
    return None


def _escapes(pattern: str) -> bool:
    parts = PurePosixPath(pattern).parts
    return pattern.startswith(("/", "~")) or ".." in parts
