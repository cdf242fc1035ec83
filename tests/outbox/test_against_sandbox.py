"""The client and the outbox against the local GitHub sandbox on loopback.

The respx tests pin the exact requests; these check that the same requests
do the right thing on a server with real git repositories, expiring tokens
and a fault switch.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bot.github.catchup import catch_up
from bot.github.client import GitHubApp
from bot.github.permissions import PermissionCache, can_command
from bot.outbox import writes as w
from bot.outbox.worker import OutboxWorker, failed_writes
from bot.outbox.writes import enqueue
from bot.store import Store
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.support.github_mock import FakeTime

REPO = "lab/outbox"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        server.create_repo(REPO, files={"README.md": "# outbox\n", "train.py": "lr = 0.01\n"})
        yield server


@pytest.fixture(scope="module")
def control(sandbox: SandboxServer) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox.url) as c:
        yield c


@pytest.fixture
def app(sandbox: SandboxServer, fake_time: FakeTime) -> GitHubApp:
    # Real wall clock (tokens expire on the server's clock); fake sleeps, so retries are instant.
    return GitHubApp(sandbox.app_id, sandbox.private_key_pem, sandbox.url, sleep=fake_time.sleep)


def installation(sandbox: SandboxServer) -> int:
    found = sandbox.installation_id(REPO)
    assert found is not None
    return found


def run(store: Store, sandbox: SandboxServer, write: w.Write) -> int:
    with store.transaction():
        return enqueue(store, REPO, installation(sandbox), write)


def result_of(store: Store, row_id: int) -> dict[str, Any]:
    row = store.one("SELECT state, result, last_error FROM outbox WHERE id = ?", (row_id,))
    assert row is not None and row["state"] == "done", row
    return json.loads(row["result"])


async def test_an_experiment_from_issue_to_merge(
    sandbox: SandboxServer, control: SandboxControl, app: GitHubApp, store: Store
) -> None:
    issue = control.open_issue(REPO, "Try a lower learning rate", "lr 0.003 should help")
    worker = OutboxWorker(store, app)
    labels = [
        {"name": "status:queued", "color": "fbca04", "description": "waiting for a host"},
        {"name": "student:fern", "color": "1d76db", "description": "fern's experiment"},
    ]
    run(store, sandbox, w.EnsureLabels(labels=labels))
    pr_row = run(
        store,
        sandbox,
        w.OpenPullRequest(
            experiment_id=1,
            base="main",
            branch="kohai/1-lower-lr",
            title="Lower learning rate",
            body="Hypothesis: lr 0.003 lowers val_bpb.",
            commit_message="kohai: lower learning rate",
            labels=["status:queued", "student:fern"],
            issue_number=issue["number"],
        ),
    )
    assert await worker.run_once() == 2, failed_writes(store)
    pr = result_of(store, pr_row)
    number = pr["number"]

    pulls = control.pulls(REPO)
    [pull] = [p for p in pulls if p["number"] == number]
    assert pull["draft"] is True
    assert pull["body"].startswith("<!-- kohai:experiment:1 -->")
    assert sorted(control.labels_of(REPO, number)) == ["status:queued", "student:fern"]
    [link] = control.comments(REPO, issue["number"])
    assert link["body"].startswith("<!-- kohai:link:1 -->") and f"#{number}" in link["body"]

    # The branch's one commit changes nothing: same tree as main.
    git_dir = sandbox.repo_path(REPO)
    tree = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", "kohai/1-lower-lr^{tree}", "main^{tree}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tree[0] == tree[1]

    # Asked twice (a retried op after a crash): nothing new on GitHub.
    run(
        store,
        sandbox,
        w.OpenPullRequest(
            experiment_id=1,
            base="main",
            branch="kohai/1-lower-lr",
            title="Lower learning rate",
            body="",
            commit_message="",
            labels=["status:queued"],
            issue_number=issue["number"],
        ),
    )
    run(store, sandbox, w.StatusComment(number=number, kind="status", key=number, body="queued"))
    assert await worker.run_once() == 2, failed_writes(store)  # posted; the next edits it
    run(store, sandbox, w.StatusComment(number=number, kind="status", key=number, body="training"))
    run(store, sandbox, w.Comment(number=number, kind="result", key="1-0", body="val_bpb 0.98"))
    run(store, sandbox, w.Comment(number=number, kind="result", key="1-0", body="val_bpb 0.98"))
    run(store, sandbox, w.RemoveLabel(number=number, label="status:queued"))
    run(store, sandbox, w.RemoveLabel(number=number, label="status:queued"))
    run(store, sandbox, w.MarkReady(number=number))
    run(store, sandbox, w.MarkReady(number=number))
    assert await worker.run_once() == 7, failed_writes(store)
    assert len(control.pulls(REPO)) == len(pulls)
    assert len(control.comments(REPO, issue["number"])) == 1
    bodies = [c["body"] for c in control.comments(REPO, number)]
    assert bodies == [
        f"<!-- kohai:status:{number} -->\ntraining",
        "<!-- kohai:result:1-0 -->\nval_bpb 0.98",
    ]
    assert control.labels_of(REPO, number) == ["student:fern"]
    assert [p["draft"] for p in control.pulls(REPO) if p["number"] == number] == [False]

    merge = run(
        store, sandbox, w.Merge(number=number, sha=pr["head_sha"], method="squash", title="")
    )
    again = run(
        store, sandbox, w.Merge(number=number, sha=pr["head_sha"], method="squash", title="")
    )
    assert await worker.run_once() == 2, failed_writes(store)
    assert result_of(store, merge)["merged"] is True
    assert result_of(store, again) == result_of(store, merge)


async def test_faults_are_retried_by_the_client(
    sandbox: SandboxServer, control: SandboxControl, app: GitHubApp, fake_time: FakeTime
) -> None:
    inst = installation(sandbox)
    control.fault(2, "502")
    reply = await app.request(inst, "GET", f"/repos/{REPO}")
    assert reply.data["full_name"] == REPO
    assert fake_time.sleeps == [1.0, 2.0]
    control.fault(1, "secondary_rate_limit", retry_after=3)
    await app.request(inst, "GET", f"/repos/{REPO}")
    assert fake_time.sleeps[-1] == 3.0


async def test_job_token_can_read_only_its_repo(sandbox: SandboxServer, app: GitHubApp) -> None:
    sandbox.create_repo("lab/elsewhere", files={"README.md": "x\n"})
    token, expires_at = await app.job_token(installation(sandbox), REPO)
    assert expires_at.endswith("Z")
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        headers = {"authorization": f"token {token}"}
        assert (await client.get(f"/repos/{REPO}", headers=headers)).status_code == 200
        other = await client.get("/repos/lab/elsewhere", headers=headers)
        assert other.status_code in (403, 404)


async def test_a_push_token_is_reused_not_revoked_after_each_push(
    sandbox: SandboxServer, control: SandboxControl, app: GitHubApp
) -> None:
    """Revoking after every push spent one installation request per push: the token is
    kept (it never leaves the bot) and left to expire; a failed push drops it."""
    control.clear_requests()
    first = await app.push_token(installation(sandbox), REPO)
    assert await app.push_token(installation(sandbox), REPO) == first
    routes = [r["route"] for r in control.requests()]
    assert routes.count("POST /app/installations/{n}/access_tokens") == 1
    assert not any("/installation/token" in route for route in routes)
    app.forget_push_token(first)  # what the host API does when a push with it fails
    second = await app.push_token(installation(sandbox), REPO)
    assert second != first
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        headers = {"authorization": f"token {second}"}
        assert (await client.get(f"/repos/{REPO}", headers=headers)).status_code == 200


async def test_push_tokens_kept_are_revoked_at_shutdown(
    sandbox: SandboxServer, app: GitHubApp
) -> None:
    token = await app.push_token(installation(sandbox), REPO)
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        headers = {"authorization": f"token {token}"}
        assert (await client.get(f"/repos/{REPO}", headers=headers)).status_code == 200
        assert await app.revoke_push_tokens() == 1
        assert (await client.get(f"/repos/{REPO}", headers=headers)).status_code == 401
    assert await app.push_token(installation(sandbox), REPO) != token


async def test_a_push_token_near_its_expiry_is_not_handed_out(
    sandbox: SandboxServer, fake_time: FakeTime
) -> None:
    """A push must not start on a token that could expire under it."""
    later = {"s": 0.0}
    app = GitHubApp(
        sandbox.app_id,
        sandbox.private_key_pem,
        sandbox.url,
        sleep=fake_time.sleep,
        wall_clock=lambda: time.time() + later["s"],
    )
    first = await app.push_token(installation(sandbox), REPO)
    later["s"] = 55 * 60.0  # five minutes before a GitHub token's hour is up
    assert await app.push_token(installation(sandbox), REPO) != first


async def test_permissions_of_sandbox_users(sandbox: SandboxServer, app: GitHubApp) -> None:
    cache = PermissionCache(app)
    levels = {
        login: await cache.level(installation(sandbox), REPO, login)
        for login in ("alice", "bob", "carol", "nobody-at-all")
    }
    assert levels == {"alice": "admin", "bob": "write", "carol": "read", "nobody-at-all": "none"}
    assert [login for login, level in levels.items() if can_command(level)] == ["alice", "bob"]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_catch_up_redelivers_what_the_bot_missed(
    sandbox: SandboxServer, control: SandboxControl, app: GitHubApp
) -> None:
    control.set_webhook_url(f"http://127.0.0.1:{unused_port()}/webhooks/github")  # bot is down
    try:
        control.open_issue(REPO, "Missed while down")
        control.deliveries(wait=10)
        before = {d["id"] for d in await app.list_deliveries()}
        asked = await catch_up(app, None, known_delivery_ids=set())
        control.deliveries(wait=10)
        after = await app.list_deliveries()
    finally:
        control.set_webhook_url(None)
    assert asked
    redelivered = {d["guid"] for d in after if d["id"] not in before and d.get("redelivery")}
    assert redelivered == set(asked)
    # Once the inbox holds them, there is nothing left to ask for.
    assert await catch_up(app, None, known_delivery_ids=set(asked)) == []


def test_one_app_serves_several_event_loops(sandbox: SandboxServer) -> None:
    """Pooled connections belong to one loop; a second loop must not reuse them."""
    app = GitHubApp(sandbox.app_id, sandbox.private_key_pem, sandbox.url)
    inst = installation(sandbox)

    async def twice() -> list[str]:
        first = await app.request(inst, "GET", f"/repos/{REPO}")
        second = await app.request(inst, "GET", f"/repos/{REPO}")
        return [first.data["full_name"], second.data["full_name"]]

    assert asyncio.run(twice()) == [REPO, REPO]
    assert asyncio.run(twice()) == [REPO, REPO]
    asyncio.run(app.aclose())


async def test_a_copied_marker_in_a_users_comment_changes_nothing(
    sandbox: SandboxServer, control: SandboxControl, app: GitHubApp, store: Store
) -> None:
    """A user who posts the bot's markers first neither suppresses results nor hosts the status."""
    issue = control.open_issue(REPO, "Spoof", "markers ahead")
    number = issue["number"]
    spoof = control.comment(
        REPO, number, "<!-- kohai:results:77 -->\n<!-- kohai:status:77 -->\nmine now", as_user="bob"
    )
    assert spoof["user"]["type"] == "User"
    worker = OutboxWorker(store, app)
    run(store, sandbox, w.Comment(number=number, kind="results", key=77, body="the results"))
    run(store, sandbox, w.StatusComment(number=number, kind="status", key=77, body="queued"))
    assert await worker.run_once() == 2, failed_writes(store)
    run(store, sandbox, w.StatusComment(number=number, kind="status", key=77, body="training"))
    assert await worker.run_once() == 1, failed_writes(store)

    comments = control.comments(REPO, number)
    assert comments[0]["id"] == spoof["id"]
    assert comments[0]["body"].endswith("mine now")  # never edited by the bot
    mine = [c for c in comments if c["user"]["login"] == sandbox.bot_login]
    assert [c["user"]["type"] for c in mine] == ["Bot", "Bot"]  # the App authors as its bot
    assert [c["body"].splitlines() for c in mine] == [
        ["<!-- kohai:results:77 -->", "the results"],
        ["<!-- kohai:status:77 -->", "training"],
    ]
    # Asked again (a retried op), the bot finds its own comment, not the user's.
    run(store, sandbox, w.Comment(number=number, kind="results", key=77, body="the results"))
    assert await worker.run_once() == 1
    assert len(control.comments(REPO, number)) == 3


async def test_a_new_branch_jumps_the_queue_and_the_pr_opens_on_it(
    sandbox: SandboxServer, app: GitHubApp, store: Store
) -> None:
    """start_branch is performed before writes queued earlier; open_pr then finds the branch."""
    git_dir = sandbox.repo_path(REPO)

    def rev(name: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(git_dir), "rev-parse", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    base = rev("main")
    worker = OutboxWorker(store, app)
    labels_row = run(store, sandbox, w.EnsureLabels(labels=[{"name": "x-late", "color": "ededed"}]))
    branch_row = run(
        store,
        sandbox,
        w.StartBranch(
            experiment_id=7,
            base="main",
            base_sha=base,
            branch="kohai/7-fast",
            commit_message="kohai: start experiment 7",
        ),
    )
    assert [r.id for r in worker.due()][:2] == [branch_row, labels_row]
    assert await worker.run_once() == 2, failed_writes(store)
    head = result_of(store, branch_row)["head_sha"]
    assert head == rev("kohai/7-fast") and rev("kohai/7-fast^") == base
    assert rev("kohai/7-fast^{tree}") == rev("main^{tree}")
    # Asked again (a retry after a crash): the branch is read back, not moved.
    again = run(
        store,
        sandbox,
        w.StartBranch(
            experiment_id=7,
            base="main",
            base_sha=base,
            branch="kohai/7-fast",
            commit_message="kohai: start experiment 7",
        ),
    )
    pr_row = run(
        store,
        sandbox,
        w.OpenPullRequest(
            experiment_id=7,
            base="main",
            branch="kohai/7-fast",
            title="Fast start",
            body="b",
            commit_message="",
            labels=[],
            issue_number=None,
        ),
    )
    assert await worker.run_once() == 2, failed_writes(store)
    assert result_of(store, again)["head_sha"] == head
    assert result_of(store, pr_row)["head_sha"] == head
