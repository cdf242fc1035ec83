"""GitHub as respx mocks it: the App client, its clock, and GitHub-shaped answers."""

from __future__ import annotations

import datetime
import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from githubkit.utils import Unset
from githubkit_schemas.latest import models

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


# -- GitHub's answers, as githubkit's models require them -----------------------
#
# The ops read GitHub's answers through githubkit's typed models, which require
# every field GitHub documents. A test names the fields it cares about; `shaped`
# fills in the rest with placeholders of the right type (null where GitHub allows
# null), so that the mocks stay readable and the models still check the shape.
# The sandbox tests check the real shapes.


def _filler(annotation: Any, name: str, depth: int) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args:
            return None
        concrete = [
            a
            for a in args
            if not (typing.get_origin(a) is Literal and isinstance(typing.get_args(a)[0], Unset))
        ]
        return _filler((concrete or list(args))[0], name, depth)
    if origin is Literal:
        return args[0]
    if origin is list:
        return []
    if origin is dict:
        return {}
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return shaped(annotation, {}, depth + 1)
    if annotation is bool:
        return False
    if annotation is int:
        return 1
    if annotation is float:
        return 0.0
    if annotation is datetime.datetime:
        return "2026-01-01T00:00:00Z"
    if annotation is datetime.date:
        return "2026-01-01"
    if name.endswith("url"):
        return f"https://api.github.com/placeholder/{name}"
    return f"{name}-placeholder"


def shaped(
    model: type[pydantic.BaseModel], given: dict[str, Any], depth: int = 0
) -> dict[str, Any]:
    """`given`, completed with every field `model` requires (nested models too)."""
    assert depth < 12, f"{model.__name__}: models nest too deep"
    body = dict(given)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if not info.is_required() or key in body:
            continue
        body[key] = _filler(info.annotation, key, depth)
    for name, info in model.model_fields.items():  # complete what the test gave, too
        key = info.alias or name
        value = body.get(key)
        inner = info.annotation
        if isinstance(value, dict) and typing.get_origin(inner) in (typing.Union, types.UnionType):
            inner = next(
                (
                    a
                    for a in typing.get_args(inner)
                    if isinstance(a, type) and issubclass(a, pydantic.BaseModel)
                ),
                inner,
            )
        if (
            isinstance(value, dict)
            and isinstance(inner, type)
            and issubclass(inner, pydantic.BaseModel)
        ):
            body[key] = shaped(inner, value, depth + 1)
    model.model_validate(body)
    return body


def comment_json(
    comment_id: int, body: str = "", user: dict[str, Any] | None = None
) -> dict[str, Any]:
    return shaped(models.IssueComment, {"id": comment_id, "body": body, "user": user or BOT_USER})


def pull_json(**given: Any) -> dict[str, Any]:
    return shaped(models.PullRequest, given)


def ref_json(ref: str, sha: str) -> dict[str, Any]:
    return shaped(models.GitRef, {"ref": ref, "object": {"sha": sha, "type": "commit"}})


def commit_json(sha: str, tree: str = "tree222") -> dict[str, Any]:
    return shaped(models.GitCommit, {"sha": sha, "tree": {"sha": tree}})


def branch_json(name: str, sha: str) -> dict[str, Any]:
    return shaped(models.BranchWithProtection, {"name": name, "commit": {"sha": sha}})
