"""The bot's settings, read once from the environment (DESIGN.md, "Bot configuration").

A missing or malformed required setting raises `ConfigError` whose message is
one line naming the setting, which `kohai serve` prints before exiting.

The GitHub App's credentials may also come from the file `kohai setup` writes
(`~/.config/kohai/app.toml`, or `KOHAI_APP_FILE`); a variable set in the
environment overrides the file's value for that setting.
"""

from __future__ import annotations

import os
import tomllib
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


# What an endpoint without a size of its own accepts: a job's result with its diff
# (bot.protocol.MAX_DIFF_CHARS) and log tails fits many times over.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def flag_setting(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting (1/0, true/false, yes/no, on/off), or one line naming it."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


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
    alpha: float = 0.05
    plateau_after: int = 5
    max_experiments: int = 0  # advisor experiments to open in each lab; 0: no limit
    advisor: bool = True  # propose for idle students
    catch_up: bool = True
    webhook_proxy_url: str | None = None  # a smee-compatible channel the webhooks arrive on
    # The dashboard's GitHub sign-in: the App's own OAuth client (its user-to-server flow).
    github_client_id: str = ""
    github_client_secret: str = ""
    # True: the dashboard and its JSON API are open to anyone who reaches them (the local
    # demo). False (the default): a GitHub sign-in, and each user sees the labs they can read.
    dashboard_public: bool = False
    # The key that signs the dashboard's session cookies; "" derives one from the webhook secret.
    session_secret: str = ""
    # The size of a request body any endpoint without its own accepts (the host API's
    # events and results); GitHub's webhooks (25 MB) and pushed bundles have their own.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @property
    def html_url(self) -> str:
        """Where people read the repositories: set, or derived from the API's URL."""
        return (self.github_html_url or html_url_for(self.github_api_url)).rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of the environment, over those of the App file if there is one.

        The App's slug is not a setting: the bot asks GitHub (`GET /app`).
        """
        given = os.environ if env is None else env
        env = with_app_file(given)
        raw_id = env.get("KOHAI_GITHUB_APP_ID", "").strip()
        if not raw_id:
            raise ConfigError(
                "KOHAI_GITHUB_APP_ID is not set (the GitHub App's numeric id; "
                "`kohai setup` registers an App and writes it to ~/.config/kohai/app.toml)"
            )
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
        key_source = private_key_source(given, app_file_path(given))
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
        proxy = env.get("KOHAI_WEBHOOK_PROXY_URL", "").strip() or None
        if proxy and not proxy.startswith(("http://", "https://")):
            raise ConfigError(f"KOHAI_WEBHOOK_PROXY_URL must be an http(s) URL, got {proxy!r}")
        alpha_raw = env.get("KOHAI_ALPHA", "0.05")
        try:
            alpha = float(alpha_raw)
        except ValueError:
            alpha = -1.0
        if not 0 < alpha < 1:
            raise ConfigError(f"KOHAI_ALPHA must be between 0 and 1, got {alpha_raw!r}")
        client_id = env.get("KOHAI_GITHUB_CLIENT_ID", "").strip()
        client_secret = env.get("KOHAI_GITHUB_CLIENT_SECRET", "").strip()
        if client_id and not client_secret:
            raise ConfigError(
                "KOHAI_GITHUB_CLIENT_SECRET is not set (the App's OAuth client secret, "
                "which goes with KOHAI_GITHUB_CLIENT_ID)"
            )
        if client_secret and not client_id:
            raise ConfigError(
                "KOHAI_GITHUB_CLIENT_ID is not set (the App's OAuth client id, "
                "which goes with KOHAI_GITHUB_CLIENT_SECRET)"
            )
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
            alpha=alpha,
            plateau_after=int_setting(env, "KOHAI_PLATEAU_AFTER", 5),
            max_experiments=int_setting(env, "KOHAI_MAX_EXPERIMENTS", 0),
            advisor=env.get("KOHAI_ADVISOR", "on") != "off",
            catch_up=env.get("KOHAI_CATCH_UP", "on") != "off",
            webhook_proxy_url=proxy,
            github_client_id=client_id,
            github_client_secret=client_secret,
            dashboard_public=flag_setting(env, "KOHAI_DASHBOARD_PUBLIC", False),
            session_secret=env.get("KOHAI_SESSION_SECRET", "").strip(),
            max_body_bytes=_body_bytes(env),
        )


def private_key_source(env: Mapping[str, str], app_file: Path | None = None) -> str:
    """Where the App's key was read from, as the user gave it (`env` before the App file):
    the PEM variable, else the path variable, else the App file's `private_key`."""
    if env.get("KOHAI_GITHUB_PRIVATE_KEY", "").strip():
        return "KOHAI_GITHUB_PRIVATE_KEY"
    path = env.get("KOHAI_GITHUB_PRIVATE_KEY_PATH", "").strip()
    if path or app_file is None:
        return f"KOHAI_GITHUB_PRIVATE_KEY_PATH={path}"
    return f"{app_file}: private_key"


MIN_BODY_BYTES = 64 * 1024  # below this a result with its diff and log tails no longer fits


def _body_bytes(env: Mapping[str, str]) -> int:
    value = int_setting(env, "KOHAI_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    if value < MIN_BODY_BYTES:
        raise ConfigError(f"KOHAI_MAX_BODY_BYTES must be at least {MIN_BODY_BYTES}, got {value}")
    return value


# --- the App file `kohai setup` writes ---------------------------------------------------

APP_FILE_VARIABLE = "KOHAI_APP_FILE"
APP_FILE_DEFAULT = Path(".config") / "kohai" / "app.toml"  # under the home directory
# The file's keys that are settings -> the environment variable each stands for.
APP_FILE_SETTINGS: dict[str, str] = {
    "app_id": "KOHAI_GITHUB_APP_ID",
    "private_key": "KOHAI_GITHUB_PRIVATE_KEY",
    "webhook_secret": "KOHAI_WEBHOOK_SECRET",
    "client_id": "KOHAI_GITHUB_CLIENT_ID",
    "client_secret": "KOHAI_GITHUB_CLIENT_SECRET",
    "github_api_url": "KOHAI_GITHUB_API_URL",
    "github_html_url": "KOHAI_GITHUB_HTML_URL",
    "public_url": "KOHAI_PUBLIC_URL",
    "webhook_proxy_url": "KOHAI_WEBHOOK_PROXY_URL",
}
# Written for people (what was registered, where to install it), never read as settings:
# the slug in particular comes from GitHub (`GET /app`), so a stale copy cannot mislead.
APP_FILE_NOTES = frozenset({"slug", "name", "owner", "install_url"})
_KEY_VARIABLES = ("KOHAI_GITHUB_PRIVATE_KEY", "KOHAI_GITHUB_PRIVATE_KEY_PATH")


def app_file_path(env: Mapping[str, str]) -> Path | None:
    """The App file to read: `KOHAI_APP_FILE` (which must exist), else the default one
    under `HOME` when it exists, else None.

    Only the given environment's HOME is looked at, so that settings built from an
    explicit mapping never pick up a file of whoever runs them.
    """
    named = env.get(APP_FILE_VARIABLE, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{APP_FILE_VARIABLE}: no such file {named}")
        return path
    home = env.get("HOME", "").strip()
    if not home:
        return None
    default = Path(home) / APP_FILE_DEFAULT
    return default if default.is_file() else None


def load_app_file(path: Path) -> dict[str, str]:
    """The settings in an App file, as environment variables; one line naming the file and
    the key for anything wrong in it."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the App file: {reason}") from exc
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    settings: dict[str, str] = {}
    for key, value in data.items():
        if key in APP_FILE_NOTES:
            continue
        variable = APP_FILE_SETTINGS.get(key)
        if variable is None:
            known = ", ".join(sorted(APP_FILE_SETTINGS))
            raise ConfigError(f"{path}: unknown key {key!r} (the App file holds {known})")
        if key == "app_id":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{path}: app_id must be a positive whole number")
            settings[variable] = str(value)
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: {key} must be a non-empty string")
        if key == "private_key" and "PRIVATE KEY-----" not in value:
            raise ConfigError(f"{path}: private_key is not a PEM private key")
        if key.endswith("_url") and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{path}: {key} must be an http(s) URL, got {value!r}")
        settings[variable] = value.strip() if key != "private_key" else value
    return settings


def with_app_file(env: Mapping[str, str]) -> dict[str, str]:
    """`env` over the App file's settings: a variable that is set wins over the file.

    Either key variable (PEM text or a path) replaces the file's key, so a key given
    in the environment is the one used, whichever way it is given.
    """
    path = app_file_path(env)
    merged = dict(env)
    if path is None:
        return merged
    from_file = load_app_file(path)
    if any(env.get(name, "").strip() for name in _KEY_VARIABLES):
        from_file.pop("KOHAI_GITHUB_PRIVATE_KEY", None)
    for variable, value in from_file.items():
        if not env.get(variable, "").strip():
            merged[variable] = value
    return merged


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
