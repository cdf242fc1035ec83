"""`kohai app manifest`: the App asks GitHub for exactly what the router handles."""

from __future__ import annotations

import json

import pytest

from bot import deploy
from bot.cli import main
from bot.core import router


def test_manifest_permissions_and_events_come_from_the_router() -> None:
    manifest = deploy.app_manifest("https://kohai.example.com", "kohai-lab")

    assert manifest["default_permissions"] == router.REQUIRED_PERMISSIONS
    assert manifest["default_permissions"] == {
        "checks": "write",  # the failing check run on an invalid kohai.toml
        "contents": "write",
        "pull_requests": "write",
        "issues": "write",
        "metadata": "read",
    }
    # GitHub delivers installation events to every App and refuses them in a manifest.
    assert {"installation", "installation_repositories"} <= set(router.SUBSCRIBED_EVENTS)
    assert sorted(manifest["default_events"]) == ["issue_comment", "issues", "pull_request", "push"]
    assert set(manifest["default_events"]) == (
        set(router.SUBSCRIBED_EVENTS) - {"installation", "installation_repositories"}
    )


def test_manifest_urls_and_visibility() -> None:
    manifest = deploy.app_manifest("https://kohai.example.com/", "kohai-lab")

    assert manifest["name"] == "kohai-lab"
    assert manifest["url"] == "https://kohai.example.com"
    assert manifest["hook_attributes"] == {
        "url": "https://kohai.example.com/webhooks/github",
        "active": True,
    }
    assert manifest["redirect_url"].startswith("https://kohai.example.com/")
    assert manifest["setup_url"].startswith("https://kohai.example.com/")
    assert manifest["public"] is False


def test_an_event_without_its_permission_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router, "SUBSCRIBED_EVENTS", (*router.SUBSCRIBED_EVENTS, "check_run"))
    without_checks = {k: v for k, v in router.REQUIRED_PERMISSIONS.items() if k != "checks"}
    monkeypatch.setattr(router, "REQUIRED_PERMISSIONS", without_checks)
    with pytest.raises(ValueError, match="check_run.*checks"):
        deploy.app_manifest("https://kohai.example.com", "kohai")


def test_cli_prints_the_manifest_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["app", "manifest", "--url", "https://lab.example.org", "--name", "lab"])

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == deploy.app_manifest("https://lab.example.org", "lab")
    assert printed["hook_attributes"]["url"] == "https://lab.example.org/webhooks/github"


def test_cli_refuses_a_url_that_is_not_http(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["app", "manifest", "--url", "kohai.example.com"])

    assert code == 2
    assert "https://" in capsys.readouterr().err
