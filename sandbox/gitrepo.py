"""Bare git repositories on disk, driven through the `git` command line.

The sandbox keeps real repositories so that clones, pushes, merges and
conflicts behave exactly as they do on GitHub; this module is the only place
that runs `git` against them (besides the smart-HTTP backend).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ZERO_SHA = "0" * 40
FULL_SHA = frozenset("0123456789abcdef")

# Git objects are content-addressed: once a full sha names an object, its type and
# (for a commit) its contents never change. Remembering them saves a `git`
# process per lookup; an object not found is never remembered, since it may be
# written the next moment. Bounded, and keyed by repository.
_TYPES: dict[tuple[str, str], str] = {}
_COMMITS: dict[tuple[str, str], CommitInfo] = {}
_MEMO_LIMIT = 50_000


def _is_full_sha(sha: str) -> bool:
    return len(sha) == 40 and set(sha) <= FULL_SHA


def _remember(memo: dict[tuple[str, str], Any], key: tuple[str, str], value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


class GitError(RuntimeError):
    """A git command failed in a way the caller did not expect."""


@dataclass(frozen=True)
class Signature:
    """Author or committer of a commit."""

    name: str
    email: str
    date: str  # ISO 8601, e.g. 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Signature
    committer: Signature
    message: str


def _git(
    repo: Path,
    *args: str,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    result = subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        input=input,
        capture_output=True,
        env=full_env,
        check=False,
    )
    if check and result.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result


def _out(repo: Path, *args: str, **kwargs: object) -> str:
    return _git(repo, *args, **kwargs).stdout.decode().strip()  # type: ignore[arg-type]


def init_bare(path: Path, default_branch: str = "main") -> None:
    """Create a bare repo that accepts pushes over smart HTTP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "-b", default_branch, str(path)],
        check=True,
        capture_output=True,
    )
    _git(path, "config", "http.receivepack", "true")
    _git(path, "config", "uploadpack.allowAnySHA1InWant", "true")


def _signature_env(author: Signature, committer: Signature) -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": author.name,
        "GIT_AUTHOR_EMAIL": author.email,
        "GIT_AUTHOR_DATE": author.date,
        "GIT_COMMITTER_NAME": committer.name,
        "GIT_COMMITTER_EMAIL": committer.email,
        "GIT_COMMITTER_DATE": committer.date,
    }


def write_tree_from_files(repo: Path, files: dict[str, bytes]) -> str:
    """Store `files` (path -> content) as blobs and return the tree's sha."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        for name, content in sorted(files.items()):
            blob = _out(repo, "hash-object", "-w", "--stdin", input=content)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
        return _out(repo, "write-tree", env=env)


IMPORT_EXCLUDES = ("__pycache__/", "*.pyc", ".venv/", ".pytest_cache/", "wandb/", ".DS_Store")


def write_tree_from_dir(repo: Path, source: Path) -> str:
    """Store a directory's files and return the tree's sha.

    Honours the directory's .gitignore and leaves out caches a working copy
    accumulates (bytecode, virtualenvs, W&B runs), which no one means to import.
    """
    with tempfile.TemporaryDirectory() as tmp:
        excludes = Path(tmp) / "excludes"
        excludes.write_text("\n".join(IMPORT_EXCLUDES) + "\n")
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        work = ("-c", f"core.excludesFile={excludes}", "--work-tree", str(source))
        _git(repo, *work, "add", "-A", ".", env=env)
        return _out(repo, *work, "write-tree", env=env)


def commit_tree(
    repo: Path,
    tree: str,
    parents: list[str],
    message: str,
    author: Signature,
    committer: Signature | None = None,
) -> str:
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    env = _signature_env(author, committer or author)
    sha = _out(repo, *args, input=message.encode(), env=env)
    _remember(_TYPES, (str(repo), sha), "commit")
    return sha


def object_type(repo: Path, sha: str) -> str | None:
    key = (str(repo), sha)
    if key in _TYPES:
        return _TYPES[key]
    result = _git(repo, "cat-file", "-t", sha, check=False)
    if result.returncode != 0:
        return None
    kind = result.stdout.decode().strip()
    if _is_full_sha(sha):
        _remember(_TYPES, key, kind)
    return kind


def resolve(repo: Path, ref: str) -> str | None:
    """The commit sha a ref, branch name or sha points at, or None."""
    result = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return result.stdout.decode().strip() if result.returncode == 0 else None


def update_ref(repo: Path, ref: str, new: str, old: str | None = None) -> None:
    args = ["update-ref", ref, new] + ([old] if old else [])
    _git(repo, *args)


def delete_ref(repo: Path, ref: str) -> None:
    _git(repo, "update-ref", "-d", ref)


def list_refs(repo: Path) -> dict[str, str]:
    text = _out(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    pairs = (line.split(" ", 1) for line in text.splitlines() if line)
    return {name: sha for name, sha in pairs}


def _parse_signature(value: str) -> Signature:
    name, _, rest = value.partition(" <")
    email, _, stamp = rest.partition("> ")
    seconds = int(stamp.split()[0])
    date = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Signature(name=name, email=email, date=date)


def commit_info(repo: Path, sha: str) -> CommitInfo | None:
    known = _COMMITS.get((str(repo), sha))
    if known is not None:
        return known
    if object_type(repo, sha) != "commit":
        return None
    raw = _git(repo, "cat-file", "commit", sha).stdout.decode(errors="replace")
    header, _, message = raw.partition("\n\n")
    tree, parents, author, committer = "", [], None, None
    for line in header.splitlines():
        key, _, value = line.partition(" ")
        if key == "tree":
            tree = value
        elif key == "parent":
            parents.append(value)
        elif key == "author":
            author = _parse_signature(value)
        elif key == "committer":
            committer = _parse_signature(value)
    assert author and committer
    full = sha if _is_full_sha(sha) else _out(repo, "rev-parse", sha)
    info = CommitInfo(full, tree, tuple(parents), author, committer, message)
    _remember(_COMMITS, (str(repo), full), info)
    _remember(_TYPES, (str(repo), tree), "tree")
    return info


def count_ahead(repo: Path, base: str, head: str) -> int:
    """Commits reachable from `head` but not from `base`."""
    return int(_out(repo, "rev-list", "--count", f"{base}..{head}"))


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    return (
        _git(repo, "merge-base", "--is-ancestor", ancestor, descendant, check=False).returncode == 0
    )


def merge_tree(repo: Path, base: str, head: str) -> str | None:
    """The tree of merging `head` into `base`, or None when they conflict."""
    result = _git(repo, "merge-tree", "--write-tree", base, head, check=False)
    if result.returncode == 0:
        return result.stdout.decode().split()[0]
    if result.returncode == 1:
        return None
    raise GitError(result.stderr.decode(errors="replace"))


@dataclass(frozen=True)
class FileChange:
    """One file of a comparison, as GitHub's `pulls/{n}/files` lists it."""

    filename: str
    status: str  # added | removed | modified | renamed | changed
    sha: str
    additions: int
    deletions: int
    previous_filename: str | None = None


_STATUS = {"A": "added", "D": "removed", "M": "modified", "R": "renamed", "T": "changed"}


def changed_files(repo: Path, base: str, head: str) -> list[FileChange]:
    """What `head` changes against its merge base with `base` (renames found, as GitHub does)."""
    merge_base = _out(repo, "merge-base", base, head, check=False) or base
    raw = _git(repo, "diff", "--raw", "-z", "-M", "--no-abbrev", merge_base, head).stdout.decode()
    counts: dict[str, tuple[int, int]] = {}
    numstat = _git(repo, "diff", "--numstat", "--no-renames", merge_base, head).stdout.decode()
    for line in numstat.splitlines():
        plus, minus, listed = (line.split("\t", 2) + ["", "", ""])[:3]
        counts[listed] = (int(plus) if plus.isdigit() else 0, int(minus) if minus.isdigit() else 0)
    fields = raw.split("\0")
    out: list[FileChange] = []
    i = 0
    while i + 1 < len(fields):
        parts = fields[i].lstrip(":").split()
        if len(parts) < 5:
            break
        letter = parts[4][:1]
        previous = None
        if letter in ("R", "C"):
            previous, name = fields[i + 1], fields[i + 2]
            i += 3
        else:
            name = fields[i + 1]
            i += 2
        added, deleted = counts.get(name, (0, 0))
        blob = parts[3] if letter != "D" else parts[2]
        out.append(FileChange(name, _STATUS.get(letter, "changed"), blob, added, deleted, previous))
    return out


def read_blob(repo: Path, ref: str, path: str) -> tuple[str, bytes] | None:
    """(blob sha, content) of `path` at `ref`, or None when it is not a file there."""
    spec = f"{ref}:{path}"
    if object_type(repo, spec) != "blob":
        return None
    sha = _out(repo, "rev-parse", spec)
    return sha, _git(repo, "cat-file", "blob", sha).stdout


def commits_between(
    repo: Path, before: str | None, after: str, limit: int = 20
) -> list[CommitInfo]:
    """Commits reachable from `after` and not from `before`, oldest first (at most `limit`)."""
    args = ["rev-list", "--reverse", after] + ([f"^{before}"] if before else [])
    shas = _out(repo, *args).split()[-limit:]
    return [info for sha in shas if (info := commit_info(repo, sha)) is not None]
