"""The App file `kohai setup` writes and `kohai serve` reads, and the setup page's refusals.

The file is TOML written by hand (no TOML writer is a dependency), so its
strings are checked by reading them back with the standard library's parser,
hostile characters included. Reading it merges under the environment: a
variable that is set wins. Every mistake in the file is one line naming the
file and the key, not a variable the user never set.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli.lab import ServerThread, free_port
from bot.cli.setup import (
    Flow,
    api_url_for,
    app_file_text,
    build_app,
    new_app_url,
    setup_manifest,
    toml_string,
    write_secret_file,
)
from bot.config import (
    APP_FILE_DEFAULT,
    ConfigError,
    Settings,
    load_app_file,
    with_app_file,
)
from bot.deploy import app_manifest
from sandbox.auth import generate_private_key_pem
from sandbox.server import SandboxServer

ROOT = Path(__file__).resolve().parents[2]
PEM = generate_private_key_pem()
CONVERTED = {
    "id": 123456,
    "slug": "kohai-lab",
    "name": "kohai lab",
    "owner": {"login": "alice"},
    "client_id": "Iv1.000000000001e240",
    "client_secret": "c" * 40,
    "webhook_secret": 'w"\\ \n secret',
    "pem": PEM,
}


def written(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "home" / APP_FILE_DEFAULT
    text = app_file_text(
        {**CONVERTED, **overrides},
        api_url="https://api.github.com",
        html_url="https://github.com",
        public_url="https://kohai.example.com",
        webhook_proxy_url=None,
    )
    write_secret_file(path, text)
    return path


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'quote " and backslash \\ and \\u0041 literally',
        "new\nline, tab\t, return\r, form\f, backspace\b",
        "nul \x00, escape \x1b, delete \x7f",
        "unicode é ü 漢字 and an emoji 🧪",
        "'''\"\"\" = [x] # not a comment",
    ],
)
def test_toml_strings_read_back_exactly(value: str) -> None:
    assert tomllib.loads(f"k = {toml_string(value)}\n")["k"] == value


def test_the_file_holds_every_credential_and_serve_reads_it(tmp_path: Path) -> None:
    path = written(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = tomllib.loads(path.read_text())
    assert data["private_key"] == PEM and data["webhook_secret"] == CONVERTED["webhook_secret"]
    assert data["install_url"] == "https://github.com/apps/kohai-lab/installations/new"
    settings = Settings.from_env({"HOME": str(tmp_path / "home")})
    assert settings.app_id == 123456
    assert settings.private_key == PEM.strip()
    assert settings.webhook_secret == CONVERTED["webhook_secret"]
    assert settings.github_client_id == CONVERTED["client_id"]
    assert settings.github_client_secret == "c" * 40
    assert settings.github_api_url == "https://api.github.com"
    assert settings.public_url == "https://kohai.example.com"
    # The slug is GitHub's to say (GET /app): the file's copy is a note, not a setting.
    assert not hasattr(settings, "app_slug")


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    written(tmp_path)
    key_file = tmp_path / "other.pem"
    other = generate_private_key_pem()
    key_file.write_text(other)
    env = {
        "HOME": str(tmp_path / "home"),
        "KOHAI_GITHUB_APP_ID": "99",
        "KOHAI_GITHUB_PRIVATE_KEY_PATH": str(key_file),
        "KOHAI_GITHUB_API_URL": "https://ghe.example.com/api/v3",
    }
    settings = Settings.from_env(env)
    assert settings.app_id == 99
    assert settings.private_key == other.strip()  # the path wins over the file's key
    assert settings.github_api_url == "https://ghe.example.com/api/v3"
    assert settings.webhook_secret == CONVERTED["webhook_secret"]  # not overridden: the file's


def test_which_file_is_read(tmp_path: Path) -> None:
    path = written(tmp_path)
    # No HOME in the mapping: nobody's file is read (settings built from a mapping stay pure).
    assert "KOHAI_GITHUB_APP_ID" not in with_app_file({})
    moved = tmp_path / "elsewhere.toml"
    path.rename(moved)
    merged = with_app_file({"HOME": str(tmp_path / "home"), "KOHAI_APP_FILE": str(moved)})
    assert merged["KOHAI_GITHUB_APP_ID"] == "123456"
    with pytest.raises(ConfigError, match="KOHAI_APP_FILE: no such file"):
        with_app_file({"KOHAI_APP_FILE": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app_id = 1\nprivate_key = 'x\n", "not valid TOML"),
        ('app_id = "123"\n', "app_id must be a positive whole number"),
        ("app_id = true\n", "app_id must be a positive whole number"),
        ('webhook_secert = "s"\n', "unknown key 'webhook_secert'"),
        ('private_key = "not a key"\n', "private_key is not a PEM private key"),
        ('webhook_secret = ""\n', "webhook_secret must be a non-empty string"),
        ('github_api_url = "api.github.com"\n', "github_api_url must be an http\\(s\\) URL"),
        ("webhook_secret = 5\n", "webhook_secret must be a non-empty string"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "app.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as refused:
        load_app_file(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    assert "KOHAI_GITHUB_PRIVATE_KEY" not in str(refused.value)  # a variable never set


def test_the_file_is_never_readable_by_others_and_never_follows_a_link(tmp_path: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    link = tmp_path / "app.toml"
    link.symlink_to(target)
    old = os.umask(0)  # even a permissive umask gives 0600
    try:
        write_secret_file(link, "app_id = 1\n")
    finally:
        os.umask(old)
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text() == "app_id = 1\n"
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_manifest_is_kohais_with_the_redirect_and_hook_of_this_setup() -> None:
    callback = "http://127.0.0.1:5555/callback"
    proxy = "https://smee.io/abc"
    made = setup_manifest("https://kohai.example.com", "kohai", proxy, callback)
    printed = app_manifest("https://kohai.example.com", "kohai")
    assert made["redirect_url"] == callback and made["hook_attributes"]["url"] == proxy
    for key in ("default_permissions", "default_events", "callback_urls", "setup_url", "url"):
        assert made[key] == printed[key]


@pytest.mark.parametrize(
    ("web", "api"),
    [
        ("https://github.com", "https://api.github.com"),
        ("https://github.com/", "https://api.github.com"),
        ("https://octo.ghe.com", "https://api.octo.ghe.com"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_the_api_of_a_github(web: str, api: str) -> None:
    assert api_url_for(web) == api


def test_new_app_urls() -> None:
    assert new_app_url("https://github.com", None) == "https://github.com/settings/apps/new"
    assert (
        new_app_url("https://github.com/", "acme")
        == "https://github.com/organizations/acme/settings/apps/new"
    )


@pytest.fixture
def github(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "github") as server:
        yield server


def test_the_callback_refuses_what_this_setup_did_not_start(
    github: SandboxServer, tmp_path: Path
) -> None:
    out = tmp_path / "app.toml"
    flow = Flow(
        manifest=setup_manifest(
            "http://127.0.0.1:8000",
            "kohai lab",
            "http://127.0.0.1:8000/webhooks/github",
            "http://x/callback",
        ),
        target=new_app_url(github.url, "lab"),
        api_url=github.url,
        html_url=github.url,
        public_url="http://127.0.0.1:8000",
        webhook_proxy_url=None,
        out=out,
    )
    with ServerThread(build_app(flow)) as local, httpx.Client(base_url=local.url) as client:
        page = client.get("/").text
        action = html.unescape(re.search(r'action="([^"]+)"', page)[1])  # type: ignore[index]
        assert action == f"{github.url}/organizations/lab/settings/apps/new?state={flow.state}"
        posted = re.search(r'name="manifest" value="([^"]+)"', page)[1]  # type: ignore[index]
        assert json.loads(html.unescape(posted)) == flow.manifest
        # Someone else's link (login CSRF's cousin): another state, or none.
        assert client.get("/callback", params={"code": "x", "state": "forged"}).status_code == 400
        assert client.get("/callback", params={"code": "x"}).status_code == 400
        # A code GitHub does not know: nothing written, the page says what to do.
        refused = client.get("/callback", params={"code": "nope", "state": flow.state})
        assert refused.status_code == 502 and "run kohai setup again" in refused.text
    assert not out.exists() and not flow.done.is_set()


def test_setup_refuses_to_replace_a_registered_app(tmp_path: Path) -> None:
    out = tmp_path / "app.toml"
    out.write_text("app_id = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOHAI_")}
    env.update({"HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "setup", "--out", str(out), "--no-browser"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--force" in done.stderr
    assert out.read_text() == "app_id = 1\n"


def test_the_setup_command_parses() -> None:
    from bot.cli import build_parser

    args = build_parser().parse_args(["setup", "--org", "acme", "--out", "x.toml"])
    assert isinstance(args, argparse.Namespace)
    assert (args.org, args.out, args.name, args.no_browser) == ("acme", "x.toml", "kohai", False)


def test_before_github_names_the_app_only_its_bot_type_marks_its_own_events() -> None:
    """The slug is not a setting any more: until `GET /app` answers, the bot login is
    empty, and an event without a sender must not pass for the App's own."""
    from bot.core.events import Event
    from bot.core.router import caused_by_app

    anonymous = Event(name="issues", action="opened", delivery_id="d1")
    assert not caused_by_app(anonymous, "")
    assert caused_by_app(Event(name="issues", sender="x[bot]", sender_type="Bot"), "")
    named = Event(name="issues", sender="kohai-lab[bot]", sender_type="User")
    assert caused_by_app(named, "kohai-lab[bot]") and not caused_by_app(named, "")


def test_an_organisation_registration_over_http_and_a_replayed_callback(
    github: SandboxServer, tmp_path: Path
) -> None:
    """The same flow as the browser's, form by form, for an organisation; then the
    callback replayed (a reload, or someone else's replay): refused, the file kept."""
    github.create_repo("acme/charlm", install=False)  # makes `acme` an organisation
    out = tmp_path / "org-app.toml"
    port = free_port()  # the callback's address is in the manifest, so known first
    callback = f"http://127.0.0.1:{port}/callback"
    flow = Flow(
        manifest=setup_manifest(
            "https://kohai.example.com",
            "acme lab",
            "https://kohai.example.com/webhooks/github",
            callback,
        ),
        target=new_app_url(github.url, "acme"),
        api_url=github.url,
        html_url=github.url,
        public_url="https://kohai.example.com",
        webhook_proxy_url=None,
        out=out,
    )
    with ServerThread(build_app(flow), port), httpx.Client(follow_redirects=True) as client:
        page = client.get(f"http://127.0.0.1:{port}/").text
        action = html.unescape(re.search(r'action="([^"]+)"', page)[1])  # type: ignore[index]
        manifest = html.unescape(re.search(r'name="manifest" value="([^"]+)"', page)[1])  # type: ignore[index]
        shown = client.post(action, data={"manifest": manifest})
        assert "the organisation <strong>acme</strong>" in shown.text
        done = client.post(
            action.split("?")[0],
            data={"manifest": manifest, "state": flow.state, "confirm": "1", "name": "acme lab"},
        )
        assert done.status_code == 200 and 'id="done"' in done.text
        assert str(done.url).startswith(callback + "?code=")
        first = out.read_text()
        assert flow.done.is_set() and flow.app is not None
        assert flow.app["owner"]["login"] == "acme"
        replay = client.get(str(done.url))
        assert replay.status_code == 409
    assert out.read_text() == first
    assert tomllib.loads(first)["app_id"] == flow.app["id"]
