"""A real browser on the dashboard: the page goes live and follows a change made by the engine.

Drives Debian's Chromium (`/usr/bin/chromium`) through Playwright's bundled
driver. With `KOHAI_SCREENSHOT=1` the final page is saved as
`docs/dashboard.png` for the README; otherwise the screenshot goes to tmp.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.store import Store
from tests.support.dashboard_seed import BASES, Lab, Seeded, serve_dashboard

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
README_SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "dashboard.png"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Chromium missing: `make test` installs Debian's chromium; only a bare pytest run skips",
)


def test_page_updates_live_when_the_engine_publishes(seeded: Seeded, tmp_path: Path) -> None:
    from playwright import sync_api

    running, stop = serve_dashboard(seeded.path)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(running.url + "/")
                page.wait_for_selector("#live.on", timeout=15_000)
                assert page.inner_text("#live") == "live"
                assert "Rotary position embeddings" not in page.inner_text("#experiments")

                writer = Store(seeded.path)  # the engine's own connection to the same file
                lab = Lab(writer, time.time() - 60, repo_id=1)
                exp = lab.experiment(
                    "Rotary position embeddings", "review", "himmel", 10, 0, BASES[2]
                )
                lab.runs(
                    "candidate",
                    [1.4102, 1.4121, 1.4098],
                    base=BASES[2],
                    at=30,
                    experiment_id=exp,
                    commit="c9" * 20,
                    student="himmel",
                )
                lab.decide(exp, "merge", "gate", "Δ -0.0180 ± 0.002, p = 0.0004.", 50)
                writer.update("experiments", exp, {"state": "merged"})
                writer.close()
                running.publish("experiment", id=exp, state="merged")

                page.wait_for_function(
                    "document.querySelector('#experiments').innerText"
                    ".includes('Rotary position embeddings')",
                    timeout=15_000,
                )
                assert int(page.get_attribute("body", "data-updates") or 0) >= 1
                assert page.inner_text("#updated").startswith("updated ")
                leaderboard = page.inner_text("#leaderboard")
                assert leaderboard.index("Rotary position") < leaderboard.index("Cosine schedule")
                assert "1.4107" in page.inner_text("#summary")  # the new best

                shot = (
                    README_SCREENSHOT
                    if os.environ.get("KOHAI_SCREENSHOT") == "1"
                    else tmp_path / "dashboard.png"
                )
                page.wait_for_timeout(1600)  # let the "changed" highlight fade
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
            finally:
                browser.close()
    finally:
        stop()
