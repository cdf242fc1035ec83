"""Webhooks through a smee-compatible channel (`KOHAI_WEBHOOK_PROXY_URL`): no public URL needed.

The GitHub sandbox posts its deliveries to its own channel; the bot reads the
channel's event stream and feeds the same intake, signatures checked as if
GitHub had posted directly. A forged event on the channel is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.cli.lab import LocalLab
from bot.config import ConfigError, Settings
from tests.e2e.conftest import problem_files
from webhooks.relay import bodies, delivery_of

pytestmark = pytest.mark.timeout(180)


def test_a_channel_event_becomes_headers_and_body() -> None:
    event = {
        "x-github-event": "issues",
        "x-github-delivery": "d-1",
        "x-hub-signature-256": "sha256=00",
        "host": "smee.io",
        "body": {"action": "opened", "title": "caf\u00e9"},
        "query": {},
        "timestamp": 1,
    }
    headers, body = delivery_of(json.dumps(event)) or ({}, None)
    assert headers == {
        "x-github-event": "issues",
        "x-github-delivery": "d-1",
        "x-hub-signature-256": "sha256=00",
    }
    assert body == {"action": "opened", "title": "caf\u00e9"}
    assert delivery_of("{}") is None  # the `ready` event
    assert delivery_of("not json") is None
    assert delivery_of(json.dumps({"body": {}})) is None  # no GitHub event: not a delivery
    assert list(bodies(body)) == [
        '{"action":"opened","title":"café"}'.encode(),
        b'{"action":"opened","title":"caf\\u00e9"}',
    ]


def test_the_proxy_url_must_be_http() -> None:
    env = {
        "KOHAI_GITHUB_APP_ID": "1",
        "KOHAI_GITHUB_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\nx\n",
        "KOHAI_WEBHOOK_SECRET": "s",
    }
    assert Settings.from_env(env).webhook_proxy_url is None
    url = "https://smee.io/abc"
    assert Settings.from_env({**env, "KOHAI_WEBHOOK_PROXY_URL": url}).webhook_proxy_url == url
    with pytest.raises(ConfigError, match="KOHAI_WEBHOOK_PROXY_URL"):
        Settings.from_env({**env, "KOHAI_WEBHOOK_PROXY_URL": "smee.io/abc"})


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LocalLab]:
    with LocalLab(tmp_path, proxy=True) as lab:
        yield lab


def _channel(lab: LocalLab) -> str:
    return str(lab.settings.webhook_proxy_url)


def test_a_labelled_issue_reaches_the_bot_through_the_channel(lab: LocalLab) -> None:
    # The bot holds the channel open (what smee does with nobody listening: drop it).
    deadline = time.monotonic() + 60
    while httpx.post(_channel(lab), json={}).json()["listeners"] < 1:
        assert time.monotonic() < deadline, "the bot never opened the channel"
        time.sleep(0.2)
    lab.add_repo("lab/charlm", files=problem_files())
    lab.control.open_issue(
        "lab/charlm", "Lower the LR", "LEARNING_RATE = 0.001", labels=["student:fern"]
    )
    lab.register("fern")
    exp = lab.wait(
        "the experiment from the labelled issue",
        lambda: lab.q("SELECT * FROM experiments WHERE title = 'Lower the LR'"),
        timeout=60,
    )[0]
    assert exp["student"] == "fern"
    routed = lab.q("SELECT event FROM inbox WHERE status != 'failed'")
    assert {"issues", "installation"} & {r["event"] for r in routed}

    # A forged delivery on the channel (anyone can post to a channel) is refused.
    forged = {"action": "created", "comment": {"id": 1, "body": "/merge"}}
    reply = httpx.post(
        _channel(lab),
        json=forged,
        headers={
            "x-github-event": "issue_comment",
            "x-github-delivery": "forged-1",
            "x-hub-signature-256": "sha256=" + "0" * 64,
        },
    )
    assert reply.json()["listeners"] == 1
    time.sleep(1.0)
    assert lab.q("SELECT id FROM inbox WHERE delivery_id = 'forged-1'") == []
    health = httpx.get(f"{lab.bot_url}/healthz").json()
    assert health["workers"]["relay"]["alive"] is True
