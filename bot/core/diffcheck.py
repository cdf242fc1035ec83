"""What a change from a host may touch: the bot's own check of every pushed tip and merge.

Hosts report; the bot verifies. Before a host's commit reaches GitHub the bot
diffs the pushed tip against the job's base in a scratch repository of its own
(`bot.github.bundles`) and asks `findings` which changed paths the lab allows;
before a merge it asks again about the pull request's files as GitHub lists
them. Refused, whatever `files.editable` says: `kohai.toml` (it holds the
budget and the trusted commands), `.github/` (workflows run with the
repository's secrets), frozen files, the files the `[eval]` and `[data]`
commands run, submodules, and symlinks that leave the checkout.

Pure: paths, modes and link targets in, findings out.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from bot.problem import CONFIG_FILE, Problem, path_matches

GITLINK = "160000"  # a submodule: a commit of another repository
SYMLINK = "120000"
GITHUB_DIR = ".github"
MAX_FINDINGS = 20


@dataclass(frozen=True)
class Change:
    """One path a change touches, as git's raw diff names it."""

    path: str
    status: str = "M"  # A added, M modified, D deleted, T type changed
    mode: str = "100644"  # the new entry's mode ("000000" when deleted)
    blob: str = ""  # the new entry's object id (a symlink's target is that blob)
    link: str | None = None  # the new entry's target, when it is a symlink


def parse_raw(text: str) -> list[Change]:
    """Changes from `git diff --raw -z --no-renames --no-abbrev` output.

    Each entry is `:old_mode new_mode old_sha new_sha status` NUL path NUL.
    """
    fields = text.split("\0")
    changes: list[Change] = []
    i = 0
    while i + 1 < len(fields):
        header, path = fields[i], fields[i + 1]
        i += 2
        parts = header.lstrip(":").split()
        if len(parts) < 5 or not path:
            continue
        changes.append(Change(path=path, status=parts[4][:1], mode=parts[1], blob=parts[3]))
    return changes


def command_paths(command: str | None) -> set[str]:
    """Every path a trusted command could run: its arguments, and `-m` modules as files.

    `python prepare.py evaluate` names `prepare.py`; `python -m pkg.score`
    names `pkg/score.py` (and the package's `__init__.py`/`__main__.py`).
    """
    if not command:
        return set()
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    found: set[str] = set()
    for previous, token in zip(["", *tokens], tokens, strict=False):
        if token and not token.startswith("-"):
            found.add(posixpath.normpath(token))
        if previous == "-m":
            stem = token.replace(".", "/")
            found.update((f"{stem}.py", f"{stem}/__init__.py", f"{stem}/__main__.py"))
    return found


def trusted_paths(problem: Problem) -> set[str]:
    """What the sealed evaluator and the data step may run.

    Every argument counts, whether the base has such a file or not: a push may
    not add the file a trusted command would run either.
    """
    evaluation = problem.evaluation.command if problem.evaluation else None
    return command_paths(evaluation) | command_paths(problem.data_command)


def path_finding(
    path: str, editable: Sequence[str], frozen: Sequence[str], trusted: Collection[str]
) -> str | None:
    """Why a change to `path` may not reach a base, or None."""
    if path == CONFIG_FILE:
        return f"{CONFIG_FILE} holds the budget and the trusted commands"
    if path == GITHUB_DIR or path.startswith(GITHUB_DIR + "/"):
        return "GitHub workflows and settings (.github/) are never changed by an experiment"
    if path in trusted:
        return "a file the [eval] or [data] command runs"
    if path_matches(path, tuple(frozen)):
        return "a frozen file (files.frozen)"
    if not path_matches(path, tuple(editable)):
        return f"outside files.editable {list(editable)}"
    return None


def file_findings(
    paths: Iterable[str], editable: Sequence[str], frozen: Sequence[str], trusted: Collection[str]
) -> list[str]:
    """`path: why` for each path a merge may not bring in (GitHub's list of a PR's files)."""
    out: list[str] = []
    for path in paths:
        why = path_finding(path, editable, frozen, trusted)
        if why is not None:
            out.append(f"{path}: {why}")
    return out


def link_escapes(path: str, target: str) -> bool:
    """A symlink at `path` whose target is absolute or climbs out of the checkout."""
    if not target or target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


def findings(changes: Iterable[Change], problem: Problem) -> list[str]:
    """`path: why` for every change the lab does not allow (empty: the change may go on)."""
    trusted = trusted_paths(problem)
    out: list[str] = []
    for change in changes:
        why = path_finding(change.path, problem.editable, problem.frozen, trusted)
        if why is None and change.mode == GITLINK:
            why = "a submodule (a commit of another repository)"
        if why is None and change.mode == SYMLINK and link_escapes(change.path, change.link or ""):
            why = f"a symlink to {change.link!r}, outside the checkout"
        if why is not None:
            out.append(f"{change.path}: {why}")
    return out


def summary(found: list[str]) -> str:
    """One line for a refusal: the offending paths, at most MAX_FINDINGS of them."""
    shown = found[:MAX_FINDINGS]
    more = f" (and {len(found) - len(shown)} more)" if len(found) > len(shown) else ""
    return "changes the lab does not allow: " + "; ".join(shown) + more
