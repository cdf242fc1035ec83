"""Start-up: a bad setting is one clear line; an unreachable GitHub shows on /healthz."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.serve import build_context, check_github
from bot.config import ConfigError, Settings, int_setting
from webhooks.app import health


@pytest.mark.parametrize(
    "env,needle",
    [
        ({}, "KOHAI_GITHUB_APP_ID"),
        ({"KOHAI_GITHUB_APP_ID": "abc"}, "must be a number"),
        ({"KOHAI_GITHUB_APP_ID": "1"}, "KOHAI_GITHUB_PRIVATE_KEY"),
        ({"KOHAI_GITHUB_APP_ID": "1", "KOHAI_GITHUB_PRIVATE_KEY": "nope"}, "not a PEM"),
        (
            {"KOHAI_GITHUB_APP_ID": "1", "KOHAI_GITHUB_PRIVATE_KEY_PATH": "/no/such.pem"},
            "cannot read",
        ),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert needle in str(err.value) and "\n" not in str(err.value)


async def test_unreachable_github_is_reported_on_health(tmp_path: Path, pem: str) -> None:
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="http://127.0.0.1:9",
        db_path=str(tmp_path / "k.db"),
    )
    ctx = build_context(settings)
    await check_github(ctx)
    report = health(ctx)
    assert report["ok"] is False
    assert any("reach GitHub" in e for e in report["errors"]), report["errors"]


def test_integer_settings_are_checked() -> None:
    assert int_setting({}, "KOHAI_MAX_EXPERIMENTS", 0) == 0
    assert int_setting({"KOHAI_MAX_EXPERIMENTS": " 7 "}, "KOHAI_MAX_EXPERIMENTS", 0) == 7
    with pytest.raises(ConfigError, match="KOHAI_PLATEAU_AFTER must be a whole number"):
        int_setting({"KOHAI_PLATEAU_AFTER": "five"}, "KOHAI_PLATEAU_AFTER", 5)
