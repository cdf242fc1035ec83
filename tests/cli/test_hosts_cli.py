"""`kohai hosts` and `kohai host run --bot-url`: a host registered once, in the bot's database,
pointed at a bot it can reach, with one meaning of `--gpus`.

The commands run in child processes; the bot is the real litestar app on loopback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.cli.lab import ServerThread, free_port
from bot.config import Settings
from bot.engine.jobs import authenticate, register_student
from bot.gpus import GpuSpecError, format_gpus, parse_gpus
from bot.store import Store
from tests.support.kohai_cli import kohai, one_line
from trainer.connect import bot_url_problem
from webhooks.app import create_app
from webhooks.context import BotContext


def _students(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, gpus FROM students").fetchall())


def _accepts(db: Path, name: str, token: str) -> bool:
    store = Store(db)
    try:
        return authenticate(store, name, token)
    finally:
        store.close()


def test_hosts_add_needs_the_bots_database_or_create(tmp_path: Path) -> None:
    # It used to create kohai.db silently in the current directory.
    done = kohai("hosts", "add", "fern", cwd=tmp_path)
    assert done.returncode == 1
    assert "no kohai database at kohai.db" in one_line(done.stderr)
    assert "--create" in done.stderr
    assert list(tmp_path.iterdir()) == []

    made = kohai("hosts", "add", "fern", "--create", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert _students(tmp_path / "kohai.db") == {"fern": 0}


def test_a_second_add_refuses_and_rotate_is_the_way_to_a_new_token(tmp_path: Path) -> None:
    db = tmp_path / "bot" / "kohai.db"
    db.parent.mkdir()
    env = {"KOHAI_DB": str(db), "KOHAI_PUBLIC_URL": "https://kohai.example.com/"}
    first = kohai("hosts", "add", "fern", "--gpus", "0,1", "--create", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()  # stdout is the token alone: TOKEN=$(kohai hosts add fern)
    assert token.startswith("kohai_h_") and "\n" not in token
    assert (
        "kohai host run --name fern --token-file fern.token (mode 0600) "
        "--bot-url https://kohai.example.com --gpus 0,1"
    ) in first.stderr

    # A second `hosts add fern` used to print a new token and silently lock out the first.
    again = kohai("hosts", "add", "fern", cwd=tmp_path, env=env)
    assert again.returncode == 1 and again.stdout == ""
    assert "already registered" in one_line(again.stderr) and "hosts rotate fern" in again.stderr
    assert _accepts(db, "fern", token)

    rotated = kohai("hosts", "rotate", "fern", cwd=tmp_path, env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new != token and "stops working" in rotated.stderr
    assert _accepts(db, "fern", new) and not _accepts(db, "fern", token)
    assert _students(db) == {"fern": 2}  # rotating keeps what was registered

    unknown = kohai("hosts", "rotate", "himmel", cwd=tmp_path, env=env)
    assert unknown.returncode == 1 and "no student himmel" in one_line(unknown.stderr)

    listed = kohai("hosts", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0
    header, row = listed.stdout.strip().splitlines()
    assert header.split() == ["student", "gpus", "state", "labs"]
    assert row.split() == ["fern", "2", "idle", "all"]


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("0,1", [0, 1]),
        ("2,3", [2, 3]),
        ("4", [0, 1, 2, 3]),  # a bare number is a count, as Docker's --gpus 4
        ("1", [0]),
        ("0", []),
        ("3,", [3]),  # one device other than the first
        ("device=3", [3]),
        ("", []),
        ("none", []),
        (" 0, 1 ", [0, 1]),
    ],
)
def test_gpus_has_one_meaning(text: str, ids: list[int]) -> None:
    assert parse_gpus(text) == ids
    assert parse_gpus(format_gpus(ids)) == ids


@pytest.mark.parametrize("text", ["x", "0,a", "-1", "1.5", ",", "0,0", "all"])
def test_a_gpus_value_that_is_neither_is_refused(text: str) -> None:
    with pytest.raises(GpuSpecError):
        parse_gpus(text)


def test_hosts_add_reads_gpus_as_host_run_does(tmp_path: Path) -> None:
    env = {"KOHAI_DB": str(tmp_path / "kohai.db")}
    for name, gpus in (("fern", "4"), ("frieren", "2,3"), ("himmel", "0")):
        done = kohai("hosts", "add", name, "--gpus", gpus, "--create", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    assert _students(tmp_path / "kohai.db") == {"fern": 4, "frieren": 2, "himmel": 0}
    bad = kohai("hosts", "add", "stark", "--gpus", "two", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--gpus 'two'" in one_line(bad.stderr)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://kohai.example.com", True),
        ("http://127.0.0.1:8000/", True),
        ("https://example.com/kohai", True),
        ("kohai.example.com", False),
        ("kohai.example.com:8000", False),
        ("ftp://kohai.example.com", False),
        ("https://", False),
        ("https://kohai.example.com/?x=1", False),
    ],
)
def test_bot_url_needs_a_scheme_and_a_host(url: str, ok: bool) -> None:
    assert (bot_url_problem(url) is None) is ok


@pytest.fixture
def bot(tmp_path: Path, pem: str) -> Iterator[tuple[Path, ServerThread]]:
    """The real bot app on loopback (no workers: only the host API and health answer here)."""
    db = tmp_path / "kohai.db"
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="http://127.0.0.1:9",
        db_path=str(db),
    )
    ctx = BotContext.build(settings)
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        yield db, server


def test_host_run_checks_the_bot_url_at_start(tmp_path: Path, bot) -> None:
    db, server = bot
    env = {"KOHAI_DB": str(db)}
    fern = kohai("hosts", "add", "fern", cwd=tmp_path, env=env).stdout.strip()
    frieren = kohai("hosts", "add", "frieren", cwd=tmp_path, env=env).stdout.strip()
    work = ["--work-dir", str(tmp_path / "host"), "--unsandboxed"]

    # No scheme: it used to retry `kohai.example.com/api/...` forever (the timeout fails it).
    done = kohai(
        "host", "run", "--name", "fern", "--bot-url", "kohai.example.com", *work,
        cwd=tmp_path, env={"KOHAI_HOST_TOKEN": fern}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "is not an http(s) URL" in one_line(done.stderr)
    assert "https://kohai.example.com" in done.stderr

    # A token the bot does not know, and another student's token: one line each.
    unknown, others = tmp_path / "unknown.token", tmp_path / "frieren.token"
    for path, token in ((unknown, "kohai_h_not-a-token"), (others, frieren)):
        path.write_text(token + "\n")
        path.chmod(0o600)
    wrong = kohai(
        "host", "run", "--bot-url", server.url, *work,
        "--student", f"fern:0:{unknown}", "--student", f"himmel::{others}",
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    lines = wrong.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in wrong.stderr
    assert "does not accept the token for student fern" in lines[0]
    assert "belongs to another student" in lines[1]

    # Nothing listens: one line after the bounded wait, not a retry loop.
    dead = f"http://127.0.0.1:{free_port()}"
    gone = kohai(
        "host", "run", "--name", "fern", "--bot-url", dead, *work,
        cwd=tmp_path, env={"KOHAI_HOST_TOKEN": fern, "KOHAI_BOT_WAIT_S": "0"}, timeout=60,
    )  # fmt: skip
    assert gone.returncode == 2
    assert f"cannot reach the bot at {dead}" in one_line(gone.stderr)


def test_the_token_check_leases_nothing(bot) -> None:
    db, server = bot
    store = Store(db)
    token = register_student(store, "fern")
    other = register_student(store, "frieren")
    store.close()
    url = f"{server.url}/api/hosts/fern/whoami"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json() == {
        "student": "fern"
    }
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 403
