"""A lab on loopback for benchmarks: the sandbox GitHub and the bot, without advisor or pacing.

GitHub's content-creation pacing (80 writes a minute) would dominate after a
few experiments; the benchmarks measure kohai's own path, so it is off here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.cli.serve import build_context  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.github import GitHubApp  # noqa: E402
from bot.jobs import register_student  # noqa: E402
from sandbox.control import SandboxControl  # noqa: E402
from sandbox.server import SandboxServer  # noqa: E402
from tests.conftest import ServerThread, free_port  # noqa: E402
from webhooks.app import create_app  # noqa: E402


@dataclass
class Lab:
    sandbox: SandboxServer
    server: ServerThread
    ctx: Any
    control: SandboxControl
    token: str

    def stop(self) -> None:
        self.server.stop()
        self.sandbox.stop()


def start_lab(
    tmp: Path,
    repo: str,
    student: str,
    *,
    files: dict[str, str] | None = None,
    from_path: Path | None = None,
) -> Lab:
    """Start both servers, register `student` and create `repo` with the App installed."""
    port = free_port()
    sandbox = SandboxServer(
        tmp / "gh", webhook_url=f"http://127.0.0.1:{port}/webhooks/github"
    ).start()
    settings = Settings(
        app_id=sandbox.app_id,
        private_key=sandbox.private_key_pem,
        webhook_secret=sandbox.webhook_secret,
        github_api_url=sandbox.url,
        db_path=str(tmp / "kohai.db"),
        advisor=False,
        catch_up=False,
    )
    github = GitHubApp(
        settings.app_id,
        settings.private_key,
        sandbox.url,
        writes_per_minute=None,
        writes_per_hour=None,
    )
    ctx = build_context(settings, github=github)
    server = ServerThread(create_app(ctx), port=port).start()
    token = register_student(ctx.store, student)
    sandbox.create_repo(repo, files=files, from_path=from_path)
    return Lab(sandbox, server, ctx, SandboxControl(sandbox.url), token)
