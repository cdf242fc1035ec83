"""The bot's settings, read once from the environment (DESIGN.md, "Bot configuration").

A missing or malformed required setting raises `ConfigError` whose message is
one line naming the setting, which `kohai serve` prints before exiting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    pass


def int_setting(env: Mapping[str, str], name: str, default: int) -> int:
    """A non-negative integer setting, or one line naming it."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Settings:
    app_id: int
    private_key: str
    webhook_secret: str
    # The setting the key came from, for messages about it: the variable the user set.
    private_key_source: str = "KOHAI_GITHUB_PRIVATE_KEY"
    github_api_url: str = "https://api.github.com"
    github_html_url: str = ""  # the web pages' host; "" derives it from github_api_url
    db_path: str = "kohai.db"
    public_url: str = "http://127.0.0.1:8000"
    anthropic_api_key: str | None = None
    wandb_api_key: str | None = None
    app_slug: str = "kohai"
    alpha: float = 0.05
    plateau_after: int = 5
    max_experiments: int = 0  # advisor experiments to open in each lab; 0: no limit
    advisor: bool = True  # propose for idle students
    catch_up: bool = True

    @property
    def html_url(self) -> str:
        """Where people read the repositories: set, or derived from the API's URL."""
        return (self.github_html_url or html_url_for(self.github_api_url)).rstrip("/")

    @property
    def bot_login(self) -> str:
        return f"{self.app_slug}[bot]"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw_id = env.get("KOHAI_GITHUB_APP_ID", "").strip()
        if not raw_id:
            raise ConfigError("KOHAI_GITHUB_APP_ID is not set (the GitHub App's numeric id)")
        if not raw_id.isdigit():
            raise ConfigError(f"KOHAI_GITHUB_APP_ID must be a number, got {raw_id!r}")
        key = env.get("KOHAI_GITHUB_PRIVATE_KEY", "").strip()
        key_path = env.get("KOHAI_GITHUB_PRIVATE_KEY_PATH", "").strip()
        if not key and key_path:
            try:
                key = Path(key_path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"KOHAI_GITHUB_PRIVATE_KEY_PATH: cannot read {key_path}: {exc.strerror}"
                ) from exc
        if not key:
            raise ConfigError(
                "KOHAI_GITHUB_PRIVATE_KEY (PEM text) or KOHAI_GITHUB_PRIVATE_KEY_PATH is not set"
            )
        key_source = private_key_source(env)
        if "PRIVATE KEY-----" not in key:
            raise ConfigError(
                f"{key_source} is not a PEM private key "
                "(GitHub's .pem file, beginning -----BEGIN RSA PRIVATE KEY-----)"
            )
        secret = env.get("KOHAI_WEBHOOK_SECRET", "")
        if not secret:
            raise ConfigError("KOHAI_WEBHOOK_SECRET is not set (the App's webhook secret)")
        api_url = env.get("KOHAI_GITHUB_API_URL", "https://api.github.com").rstrip("/")
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(f"KOHAI_GITHUB_API_URL must be an http(s) URL, got {api_url!r}")
        html_url = env.get("KOHAI_GITHUB_HTML_URL", "").strip().rstrip("/")
        if html_url and not html_url.startswith(("http://", "https://")):
            raise ConfigError(f"KOHAI_GITHUB_HTML_URL must be an http(s) URL, got {html_url!r}")
        alpha_raw = env.get("KOHAI_ALPHA", "0.05")
        try:
            alpha = float(alpha_raw)
        except ValueError:
            alpha = -1.0
        if not 0 < alpha < 1:
            raise ConfigError(f"KOHAI_ALPHA must be between 0 and 1, got {alpha_raw!r}")
        return cls(
            app_id=int(raw_id),
            private_key=key,
            private_key_source=key_source,
            webhook_secret=secret,
            github_api_url=api_url,
            github_html_url=html_url,
            db_path=env.get("KOHAI_DB", "kohai.db"),
            public_url=env.get("KOHAI_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            wandb_api_key=env.get("WANDB_API_KEY") or None,
            app_slug=env.get("KOHAI_APP_SLUG", "kohai"),
            alpha=alpha,
            plateau_after=int_setting(env, "KOHAI_PLATEAU_AFTER", 5),
            max_experiments=int_setting(env, "KOHAI_MAX_EXPERIMENTS", 0),
            advisor=env.get("KOHAI_ADVISOR", "on") != "off",
            catch_up=env.get("KOHAI_CATCH_UP", "on") != "off",
        )


def private_key_source(env: Mapping[str, str]) -> str:
    """Where the App's key was read from, as the user wrote it: the text wins over the file."""
    if env.get("KOHAI_GITHUB_PRIVATE_KEY", "").strip():
        return "KOHAI_GITHUB_PRIVATE_KEY"
    return f"KOHAI_GITHUB_PRIVATE_KEY_PATH={env.get('KOHAI_GITHUB_PRIVATE_KEY_PATH', '').strip()}"


def html_url_for(api_url: str) -> str:
    """The web host of a GitHub API URL.

    `https://api.github.com` -> `https://github.com`; GitHub Enterprise's
    `https://ghe.example.com/api/v3` -> `https://ghe.example.com`; anything else
    (the sandbox serves its API and its pages at one address) -> itself.
    """
    url = api_url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    if host.lower() == "api.github.com" and not path:
        return f"{scheme}://github.com"
    if host.lower().startswith("api.") and host.lower().endswith(".ghe.com") and not path:
        return f"{scheme}://{host[4:]}"  # GitHub Enterprise Cloud with data residency
    if slash and path.rstrip("/").lower() == "api/v3":
        return f"{scheme}://{host}"
    return url
