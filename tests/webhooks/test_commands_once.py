"""A command runs once, whatever delivery carries it.

GitHub signs a webhook's body, not its `X-GitHub-Delivery` header: whoever
holds one signed delivery can post it again under a new id. The bot must then
do nothing. A slash command is identified by its comment, a label change by
its issue, label, action and time (`bot.core.router.once_key`).

Real parts: the sandbox GitHub (the human's comment, its signed delivery, the
permission look-ups, the job's repository token), the bot as the litestar app
on loopback with its SQLite file and its inbox worker, and the host API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli.lab import ServerThread, free_port
from bot.config import Settings
from bot.engine.engine import Engine
from bot.engine.jobs import register_student
from bot.protocol import JobResult, RunResult
from bot.store import Store
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.conftest import sign
from webhooks.app import create_app
from webhooks.context import BotContext
from webhooks.workers import inbox_worker

REPO = "lab/x"
TOML = '[metric]\nname = "loss"\n[train]\ncommand = "true"\nseeds = 1\nbaseline_seeds = 1\n'
HEAD = "c" * 40


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.sandbox = SandboxServer(tmp_path / "github").start()
        self.sandbox.create_repo(REPO, files={"kohai.toml": TOML, "train.py": "print(1)\n"})
        self.installation_id = self.sandbox.world.installation_id_of(REPO)
        self.control = SandboxControl(self.sandbox.url)
        settings = Settings(
            app_id=self.sandbox.app_id,
            private_key=self.sandbox.private_key_pem,
            webhook_secret=self.sandbox.webhook_secret,
            github_api_url=self.sandbox.url,
            db_path=str(tmp_path / "kohai.db"),
        )
        self.ctx = BotContext.build(settings)
        self.ctx.workers = [inbox_worker]
        # The test's own connection: the bot's belongs to the server's thread.
        self.store = Store(settings.db_path)
        engine = Engine(self.store)
        with self.store.transaction():
            self.store.insert(
                "repos",
                {
                    "full_name": REPO,
                    "installation_id": self.installation_id,
                    "base_sha": "b" * 40,
                    "synced_at": 1.0,
                    "problem_toml": TOML,
                    "created_at": 0,
                },
            )
        self.token = register_student(self.store, "fern")
        self.server = ServerThread(create_app(self.ctx), port=port).start()
        self.sandbox.world.set_webhook_url(f"{self.url}/webhooks/github")
        self.number = self.control.open_issue(REPO, "try a wider model", as_user="bob")["number"]
        with self.store.transaction():
            exp_id = engine.open_experiment(
                engine.repo(REPO), title="wider", hypothesis="h", student="fern", source="human"
            )
            self.store.update(
                "experiments",
                exp_id,
                {"pr_number": self.number, "head_sha": HEAD, "implemented": 1, "state": "review"},
            )
        self.exp_id = exp_id

    def stop(self) -> None:
        self.server.stop()
        self.control.disconnect()
        self.sandbox.stop()

    def q(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return self.store.query(sql, params)

    def wait_routed(self, delivery: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.q("SELECT * FROM inbox WHERE delivery_id = ?", (delivery,))
            if rows and rows[0]["status"] != "pending":
                return rows[0]
            time.sleep(0.05)
        raise AssertionError(f"delivery {delivery} was not routed in time")

    def delivery_of(self, event: str, action: str) -> dict[str, Any]:
        """The sandbox's record of its latest delivery of `event.action` (headers and payload)."""
        records = [
            d
            for d in self.control.deliveries()
            if d["event"] == event and d.get("action") == action
        ]
        assert records, f"the sandbox delivered no {event}.{action}"
        return records[-1]

    def post(self, event: str, body: bytes, delivery: str, signature: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/webhooks/github",
            content=body,
            headers={
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
                "Content-Type": "application/json",
            },
            timeout=30,
        )

    def host_call(self, path: str, body: Any = None) -> httpx.Response:
        return httpx.post(
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.stop()


def test_a_rerun_replayed_under_a_new_delivery_id_runs_once(lab: Lab) -> None:
    lab.control.comment(REPO, lab.number, "/rerun", as_user="bob")  # bob may write
    record = lab.delivery_of("issue_comment", "created")
    first = lab.wait_routed(record["guid"])
    assert first["status"] == "routed", first["note"]
    jobs = lab.q("SELECT id, state FROM jobs")
    assert [j["state"] for j in jobs] == ["queued"]

    # A host runs the job to the end: the experiment waits in review again, where
    # a second /rerun would queue a second job.
    lease = lab.host_call("/api/hosts/fern/lease").json()
    result = JobResult(
        status="ok",
        runs=[RunResult(seed=s, status="ok", metric=1.0) for s in lease["seeds"]],
        head_sha=HEAD,
        lease_id=lease["lease_id"],
    )
    done = lab.host_call(f"/api/jobs/{lease['id']}/complete", result.to_dict())
    assert done.status_code == 200, done.text

    # The same signed body, replayed under a new delivery id (the signature still holds:
    # it covers the body only).
    headers = record["request"]["headers"]
    body = json.dumps(record["request"]["payload"], separators=(",", ":")).encode()
    assert sign(lab.sandbox.webhook_secret, body) == headers["X-Hub-Signature-256"]
    replay = str(uuid.uuid4())
    answer = lab.post("issue_comment", body, replay, headers["X-Hub-Signature-256"])
    assert answer.status_code == 202  # stored: a new delivery id is a new delivery ...
    second = lab.wait_routed(replay)
    assert second["status"] == "ignored"  # ... but not a new command
    assert record["guid"] in second["note"]
    assert len(lab.q("SELECT id FROM jobs")) == 1  # one job, not two
    reactions = lab.q("SELECT args FROM outbox WHERE op = 'react'")
    assert len(reactions) == 1  # one 👀
    assert (
        json.loads(reactions[0]["args"])["comment_id"]
        == record["request"]["payload"]["comment"]["id"]
    )
    replies = lab.q("SELECT args FROM outbox WHERE op = 'comment' AND args LIKE '%reply%'")
    assert replies == []  # and no "already queued" either


def test_an_edited_command_comment_runs_nothing(lab: Lab) -> None:
    lab.control.comment(REPO, lab.number, "/rerun", as_user="bob")
    record = lab.delivery_of("issue_comment", "created")
    lab.wait_routed(record["guid"])
    payload = dict(record["request"]["payload"], action="edited")
    payload["comment"] = dict(payload["comment"], body="/rerun seeds=3")
    body = json.dumps(payload).encode()
    delivery = str(uuid.uuid4())
    assert lab.post("issue_comment", body, delivery, sign(lab.sandbox.webhook_secret, body))
    assert lab.wait_routed(delivery)["status"] == "ignored"
    assert len(lab.q("SELECT id FROM jobs")) == 1


def _label_event(lab: Lab, action: str, stamp: str) -> bytes:
    """A pull_request.labeled/unlabeled delivery for `hold`, as GitHub sends it."""
    labels = [{"name": "hold"}] if action == "labeled" else []
    return json.dumps(
        {
            "action": action,
            "number": lab.number,
            "label": {"name": "hold"},
            "pull_request": {
                "number": lab.number,
                "title": "wider",
                "body": "",
                "updated_at": stamp,
                "labels": labels,
                "user": {"login": "kohai[bot]", "type": "Bot"},
                "head": {"sha": HEAD, "ref": "kohai/1-wider"},
                "base": {"ref": "main"},
            },
            "repository": {"full_name": REPO, "default_branch": "main"},
            "installation": {"id": lab.installation_id},
            "sender": {"login": "alice", "type": "User"},  # alice is an admin
        }
    ).encode()


def test_a_label_change_replayed_under_a_new_delivery_id_does_nothing(lab: Lab) -> None:
    secret = lab.sandbox.webhook_secret
    held = _label_event(lab, "labeled", "2026-01-01T00:00:01Z")
    lab.post("pull_request", held, "hold-1", sign(secret, held))
    assert lab.wait_routed("hold-1")["status"] == "routed"
    assert lab.q("SELECT hold FROM experiments")[0]["hold"] == 1
    released = _label_event(lab, "unlabeled", "2026-01-01T00:00:02Z")
    lab.post("pull_request", released, "unhold-1", sign(secret, released))
    assert lab.wait_routed("unhold-1")["status"] == "routed"
    assert lab.q("SELECT hold FROM experiments")[0]["hold"] == 0
    # The old "hold" delivery, replayed: the experiment must not stop again.
    lab.post("pull_request", held, "hold-replayed", sign(secret, held))
    replayed = lab.wait_routed("hold-replayed")
    assert replayed["status"] == "ignored" and "hold-1" in replayed["note"]
    assert lab.q("SELECT hold FROM experiments")[0]["hold"] == 0
    # A new hold (a later change of the label) still counts.
    again = _label_event(lab, "labeled", "2026-01-01T00:00:03Z")
    lab.post("pull_request", again, "hold-2", sign(secret, again))
    assert lab.wait_routed("hold-2")["status"] == "routed"
    assert lab.q("SELECT hold FROM experiments")[0]["hold"] == 1
