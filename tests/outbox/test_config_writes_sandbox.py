"""The two writes that report an invalid kohai.toml, performed against the sandbox GitHub.

Each is performed twice, as a crash between the GitHub call and the outbox's
commit would: the second finds the first (the check run by its external id,
the issue by its marker) and posts nothing new. A user's issue that copies
the marker is never taken for the bot's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from bot.core import configcheck
from bot.core.configcheck import LastWord
from bot.github.client import GitHubApp
from bot.outbox import writes as w
from bot.outbox.worker import check_run, issue_report
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.support.github_mock import FakeTime

REPO = "lab/config"
TOML = '[metric]\nname = "val_bpb"\n\n[gate]\nscreen = "lots"\n'


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        server.create_repo(REPO, files={"kohai.toml": TOML})
        yield server


@pytest.fixture
def app(sandbox: SandboxServer, fake_time: FakeTime) -> GitHubApp:
    return GitHubApp(sandbox.app_id, sandbox.private_key_pem, sandbox.url, sleep=fake_time.sleep)


def _branch(sandbox: SandboxServer) -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(sandbox.repo_path(REPO)), "rev-parse", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


async def test_reported_twice_is_one_check_run_and_one_issue_then_closed_once(
    sandbox: SandboxServer, app: GitHubApp
) -> None:
    sha = _branch(sandbox)
    inst = sandbox.installation_id(REPO)
    assert inst is not None
    with SandboxControl(sandbox.url) as control:
        # bob pastes the bot's marker into an issue of his own first
        spoof = control.open_issue(
            REPO, "kohai: configuration error", "<!-- kohai:config-error:kohai.toml -->\nmine"
        )
        error = "gate.screen: expected true or false, got 'lots'"
        check, report = configcheck.config_writes(REPO, "main", sha, TOML, error, LastWord())
        assert isinstance(check, w.CheckRun) and isinstance(report, w.IssueReport)
        first = await check_run(app, inst, REPO, check)
        again = await check_run(app, inst, REPO, check)
        assert first == again
        opened = await issue_report(app, inst, REPO, report)
        assert await issue_report(app, inst, REPO, report) == opened
        assert opened["number"] != spoof["number"]
        issue = control.issue(REPO, opened["number"])
        assert issue["user"]["type"] == "Bot" and "line 5" in issue["body"]

        [_, close] = configcheck.config_writes(
            REPO, "main", sha, TOML, None, LastWord(issue_open=True)
        )
        assert await issue_report(app, inst, REPO, close) == opened
        assert await issue_report(app, inst, REPO, close) == {"number": None}
        assert control.issue(REPO, opened["number"])["state"] == "closed"
        assert len(control.comments(REPO, opened["number"])) == 1
        assert control.issue(REPO, spoof["number"])["state"] == "open", "bob's issue is his"
