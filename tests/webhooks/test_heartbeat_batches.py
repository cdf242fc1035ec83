"""Heartbeats written in batches (`webhooks.workers.Heartbeats`), on a real SQLite store.

Each heartbeat is checked when it arrives and written with the others in one
transaction; a heartbeat for a lease that is no longer current, or a job that
finished meanwhile, changes nothing when the batch is written.
"""

from __future__ import annotations

from pathlib import Path

from bot.store import Store
from webhooks.workers import Heartbeats


def _job(store: Store, lease_id: str, state: str = "leased") -> int:
    repo = store.one("SELECT id FROM repos")
    repo_id = repo["id"] if repo else store.insert("repos", {"full_name": "lab/x", "created_at": 0})
    return store.insert(
        "jobs",
        {
            "kind": "baseline",
            "repo_id": repo_id,
            "state": state,
            "leased_by": "fern",
            "lease_id": lease_id,
            "lease_expires": 100.0,
            "created_at": 0,
            "updated_at": 0,
        },
    )


def test_heartbeats_are_written_together_and_only_for_the_current_lease(tmp_path: Path) -> None:
    store = Store(tmp_path / "kohai.db")
    store.insert(
        "students", {"name": "fern", "token_hash": "x", "state": "training", "created_at": 0}
    )
    with store.transaction():
        current = _job(store, "L1")
        moved_on = _job(store, "L2")  # re-leased since the host beat for L0
        finished = _job(store, "L3", state="done")
    beats = Heartbeats(store, lease_seconds=600.0)
    assert beats.note(current, "L1", "fern", 1000.0) == 1600.0
    beats.note(moved_on, "L0", "fern", 1000.0)
    beats.note(finished, "L3", "fern", 1001.0)
    beats.note(current, "L1", "fern", 1002.0)  # a later beat of the same job replaces it
    assert store.one("SELECT lease_expires FROM jobs WHERE id = ?", (current,)) == {
        "lease_expires": 100.0
    }  # nothing written before the batch
    assert beats.flush() == 3
    expiries = {
        row["id"]: row["lease_expires"]
        for row in store.query("SELECT id, lease_expires FROM jobs ORDER BY id")
    }
    assert expiries == {current: 1602.0, moved_on: 100.0, finished: 100.0}
    assert store.one("SELECT last_seen FROM students") == {"last_seen": 1002.0}
    assert beats.flush() == 0  # nothing left
    store.close()
