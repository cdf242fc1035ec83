"""The sandbox's whole world as one JSON document, saved after every change.

GitHub's state outlives any client; so must the sandbox's, across restarts.
The world is small (one lab's worth of issues), so a single atomically
replaced JSON file is simpler and safer than a database.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
DELIVERIES_FILE = "deliveries.jsonl"

USERS: tuple[tuple[str, int, str], ...] = (
    # login, id, permission on every sandbox repo
    ("alice", 1001, "admin"),
    ("bob", 1002, "write"),
    ("carol", 1003, "read"),
)
BOT_USER_ID = 41898282
APP_SLUG = "kohai"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def empty_world() -> dict[str, Any]:
    return {
        "app": {"id": 0, "slug": APP_SLUG, "webhook_secret": "", "webhook_url": None, "hook_id": 0},
        "counters": {},
        "users": {},
        "apps": {},  # Apps registered through the manifest flow, by id (see sandbox/manifest.py)
        "installations": {},
        "tokens": {},
        "repos": {},
        "deliveries": [],
    }


class State:
    """A JSON document guarded by one re-entrant lock; `save()` persists it."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.path = data_dir / STATE_FILE
        self.lock = threading.RLock()
        self.deliveries_path = data_dir / DELIVERIES_FILE
        self.data: dict[str, Any] = (
            json.loads(self.path.read_text()) if self.path.exists() else empty_world()
        )
        self.data["deliveries"] = (
            [json.loads(line) for line in self.deliveries_path.read_text().splitlines() if line]
            if self.deliveries_path.exists()
            else []
        )

    def next_id(self, kind: str, start: int = 1) -> int:
        counters = self.data["counters"]
        counters[kind] = counters.get(kind, start - 1) + 1
        return int(counters[kind])

    def save(self) -> None:
        """Rewrite the state file atomically (the delivery log is appended separately)."""
        with self.lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            world = {key: value for key, value in self.data.items() if key != "deliveries"}
            tmp.write_text(json.dumps(world, indent=1, sort_keys=True))
            os.replace(tmp, self.path)

    def append_delivery(self, record: dict[str, Any]) -> None:
        """Log one delivery attempt: in memory and one line of deliveries.jsonl."""
        with self.lock:
            self.data["deliveries"].append(record)
            self.dir.mkdir(parents=True, exist_ok=True)
            with self.deliveries_path.open("a") as log:
                log.write(json.dumps(record, separators=(",", ":")) + "\n")


def app_record(data: dict[str, Any], app_id: int | str | None = None) -> dict[str, Any] | None:
    """One App of the world: the default App (None, or its id) or one registered since."""
    default: dict[str, Any] = data["app"]
    if app_id is None or str(app_id) == str(default["id"]):
        return default
    found: dict[str, Any] | None = data.get("apps", {}).get(str(app_id))
    return found


def installation_app(data: dict[str, Any], inst: dict[str, Any]) -> dict[str, Any]:
    """The App an installation belongs to (installations without `app_id` are the default's)."""
    return app_record(data, inst.get("app_id")) or data["app"]


def all_apps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [data["app"], *data.get("apps", {}).values()]
