"""Honest health: `kohai serve` stops when GitHub rejects the App; `/healthz` answers 503 with
the reasons while anything is wrong and 200 once it works; `/livez` answers while the process
serves; a failed catch-up is retried when GitHub's Retry-After allows, not minutes later.

Against the GitHub sandbox (a key GitHub rejects, the fault switch), `kohai serve` in a child
process and the litestar app over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.cli.lab import ServerThread, free_port
from bot.cli.serve import (
    CATCH_UP_RETRY_CAP_S,
    build_context,
    catch_up_due,
    catch_up_once,
    catch_up_retry_s,
    github_pass,
)
from bot.config import Settings
from bot.github.client import GitHubApp
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.conftest import rsa_pem
from tests.support.kohai_cli import ROOT, kohai
from webhooks.app import create_app, health
from webhooks.context import BotContext

REPO = "lab/health"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    data = tmp_path_factory.mktemp("sandbox")
    with SandboxServer(data, webhook_url="http://127.0.0.1:9/nowhere") as server:
        server.create_repo(REPO, files={"README.md": "# not a lab\n"})
        yield server


def _env(sandbox: SandboxServer, tmp_path: Path, key: str) -> dict[str, str]:
    return {
        "KOHAI_GITHUB_API_URL": sandbox.url,
        "KOHAI_GITHUB_APP_ID": str(sandbox.app_id),
        "KOHAI_GITHUB_PRIVATE_KEY": key,
        "KOHAI_WEBHOOK_SECRET": sandbox.webhook_secret,
        "KOHAI_DB": str(tmp_path / "kohai.db"),
        "KOHAI_ADVISOR": "off",
    }


def _serve(env: dict[str, str], tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("KOHAI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--port", str(port), *extra],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_answer(proc: subprocess.Popen[str], url: str, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_stops_when_github_rejects_the_credentials(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # It used to log one error and keep serving, with /healthz answering 200.
    done = kohai("serve", cwd=tmp_path, env=_env(sandbox, tmp_path, rsa_pem()), timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert lines[0].startswith(
        f"kohai serve: GitHub rejected the App credentials (app id {sandbox.app_id}): 401"
    ), done.stderr
    assert "--wait-for-github" in lines[-1] and len(lines) == 2


def test_serve_stops_when_github_cannot_be_reached(tmp_path: Path, pem: str) -> None:
    env = {
        "KOHAI_GITHUB_API_URL": f"http://127.0.0.1:{free_port()}",
        "KOHAI_GITHUB_APP_ID": "1",
        "KOHAI_GITHUB_PRIVATE_KEY": pem,
        "KOHAI_WEBHOOK_SECRET": "s",
        "KOHAI_DB": str(tmp_path / "kohai.db"),
    }
    done = kohai("serve", cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("kohai serve: cannot reach GitHub at http://127.0.0.1:")


def test_waiting_for_github_serves_503_with_the_reason_and_livez(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    env = _env(sandbox, tmp_path, rsa_pem())
    proc, url = _serve(env, tmp_path, "--wait-for-github")
    try:
        assert _wait_answer(proc, url + "/livez").status_code == 200
        deadline = time.monotonic() + 60
        while True:  # the first GitHub check runs beside start-up
            answer = httpx.get(url + "/healthz", timeout=10)
            reasons = answer.json()["reasons"]
            if any("rejected the App credentials" in r for r in reasons):
                break
            assert time.monotonic() < deadline, reasons
            time.sleep(0.3)
        assert answer.status_code == 503
        assert answer.json()["ok"] is False
        assert "inbox" in answer.json() and "workers" in answer.json()  # depths either way
    finally:
        _stop(proc)


def test_healthz_answers_200_when_everything_works(sandbox: SandboxServer, tmp_path: Path) -> None:
    env = _env(sandbox, tmp_path, sandbox.private_key_pem)
    proc, url = _serve(env, tmp_path)
    try:
        _wait_answer(proc, url + "/livez")
        deadline = time.monotonic() + 90
        while (answer := httpx.get(url + "/healthz", timeout=10)).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, answer.json()["reasons"]
            time.sleep(0.3)
        assert answer.json()["ok"] is True and answer.json()["reasons"] == []
    finally:
        _stop(proc)


def test_a_lab_stopped_by_an_invalid_kohai_toml_is_a_reason(tmp_path: Path, pem: str) -> None:
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="http://127.0.0.1:9",
        db_path=str(tmp_path / "kohai.db"),
    )
    ctx = BotContext.build(settings)
    with ctx.store.transaction():
        ctx.store.insert(
            "repos",
            {
                "full_name": "lab/typo",
                "installation_id": 1,
                "problem_toml": '[metric]\ndirection = "sideways"\n',
                "created_at": 0,
            },
        )
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        stopped = httpx.get(server.url + "/healthz")
        assert stopped.status_code == 503
        (reason,) = stopped.json()["reasons"]
        assert reason.startswith("lab lab/typo is stopped: kohai.toml on main is invalid: ")
        with ctx.store.transaction():
            ctx.store.execute(
                "UPDATE repos SET problem_toml = ? WHERE full_name = 'lab/typo'",
                ('[metric]\nname = "loss"\n',),
            )
        assert httpx.get(server.url + "/healthz").status_code == 200
        assert httpx.get(server.url + "/livez").json() == {"ok": True}


@pytest.mark.parametrize(
    ("failures", "retry_after", "expected"),
    [
        (1, None, 5.0),
        (2, None, 10.0),
        (4, None, 40.0),
        (5, None, CATCH_UP_RETRY_CAP_S),
        (30, None, CATCH_UP_RETRY_CAP_S),
        (1, 7.0, 7.0),  # GitHub named the time: that, not our backoff
        (6, 3.0, 3.0),
        (1, 300.0, 300.0),
    ],
)
def test_catch_up_retry_delay(failures: int, retry_after: float | None, expected: float) -> None:
    assert catch_up_retry_s(failures, retry_after) == expected


def test_catch_up_is_due_on_retry_or_period() -> None:
    assert catch_up_due({"caught_up": 0.0}, 10.0, 180.0)  # never ran
    assert not catch_up_due({"caught_up": 100.0}, 200.0, 180.0)
    assert catch_up_due({"caught_up": 100.0}, 280.0, 180.0)
    assert not catch_up_due({"caught_up": 100.0, "retry_at": 107.0}, 106.0, 180.0)
    assert catch_up_due({"caught_up": 100.0, "retry_at": 107.0}, 107.0, 180.0)


async def test_a_refused_catch_up_is_retried_when_github_allows(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """A delivery missed while the bot was down is asked for again right after Retry-After."""
    with SandboxControl(sandbox.url) as control:
        sandbox.wait_deliveries()
        issue = control.open_issue(REPO, "/rerun while the bot is down", as_user="bob")
        missed = [
            d
            for d in control.deliveries()
            if d["event"] == "issues"
            and d["request"]["payload"]["issue"]["number"] == issue["number"]
        ]
        assert missed and missed[-1]["status_code"] != 200
        earlier = {d["id"] for d in control.deliveries() if d.get("redelivery")}  # other tests'
        settings = Settings(
            app_id=sandbox.app_id,
            private_key=sandbox.private_key_pem,
            webhook_secret=sandbox.webhook_secret,
            github_api_url=sandbox.url,
            db_path=str(tmp_path / "kohai.db"),
            advisor=False,
        )
        # One attempt per request: the refusal reaches catch-up as GitHub gave it.
        github = GitHubApp(
            settings.app_id, settings.private_key, settings.github_api_url, max_attempts=1
        )
        ctx = build_context(settings, github=github)
        ctx.extra["catch_up_every_s"] = 180.0
        control.fault(1, kind="secondary_rate_limit", retry_after=2)
        before = time.time()
        assert await catch_up_once(ctx) == []
        state = ctx.extra["github_pass"]
        assert state["retry_at"] >= before + 2  # not before GitHub allows it
        assert state["retry_at"] <= time.time() + 2  # and not at the next periodic pass
        (reason,) = [r for r in health(ctx)["reasons"] if "catch-up" in r]
        assert "secondary rate limit" in reason and "retrying in 2s" in reason
        state["caught_up"] = time.time()  # as github_pass records the pass it ran

        while time.time() < state["retry_at"]:
            await github_pass(ctx)  # not due yet: nothing is asked for
            time.sleep(0.2)
        asked_before = [d for d in control.deliveries() if d.get("redelivery")]
        assert {d["id"] for d in asked_before} == earlier
        await github_pass(ctx)
        redelivered = [
            d for d in control.deliveries() if d.get("redelivery") and d["id"] not in earlier
        ]
        assert missed[-1]["guid"] in {d["guid"] for d in redelivered}
        assert not [r for r in health(ctx)["reasons"] if "catch-up" in r]
        assert "retry_at" not in state
        await github.aclose()
