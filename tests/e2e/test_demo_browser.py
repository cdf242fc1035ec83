"""Chromium on the dashboard while a demo runs: live updates arrive; Ctrl-C cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.cli.lab import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Chromium missing: `make test` installs Debian's chromium; only a bare pytest run skips",
    ),
]


def test_dashboard_follows_a_running_demo(tmp_path: Path) -> None:
    from playwright import sync_api

    port = free_port()
    env = {**os.environ, "WANDB_MODE": "disabled", "KOHAI_WANDB": "disabled"}
    env.pop("ANTHROPIC_API_KEY", None)
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "demo",
            "--experiments",
            "1",
            "--budget",
            "5s",
            "--port",
            str(port),
            "--dir",
            str(tmp_path / "demo"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert demo.poll() is None, demo.stdout.read().decode()[-3000:] if demo.stdout else ""
            assert time.time() < deadline, "the demo's dashboard did not come up"
            time.sleep(0.3)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/")
                page.wait_for_selector("#live.on", timeout=20_000)
                # The lab moves on its own: a baseline, students leasing, PRs opening.
                page.wait_for_function(
                    "Number(document.body.dataset.updates || 0) >= 1", timeout=120_000
                )
                page.wait_for_function("document.body.innerText.includes('fern')", timeout=120_000)
                shot = tmp_path / "demo-dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
            finally:
                browser.close()
    finally:
        demo.send_signal(signal.SIGINT)  # as a user's Ctrl-C
        try:
            code = demo.wait(timeout=90)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    output = demo.stdout.read().decode() if demo.stdout else ""
    assert code in (0, 130), output[-3000:]
    time.sleep(1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", timeout=2)
    leftover = subprocess.run(
        ["pgrep", "-f", f"--bot-url {url}"], capture_output=True, text=True
    ).stdout
    assert leftover.strip() == "", f"host daemons left running: {leftover}"
