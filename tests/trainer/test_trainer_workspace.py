"""The repo cache, worktrees, commits and the diff check, on real git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_helpers import git, job_dict, make_origin, push_branch

from bot.github import bundles
from bot.problem import load_problem
from bot.protocol import Job
from trainer import workspace
from trainer.workspace import GitError, Workspace, auth_env, check_diff


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, str]:
    return make_origin(tmp_path)


def checkout(tmp_path: Path, bare: Path, sha: str) -> tuple[Workspace, Path, Path]:
    ws = Workspace(tmp_path / "host")
    cache = ws.fetch("lab/toy", f"file://{bare}", "ghs_secret", [sha])
    return ws, cache, ws.worktree(cache, sha, "job1")


def test_editable_only_change_passes(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(tmp_path, bare, "kohai/1-lr", {"train.py": "LR = 0.5\n"})
    _, _, tree = checkout(tmp_path, bare, head)
    assert (tree / "train.py").read_text() == "LR = 0.5\n"
    assert check_diff(tree, base, head, load_problem(tree)) is None


def test_frozen_file_edit_is_refused(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(tmp_path, bare, "kohai/2-cheat", {"prepare.py": "OFFSET = -100.0\n"})
    _, _, tree = checkout(tmp_path, bare, head)
    reason = check_diff(tree, base, head, load_problem(tree))
    assert reason is not None and "prepare.py" in reason


def test_uncommitted_frozen_edit_is_refused(tmp_path: Path, origin: tuple[Path, str]) -> None:
    """What runs is the working tree, so an edit that was never committed counts."""
    bare, base = origin
    _, _, tree = checkout(tmp_path, bare, base)
    (tree / "prepare.py").write_text("OFFSET = 0.0\n")
    reason = check_diff(tree, base, base, load_problem(tree))
    assert reason is not None and "prepare.py" in reason


def test_non_editable_file_is_refused(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(
        tmp_path,
        bare,
        "kohai/3-toml",
        {
            "kohai.toml": "[metric]\nname = 'score'\n[train]\nbudget = '1h'\n",
            "notes.txt": "x",
        },
    )
    _, _, tree = checkout(tmp_path, bare, head)
    reason = check_diff(tree, base, head, load_problem(tree))
    assert reason is not None
    assert "kohai.toml" in reason and "notes.txt" in reason


def test_fetch_updates_the_cache_and_token_stays_off_disk(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    bare, base = origin
    ws = Workspace(tmp_path / "host")
    cache = ws.fetch("lab/toy", str(bare), "ghs_secret", [base])
    later = push_branch(tmp_path, bare, "kohai/4-later", {"train.py": "LR = 0.2\n"})
    assert not ws.has_commit(cache, later)
    ws.fetch("lab/toy", str(bare), "ghs_secret", [later])
    assert ws.has_commit(cache, later)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "host").rglob("*") if p.is_file())
    assert b"ghs_secret" not in on_disk
    with pytest.raises(GitError, match="not in lab/toy"):
        ws.fetch("lab/toy", str(bare), None, ["0" * 40])


def test_auth_header_is_basic_x_access_token() -> None:
    env = auth_env("abc")
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    # base64("x-access-token:abc")
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic eC1hY2Nlc3MtdG9rZW46YWJj"


class BotPublisher:
    """Plays the bot's side of `POST /api/jobs/{id}/push` with the bot's own checks."""

    def __init__(self, bare: Path, base_sha: str) -> None:
        self.bare, self.base_sha = bare, base_sha
        self.pushed: list[str] = []

    def push(self, job_id: int, branch: str, data: bytes) -> str:
        sha = bundles.publish_bundle(
            data,
            clone_url=str(self.bare),
            branch=branch,
            base_ref="main",
            base_sha=self.base_sha,
            token=None,
        ).tip
        self.pushed.append(sha)
        return sha


def _job(bare: Path, base: str, head: str, branch: str) -> Job:
    return Job.from_dict(job_dict(bare, base, kind="train", head_ref=branch, head_sha=head))


def test_commit_and_publish_as_the_student(tmp_path: Path, origin: tuple[Path, str]) -> None:
    bare, base = origin
    head = push_branch(tmp_path, bare, "kohai/5-push", {"train.py": "LR = 0.3\n"})
    ws, cache, tree = checkout(tmp_path, bare, head)
    (tree / "train.py").write_text("LR = 0.05\n")
    sha = workspace.commit_changes(tree, ["train.py"], student="fern", message="Lower LR")
    assert sha is not None and sha != head
    bot = BotPublisher(bare, base)
    assert workspace.publish(tree, _job(bare, base, head, "kohai/5-push"), bot) == sha
    assert git(bare, "rev-parse", "refs/heads/kohai/5-push") == sha
    assert git(bare, "log", "-1", "--format=%an|%s", sha) == "kohai student fern|Lower LR"
    assert workspace.commit_changes(tree, ["train.py"], student="fern", message="again") is None
    ws.remove(cache, tree)
    assert not tree.exists()


def test_the_job_checkout_is_a_clone_of_its_own(tmp_path: Path, origin: tuple[Path, str]) -> None:
    """Nothing in the checkout points into the shared cache, and the cache lists no worktree."""
    bare, base = origin
    _, cache, tree = checkout(tmp_path, bare, base)
    dotgit = tree / ".git"
    assert dotgit.is_dir() and not (dotgit / "objects" / "info" / "alternates").exists()
    assert not (dotgit / "hooks").exists() or not any((dotgit / "hooks").iterdir())
    assert str(cache) not in (dotgit / "config").read_text().replace(str(bare), "")
    assert git(cache, "worktree", "list").count("\n") == 0  # the cache's own entry only
    assert git(tree, "rev-parse", "HEAD") == base


def test_planted_hooks_and_config_do_not_run_host_side(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    """Had agent code written into .git (an --unsandboxed host), host git still ignores it."""
    bare, base = origin
    _, _, tree = checkout(tmp_path, bare, base)
    marker = tmp_path / "pwned"
    hook = f"#!/bin/sh\ntouch {marker}\n"
    hooks = tree / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("pre-commit", "post-commit", "commit-msg", "pre-push", "post-checkout"):
        (hooks / name).write_text(hook)
        (hooks / name).chmod(0o755)
    (tmp_path / "monitor.sh").write_text(hook)
    (tmp_path / "monitor.sh").chmod(0o755)
    with (tree / ".git" / "config").open("a") as config:
        config.write(f"[core]\n\tfsmonitor = {tmp_path / 'monitor.sh'}\n")
    (tree / "train.py").write_text("LR = 0.01\n")
    problem = load_problem(tree)
    assert check_diff(tree, base, base, problem) is None
    sha = workspace.commit_changes(tree, ["train.py"], student="fern", message="x")
    assert sha is not None
    workspace.bundle(tree, [base])
    assert not marker.exists(), "a planted hook or fsmonitor ran on the host"


def test_the_bot_refuses_a_bundle_that_is_not_a_fast_forward(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    bare, base = origin
    head = push_branch(tmp_path, bare, "kohai/6-race", {"train.py": "LR = 0.3\n"})
    _, _, tree = checkout(tmp_path, bare, base)  # built on the base, not on the branch
    (tree / "train.py").write_text("LR = 0.9\n")
    workspace.commit_changes(tree, ["train.py"], student="fern", message="rewrite")
    with pytest.raises(GitError, match="not a fast-forward"):
        workspace.publish(tree, _job(bare, base, head, "kohai/6-race"), BotPublisher(bare, base))
    assert git(bare, "rev-parse", "refs/heads/kohai/6-race") == head


def test_the_bot_refuses_a_bundle_without_the_base(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    bare, base = origin
    _, _, tree = checkout(tmp_path, bare, base)
    git(tree, "checkout", "--quiet", "--orphan", "rootless")
    (tree / "train.py").write_text("LR = 0.9\n")
    git(tree, "add", "train.py")
    git(tree, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "--quiet", "-m", "orphan")
    data = workspace.bundle(tree, [base])
    with pytest.raises(bundles.BundleRefused, match="does not contain the job's base"):
        BotPublisher(bare, base).push(1, "kohai/7-orphan", data)
    with pytest.raises(bundles.BundleRefused, match="not a git bundle"):
        BotPublisher(bare, base).push(1, "kohai/7-orphan", b"#!/bin/sh\nrm -rf /\n")


@pytest.mark.parametrize(
    "branch, experiment_branch, kind, refused",
    [
        ("kohai/3-lr", "kohai/3-lr", "train", None),
        ("main", "kohai/3-lr", "train", "may push only to kohai/3-lr"),
        ("kohai/4-other", "kohai/3-lr", "implement", "may push only to kohai/3-lr"),
        ("kohai/3-lr", None, "baseline", "nothing to push"),
        ("main", "main", "train", "not an experiment branch"),
        ("kohai/../main", "kohai/../main", "train", "not an experiment branch"),
    ],
)
def test_which_branch_a_job_may_push(
    branch: str, experiment_branch: str | None, kind: str, refused: str | None
) -> None:
    reason = bundles.branch_refusal(branch, experiment_branch, kind)
    assert (reason is None) if refused is None else (refused in (reason or ""))


def test_the_bot_refuses_a_bundle_whose_head_is_not_a_commit(
    tmp_path: Path, origin: tuple[Path, str]
) -> None:
    """An annotated tag pushed to a branch ref would not be a branch at all."""
    bare, base = origin
    _, _, tree = checkout(tmp_path, bare, base)
    (tree / "train.py").write_text("LR = 0.9\n")
    workspace.commit_changes(tree, ["train.py"], student="fern", message="tagged")
    git(tree, "-c", "user.name=x", "-c", "user.email=x@x", "tag", "-a", "t1", "-m", "tag")
    path = tmp_path / "tag.bundle"
    git(tree, "bundle", "create", str(path), "refs/tags/t1", f"^{base}")
    with pytest.raises(bundles.BundleRefused, match="not a commit"):
        BotPublisher(bare, base).push(1, "kohai/8-tag", path.read_bytes())
