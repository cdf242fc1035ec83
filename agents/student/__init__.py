"""The student's host-side entry point: implement a hypothesis in a checked-out branch.

Runs on GPU hosts, which do not install the server's dependencies, so this
package imports only the standard library and kohai's shared contract modules.
The trainer's daemon calls `implement` in the branch's worktree, then commits
and trains. Whatever the mode, `enforce_editable` runs afterwards: a student
may change only the problem's editable files, and that rule lives in code
(`agents.student.rules`).
"""

from __future__ import annotations

from pathlib import Path

from agents.student.rules import (
    SAFE_GIT,
    ImplementOutcome,
    changed_files,
    enforce_editable,
    head,
    is_editable,
    knob_summary,
)
from bot.problem import Problem
from bot.protocol import Implement

__all__ = [
    "SAFE_GIT",
    "ImplementOutcome",
    "changed_files",
    "enforce_editable",
    "implement",
    "is_editable",
    "knob_summary",
]


def implement(worktree: Path, spec: Implement, problem: Problem) -> ImplementOutcome:
    """Implement `spec` in `worktree` (a git checkout of the PR branch), then police the edits.

    "offline" sets knob values (`agents.offline.student`); "claude" runs the
    coding agent (`agents.claude.student`, imported only when asked for).
    """
    worktree = Path(worktree)
    start = head(worktree)
    if spec.mode == "claude":
        from agents.claude.student import implement as implement_with_claude

        outcome = implement_with_claude(worktree, spec, problem)
    elif spec.mode == "offline":
        from agents.offline.student import implement as implement_offline

        outcome = implement_offline(worktree, spec, problem)
    else:
        return ImplementOutcome(error=f"unknown implement mode {spec.mode!r}")
    try:
        reverted = enforce_editable(worktree, problem, since=start)
        outcome.changed_files = changed_files(worktree, since=start)
    except RuntimeError as exc:
        return ImplementOutcome(cost_usd=outcome.cost_usd, error=str(exc))
    outcome.reverted_files = sorted({*outcome.reverted_files, *reverted})
    if reverted:
        note = f"Reverted changes outside the editable files: {', '.join(reverted)}."
        outcome.notes = f"{outcome.notes}\n{note}".strip()
    return outcome
