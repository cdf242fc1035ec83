"""The inbox keeps a delivery whose routing hits a GitHub outage, and gives up loudly."""

from __future__ import annotations

import json
from pathlib import Path

from bot.engine.engine import Engine
from bot.engine.inbox import MAX_TRIES, process_pending, store_delivery
from bot.store import Store

COMMENT = {
    "action": "created",
    "issue": {"number": 3, "title": "t", "body": ""},
    "comment": {"id": 9, "body": "/help"},
    "repository": {"full_name": "lab/charlm"},
    "installation": {"id": 1},
    "sender": {"login": "bob", "type": "User"},
}


async def test_permission_outage_keeps_the_delivery_then_fails_visibly(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    engine = Engine(store)
    with store.transaction():
        store.insert("repos", {"full_name": "lab/charlm", "installation_id": 1, "created_at": 0})
    assert store_delivery(store, "d1", "issue_comment", "created", json.dumps(COMMENT).encode())

    async def down(installation_id: int, repo: str, login: str) -> str:
        raise ConnectionError("GitHub is down")

    assert await process_pending(engine, down) == 0
    row = store.one("SELECT * FROM inbox")
    assert row["status"] == "pending" and "GitHub is down" in row["note"]

    async def up(installation_id: int, repo: str, login: str) -> str:
        return "write"

    assert await process_pending(engine, up) == 1
    assert store.one("SELECT status FROM inbox")["status"] == "routed"
    assert [r["op"] for r in store.query("SELECT op FROM outbox ORDER BY id")] == [
        "react",
        "comment",
    ]

    assert store_delivery(store, "d2", "issue_comment", "created", json.dumps(COMMENT).encode())
    for _ in range(MAX_TRIES):
        await process_pending(engine, down)
    row = store.one("SELECT * FROM inbox WHERE delivery_id = 'd2'")
    assert row["status"] == "failed" and "permission lookup failed" in row["note"]
