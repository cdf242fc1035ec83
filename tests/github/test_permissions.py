"""Who may run slash commands, asked of GitHub and cached briefly."""

from __future__ import annotations

import pytest
import respx

from bot.github.client import GitHubApp
from bot.github.permissions import PermissionCache, can_command
from tests.support.github_mock import INSTALLATION, FakeTime

PATH = "/repos/lab/charlm/collaborators/{login}/permission"


async def test_level_is_cached_within_the_ttl_and_refreshed_after(
    github: GitHubApp, gh_mock: respx.MockRouter
) -> None:
    route = gh_mock.get(PATH.format(login="alice"))
    route.side_effect = [
        respx.MockResponse(200, json={"permission": "write", "role_name": "write"}),
        respx.MockResponse(200, json={"permission": "read", "role_name": "read"}),
    ]
    clock = FakeTime(0.0)
    cache = PermissionCache(github, ttl_s=60, clock=clock)
    assert await cache.level(INSTALLATION, "lab/charlm", "alice") == "write"
    clock.now = 59.0
    assert await cache.level(INSTALLATION, "lab/charlm", "Alice") == "write"
    assert route.call_count == 1
    clock.now = 61.0
    assert await cache.level(INSTALLATION, "lab/charlm", "alice") == "read"
    assert route.call_count == 2


async def test_cache_is_per_repo_and_login(github: GitHubApp, gh_mock: respx.MockRouter) -> None:
    gh_mock.get(PATH.format(login="alice")).respond(200, json={"permission": "admin"})
    gh_mock.get(PATH.format(login="bob")).respond(404, json={"message": "Not Found"})
    gh_mock.get("/repos/lab/other/collaborators/alice/permission").respond(
        200, json={"permission": "read"}
    )
    cache = PermissionCache(github, clock=FakeTime(0.0))
    assert await cache.level(INSTALLATION, "lab/charlm", "alice") == "admin"
    assert await cache.level(INSTALLATION, "lab/charlm", "bob") == "none"
    assert await cache.level(INSTALLATION, "lab/other", "alice") == "read"


async def test_forget_drops_a_cached_answer(github: GitHubApp, gh_mock: respx.MockRouter) -> None:
    route = gh_mock.get(PATH.format(login="alice")).respond(200, json={"permission": "write"})
    cache = PermissionCache(github, clock=FakeTime(0.0))
    await cache.level(INSTALLATION, "lab/charlm", "alice")
    cache.forget("lab/charlm", "alice")
    await cache.level(INSTALLATION, "lab/charlm", "alice")
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("level", "allowed"),
    [
        ("admin", True),
        ("maintain", True),
        ("write", True),
        ("triage", False),
        ("read", False),
        ("none", False),
        ("", False),
    ],
)
def test_can_command(level: str, allowed: bool) -> None:
    assert can_command(level) is allowed
