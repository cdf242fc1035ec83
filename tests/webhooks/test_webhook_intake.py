"""`POST /webhooks/github` over real HTTP: status codes, storage before the 202, dedup, routing."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from bot.cli.lab import ServerThread
from bot.config import Settings
from tests.conftest import sign
from webhooks.app import create_app
from webhooks.context import BotContext
from webhooks.workers import inbox_worker

SECRET = "s3cret"


@pytest.fixture
def bot(tmp_path: Path, pem: str):
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret=SECRET,
        github_api_url="http://127.0.0.1:9",  # nothing listens: no GitHub call may be needed
        db_path=str(tmp_path / "kohai.db"),
    )
    ctx = BotContext.build(settings)
    ctx.workers = [inbox_worker]
    with ServerThread(create_app(ctx)) as server:
        yield ctx, server


def post(
    url: str,
    event: str,
    body: bytes,
    *,
    delivery: str | None = None,
    secret: str = SECRET,
    **headers: str,
) -> httpx.Response:
    h = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
    }
    h.update(headers)
    return httpx.post(f"{url}/webhooks/github", content=body, headers=h, timeout=30)


def wait_routed(ctx: BotContext, timeout: float = 10) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = ctx.store.query("SELECT * FROM inbox ORDER BY id")
        if rows and all(r["status"] != "pending" for r in rows):
            return rows
        time.sleep(0.05)
    raise AssertionError("deliveries were not routed in time")


def test_every_real_fixture_is_accepted_stored_and_routed(bot, fixtures_dir: Path) -> None:
    ctx, server = bot
    # The repo of most fixtures is one the App is installed on.
    with ctx.store.transaction():
        ctx.store.insert(
            "repos", {"full_name": "Codertocat/Hello-World", "installation_id": 2, "created_at": 0}
        )
    files = sorted(fixtures_dir.glob("*/*.json"))
    assert len(files) >= 50
    sent: dict[str, str] = {}
    for path in files:
        event = path.parent.name
        delivery = f"{event}-{path.stem}"
        response = post(server.url, event, path.read_bytes(), delivery=delivery)
        assert response.status_code == 202, (path, response.text)
        sent[delivery] = event
    rows = {r["delivery_id"]: r for r in wait_routed(ctx)}
    assert set(rows) == set(sent)
    assert not [r for r in rows.values() if r["status"] == "failed"], [
        (r["delivery_id"], r["note"]) for r in rows.values() if r["status"] == "failed"
    ]
    # Spot checks of what the table says.
    assert rows["ping-payload"]["status"] == "routed" and rows["ping-payload"]["note"] == "pong"
    assert rows["check_run-completed.payload"]["status"] == "ignored"
    assert "not handled" in rows["issues-pinned.payload"]["note"]
    assert "means nothing" in rows["issues-labeled.payload"]["note"]  # the 'bug' label
    assert rows["installation-created.payload"]["status"] == "routed"
    installed = {r["full_name"] for r in ctx.store.query("SELECT full_name FROM repos")}
    assert "Codertocat/Space" in installed  # from installation_repositories.added
    # A PR closed by a human that is not an experiment is ignored, not an error.
    assert rows["pull_request-closed.payload"]["status"] == "ignored"


def test_bad_signature_missing_headers_malformed_and_oversize_store_nothing(bot) -> None:
    ctx, server = bot
    body = json.dumps({"zen": "hi"}).encode()
    assert post(server.url, "ping", body, secret="wrong").status_code == 401
    r = httpx.post(
        f"{server.url}/webhooks/github",
        content=body,
        headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "x"},
    )
    assert r.status_code == 401
    assert post(server.url, "ping", b"{not json").status_code == 400
    assert post(server.url, "ping", b"[1, 2]").status_code == 400
    assert post(server.url, "ping", '{"zen": "hi"}'.encode("utf-16")).status_code == 400
    r = httpx.post(
        f"{server.url}/webhooks/github",
        content=body,
        headers={"X-GitHub-Delivery": "d1", "X-Hub-Signature-256": sign(SECRET, body)},
    )
    assert r.status_code == 400
    big = b'{"a": "' + b"x" * (25 * 1024 * 1024 + 10) + b'"}'
    assert post(server.url, "ping", big).status_code == 413
    assert ctx.store.query("SELECT * FROM inbox") == []


def test_the_same_delivery_twice_is_routed_once(bot) -> None:
    ctx, server = bot
    body = json.dumps({"zen": "hi", "hook_id": 1}).encode()
    first = post(server.url, "ping", body, delivery="dup-1")
    second = post(server.url, "ping", body, delivery="dup-1")
    assert (first.status_code, second.status_code) == (202, 200)
    rows = wait_routed(ctx)
    assert len(rows) == 1 and rows[0]["status"] == "routed"


def test_stored_before_acknowledged(tmp_path: Path, pem: str) -> None:
    """With no worker running, a 202 still means the delivery is on disk."""
    settings = Settings(
        app_id=1, private_key=pem, webhook_secret=SECRET, db_path=str(tmp_path / "k.db")
    )
    ctx = BotContext.build(settings)
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        assert post(server.url, "ping", b'{"zen": "z"}', delivery="d-1").status_code == 202
    from bot.store import Store

    rows = Store(tmp_path / "k.db").query("SELECT delivery_id, status FROM inbox")
    assert rows == [{"delivery_id": "d-1", "status": "pending"}]


def test_health_reports_queues_and_workers(bot) -> None:
    ctx, server = bot
    post(server.url, "ping", b'{"zen": "z"}')
    wait_routed(ctx)
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["inbox"] == {"routed": 1}
    assert health["workers"]["inbox"]["alive"] is True
    assert httpx.get(f"{server.url}/schema/openapi.json").status_code == 200
