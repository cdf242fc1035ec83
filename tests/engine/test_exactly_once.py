"""Exactly once: a delivery's effects and its status commit together; catch-up keeps trying.

Also: /healthz recovers when GitHub does, and a rate limit is never reported
as bad credentials.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import bot.engine.inbox as inbox
from bot.cli.serve import catch_up_once, github_pass
from bot.config import Settings
from bot.engine.engine import Engine
from bot.github.catchup import select_redeliveries
from bot.github.client import GitHubWriteError
from bot.github.preflight import preflight
from bot.store import Store
from webhooks.app import health
from webhooks.context import BotContext

RERUN = {
    "action": "created",
    "issue": {"number": 5, "title": "t", "body": "", "pull_request": {"url": "x"}},
    "comment": {"id": 9, "body": "/rerun"},
    "repository": {"full_name": "lab/charlm"},
    "installation": {"id": 1},
    "sender": {"login": "ann", "type": "User"},
}


async def test_a_crash_before_the_status_is_stored_does_not_apply_a_delivery_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "k.db")
    engine = Engine(store)
    with store.transaction():
        store.insert(
            "repos",
            {
                "full_name": "lab/charlm",
                "installation_id": 1,
                "base_sha": "b" * 40,
                "created_at": 0,
            },
        )
        exp_id = engine.open_experiment(
            engine.repo("lab/charlm"), title="t", hypothesis="h", student="fern", source="human"
        )
        store.update("experiments", exp_id, {"pr_number": 5, "state": "review"})
    inbox.store_delivery(store, "d1", "issue_comment", "created", json.dumps(RERUN).encode())

    real_finish = inbox._finish
    crashes = {"left": 1}

    def crash_once(*args: Any) -> None:
        if crashes["left"]:
            crashes["left"] -= 1
            # Not an Exception: like a kill, nothing in the bot gets to handle it.
            raise SystemExit("killed between routing and recording")
        real_finish(*args)

    async def write(installation_id: int, repo: str, login: str) -> str:
        return "write"

    monkeypatch.setattr(inbox, "_finish", crash_once)
    with pytest.raises(SystemExit):
        await inbox.route_one(engine, inbox.pending(store)[0], write)
    # Nothing of the delivery was applied: no job, and it is still pending.
    assert store.count("SELECT COUNT(*) AS n FROM jobs") == 0
    assert store.one("SELECT status FROM inbox")["status"] == "pending"
    assert await inbox.process_pending(engine, write) == 1
    assert store.count("SELECT COUNT(*) AS n FROM jobs") == 1
    assert await inbox.process_pending(engine, write) == 0
    assert store.count("SELECT COUNT(*) AS n FROM jobs") == 1


def test_a_delivery_in_the_same_second_as_the_last_stored_one_is_not_skipped() -> None:
    # delivered_at has whole seconds; the last stored delivery came at .7 of that second.
    delivery = {
        "id": 1,
        "guid": "g",
        "delivered_at": "2023-11-14T22:13:20Z",  # 1_700_000_000
        "status_code": 502,
        "status": "Bad Gateway",
    }
    chosen = select_redeliveries([delivery], 1_700_000_000.7, lambda guid: False)
    assert [d["guid"] for d in chosen] == ["g"]
    assert select_redeliveries([delivery], 1_700_000_000.7, lambda guid: guid == "g") == []


class FlakyGitHub:
    """Deliveries GitHub holds for the App, and a redelivery endpoint that refuses at first.

    Stands in for GitHub's `/app/hook/deliveries` API in this unit test of the
    retry policy; the chaos test drives the same path against the sandbox.
    """

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.redelivered: list[Any] = []

    async def list_deliveries(self, *, max_pages: int = 5) -> list[dict[str, Any]]:
        return [
            {
                "id": 7,
                "guid": "missed",
                "delivered_at": "2030-01-01T00:00:00Z",
                "status_code": 0,
                "status": "timeout",
            }
        ]

    async def redeliver(self, delivery_id: int | str) -> None:
        if self.refusals:
            self.refusals -= 1
            raise GitHubWriteError(403, "You have exceeded a secondary rate limit", True, 60.0)
        self.redelivered.append(delivery_id)


def bot_context(tmp_path: Path, pem: str, github: Any) -> BotContext:
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="http://127.0.0.1:9",
        db_path=str(tmp_path / "k.db"),
    )
    ctx = BotContext.build(settings, github=github)
    ctx.workers = []
    return ctx


async def test_catch_up_retries_what_github_refused_and_health_recovers(
    tmp_path: Path, pem: str
) -> None:
    github = FlakyGitHub(refusals=2)
    ctx = bot_context(tmp_path, pem, github)
    assert await catch_up_once(ctx) == []
    assert not health(ctx)["ok"]
    assert "refused to redeliver" in health(ctx)["errors"][0]
    assert await catch_up_once(ctx) == []
    assert await catch_up_once(ctx) == ["missed"]
    assert github.redelivered == [7]
    assert health(ctx)["ok"] and health(ctx)["errors"] == []


async def test_the_github_check_is_repeated_until_it_passes(tmp_path: Path, pem: str) -> None:
    ctx = bot_context(tmp_path, pem, FlakyGitHub(refusals=0))
    ctx.extra["catch_up_every_s"] = 0
    with respx.mock(assert_all_called=False) as mock:
        mock.get("http://127.0.0.1:9/app").mock(return_value=httpx.Response(502, json={}))
        await github_pass(ctx)
        assert any("502" in e for e in health(ctx)["errors"])
        ctx.extra["github_pass"]["checked"] = 1.0  # long ago: due for a re-check
        mock.get("http://127.0.0.1:9/app").mock(
            return_value=httpx.Response(
                200,
                json={
                    "slug": "kohai",
                    "permissions": {
                        "contents": "write",
                        "pull_requests": "write",
                        "issues": "write",
                        "metadata": "read",
                    },
                    "events": ["issues", "issue_comment", "pull_request", "push"],
                },
            )
        )
        await github_pass(ctx)
    assert not any("502" in e for e in health(ctx)["errors"])


@pytest.mark.parametrize(
    "headers,message",
    [
        ({}, "You have exceeded a secondary rate limit."),
        ({"retry-after": "60"}, "slow down"),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9999999999"}, "API rate limit"),
    ],
)
async def test_a_rate_limit_is_never_reported_as_bad_credentials(
    pem: str, headers: dict[str, str], message: str
) -> None:
    with respx.mock:
        respx.get("http://127.0.0.1:9/app").mock(
            return_value=httpx.Response(403, headers=headers, json={"message": message})
        )
        report = await preflight(1, pem, "http://127.0.0.1:9")
    [error] = report.errors
    assert "rate limiting" in error and "credentials" not in error.split("(")[0].lower()


class DownTimeGitHub(FlakyGitHub):
    """One delivery that failed a few seconds ago, while the bot was down."""

    def __init__(self, failed_at: float) -> None:
        super().__init__(refusals=0)
        self.failed_at = failed_at

    async def list_deliveries(self, *, max_pages: int = 5) -> list[dict[str, Any]]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.failed_at))
        return [{"id": 8, "guid": "down", "delivered_at": stamp, "status_code": 0, "status": "x"}]


async def test_a_delivery_arriving_after_a_restart_does_not_hide_those_missed_while_down(
    tmp_path: Path, pem: str
) -> None:
    """The first pass after a restart looks back past the newest stored delivery: a
    `/rerun` that failed while the bot was down is asked for even when another delivery
    reached the restarted bot first (found by the chaos test)."""
    github = DownTimeGitHub(failed_at=time.time() - 5)
    ctx = bot_context(tmp_path, pem, github)
    # The previous process stored a delivery but never finished a pass; then, after the
    # restart, a new delivery arrived before the first catch-up pass.
    inbox.store_delivery(ctx.store, "early", "ping", None, b"{}")
    ctx.store.execute("UPDATE inbox SET received_at = ?", (time.time() - 30,))
    inbox.store_delivery(ctx.store, "after-restart", "ping", None, b"{}")
    assert await catch_up_once(ctx) == ["down"]


async def test_a_complete_pass_leaves_a_mark_even_before_any_delivery_arrived(
    tmp_path: Path, pem: str
) -> None:
    github = DownTimeGitHub(failed_at=time.time() - 5)
    ctx = bot_context(tmp_path, pem, github)
    github.refusals = 0
    assert await catch_up_once(ctx) == ["down"]
    mark = ctx.store.one("SELECT value FROM bot_state WHERE key = 'catch_up_since'")
    assert mark is not None and float(mark["value"]) <= time.time()
    # A later pass still sees a delivery that failed after the mark.
    github.failed_at = time.time()
    assert await catch_up_once(ctx) == ["down"]
