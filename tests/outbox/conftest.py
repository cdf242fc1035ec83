"""Shared pieces for the outbox tests: an App key, fake time, a mocked GitHub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.github.client import GitHubApp
from bot.store import Store

API = "https://api.github.com"
INSTALLATION = 7
BOT = "kohai[bot]"
BOT_USER = {"login": BOT, "type": "Bot"}


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def private_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def github(private_pem: str, fake_time: FakeTime) -> GitHubApp:
    return GitHubApp(
        42,
        private_pem,
        API,
        sleep=fake_time.sleep,
        clock=fake_time,
        wall_clock=fake_time,
        bot_login=BOT,
    )


@pytest.fixture
def gh_mock() -> Iterator[respx.MockRouter]:
    """A mocked api.github.com that hands out installation tokens."""
    with respx.mock(base_url=API, assert_all_called=False) as router:
        router.post(f"/app/installations/{INSTALLATION}/access_tokens", name="token").respond(
            201, json={"token": "ghs_installation", "expires_at": "2099-01-01T00:00:00Z"}
        )
        yield router


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "k.db")
    yield store
    store.close()


def api_calls(router: respx.MockRouter) -> list[tuple[str, str, Any]]:
    """(method, raw path with query, JSON body) of every call except token fetches."""
    calls = []
    for call in router.calls:
        request = call.request
        if request.url.path.endswith("/access_tokens"):
            continue
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.raw_path.decode(), body))
    return calls


def writes(router: respx.MockRouter) -> list[tuple[str, str, Any]]:
    return [call for call in api_calls(router) if call[0] != "GET"]
