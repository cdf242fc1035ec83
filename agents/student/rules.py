"""What every student shares: the outcome it reports and the rules its edits obey.

Implementations (`agents.offline.student`, `agents.claude.student`) import this
module, never the package's `implement`, so that it may import them without a
cycle.

Runs on GPU hosts, which do not install the server's dependencies, so this
module imports only the standard library and kohai's shared contract modules.
The trainer's daemon calls `implement` in the branch's worktree, then commits
and trains. Whatever the mode, `enforce_editable` runs afterwards: a student
may change only the problem's editable files, and that rule lives in code.
"""

from __future__ import annotations

import fnmatch
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.problem import Problem

# Hooks off and no fsmonitor for every git command run in the job's checkout: nothing
# planted in its .git runs here (the job sandbox also keeps .git read-only).
SAFE_GIT = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


@dataclass
class ImplementOutcome:
    """What implementing did: files changed, files put back, cost, and an error if it failed.

    `error` set means the branch could not be made to express the hypothesis
    (the job ends as `implement_failed` with this text); `notes` is for the
    results comment.
    """

    changed_files: list[str] = field(default_factory=list)
    reverted_files: list[str] = field(default_factory=list)
    cost_usd: float = 0.0
    notes: str = ""
    error: str | None = None
    smoke_s: float = 0.0  # seconds the coding agent spent in smoke runs


def knob_summary(knobs: dict[str, Any]) -> str:
    """`NAME=value, ...` in a stable order, as knob settings read in titles, notes and histories."""
    return ", ".join(f"{k}={_value_text(v)}" for k, v in sorted(knobs.items()))


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


def is_editable(path: str, problem: Problem) -> bool:
    """A path is editable if listed, under a listed directory, or matched by a listed glob."""
    for entry in problem.editable:
        entry = entry.rstrip("/")
        if path == entry or path.startswith(entry + "/") or fnmatch.fnmatchcase(path, entry):
            return True
    return False


def changed_files(worktree: Path, *, since: str | None = None) -> list[str]:
    """Tracked files changed since `since` (default HEAD), plus untracked ones, sorted."""
    ref = since or "HEAD"
    tracked = _git_paths(worktree, "diff", "--name-only", "--no-renames", "-z", ref)
    untracked = _git_paths(worktree, "ls-files", "--others", "--exclude-standard", "-z")
    return sorted({*tracked, *untracked})


def enforce_editable(worktree: Path, problem: Problem, *, since: str | None = None) -> list[str]:
    """Put back every changed or new file outside `problem.editable`; return those paths.

    Changes are counted from `since` (default HEAD), so edits that a coding
    agent committed on its own are caught too: a file that existed at `since`
    is restored from it, one that did not is removed.
    """
    worktree = Path(worktree)
    ref = since or "HEAD"
    reverted = [p for p in changed_files(worktree, since=ref) if not is_editable(p, problem)]
    for path in reverted:
        if _exists_at(worktree, ref, path):
            _git(worktree, "checkout", ref, "--", path)
        else:
            _git(worktree, "rm", "--cached", "--force", "--quiet", "--ignore-unmatch", "--", path)
            (worktree / path).unlink(missing_ok=True)
    return reverted


def head(worktree: Path) -> str | None:
    result = subprocess.run(
        ["git", *SAFE_GIT, "rev-parse", "--verify", "HEAD"],
        cwd=worktree,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _exists_at(worktree: Path, ref: str, path: str) -> bool:
    result = subprocess.run(
        ["git", *SAFE_GIT, "cat-file", "-e", f"{ref}:{path}"], cwd=worktree, capture_output=True
    )
    return result.returncode == 0


def _git_paths(worktree: Path, *args: str) -> list[str]:
    out = _git(worktree, *args)
    return [p for p in out.split("\0") if p]


def _git(worktree: Path, *args: str) -> str:
    result = subprocess.run(["git", *SAFE_GIT, *args], cwd=worktree, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {worktree}: {result.stderr.strip()}")
    return result.stdout
