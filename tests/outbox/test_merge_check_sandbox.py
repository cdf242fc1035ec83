"""The merge re-reads the pull request from GitHub: only the measured head, only allowed files.

Against the local GitHub sandbox over loopback, with real git branches: a merge
whose PR changes a frozen file, `kohai.toml`, `.github/` or the evaluator's file
is stopped with the paths named; one whose head moved since the bot measured it
is stopped too; an allowed change at the measured head merges.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.github.client import GitHubApp
from bot.outbox import writes as w
from bot.outbox.worker import OutboxWorker
from bot.outbox.writes import enqueue
from bot.store import Store
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.support.github_mock import FakeTime

REPO = "lab/mergecheck"
FILES = {
    "kohai.toml": '[metric]\nname = "loss"\n[files]\neditable = ["*.py"]\nfrozen = ["prepare.py"]\n',
    "train.py": "LR = 0.01\n",
    "prepare.py": "def evaluate():\n    return 1.0\n",
    "score.py": "print('the evaluator')\n",
}
RULES = {"editable": ["*.py"], "frozen": ["prepare.py"], "trusted": ["score.py"]}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        server.create_repo(REPO, files=FILES)
        yield server


@pytest.fixture(scope="module")
def control(sandbox: SandboxServer) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox.url) as c:
        yield c


@pytest.fixture
def app(sandbox: SandboxServer, fake_time: FakeTime) -> GitHubApp:
    return GitHubApp(sandbox.app_id, sandbox.private_key_pem, sandbox.url, sleep=fake_time.sleep)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def branch_with(sandbox: SandboxServer, tmp: Path, branch: str, files: dict[str, str]) -> None:
    """A branch on the sandbox's repository whose one commit writes `files` over main."""
    work = tmp / branch.replace("/", "-")
    _git(tmp, "clone", "--quiet", str(sandbox.repo_path(REPO)), str(work))
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    _git(work, "add", "-A")
    _git(work, "commit", "--quiet", "-m", f"change {sorted(files)}")
    _git(work, "push", "--quiet", str(sandbox.repo_path(REPO)), f"HEAD:refs/heads/{branch}")


async def perform(store: Store, sandbox: SandboxServer, app: GitHubApp, *writes: w.Write) -> list:
    installation = sandbox.installation_id(REPO)
    with store.transaction():
        ids = [enqueue(store, REPO, installation, write) for write in writes]
    await OutboxWorker(store, app).run_once()
    return [store.one("SELECT * FROM outbox WHERE id = ?", (i,)) for i in ids]


async def open_ready_pr(
    store: Store, sandbox: SandboxServer, app: GitHubApp, experiment: int, branch: str
) -> tuple[int, str]:
    [row] = await perform(
        store,
        sandbox,
        app,
        w.OpenPullRequest(
            experiment_id=experiment,
            base="main",
            branch=branch,
            title=branch,
            body="hypothesis",
            commit_message="kohai: start",
        ),
    )
    assert row["state"] == "done", row
    result = json.loads(row["result"])
    [ready] = await perform(store, sandbox, app, w.MarkReady(number=result["number"]))
    assert ready["state"] == "done", ready
    return result["number"], result["head_sha"]


def main_sha(sandbox: SandboxServer) -> str:
    return _git(sandbox.repo_path(REPO), "rev-parse", "refs/heads/main")


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"prepare.py": "def evaluate():\n    return 0.5\n"}, "prepare.py: a frozen file"),
        ({"kohai.toml": '[files]\neditable = ["*"]\n'}, "kohai.toml: kohai.toml holds the budget"),
        ({".github/workflows/x.yml": "on: push\n"}, ".github/workflows/x.yml: GitHub workflows"),
        ({"score.py": "print(0.1)\n"}, "score.py: a file the [eval] or [data] command runs"),
        ({"pwn.txt": "x\n", "train.py": "LR = 0.02\n"}, "pwn.txt: outside files.editable"),
    ],
)
async def test_a_merge_whose_pr_changes_what_the_lab_forbids_is_stopped(
    sandbox: SandboxServer,
    control: SandboxControl,
    app: GitHubApp,
    store: Store,
    tmp_path: Path,
    files: dict[str, str],
    named: str,
) -> None:
    branch = f"kohai/{abs(hash(named)) % 10_000}-forbidden"
    branch_with(sandbox, tmp_path, branch, files)
    number, head = await open_ready_pr(store, sandbox, app, 1, branch)
    before = main_sha(sandbox)

    [merge] = await perform(
        store, sandbox, app, w.Merge(number=number, sha=head, title="t", **RULES)
    )

    assert merge["state"] == "failed"
    assert w.MERGE_CHECK in merge["last_error"] and named in merge["last_error"]
    assert main_sha(sandbox) == before
    assert control.pull(REPO, number)["merged"] is False


async def test_a_merge_whose_head_moved_since_it_was_measured_is_stopped(
    sandbox: SandboxServer, control: SandboxControl, app: GitHubApp, store: Store, tmp_path: Path
) -> None:
    branch_with(sandbox, tmp_path, "kohai/2-moved", {"train.py": "LR = 0.02\n"})
    number, head = await open_ready_pr(store, sandbox, app, 2, "kohai/2-moved")
    before = main_sha(sandbox)

    [merge] = await perform(
        store, sandbox, app, w.Merge(number=number, sha="f" * 40, title="t", **RULES)
    )

    assert merge["state"] == "failed"
    assert f"the PR's head is {head[:12]}, not the measured ffffffffffff" in merge["last_error"]
    assert main_sha(sandbox) == before


async def test_an_allowed_change_at_the_measured_head_merges(
    sandbox: SandboxServer, control: SandboxControl, app: GitHubApp, store: Store, tmp_path: Path
) -> None:
    branch_with(sandbox, tmp_path, "kohai/3-allowed", {"train.py": "LR = 0.03\n"})
    number, head = await open_ready_pr(store, sandbox, app, 3, "kohai/3-allowed")

    [merge] = await perform(
        store, sandbox, app, w.Merge(number=number, sha=head, title="t", **RULES)
    )

    assert merge["state"] == "done", merge["last_error"]
    assert json.loads(merge["result"])["merged"] is True
    assert _git(sandbox.repo_path(REPO), "show", "main:train.py") == "LR = 0.03"
