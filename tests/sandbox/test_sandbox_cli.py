"""`kohai sandbox` as a user runs it: a real process, settings printed, repo imported."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sandbox_helpers import git, token_url

from sandbox.cli import REFERENCE_PROBLEM, callback_url_for, source_for


def _read_settings(process: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("# webhooks go to"):
            return lines
    raise AssertionError(f"no settings printed: {lines}")


def test_cli_prints_settings_and_serves_the_imported_repo(tmp_path: Path) -> None:
    problem = tmp_path / "problem"
    problem.mkdir()
    (problem / "kohai.toml").write_text('[metric]\nname = "val_bpb"\n')
    (problem / "train.py").write_text("print('val_bpb: 1.0')\n")
    command = [
        sys.executable,
        "-c",
        "import sys; from bot.cli import main; sys.exit(main(sys.argv[1:]))",
        "sandbox",
        "--port",
        "0",
        "--data",
        str(tmp_path / "data"),
        "--webhook-url",
        "",
        "--repo",
        "lab/demo",
        "--from",
        str(problem),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        lines = _read_settings(process)
        settings = dict(line.split("=", 1) for line in lines if line.startswith("KOHAI_"))
        assert set(settings) == {
            "KOHAI_GITHUB_API_URL",
            "KOHAI_GITHUB_APP_ID",
            "KOHAI_GITHUB_PRIVATE_KEY_PATH",
            "KOHAI_WEBHOOK_SECRET",
            "KOHAI_GITHUB_CLIENT_ID",
            "KOHAI_GITHUB_CLIENT_SECRET",
        }
        assert (
            "BEGIN RSA PRIVATE KEY" in Path(settings["KOHAI_GITHUB_PRIVATE_KEY_PATH"]).read_text()
        )
        info = httpx.get(settings["KOHAI_GITHUB_API_URL"] + "/_sandbox/info", timeout=10).json()
        assert str(info["app_id"]) == settings["KOHAI_GITHUB_APP_ID"]
        assert info["client_id"] == settings["KOHAI_GITHUB_CLIENT_ID"]
        assert info["client_secret"] == settings["KOHAI_GITHUB_CLIENT_SECRET"]
        assert info["repos"] == ["lab/demo"]
        bob = info["users"]["bob"]["token"]
        assert any(line.startswith("# bob (write): token ghp_") for line in lines)

        clone = tmp_path / "clone"
        git("clone", "-q", token_url(settings["KOHAI_GITHUB_API_URL"], bob, "lab/demo"), str(clone))
        assert sorted(p.name for p in clone.iterdir() if p.name != ".git") == [
            "kohai.toml",
            "train.py",
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_the_callback_url_is_derived_from_the_webhook_url() -> None:
    assert callback_url_for("http://127.0.0.1:8000/webhooks/github") == (
        "http://127.0.0.1:8000/auth/callback"
    )
    assert callback_url_for("https://kohai.example.com/webhooks/github?x=1") == (
        "https://kohai.example.com/auth/callback"
    )
    assert callback_url_for("") is None
    assert callback_url_for("ftp://example.com/hook") is None


def test_the_reference_problem_is_the_default_source() -> None:
    expected = REFERENCE_PROBLEM if REFERENCE_PROBLEM.is_dir() else None
    assert source_for(None) == expected
