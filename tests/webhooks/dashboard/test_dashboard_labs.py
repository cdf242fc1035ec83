"""The dashboard per lab: two repositories, each with its own problem, over real HTTP.

`lab/charlm` minimizes val_bpb (the seeded three-hour session); `lab/vision`
maximizes accuracy. Each lab's problem comes from the kohai.toml stored at its
sync, never from the app's state, so a maximize metric sorts the right way in
production too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

from bot.config import Settings, html_url_for
from bot.store import Store
from tests.support.dashboard_seed import (
    CHARLM_TOML,
    Seeded,
    Served,
    seed_lab,
    seed_vision,
    serve_dashboard,
)

GHE = "https://ghe.example.com"


@pytest.fixture
def two_labs(tmp_path: Path) -> Iterator[Seeded]:
    path = tmp_path / "kohai.db"
    store = Store(path)
    t0 = time.time() - 3 * 3600
    ids = seed_lab(store, t0)
    store.execute(
        "UPDATE repos SET problem_toml = ? WHERE full_name = 'lab/charlm'", (CHARLM_TOML,)
    )
    ids.update({f"vision_{k}": v for k, v in seed_vision(store, t0).items()})
    store.close()
    yield Seeded(path, ids)


@pytest.fixture
def served_labs(two_labs: Seeded) -> Iterator[Served]:
    running, stop = serve_dashboard(two_labs.path, extra_state={"github_html_url": GHE})
    try:
        yield running
    finally:
        stop()


@pytest.mark.parametrize(
    ("api", "html"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://api.github.com/", "https://github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
        ("https://ghe.example.com/api/v3/", "https://ghe.example.com"),
        ("https://api.octo.ghe.com", "https://octo.ghe.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),  # the sandbox serves both
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
        ("https://api.github.com.evil.example", "https://api.github.com.evil.example"),
    ],
)
def test_html_url_is_derived_from_the_api_url(api: str, html: str) -> None:
    assert html_url_for(api) == html


def test_settings_take_an_explicit_html_url_or_derive_it(pem: str) -> None:
    env = {
        "KOHAI_GITHUB_APP_ID": "1",
        "KOHAI_GITHUB_PRIVATE_KEY": pem,
        "KOHAI_WEBHOOK_SECRET": "s",
        "KOHAI_GITHUB_API_URL": "https://ghe.example.com/api/v3",
    }
    assert Settings.from_env(env).html_url == GHE
    explicit = Settings.from_env(env | {"KOHAI_GITHUB_HTML_URL": "https://code.example.com/"})
    assert explicit.html_url == "https://code.example.com"


def test_the_production_app_gives_the_dashboard_the_html_host(tmp_path: Path, pem: str) -> None:
    """`create_app` sets the links' host itself: nothing is injected here."""
    from bot.cli.lab import ServerThread
    from webhooks.app import create_app
    from webhooks.context import BotContext

    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="https://ghe.example.com/api/v3",
        db_path=str(tmp_path / "kohai.db"),
        dashboard_public=True,
    )
    ctx = BotContext.build(settings)
    ctx.workers = []
    t0 = time.time() - 3600
    seed_vision(ctx.store, t0)
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        html = httpx.get(server.url + "/labs/lab/vision", timeout=10).text
    assert f'href="{GHE}/lab/vision/pull/2"' in html
    assert "accuracy (higher is better)" in html
    board = html[html.index('id="leaderboard"') : html.index('id="experiments"')]
    assert board.index("Wider convolutions") < board.index("Mixup augmentation")


def test_index_lists_the_labs_with_their_own_metrics(served_labs: Served) -> None:
    html = httpx.get(served_labs.url + "/", timeout=10).text
    labs = html[html.index('id="labs"') :]
    assert 'href="/labs/lab/charlm"' in labs and 'href="/labs/lab/vision"' in labs
    assert "val_bpb <span class=muted>(lower is better)" in labs
    assert "accuracy <span class=muted>(higher is better)" in labs
    assert "0.9100" in labs  # vision's best: the higher accuracy
    assert "(weight 3)" in labs and "(weight 1)" in labs
    api = httpx.get(served_labs.url + "/api/labs", timeout=10).json()
    by_lab = {row["lab"]: row for row in api}
    assert by_lab["lab/vision"]["direction"] == "maximize"
    assert by_lab["lab/vision"]["target_share"] == pytest.approx(0.75)
    assert by_lab["lab/charlm"]["experiments"] == 8


def test_a_lab_page_is_scoped_to_its_lab(served_labs: Served) -> None:
    vision = httpx.get(served_labs.url + "/labs/lab/vision", timeout=10).text
    assert "Wider convolutions" in vision and "Raise learning rate" not in vision
    assert 'href="/labs/lab/vision/experiments/2"' in vision
    assert f'href="{GHE}/lab/vision/pull/2"' in vision
    charlm = httpx.get(served_labs.url + "/labs/lab/charlm", timeout=10).text
    assert "Raise learning rate" in charlm and "Wider convolutions" not in charlm
    # PR #2 exists in both repositories: each lab's page is its own.
    page = httpx.get(served_labs.url + "/labs/lab/vision/experiments/2", timeout=10).text
    assert "Wider convolutions" in page and "accuracy" in page
    page = httpx.get(served_labs.url + "/labs/lab/charlm/experiments/2", timeout=10).text
    assert "Raise learning rate" in page
    for missing in ("/labs/lab/nope", "/labs/lab/vision/nosuchtrack", "/labs/x/y/experiments/1"):
        assert httpx.get(served_labs.url + missing, timeout=10).status_code == 404


def test_api_and_events_carry_the_lab(served_labs: Served, two_labs: Seeded) -> None:
    everything = httpx.get(served_labs.url + "/api/experiments", timeout=10).json()
    assert {e["lab"] for e in everything} == {"lab/charlm", "lab/vision"}
    vision = httpx.get(served_labs.url + "/api/experiments?lab=lab/vision", timeout=10).json()
    assert {e["title"] for e in vision} == {"Wider convolutions", "Mixup augmentation"}
    assert vision[0]["lab_page"].startswith("/labs/lab/vision/experiments/")
    with httpx.stream("GET", served_labs.url + "/events", timeout=10) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data:") and json.loads(line[5:])["topic"] == "hello":
                break
        served_labs.publish("experiment", id=two_labs.ids["vision_wider"], state="merged")
        for line in lines:
            if line.startswith("data:"):
                message = json.loads(line[5:])
                break
    assert message["lab"] == "lab/vision" and message["state"] == "merged"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing: `make test` installs it")
def test_browser_lists_two_labs_and_sorts_a_maximize_metric(served_labs: Served) -> None:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served_labs.url + "/")
            page.wait_for_selector("#live.on", timeout=15_000)
            rows = page.locator("#labs tbody tr")
            assert rows.count() == 2
            assert "lab/charlm" in rows.nth(0).inner_text()
            page.click("#labs a[href='/labs/lab/vision']")
            page.wait_for_url("**/labs/lab/vision")
            page.wait_for_selector("#live.on", timeout=15_000)
            board = page.inner_text("#leaderboard")
            assert "ACCURACY" in board.upper()
            # higher is better: 0.91 ranks above 0.80, though it was merged first
            assert board.index("Wider convolutions") < board.index("Mixup augmentation")
            first = page.locator("#leaderboard tbody tr").nth(0).inner_text()
            assert first.startswith("1") and "Wider convolutions" in first
            href = page.get_attribute(
                "#leaderboard tbody tr >> nth=0 >> a[title='on GitHub']", "href"
            )
            assert href == f"{GHE}/lab/vision/pull/2"
        finally:
            browser.close()


@pytest.fixture
def labs_env(two_labs: Seeded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Seeded:
    monkeypatch.setenv("KOHAI_DB", str(two_labs.path))
    monkeypatch.delenv("KOHAI_PROBLEM", raising=False)
    # A kohai.toml in the current directory must not be read: the store's problem is.
    (tmp_path / "kohai.toml").write_text('[metric]\nname = "wrong"\n')
    monkeypatch.chdir(tmp_path)
    return two_labs


def test_status_and_history_take_repo_and_read_the_stored_problem(labs_env: Seeded, capsys) -> None:
    from bot.cli import main

    assert main(["status", "--json", "--repo", "lab/vision"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["repo"] == "lab/vision"
    assert snapshot["metric"] == "accuracy" and snapshot["direction"] == "maximize"
    assert snapshot["best"] == pytest.approx(0.91)
    assert {e["title"] for e in snapshot["experiments"]} == {
        "Wider convolutions",
        "Mixup augmentation",
    }
    assert {row["lab"] for row in snapshot["labs"]} == {"lab/charlm", "lab/vision"}

    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert "lab/vision" in table and "accuracy (max)" in table and "75%" in table

    assert main(["history", "--repo", "lab/vision", "--best"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["commit", "accuracy"]
    assert "Wider convolutions" in out and "Mixup" not in out  # 0.80 never beat 0.91

    assert main(["history"]) == 1  # two labs: which one?
    assert "--repo" in capsys.readouterr().err
    assert main(["status", "--repo", "lab/nope"]) == 1
    assert "no such lab" in capsys.readouterr().err


def test_hosts_add_limits_a_student_to_some_labs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from bot.cli import main

    monkeypatch.setenv("KOHAI_DB", str(tmp_path / "kohai.db"))
    add = ["hosts", "add", "fern", "--labs", "lab/vision,lab/charlm:default", "--create"]
    assert main(add) == 0
    assert "serves lab/vision, lab/charlm:default" in capsys.readouterr().err
    assert main(["hosts", "add", "stark"]) == 0
    assert main(["hosts", "add", "himmel", "--labs", "lab/x;rm -rf /"]) == 2
    assert "not owner/repo" in capsys.readouterr().err
    store = Store(tmp_path / "kohai.db")
    rows = {r["name"]: r["labs"] for r in store.query("SELECT name, labs FROM students")}
    assert rows == {"fern": "lab/vision,lab/charlm:default", "stark": None}
    assert main(["hosts", "list"]) == 0
    listing = capsys.readouterr().out
    assert "lab/vision,lab/charlm:default" in listing and "all" in listing
