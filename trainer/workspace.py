"""Git on the host: a cached repository per problem repo, a fresh clone per job.

The job's (read-only) token authenticates through an `http.extraHeader`
passed in git's environment (GIT_CONFIG_COUNT/KEY/VALUE), so it is neither
written to disk nor visible in the process list. Local paths and `file://`
URLs work too, which is what the tests and the demo use.

Agent code runs in the job's checkout, so that checkout is a clone of its own
(nothing in it points into the shared cache), and every git command the host
runs there has hooks off and ignores system config: a planted
`core.hooksPath`, `core.fsmonitor` or hook cannot run host-side (inside the
sandbox `.git` is read-only as well). Hosts never push: a new commit goes to
the bot as a git bundle (`publish`), and the bot pushes it as the App.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from bot.problem import Problem
from bot.problem import path_matches as matches
from bot.protocol import Job
from trainer import safeio

GIT_TIMEOUT_S = 300.0
# Before every host-side git command: nothing a job could plant in .git/config runs.
SAFE_GIT = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "protocol.ext.allow=never",
)


class GitError(RuntimeError):
    """A git command failed; the message holds its stderr (never the token)."""


def auth_env(token: str | None) -> dict[str, str]:
    """Environment that makes git send `Authorization: Basic x-access-token:<token>`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    return env


def git(cwd: Path, *args: str, token: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", *SAFE_GIT, *args],
        cwd=cwd,
        env=auth_env(token),
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
    )
    if check and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        if token:
            message = message.replace(token, "***")
        raise GitError(f"git {args[0]} failed: {message}")
    return proc.stdout


def cache_name(repo: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", repo) + ".git"


class Workspace:
    """Repo cache under `root/repos`, job checkouts (own clones) under `root/worktrees`.

    Several students may share one host (one thread each), so fetches into the
    same cached repository are serialised.
    """

    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.repos = self.root / "repos"
        self.worktrees = self.root / "worktrees"
        self.repos.mkdir(parents=True, exist_ok=True)
        self.worktrees.mkdir(parents=True, exist_ok=True)

    def _lock(self, cache: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(str(cache), threading.Lock())

    def fetch(self, repo: str, clone_url: str, token: str | None, shas: list[str]) -> Path:
        """Bring the cache of `repo` up to date and make sure every sha in `shas` is there."""
        cache = self.repos / cache_name(repo)
        with self._lock(cache):
            if not (cache / "HEAD").exists():
                cache.mkdir(parents=True, exist_ok=True)
                git(cache, "init", "--bare", "--quiet")
                git(cache, "remote", "add", "origin", clone_url)
            else:
                git(cache, "remote", "set-url", "origin", clone_url)
            git(
                cache,
                "fetch",
                "--quiet",
                "--prune",
                "--update-head-ok",
                "origin",
                "+refs/heads/*:refs/heads/*",
                token=token,
            )
            for sha in shas:
                if not self.has_commit(cache, sha):
                    git(cache, "fetch", "--quiet", "origin", sha, token=token, check=False)
                if not self.has_commit(cache, sha):
                    raise GitError(f"commit {sha} is not in {repo}")
        return cache

    @staticmethod
    def has_commit(cache: Path, sha: str) -> bool:
        out = git(cache, "cat-file", "-t", sha, check=False).strip()
        return out == "commit"

    def worktree(self, cache: Path, sha: str, name: str) -> Path:
        """A fresh checkout at `sha` in a clone of its own (an old one of the same name goes).

        `git clone --local` hardlinks the cache's objects (cheap) but shares
        nothing else with it: no alternates, hooks, config or worktree list
        that a job could use to reach the cache or the next job.
        """
        path = self.worktrees / name
        with self._lock(cache):
            if path.exists():
                self._remove(cache, path)
            git(
                self.worktrees,
                "clone",
                "--quiet",
                "--local",
                "--no-checkout",
                "--template=",
                str(cache),
                str(path),
            )
        git(path, "remote", "remove", "origin")  # nothing in the clone names the cache
        git(path, "checkout", "--quiet", "--detach", sha)
        return path

    def remove(self, cache: Path, path: Path) -> None:
        with self._lock(cache):
            self._remove(cache, path)

    @staticmethod
    def _remove(cache: Path, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def head_sha(worktree: Path) -> str:
    return git(worktree, "rev-parse", "HEAD").strip()


def commit_changes(worktree: Path, files: list[str], *, student: str, message: str) -> str | None:
    """Commit `files` as the student; the new sha, or None when nothing changed."""
    if not files:
        return None
    git(worktree, "add", "--all", "--", *files)
    if not git(worktree, "diff", "--cached", "--name-only").strip():
        return None
    git(
        worktree,
        "-c",
        f"user.name=kohai student {student}",
        "-c",
        f"user.email={student}@students.kohai",
        "commit",
        "--quiet",
        "--no-verify",
        "-m",
        message,
    )
    return head_sha(worktree)


def bundle(worktree: Path, known: list[str]) -> bytes:
    """`git bundle` of HEAD with every commit the remote has (`known`) left out."""
    have = [sha for sha in known if sha and git(worktree, "cat-file", "-t", sha, check=False)]
    with tempfile.TemporaryDirectory(prefix="kohai-bundle-") as scratch:
        path = Path(scratch) / "push.bundle"
        git(worktree, "bundle", "create", "--quiet", str(path), "HEAD", *[f"^{s}" for s in have])
        return path.read_bytes()


class Publisher(Protocol):
    def push(self, job_id: int, branch: str, bundle: bytes) -> str: ...


def publish(worktree: Path, job: Job, client: Publisher) -> str:
    """Send HEAD to the bot as a bundle; the bot pushes it to the job's branch.

    Hosts hold a read-only token (see bot/github/bundles.py for the checks on the
    bot's side). Raises GitError with the bot's reason when it refuses.
    """
    if not job.head_ref:
        raise GitError("the job has no head_ref to push to")
    data = bundle(worktree, [job.head_sha or "", job.base_sha])
    try:
        return client.push(job.id, job.head_ref, data)
    except (RuntimeError, ValueError) as exc:  # hostapi.PushRefused; a refusal in-process
        raise GitError(str(exc)) from exc


def _changed_paths(worktree: Path, base_sha: str, head: str) -> set[str]:
    committed = git(worktree, "diff", "--name-only", "--no-renames", base_sha, head).splitlines()
    # What runs is the working tree: uncommitted and untracked (not ignored) files count too.
    status = git(worktree, "status", "--porcelain", "--untracked-files=all", "--no-renames")
    pending = [line[3:].strip('"') for line in status.splitlines() if len(line) > 3]
    return {p for p in [*committed, *pending] if p}


def _blob_sha256(worktree: Path, sha: str, path: str) -> str | None:
    proc = subprocess.run(
        ["git", *SAFE_GIT, "show", f"{sha}:{path}"],
        cwd=worktree,
        env=auth_env(None),
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
    )
    return hashlib.sha256(proc.stdout).hexdigest() if proc.returncode == 0 else None


def _file_sha256(path: Path) -> str | None:
    """sha256 of a worktree file, read as a regular file only (the agent could plant a FIFO).

    Anything else (a link, a FIFO, a device) gets a record no blob matches:
    the frozen file then "differs from base".
    """
    try:
        return safeio.sha256(path)
    except safeio.NotRegular as exc:
        return f"not a regular file: {exc.kind}"
    except (FileNotFoundError, IsADirectoryError):
        return None


def check_diff(worktree: Path, base_sha: str, head_sha: str, problem: Problem) -> str | None:
    """None when the worktree may be trained; otherwise why not.

    Refused: any changed path that `files.editable` does not allow, or a
    `files.frozen` file whose bytes (sha256) differ from the base commit.
    """
    changed = _changed_paths(worktree, base_sha, head_sha)
    outside = sorted(p for p in changed if not matches(p, problem.editable))
    if outside:
        return (
            f"changed files outside files.editable {list(problem.editable)}: {', '.join(outside)}"
        )
    base_files = git(worktree, "ls-tree", "-r", "--name-only", base_sha).splitlines()
    frozen = sorted({p for p in [*base_files, *changed] if matches(p, problem.frozen)})
    frozen += [p for p in problem.frozen if p not in frozen and not any(c in p for c in "*?[")]
    for path in frozen:
        if _blob_sha256(worktree, base_sha, path) != _file_sha256(worktree / path):
            return f"frozen file {path} differs from base {base_sha[:12]}"
    return None


def changed_since(worktree: Path, base_sha: str) -> list[str]:
    """Paths whose content differs between `base_sha` and the worktree's HEAD."""
    return [p for p in git(worktree, "diff", "--name-only", base_sha, "HEAD").splitlines() if p]


def catch_up_with_base(
    worktree: Path, base_sha: str, *, student: str, prefer_base: bool = False
) -> str | None:
    """Merge a new base into the branch when the PR predates it; the conflict, if any.

    A PR measured on an older base is re-run on the new one before it may
    merge, and what runs must be the branch as it would merge. With
    `prefer_base` (bringing a hypothesis onto the new base) conflicting hunks
    take the base's side; the student then re-applies the hypothesis.
    """
    try:
        git(worktree, "merge-base", "--is-ancestor", base_sha, "HEAD")
        return None  # already on the base
    except GitError:
        pass
    try:
        git(
            worktree,
            "-c",
            f"user.name=kohai student {student}",
            "-c",
            f"user.email={student}@students.kohai",
            "merge",
            "--quiet",
            "--no-edit",
            "--no-verify",
            *(["-X", "theirs"] if prefer_base else []),
            base_sha,
        )
    except GitError as exc:
        git(worktree, "merge", "--abort", check=False)
        return f"the branch conflicts with the new base {base_sha[:10]}: {exc}"
    return None


def export(repo_dir: Path, sha: str, dest: Path) -> Path:
    """The files of commit `sha`, without any `.git`: the base checkout the evaluator runs from.

    No repository metadata means nothing in it for a job to plant hooks or
    config into, and it cannot be confused with the candidate's checkout.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    proc = subprocess.run(
        ["git", *SAFE_GIT, "archive", "--format=tar", sha],
        cwd=repo_dir,
        env=auth_env(None),
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise GitError(f"git archive failed: {proc.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest
