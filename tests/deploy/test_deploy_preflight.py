"""Preflight against a GitHub stand-in on loopback that checks App JWTs as GitHub does."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bot.core import router
from bot.github.preflight import preflight

APP_ID = 4242


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeGitHub:
    """`GET /app`: 200 for a JWT signed by the App's key with its id as issuer, else 401."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key
        self.app: dict[str, Any] = {
            "id": APP_ID,
            "slug": "kohai-lab",
            "permissions": dict(router.REQUIRED_PERMISSIONS),
            "events": [e for e in router.SUBSCRIBED_EVENTS if not e.startswith("installation")],
        }
        self.requests: list[dict[str, str]] = []

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.requests.append(headers)
        if path != "/app":
            return 404, {"message": "Not Found"}
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return 401, {"message": "Requires authentication"}
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), self.public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return 401, {"message": "A JSON web token could not be decoded"}
        if str(claims.get("iss")) != str(APP_ID) or claims["exp"] - claims["iat"] > 600:
            return 401, {"message": "'Issuer' claim ('iss') must be an Integer"}
        return 200, self.app


@pytest.fixture
def github(app_key: rsa.RSAPrivateKey) -> Iterator[tuple[str, FakeGitHub]]:
    fake = FakeGitHub(app_key.public_key())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            status, body = fake.answer(self.path, dict(self.headers))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_right_app_id_and_key_pass(
    github: tuple[str, FakeGitHub], app_key: rsa.RSAPrivateKey
) -> None:
    url, fake = github

    report = await preflight(APP_ID, _pem(app_key), url + "/")

    assert report.ok and report.errors == [] and report.warnings == []
    assert [c.name for c in report.checks] == [
        "private key",
        "GitHub",
        "App credentials",
        "App permissions",
    ]
    assert "kohai-lab" in report.checks[2].message
    assert fake.requests[-1]["Accept"] == "application/vnd.github+json"
    assert report.as_dict()["ok"] is True


async def test_a_key_of_another_app_is_rejected(
    github: tuple[str, FakeGitHub], other_key: rsa.RSAPrivateKey
) -> None:
    url, _ = github

    report = await preflight(APP_ID, _pem(other_key), url)

    assert not report.ok
    (error,) = report.errors
    assert error.startswith(f"GitHub rejected the App credentials (app id {APP_ID}): 401")
    assert "could not be decoded" in error


async def test_a_wrong_app_id_is_rejected(
    github: tuple[str, FakeGitHub], app_key: rsa.RSAPrivateKey
) -> None:
    url, _ = github

    report = await preflight(7, _pem(app_key), url)

    assert not report.ok
    assert report.errors[0].startswith("GitHub rejected the App credentials (app id 7): 401")


async def test_garbage_key_is_named_as_such(github: tuple[str, FakeGitHub]) -> None:
    url, fake = github

    report = await preflight(APP_ID, "not a key at all", url)

    assert not report.ok
    (error,) = report.errors
    assert error.startswith("KOHAI_GITHUB_PRIVATE_KEY is not a PEM private key")
    assert "Authorization" not in fake.requests[-1]  # nothing to sign with, nothing sent


async def test_a_non_rsa_key_is_refused(github: tuple[str, FakeGitHub]) -> None:
    url, _ = github

    report = await preflight(APP_ID, _pem(ec.generate_private_key(ec.SECP256R1())), url)

    assert report.errors == ["KOHAI_GITHUB_PRIVATE_KEY is not an RSA key, as GitHub Apps use"]


async def test_unreachable_github(app_key: rsa.RSAPrivateKey) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"  # closed: nothing listens there now

    started = time.monotonic()
    report = await preflight(APP_ID, _pem(app_key), url, timeout=5)

    assert time.monotonic() - started < 5
    assert not report.ok
    (error,) = report.errors
    assert error.startswith(f"cannot reach GitHub at {url}: ")
    assert len(error) > len(f"cannot reach GitHub at {url}: ")


async def test_missing_permissions_warn_without_stopping(
    github: tuple[str, FakeGitHub], app_key: rsa.RSAPrivateKey
) -> None:
    url, fake = github
    fake.app["permissions"] = {**fake.app["permissions"], "issues": "read"}
    fake.app["events"] = ["issues", "push"]

    report = await preflight(APP_ID, _pem(app_key), url)

    assert report.ok
    (warning,) = report.warnings
    assert "issues: write (has read)" in warning
    assert "issue_comment" in warning and "pull_request" in warning


async def test_the_app_jwt_is_what_github_expects(
    github: tuple[str, FakeGitHub], app_key: rsa.RSAPrivateKey
) -> None:
    """Signed by `GitHubApp` (githubkit): RS256, the App id as issuer, at most ten minutes."""
    url, fake = github
    started = time.time()

    await preflight(APP_ID, _pem(app_key), url)

    token = fake.requests[-1]["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, app_key.public_key(), algorithms=["RS256"])
    assert str(claims["iss"]) == str(APP_ID)
    assert claims["iat"] <= started < claims["exp"]
    assert claims["exp"] - claims["iat"] <= 600
