"""Shared test helpers: real servers on loopback, signed deliveries, RSA keys."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli.lab import ServerThread, free_port
from bot.store import Store
from tests.support.dashboard_seed import Seeded, seed_lab

__all__ = ["ServerThread", "free_port"]

# Copies of real GitHub deliveries; tests/fixtures/github-webhooks/README.md names their source.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "github-webhooks"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="session")
def pem() -> str:
    return rsa_pem()


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"webhook fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    path = tmp_path / "kohai.db"
    store = Store(path)
    ids = seed_lab(store, time.time() - 3 * 3600)
    store.close()
    yield Seeded(path, ids)
