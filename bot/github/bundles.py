"""Commits from hosts arrive as git bundles; the bot checks them and pushes as the App.

Hosts hold only read access to the repository (see "Trust" in the design):
whatever agent code runs on a host, it cannot find a credential that writes
the base branch. A host with a commit to publish (an implement job, or the
merge of a new base into a branch) sends `git bundle` bytes to
`POST /api/jobs/{id}/push`; `publish_bundle` fetches the branch and the base
into a scratch bare repository, checks that the bundle's one tip is a
fast-forward of the experiment's branch and contains the job's base, computes
the change of the tip against that base itself (`git diff --raw` in its own
scratch repository: the host's account of its change is never read), asks the
lab's rules which paths may change (`bot.core.diffcheck`), and pushes it to
that branch only, never forced, with hooks off. What it accepted (the tip and
the diff it computed) is what the audit reads and what a merge must match.

Standard library only (git on PATH): the bot image and the test helpers both
use it.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.diffcheck import SYMLINK, Change, parse_raw, summary
from bot.protocol import DIFF_INCOMPLETE, MAX_DIFF_CHARS

GIT_TIMEOUT_S = 300.0
MAX_BUNDLE_BYTES = 100 * 1024 * 1024
BRANCH_PREFIX = "kohai/"
_SAFE_REF = re.compile(r"^[A-Za-z0-9._/-]+$")
# No config a planted file could add: hooks off, no fsmonitor, no system config.
_GIT_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]


class BundleRefused(ValueError):
    """The bundle may not be published; the message says why (the host hears it, 422)."""


class DiffRefused(BundleRefused):
    """The pushed tip changes what the lab does not allow; `found` lists `path: why`."""

    def __init__(self, found: list[str]) -> None:
        super().__init__(summary(found))
        self.found = found


# Asked with the tip's changes against the base: `path: why` findings (none: it may go on).
DiffCheck = Callable[[list[Change]], list[str]]
MAX_LINK_BYTES = 4096


@dataclass(frozen=True)
class Pushed:
    """What the bot accepted and pushed: the tip and its change, as the bot computed them."""

    tip: str
    diff: str
    changes: list[Change] = field(default_factory=list)


class PushFailed(RuntimeError):
    """git could not fetch from the remote (GitHub down): worth retrying."""


class PushRejected(BundleRefused):
    """The remote refused the push (a race with another push): not worth retrying."""


def branch_refusal(branch: str, experiment_branch: str | None, kind: str) -> str | None:
    """Why `branch` may not be pushed by this job, or None. Pure.

    Only a job of an experiment may push, and only to that experiment's own
    `kohai/<id>-...` branch: never the base, never another student's branch.
    """
    if kind == "baseline" or not experiment_branch:
        return "a baseline job has nothing to push"
    if branch != experiment_branch:
        return f"this job may push only to {experiment_branch}, not {branch!r}"
    if not branch.startswith(BRANCH_PREFIX) or not _SAFE_REF.match(branch) or ".." in branch:
        return f"{branch!r} is not an experiment branch"
    return None


def _env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    return env


def _git(cwd: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *_GIT_SAFE, *args],
        cwd=cwd,
        env=_env(token),
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
    )


def _message(proc: subprocess.CompletedProcess[str], token: str | None) -> str:
    text = (proc.stderr or proc.stdout).strip()
    return text.replace(token, "***") if token else text


def bundle_tip(heads: str) -> str:
    """The one commit a bundle's `git bundle list-heads` output names. Pure."""
    shas = {line.split()[0] for line in heads.splitlines() if line.strip()}
    if len(shas) != 1:
        raise BundleRefused(f"a bundle must name exactly one commit, this one names {len(shas)}")
    sha = shas.pop()
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise BundleRefused("the bundle's head is not a commit id")
    return sha


def changes_between(repo: Path, base_sha: str, tip: str) -> list[Change]:
    """Every path the tip changes against the base, with modes and symlink targets."""
    raw = _git(repo, "diff", "--raw", "-z", "--no-renames", "--no-abbrev", base_sha, tip)
    if raw.returncode != 0:
        raise BundleRefused(f"could not diff the pushed commit: {_message(raw, None)[:200]}")
    changes = parse_raw(raw.stdout)
    for i, change in enumerate(changes):
        if change.mode == SYMLINK:
            target = _git(repo, "cat-file", "blob", change.blob).stdout[:MAX_LINK_BYTES]
            changes[i] = Change(change.path, change.status, change.mode, change.blob, target)
    return changes


def diff_text(repo: Path, base_sha: str, tip: str, limit: int = MAX_DIFF_CHARS) -> str:
    """The change as a unified diff, read up to `limit` characters; cut short, it says so."""
    with subprocess.Popen(
        ["git", *_GIT_SAFE, "diff", "--no-color", "--no-ext-diff", "--no-textconv", base_sha, tip],
        cwd=repo,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        data = proc.stdout.read(limit + 1)
        proc.kill()
    text = data.decode("utf-8", errors="replace")
    if len(data) > limit:
        return text[:limit] + "\n" + DIFF_INCOMPLETE + "\n"
    return text


def publish_bundle(
    bundle: bytes,
    *,
    clone_url: str,
    branch: str,
    base_ref: str,
    base_sha: str,
    token: str | None,
    check: DiffCheck | None = None,
) -> Pushed:
    """Push the bundle's tip to `branch` of `clone_url`; what was pushed.

    Raises BundleRefused when the bundle is malformed, does not contain
    `base_sha`, or is not a fast-forward of the branch; DiffRefused when `check`
    finds changes the lab does not allow; PushFailed when git cannot fetch from
    the remote; PushRejected when the push itself is refused.
    """
    if len(bundle) > MAX_BUNDLE_BYTES:
        raise BundleRefused(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    with tempfile.TemporaryDirectory(prefix="kohai-bundle-") as scratch:
        root = Path(scratch)
        repo = root / "repo.git"
        file = root / "push.bundle"
        file.write_bytes(bundle)
        repo.mkdir()
        _git(repo, "init", "--bare", "--quiet")
        heads = _git(repo, "bundle", "list-heads", str(file))
        if heads.returncode != 0:
            raise BundleRefused(f"not a git bundle: {_message(heads, None)[:200]}")
        tip = bundle_tip(heads.stdout)
        refspecs = [f"+refs/heads/{base_ref}:refs/remotes/origin/{base_ref}"]
        fetched = _git(
            repo,
            "fetch",
            "--quiet",
            clone_url,
            *refspecs,
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
            token=token,
        )
        has_branch = fetched.returncode == 0
        if not has_branch:  # a branch not (yet) on the remote: fetch the base alone
            fetched = _git(repo, "fetch", "--quiet", clone_url, *refspecs, token=token)
            if fetched.returncode != 0:
                raise PushFailed(f"could not fetch {base_ref}: {_message(fetched, token)}")
        verify = _git(repo, "bundle", "verify", "--quiet", str(file))
        if verify.returncode != 0:
            raise BundleRefused(
                f"the bundle does not apply to the repository: {_message(verify, None)[:300]}"
            )
        unbundled = _git(repo, "fetch", "--quiet", str(file), f"{tip}:refs/kohai/incoming")
        if unbundled.returncode != 0:
            # Older git cannot fetch a sha from a bundle: take every head it names.
            unbundled = _git(repo, "fetch", "--quiet", str(file), "+refs/*:refs/kohai/bundle/*")
        if unbundled.returncode != 0:
            raise BundleRefused(f"could not read the bundle: {_message(unbundled, None)[:300]}")
        if _git(repo, "cat-file", "-t", tip).stdout.strip() != "commit":
            raise BundleRefused("the bundle's head is not a commit")
        if _git(repo, "merge-base", "--is-ancestor", base_sha, tip).returncode != 0:
            raise BundleRefused(
                f"the pushed commit does not contain the job's base {base_sha[:12]}"
            )
        if has_branch:
            current = f"refs/remotes/origin/{branch}"
            if _git(repo, "merge-base", "--is-ancestor", current, tip).returncode != 0:
                raise BundleRefused(f"the pushed commit is not a fast-forward of {branch}")
        changes = changes_between(repo, base_sha, tip)
        if check is not None:
            found = check(changes)
            if found:
                raise DiffRefused(found)
        diff = diff_text(repo, base_sha, tip)
        pushed = _git(
            repo,
            "push",
            "--quiet",
            "--no-verify",
            clone_url,
            f"{tip}:refs/heads/{branch}",
            token=token,
        )
        if pushed.returncode != 0:
            raise PushRejected(f"could not push {branch}: {_message(pushed, token)}")
        return Pushed(tip=tip, diff=diff, changes=changes)
