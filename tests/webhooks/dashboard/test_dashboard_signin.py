"""The dashboard behind a GitHub sign-in, end to end against the sandbox GitHub.

The bot's real app (create_app) serves a store holding two labs, lab/charlm
and lab/vision, both private repositories in the sandbox. dana is a read
collaborator of lab/charlm only; erin of neither. Signing in goes through the
sandbox's OAuth pages (the App's own client), in Chromium and over plain HTTP;
who may read which lab is asked of the sandbox through the installation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.cli.lab import ServerThread, free_port
from bot.config import Settings
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.support.dashboard_seed import BASES, Lab, seed_lab
from webhooks.app import create_app
from webhooks.context import BotContext
from webhooks.dashboard import signin
from webhooks.dashboard.signin import SESSION_COOKIE, STATE_COOKIE

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
CHARLM, VISION = "lab/charlm", "lab/vision"
CHARLM_TOML = '[metric]\nname = "val_bpb"\ndirection = "minimize"\n'
VISION_TOML = '[metric]\nname = "accuracy"\ndirection = "maximize"\n'


@dataclass
class SignInLab:
    sandbox: SandboxServer
    control: SandboxControl
    ctx: BotContext
    url: str
    loop: dict[str, asyncio.AbstractEventLoop]

    def publish(self, topic: str, **data: Any) -> None:
        """Publish onto the bot's loop from the test's thread, as the engine would."""
        loop = self.loop["loop"]
        loop.call_soon_threadsafe(lambda: self.ctx.bus.publish(topic, **data))


def _seed(ctx: BotContext, installation_id: int) -> None:
    t0 = time.time() - 3 * 3600
    seed_lab(ctx.store, t0)  # lab/charlm: Raise learning rate (#2), ...
    vision = ctx.store.insert(
        "repos",
        {
            "full_name": VISION,
            "installation_id": installation_id,
            "base_sha": BASES[0],
            "problem_toml": VISION_TOML,
            "created_at": t0,
        },
    )
    lab = Lab(ctx.store, t0, repo_id=vision)
    lab.runs("baseline", [0.70, 0.71, 0.69], base=BASES[0], at=0)
    wider = lab.experiment("Wider convolutions", "merged", "fern", 2, 100, BASES[0])
    lab.runs("candidate", [0.91, 0.90, 0.92], base=BASES[0], at=200, experiment_id=wider)
    lab.decide(wider, "merge", "gate", "accuracy +0.21", 300)
    secret = lab.experiment("Secret augmentation", "training", "himmel", 42, 400, BASES[0])
    lab.job("experiment", "leased", secret, leased_by="himmel", phase="training", at=400)
    ctx.store.execute(
        "UPDATE repos SET installation_id = ?, problem_toml = ? WHERE full_name = ?",
        (installation_id, CHARLM_TOML, CHARLM),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInLab]:
    work = tmp_path_factory.mktemp("signin")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with SandboxServer(work / "github") as sandbox, SandboxControl(sandbox.url) as control:
        for name in (CHARLM, VISION):
            sandbox.create_repo(name, files={"README.md": "# lab\n"}, private=True)
        sandbox.set_callback_urls([f"{url}/auth/callback"])
        control.add_user("dana")
        control.add_user("erin")
        control.set_collaborator(CHARLM, "dana", "read")
        installation_id = sandbox.installation_id(CHARLM)
        assert installation_id is not None
        settings = Settings(
            app_id=sandbox.app_id,
            private_key=sandbox.private_key_pem,
            webhook_secret=sandbox.webhook_secret,
            github_api_url=sandbox.url,
            db_path=str(work / "kohai.db"),
            public_url=url,
            github_client_id=sandbox.client_id,
            github_client_secret=sandbox.client_secret,
        )
        ctx = BotContext.build(settings)
        ctx.workers = []
        _seed(ctx, installation_id)
        app = create_app(ctx, run_workers=False)
        loop: dict[str, asyncio.AbstractEventLoop] = {}
        app.on_startup.append(lambda: loop.update(loop=asyncio.get_running_loop()))
        server = ServerThread(app, port=port).start()
        try:
            yield SignInLab(sandbox, control, ctx, url, loop)
        finally:
            server.stop()
            ctx.store.close()


def sign_in(world: SignInLab, login: str, next_path: str = "/") -> httpx.Client:
    """A client that went through the whole web flow as `login` (cookies kept)."""
    client = httpx.Client(timeout=30, follow_redirects=False)
    to_github = client.get(f"{world.url}/login", params={"next": next_path})
    assert to_github.status_code == 302
    authorize = to_github.headers["location"]
    assert authorize.startswith(world.sandbox.url + "/login/oauth/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    back = client.post(
        world.sandbox.url + "/login/oauth/authorize",
        data={**query, "login": login, "action": "authorize"},
    )
    assert back.status_code == 302 and back.headers["location"].startswith(world.url)
    landed = client.get(back.headers["location"])
    assert landed.status_code == 303, landed.text
    assert landed.headers["location"] == next_path
    assert client.cookies.get(SESSION_COOKIE)
    return client


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium missing: `make test` installs it")
def test_a_reader_signs_in_in_the_browser_and_sees_only_their_lab(world: SignInLab) -> None:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            # Anonymous: sent to sign in, on the sandbox GitHub's own page.
            page.goto(world.url + "/labs/lab/charlm")
            page.wait_for_url(world.sandbox.url + "/login/oauth/authorize?**")
            page.fill("#login", "dana")
            page.click("#authorize")
            page.wait_for_url(world.url + "/labs/lab/charlm")
            assert page.inner_text("#viewer") == "dana"
            assert "Raise learning rate to 3e-3" in page.inner_text("#experiments")
            cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]

            page.goto(world.url + "/")
            page.wait_for_selector("#live.on", timeout=15_000)  # the event stream is allowed
            assert "lab/vision" not in page.content()
            assert "Wider convolutions" not in page.content()
            assert page.locator("#labs tbody tr").count() == 1

            missing = page.goto(world.url + "/labs/lab/vision")
            assert missing is not None and missing.status == 404
            assert "Secret augmentation" not in page.content()
            api = page.request.get(world.url + "/api/experiments").json()
            assert {e["lab"] for e in api} == {CHARLM}
            assert page.request.get(world.url + "/api/experiments?lab=lab/vision").status == 404

            page.goto(world.url + "/logout")
            assert page.request.get(world.url + "/api/labs").status == 401
        finally:
            browser.close()


def test_anonymous_visitors_are_sent_to_sign_in_and_json_is_401(world: SignInLab) -> None:
    with httpx.Client(base_url=world.url, timeout=30, follow_redirects=False) as anon:
        page = anon.get("/labs/lab/charlm", params={"x": "1"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Flabs%2Flab%2Fcharlm%3Fx%3D1"
        for path in ("/", "/experiments/2", "/labs/lab/vision/experiments/2"):
            assert anon.get(path).status_code == 303, path
        for path in ("/api/experiments", "/api/labs", "/api/hosts", "/events"):
            answer = anon.get(path)
            assert answer.status_code == 401, path
            assert "Raise learning rate" not in answer.text
        # Unchanged: health, the OpenAPI schema, the host API (its own token check).
        assert anon.get("/healthz").status_code in (200, 503)
        assert anon.get("/schema/openapi.json").status_code == 200
        lease = anon.post("/api/hosts/fern/lease")
        assert lease.status_code == 401 and "location" not in lease.headers


def test_each_user_sees_the_labs_github_says_they_can_read(world: SignInLab) -> None:
    dana = sign_in(world, "dana", "/labs/lab/charlm")
    assert [row["lab"] for row in dana.get(f"{world.url}/api/labs").json()] == [CHARLM]
    titles = {e["title"] for e in dana.get(f"{world.url}/api/experiments").json()}
    assert "Raise learning rate to 3e-3" in titles and "Wider convolutions" not in titles
    assert dana.get(f"{world.url}/labs/lab/vision").status_code == 404
    assert dana.get(f"{world.url}/labs/lab/vision/experiments/2").status_code == 404
    # PR #2 exists in both labs; the unscoped page is the one dana may read.
    assert "Raise learning rate" in dana.get(f"{world.url}/experiments/2").text
    assert dana.get(f"{world.url}/experiments/42").status_code == 404  # vision has it, charlm not
    # Students are shared: dana sees himmel busy, but not with what (vision's experiment).
    hosts = {h["name"]: h for h in dana.get(f"{world.url}/api/hosts").json()}
    assert hosts["himmel"]["job_id"] is not None
    assert (hosts["himmel"]["title"], hosts["himmel"]["repo"]) == (None, None)
    page = dana.get(f"{world.url}/labs/lab/charlm").text
    students = page[page.index('id="students"') : page.index('id="queue"')]
    assert "working for another lab" in students and "Secret augmentation" not in page

    erin = sign_in(world, "erin")
    assert erin.get(f"{world.url}/api/labs").json() == []
    assert erin.get(f"{world.url}/api/experiments").json() == []
    home = erin.get(f"{world.url}/")
    assert home.status_code == 200 and "None of the labs is in a repository you can read" in (
        home.text
    )
    assert "Raise learning rate" not in home.text and "Wider convolutions" not in home.text

    alice = sign_in(world, "alice")  # admin on every sandbox repository
    assert {row["lab"] for row in alice.get(f"{world.url}/api/labs").json()} == {CHARLM, VISION}
    hosts = {h["name"]: h for h in alice.get(f"{world.url}/api/hosts").json()}
    assert hosts["himmel"]["title"] == "Secret augmentation"

    # Access removed on GitHub: gone once the short permission cache forgets it.
    world.control.set_collaborator(CHARLM, "dana", "none")
    world.ctx.permissions.forget(CHARLM, "dana")
    try:
        assert dana.get(f"{world.url}/api/labs").json() == []
        assert dana.get(f"{world.url}/labs/lab/charlm").status_code == 404
    finally:
        world.control.set_collaborator(CHARLM, "dana", "read")
        world.ctx.permissions.forget(CHARLM, "dana")
    for client in (dana, erin, alice):
        client.close()


def test_a_forged_or_missing_state_is_refused(world: SignInLab) -> None:
    with httpx.Client(timeout=30, follow_redirects=False) as victim:
        # No sign-in started in this browser: a callback alone is refused.
        bare = victim.get(f"{world.url}/auth/callback", params={"code": "x", "state": "y"})
        assert bare.status_code == 400 and SESSION_COOKIE not in bare.headers.get("set-cookie", "")
        started = victim.get(f"{world.url}/login")
        assert victim.cookies.get(STATE_COOKIE)
        own_state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]

        # Login CSRF: an attacker's own code and state, replayed into the victim's browser.
        with httpx.Client(timeout=30, follow_redirects=False) as attacker:
            theirs = attacker.get(f"{world.url}/login").headers["location"]
            query = {k: v[0] for k, v in parse_qs(urlsplit(theirs).query).items()}
            back = attacker.post(
                world.sandbox.url + "/login/oauth/authorize",
                data={**query, "login": "erin", "action": "authorize"},
            )
            forged = back.headers["location"]
        assert query["state"] != own_state
        refused = victim.get(forged)
        assert refused.status_code == 400 and "Sign-in refused" in refused.text
        assert not victim.cookies.get(SESSION_COOKIE)
        missing = victim.get(f"{world.url}/auth/callback", params={"code": "abc"})
        assert missing.status_code == 400
        # GitHub's own refusal (the user pressed Cancel) signs nobody in either.
        victim.get(f"{world.url}/login")
        held = victim.cookies.get(STATE_COOKIE)
        state = signin.unsign(held, _key(world), "state", time.time())
        assert state is not None
        cancelled = victim.get(
            f"{world.url}/auth/callback", params={"error": "access_denied", "state": state["state"]}
        )
        assert cancelled.status_code == 403 and not victim.cookies.get(SESSION_COOKIE)
        # A made-up code with the right state: GitHub refuses it, so does the bot.
        victim.get(f"{world.url}/login")
        state = signin.unsign(victim.cookies.get(STATE_COOKIE), _key(world), "state", time.time())
        assert state is not None
        bogus = victim.get(
            f"{world.url}/auth/callback", params={"code": "0" * 20, "state": state["state"]}
        )
        assert bogus.status_code == 502 and not victim.cookies.get(SESSION_COOKIE)


def _key(world: SignInLab) -> bytes:
    """The bot's cookie key, as the bot derives it (to sign cookies the bot would refuse)."""
    settings = world.ctx.settings
    return signin.session_key(settings.session_secret, settings.webhook_secret)


def test_a_tampered_cookie_is_anonymous(world: SignInLab) -> None:
    dana = sign_in(world, "dana")
    good = str(dana.cookies.get(SESSION_COOKIE))
    body, _, mac = good.rpartition(".")
    payload = json.loads(signin._unb64(body))
    assert payload["login"] == "dana"
    as_alice = signin._b64(json.dumps({**payload, "login": "alice"}).encode())
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    state_as_session = signin.sign({"state": "s", "exp": time.time() + 60}, _key(world), "state")
    expired = signin.sign(
        {"login": "dana", "id": 1, "exp": time.time() - 1}, _key(world), "session"
    )
    for forged in (f"{as_alice}.{mac}", f"{body}.{flipped}", state_as_session, expired, "x" * 5000):
        with httpx.Client(timeout=30, cookies={SESSION_COOKIE: forged}) as client:
            assert client.get(f"{world.url}/api/labs").status_code == 401
            assert client.get(f"{world.url}/", follow_redirects=False).status_code == 303
    assert dana.get(f"{world.url}/api/labs").status_code == 200
    dana.close()


def test_the_event_stream_carries_only_the_viewers_labs(world: SignInLab) -> None:
    dana = sign_in(world, "dana")
    charlm = world.ctx.store.one("SELECT id FROM repos WHERE full_name = ?", (CHARLM,))
    vision = world.ctx.store.one("SELECT id FROM repos WHERE full_name = ?", (VISION,))
    assert charlm and vision
    seen: list[dict[str, Any]] = []
    with dana.stream("GET", f"{world.url}/events", timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data:") and json.loads(line[5:])["topic"] == "hello":
                break
        world.publish("repo", id=vision["id"], base_sha="v" * 40)
        world.publish("event", name="issues", action="opened", secret="not for dana")
        world.publish("repo", id=charlm["id"], base_sha="c" * 40)
        for line in lines:
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
                if seen[-1].get("topic") == "repo":
                    break
    dana.close()
    assert seen == [
        {"topic": "event"},  # about no lab: only that something happened
        {"topic": "repo", "id": charlm["id"], "base_sha": "c" * 40, "lab": CHARLM},
    ]


def test_the_public_switch_shows_everything_without_sign_in(world: SignInLab) -> None:
    settings = dataclasses.replace(world.ctx.settings, dashboard_public=True)
    ctx = BotContext.build(settings)
    ctx.workers = []
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        labs = httpx.get(f"{server.url}/api/labs", timeout=10).json()
        assert {row["lab"] for row in labs} == {CHARLM, VISION}
        page = httpx.get(f"{server.url}/labs/lab/vision", timeout=10)
        assert page.status_code == 200 and "Wider convolutions" in page.text
        assert "signed in as" not in page.text
        assert httpx.get(f"{server.url}/login", timeout=10).headers["location"] == "/"
    ctx.store.close()


def test_without_an_oauth_client_the_dashboard_stays_closed(world: SignInLab) -> None:
    settings = dataclasses.replace(world.ctx.settings, github_client_id="", github_client_secret="")
    ctx = BotContext.build(settings)
    ctx.workers = []
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        page = httpx.get(f"{server.url}/", timeout=10)
        assert page.status_code == 503 and "KOHAI_GITHUB_CLIENT_ID" in page.text
        assert httpx.get(f"{server.url}/api/experiments", timeout=10).status_code == 503
        assert httpx.get(f"{server.url}/login", timeout=10).status_code == 503
    ctx.store.close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/labs/lab/charlm?x=1", "/labs/lab/charlm?x=1"),
        (None, "/"),
        ("https://attacker.example/", "/"),  # an open redirect: refused
        ("//attacker.example/", "/"),  # scheme-relative: another host
        ("/\\attacker.example", "/"),  # browsers read a backslash as a slash
        ("/ok\r\nSet-Cookie: x=1", "/"),  # header injection
        ("labs", "/"),
    ],
)
def test_after_sign_in_only_a_local_path_is_followed(raw: str | None, expected: str) -> None:
    assert signin.safe_next(raw) == expected


def test_signed_values_are_bound_to_their_key_use_and_time() -> None:
    key, other = b"k" * 32, b"o" * 32
    value = signin.sign({"login": "dana", "id": 7, "exp": 2_000}, key, "session")
    assert signin.viewer_of(value, key, 1_000) == signin.Viewer("dana", 7)
    assert signin.viewer_of(value, other, 1_000) is None  # another key
    assert signin.viewer_of(value, key, 2_001) is None  # expired
    assert signin.unsign(value, key, "state", 1_000) is None  # another use
    assert signin.viewer_of(None, key, 1_000) is None
    assert signin.viewer_of("not-a-cookie", key, 1_000) is None
    # The derived key is neither empty nor the webhook secret itself.
    derived = signin.session_key("", "webhook-secret")
    assert derived and derived != b"webhook-secret"
    assert signin.session_key("explicit", "webhook-secret") != derived


def test_the_app_manifest_registers_the_sign_in_callback() -> None:
    from bot.deploy import app_manifest

    manifest = app_manifest("https://kohai.example.com/", "my-lab")
    assert manifest["callback_urls"] == ["https://kohai.example.com/auth/callback"]
    assert manifest["request_oauth_on_install"] is False


def _env(**extra: str) -> dict[str, str]:
    from sandbox.auth import generate_private_key_pem

    base = {
        "KOHAI_GITHUB_APP_ID": "1",
        "KOHAI_GITHUB_PRIVATE_KEY": generate_private_key_pem(),
        "KOHAI_WEBHOOK_SECRET": "s",
    }
    return base | extra


def test_settings_read_the_sign_in_variables() -> None:
    from bot.config import ConfigError

    closed = Settings.from_env(_env())
    assert not closed.dashboard_public and closed.github_client_id == ""
    opened = Settings.from_env(_env(KOHAI_DASHBOARD_PUBLIC="1"))
    assert opened.dashboard_public
    assert not Settings.from_env(_env(KOHAI_DASHBOARD_PUBLIC="0")).dashboard_public
    full = Settings.from_env(
        _env(
            KOHAI_GITHUB_CLIENT_ID="Iv1.abc",
            KOHAI_GITHUB_CLIENT_SECRET="shh",
            KOHAI_SESSION_SECRET="k",
        )
    )
    assert (full.github_client_id, full.github_client_secret, full.session_secret) == (
        "Iv1.abc",
        "shh",
        "k",
    )
    for bad, needle in (
        ({"KOHAI_GITHUB_CLIENT_ID": "Iv1.abc"}, "KOHAI_GITHUB_CLIENT_SECRET"),
        ({"KOHAI_GITHUB_CLIENT_SECRET": "shh"}, "KOHAI_GITHUB_CLIENT_ID"),
        ({"KOHAI_DASHBOARD_PUBLIC": "maybe"}, "KOHAI_DASHBOARD_PUBLIC"),
    ):
        with pytest.raises(ConfigError) as err:
            Settings.from_env(_env(**bad))
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_behind_https_the_cookies_are_secure(world: SignInLab) -> None:
    settings = dataclasses.replace(world.ctx.settings, public_url="https://kohai.example.com")
    ctx = BotContext.build(settings)
    ctx.workers = []
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        started = httpx.get(f"{server.url}/login", timeout=10)
    ctx.store.close()
    assert started.status_code == 302
    cookie = started.headers["set-cookie"].lower()
    assert cookie.startswith(STATE_COOKIE + "=")
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    query = parse_qs(urlsplit(started.headers["location"]).query)
    assert query["redirect_uri"] == ["https://kohai.example.com/auth/callback"]
    assert query["client_id"] == [world.sandbox.client_id] and len(query["state"][0]) >= 32
