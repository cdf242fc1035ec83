"""`kohai setup` end to end: Chromium, the GitHub sandbox, then `kohai serve` from the file.

The real commands run as subprocesses with a home directory inside the test's
temporary directory and no KOHAI_GITHUB_* variables: `kohai setup` serves its
page, the browser posts the manifest to the sandbox, confirms on the sandbox's
page and comes back to kohai's callback; the credentials file is checked
against the App the sandbox registered. `kohai serve`, started with only that
file, must reach GitHub as the new App and learn its slug from `GET /app`;
then the installation link installs the App on a repository, the bot
receives the `installation` webhook and reads the repository as that App, and
the dashboard signs the user in through that App's OAuth client.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bot.cli.lab import free_port
from sandbox.server import SandboxServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PROBLEM = ROOT / "trainer" / "examples" / "charlm"
REPO = "acme/charlm"
T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Chromium missing: `make test` installs Debian's chromium; only a bare pytest run skips",
)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user who has set nothing of kohai's: only a home of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOHAI_")}
    env.update({"HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra})
    return env


def kohai(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=log.parent,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 180.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "github") as server:
        server.create_repo(REPO, from_path=PROBLEM, install=False)
        yield server


def healthz(url: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(url + "/healthz", timeout=5)
    except httpx.HTTPError:
        return None
    body: dict[str, Any] = answer.json()
    return body


def test_setup_in_the_browser_then_serve_from_the_file_then_install(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    from playwright import sync_api

    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "app.toml"
    bot_port, setup_port = free_port(), free_port()
    bot_url = f"http://127.0.0.1:{bot_port}"
    setup_log = tmp_path / "setup.log"
    setup = kohai(
        "setup",
        "--github-url",
        sandbox.url,
        "--out",
        str(out),
        "--url",
        bot_url,
        "--name",
        "kohai lab",
        "--port",
        str(setup_port),
        "--no-browser",
        env=clean_env(home),
        log=setup_log,
    )
    serve: subprocess.Popen[bytes] | None = None
    try:
        # Headless: the page's address is printed, nothing is opened.
        page_url = f"http://127.0.0.1:{setup_port}/"

        def page_shown() -> bool:
            assert setup.poll() is None, setup_log.read_text()
            return f"open {page_url}" in setup_log.read_text()

        wait_for("the setup page", page_shown)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(90_000)  # generous: the machine may be busy
                page.goto(page_url)
                page.click("#submit")  # posts the manifest to the sandbox GitHub
                page.wait_for_url(sandbox.url + "/settings/apps/new?state=*")
                assert page.input_value("#name") == "kohai lab"
                page.click("#create")  # GitHub's confirmation; back to kohai's callback
                page.wait_for_url(f"http://127.0.0.1:{setup_port}/callback?*")
                assert "kohai-lab" in page.inner_text("#done")
                link = page.get_attribute("#install", "href")
                assert link == f"{sandbox.url}/apps/kohai-lab/installations/new"

                assert setup.wait(timeout=60) == 0
                printed = setup_log.read_text()
                assert f"Install it on your repositories: {link}" in printed
                assert f"KOHAI_APP_FILE={out} kohai serve" in printed

                # One file, the owner's only, with every credential GitHub issued.
                assert stat.S_IMODE(out.stat().st_mode) == 0o600
                written = tomllib.loads(out.read_text())
                registered = sandbox.world.data["apps"][str(written["app_id"])]
                assert written["slug"] == registered["slug"] == "kohai-lab"
                assert written["client_id"] == f"Iv1.{registered['id']:016x}"
                assert written["client_secret"] == registered["client_secret"]
                assert written["webhook_secret"] == registered["webhook_secret"]
                assert written["private_key"] == registered["private_key_pem"]
                assert written["github_api_url"] == sandbox.url
                assert registered["webhook_url"] == bot_url + "/webhooks/github"
                assert registered["callback_urls"] == [bot_url + "/auth/callback"]

                # `kohai serve` with only the file: GitHub answers, the slug is GitHub's.
                serve = kohai(
                    "serve",
                    "--port",
                    str(bot_port),
                    env=clean_env(
                        home, KOHAI_APP_FILE=str(out), KOHAI_DB=str(tmp_path / "kohai.db")
                    ),
                    log=tmp_path / "serve.log",
                )
                health = wait_for(
                    "the bot to learn its slug from GitHub",
                    lambda: (h := healthz(bot_url)) and h.get("app_slug") and h,
                )
                assert health["app_slug"] == "kohai-lab", health
                assert health["errors"] == [], health

                # The installation link: pick the repository, install.
                page.goto(link)
                page.check(f"input[value='{REPO}']")
                page.click("#install")
                # GitHub goes on to the App's setup URL, the dashboard, which asks for a
                # sign-in through the new App's own OAuth client (its id and secret from
                # the file).
                page.wait_for_url(sandbox.url + "/login/oauth/authorize?**")
                assert "Authorize kohai-lab" in page.inner_text("#authorize")
                page.fill("#login", "alice")
                page.click("#authorize")
                page.wait_for_url(bot_url + "/**")
                assert page.inner_text("#viewer") == "alice"
            finally:
                browser.close()

        db = tmp_path / "kohai.db"

        def lab_row() -> tuple[Any, ...] | None:
            with sqlite3.connect(db) as conn:
                return conn.execute(
                    "SELECT installation_id FROM repos WHERE full_name = ?", (REPO,)
                ).fetchone()

        # The bot got the webhook and read the repository as the new App.
        row = wait_for("the bot to adopt the installed repository", lab_row)
        installation = sandbox.world.installation_for_repo(REPO)
        assert installation is not None
        assert installation["app_id"] == written["app_id"]
        assert row[0] == installation["id"]
        with sqlite3.connect(db) as conn:
            got = conn.execute(
                "SELECT event, action, status FROM inbox WHERE event = 'installation'"
            ).fetchall()
        assert got == [("installation", "created", "routed")]
    finally:
        stop(setup)
        if serve is not None:
            stop(serve)
