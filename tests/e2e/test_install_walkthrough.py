"""docs/install.md, step by step, as a new user would run it against the GitHub sandbox.

The real commands as subprocesses, a home directory of the test's own and no
KOHAI_* variables set by hand: `kohai setup` in Chromium, `kohai serve` from
the file it wrote, the App installed on an existing repository that has its
own `train.py`, `kohai init` adopting it, `kohai check`, a commit pushed as the
user, `kohai hosts add`, `kohai host run` with its token in a 0600 file, and a
labelled issue that becomes a pull request with results. If the guide and the
code drift apart, this test says where.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli.lab import free_port
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.cli.test_setup_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    clean_env,
    healthz,
    kohai,
    stop,
    wait_for,
)
from trainer import workspace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing: `make test` installs it"),
]

REPO = "acme/mnist"
# The user's own repository: a training script that knows nothing of kohai's but its
# habit of printing `val_loss: <number>` last (autoresearch's convention).
TRAIN = """import os
import random

LEARNING_RATE = 0.01

seed = int(os.environ.get("KOHAI_SEED", "0"))
noise = random.Random(seed).gauss(0.0, 0.01)
loss = 1.0 + abs(LEARNING_RATE - 0.003) * 10 + noise
print("epoch 1 done")
print(f"val_loss: {loss:.6f}")
"""


def git(cwd: Path, *args: str, token: str | None = None) -> str:
    env = workspace.auth_env(token)
    proc = subprocess.run(
        ["git", "-c", "user.name=Alice", "-c", "user.email=alice@example.com", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_the_install_guide_end_to_end(tmp_path: Path) -> None:
    from playwright import sync_api

    home = tmp_path / "home"
    home.mkdir()
    with SandboxServer(tmp_path / "github") as sandbox, SandboxControl(sandbox.url) as control:
        sandbox.create_repo(
            REPO, files={"train.py": TRAIN, "README.md": "# mnist\n"}, install=False
        )
        bot_port, setup_port = free_port(), free_port()
        bot_url = f"http://127.0.0.1:{bot_port}"
        app_file = home / ".config" / "kohai" / "app.toml"
        db = tmp_path / "kohai.db"
        processes: list[subprocess.Popen[bytes]] = []
        try:
            # 1. kohai setup: the manifest flow in the browser; the file in its default place.
            setup = kohai(
                "setup",
                "--github-url",
                sandbox.url,
                "--url",
                bot_url,
                "--name",  # the sandbox's own App is already called "kohai"
                "kohai acme",
                "--port",
                str(setup_port),
                "--no-browser",
                env=clean_env(home),
                log=tmp_path / "setup.log",
            )
            processes.append(setup)
            page_url = f"http://127.0.0.1:{setup_port}/"
            wait_for(
                "the setup page", lambda: f"open {page_url}" in (tmp_path / "setup.log").read_text()
            )
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                try:
                    page = browser.new_page()
                    page.set_default_timeout(90_000)
                    page.goto(page_url)
                    page.click("#submit")
                    page.wait_for_url(sandbox.url + "/settings/apps/new?state=*")
                    page.click("#create")
                    page.wait_for_url(f"http://127.0.0.1:{setup_port}/callback?*")
                    link = page.get_attribute("#install", "href")
                    assert setup.wait(timeout=60) == 0
                    assert app_file.exists()

                    # 2. kohai serve reads the file; nothing else is configured.
                    serve = kohai(
                        "serve",
                        "--port",
                        str(bot_port),
                        env=clean_env(home, KOHAI_DB=str(db), KOHAI_DASHBOARD_PUBLIC="1"),
                        log=tmp_path / "serve.log",
                    )
                    processes.append(serve)
                    health = wait_for(
                        "the bot", lambda: (h := healthz(bot_url)) and h.get("app_slug") and h
                    )
                    assert health["errors"] == [], health

                    # 3. Install the App on the repository.
                    assert link is not None
                    page.goto(link)
                    page.check(f"input[value='{REPO}']")
                    page.click("#install")
                finally:
                    browser.close()

            # 3. kohai init adopts the existing repository; the user sets a short budget,
            # checks it, commits and pushes.
            token = sandbox.user_token("alice")
            work = tmp_path / "mnist"
            git(tmp_path, "clone", "--quiet", sandbox.clone_url(REPO), str(work), token=token)
            env = clean_env(home)
            adopted = run("init", str(work), env=env, cwd=tmp_path)
            assert adopted.returncode == 0, adopted.stdout + adopted.stderr
            assert "wrote kohai.toml" in adopted.stdout + adopted.stderr
            assert (work / "train.py").read_text() == TRAIN  # never touched
            toml = (work / "kohai.toml").read_text()
            assert 'name = "val_loss"' in toml
            toml = toml.replace('budget = "5m"', 'budget = "20s"').replace(
                'grace = "60s"', 'grace = "10s"'
            )
            (work / "kohai.toml").write_text(toml)
            git(work, "add", "kohai.toml", "program.md")
            git(work, "commit", "--quiet", "-m", "kohai: adopt")
            checked = run("check", str(work), "--budget", "5s", env=env, cwd=tmp_path)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            git(work, "push", "--quiet", "origin", "HEAD:main", token=token)

            # 4. Register a student and start its host, the token in a 0600 file.
            added = run("hosts", "add", "fern", env=clean_env(home, KOHAI_DB=str(db)), cwd=tmp_path)
            assert added.returncode == 0, added.stderr
            assert len(added.stdout.split()) == 1  # the token alone on stdout: TOKEN=$(...)
            token_file = tmp_path / "fern.token"
            token_file.write_text(added.stdout.strip() + "\n")
            token_file.chmod(0o600)
            host = kohai(
                "host",
                "run",
                "--name",
                "fern",
                "--token-file",
                str(token_file),
                "--bot-url",
                bot_url,
                "--work-dir",
                str(tmp_path / "host"),
                env=clean_env(home, WANDB_MODE="disabled", KOHAI_WANDB="disabled"),
                log=tmp_path / "host.log",
            )
            processes.append(host)

            # The first experiment: a labelled issue becomes a PR with results.
            def lab_ready() -> Any:
                with sqlite3.connect(db) as conn:
                    return conn.execute(
                        "SELECT problem_toml FROM repos WHERE full_name = ? AND problem_toml "
                        "IS NOT NULL",
                        (REPO,),
                    ).fetchone()

            wait_for("the lab", lab_ready, timeout=120)
            control.open_issue(
                REPO, "Lower the learning rate", "LEARNING_RATE = 0.003", labels=["student:fern"]
            )

            def results() -> Any:
                for pull in control.pulls(REPO):
                    for comment in control.comments(REPO, pull["number"]):
                        if (
                            "<!-- kohai:results:" in comment["body"]
                            and "val_loss" in comment["body"]
                        ):
                            return comment["body"]
                return None

            body = wait_for("a PR with results", results, timeout=300)
            assert "| seed | status | val_loss |" in body
            with sqlite3.connect(db) as conn:
                runs = conn.execute(
                    "SELECT status, metric FROM runs WHERE kind = 'candidate'"
                ).fetchall()
            assert runs and runs[0][0] == "ok", runs
            assert httpx.get(bot_url + "/livez", timeout=5).status_code == 200
        finally:
            for process in reversed(processes):
                stop(process)
