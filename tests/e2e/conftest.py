"""A whole lab on loopback: the sandbox GitHub, the bot, and real host daemons."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.jobs import register_student
from bot.store import Store
from tests.conftest import ServerThread, free_port
from trainer.daemon import spawn

ROOT = Path(__file__).resolve().parents[2]
CHARLM = ROOT / "trainer" / "examples" / "charlm"


def problem_files(budget: str = "8s", **train: Any) -> dict[str, str]:
    """The reference problem with a short budget (and other [train] overrides)."""
    files = {p.name: p.read_text() for p in CHARLM.iterdir() if p.is_file()}
    toml = files["kohai.toml"]
    toml = re.sub(r"^budget = .*$", f'budget = "{budget}"', toml, count=1, flags=re.M)
    toml = re.sub(r"^grace = .*$", 'grace = "10s"', toml, count=1, flags=re.M)
    for key, value in train.items():
        toml = re.sub(rf"^{key} = .*$", f"{key} = {value}", toml, flags=re.M)
    files["kohai.toml"] = toml
    return files


@dataclass
class Lab:
    tmp: Path
    sandbox: Any
    control: Any
    bot_url: str
    ctx: Any
    repo: str = "lab/charlm"
    hosts: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def register(self, name: str) -> str:
        """Register a student through a connection of the test's own.

        The bot's store belongs to the server's thread, which may be inside a
        transaction at that moment.
        """
        store = Store(self.ctx.settings.db_path)
        try:
            return register_student(store, name)
        finally:
            store.close()

    def add_host(self, name: str) -> subprocess.Popen[bytes]:
        token = self.register(name)
        log = open(self.tmp / f"host-{name}.log", "wb")
        env = {**os.environ, "WANDB_MODE": "disabled", "KOHAI_WANDB": "disabled"}
        process = spawn(
            name,
            token,
            self.bot_url,
            self.tmp / f"host-{name}",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.hosts.append(process)
        return process

    def q(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return self.ctx.store.query(sql, params)


@pytest.fixture
def make_lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    from bot.cli.serve import build_context
    from sandbox.control import SandboxControl
    from sandbox.server import SandboxServer
    from webhooks.app import create_app

    started: list[Any] = []

    def make(
        *, advisor: bool = False, files: dict[str, str] | None = None, max_experiments: int = 0
    ) -> Lab:
        port = free_port()
        sandbox = SandboxServer(
            tmp_path / "sandbox", webhook_url=f"http://127.0.0.1:{port}/webhooks/github"
        ).start()
        started.append(sandbox)
        settings = Settings(
            app_id=sandbox.app_id,
            private_key=sandbox.private_key_pem,
            webhook_secret=sandbox.webhook_secret,
            github_api_url=sandbox.url,
            db_path=str(tmp_path / "kohai.db"),
            advisor=advisor,
        )
        ctx = build_context(settings, max_experiments=max_experiments)
        server = ServerThread(create_app(ctx), port=port).start()
        started.append(server)
        lab = Lab(tmp_path, sandbox, SandboxControl(sandbox.url), server.url, ctx)
        started.append(lab)
        sandbox.create_repo(lab.repo, files=files or problem_files())
        return lab

    yield make
    for thing in reversed(started):
        if isinstance(thing, Lab):
            for process in thing.hosts:
                process.send_signal(signal.SIGTERM)
            for process in thing.hosts:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        else:
            thing.stop()
