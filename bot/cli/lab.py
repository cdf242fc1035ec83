"""A whole lab on loopback: the GitHub sandbox, the bot, and real host daemons.

The demo, the end-to-end tests and the benchmarks all need the same thing, a
lab that runs the production path (webhooks, outbox, leases, git over HTTP)
on one machine; this is its one home. Each caller picks what differs: the
advisor on or off, GitHub's write pacing (the benchmarks measure kohai's own
path, so they turn it off), a fixed port, how hosts are started.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.engine.jobs import register_student
from bot.store import Store


class LabError(RuntimeError):
    """A part of the local lab could not start; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread, as `kohai serve` runs it."""

    def __init__(self, app: Any, port: int | None = None, *, graceful_s: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=graceful_s,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise LabError("the bot server did not start (see the messages above)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalLab:
    """The sandbox GitHub and the bot, started together; hosts added one by one.

    `work` holds everything: the sandbox's repositories, the bot's SQLite file,
    each host's work directory and log. `stop()` ends the hosts first (SIGTERM,
    then SIGKILL to their session), then the bot, then the sandbox.
    """

    def __init__(
        self,
        work: Path,
        *,
        port: int | None = None,
        advisor: bool = False,
        anthropic_api_key: str | None = None,
        max_experiments: int = 0,
        pacing: bool = True,
        catch_up: bool = True,
        graceful_s: int | None = None,
        proxy: bool = False,
        dashboard_public: bool = True,
    ) -> None:
        self.work = work
        # The local lab's dashboard is open (KOHAI_DASHBOARD_PUBLIC=1) unless a test asks
        # for the GitHub sign-in, which then goes through the sandbox's OAuth pages.
        self.dashboard_public = dashboard_public
        self.port = port or free_port()
        self.bot_url = f"http://127.0.0.1:{self.port}"
        self.advisor = advisor
        self.anthropic_api_key = anthropic_api_key
        self.max_experiments = max_experiments
        self.pacing = pacing
        self.catch_up = catch_up
        self.graceful_s = graceful_s
        self.proxy = proxy  # webhooks through the sandbox's smee-compatible channel
        self.hosts: dict[str, subprocess.Popen[bytes]] = {}
        self._started: list[Any] = []

    def start(self) -> LocalLab:
        from bot.cli.serve import build_context
        from bot.github.client import GitHubApp
        from sandbox.control import SandboxControl
        from sandbox.server import SandboxServer
        from webhooks.app import create_app

        self.work.mkdir(parents=True, exist_ok=True)
        self.sandbox = SandboxServer(
            self.work / "github", webhook_url=f"{self.bot_url}/webhooks/github"
        ).start()
        self._started.append(self.sandbox)
        channel = None
        if self.proxy:  # GitHub cannot reach the bot: it posts to a channel the bot reads
            channel = f"{self.sandbox.url}/_channels/{self.port}"
            self.sandbox.set_webhook_url(channel)
        self.sandbox.set_callback_urls([f"{self.bot_url}/auth/callback"])
        self.control = SandboxControl(self.sandbox.url)
        self.settings = Settings(
            app_id=self.sandbox.app_id,
            private_key=self.sandbox.private_key_pem,
            webhook_secret=self.sandbox.webhook_secret,
            github_api_url=self.sandbox.url,
            db_path=str(self.work / "kohai.db"),
            public_url=self.bot_url,
            anthropic_api_key=self.anthropic_api_key,
            advisor=self.advisor,
            catch_up=self.catch_up,
            webhook_proxy_url=channel,
            dashboard_public=self.dashboard_public,
            github_client_id=self.sandbox.client_id,
            github_client_secret=self.sandbox.client_secret,
        )
        github = None
        if not self.pacing:
            github = GitHubApp(
                self.settings.app_id,
                self.settings.private_key,
                self.sandbox.url,
                content_per_minute=None,
                content_per_hour=None,
                writes_per_minute=None,
            )
        self.ctx = build_context(self.settings, github=github, max_experiments=self.max_experiments)
        self.server = ServerThread(
            create_app(self.ctx), port=self.port, graceful_s=self.graceful_s
        ).start()
        self._started.append(self.server)
        # A reading connection of the caller's own: the bot's belongs to the server's thread.
        self.store = Store(self.settings.db_path)
        self._started.append(self.store)
        return self

    # ------------------------------------------------------------- set-up

    def add_repo(
        self, full_name: str, files: dict[str, str] | None = None, from_path: Path | None = None
    ) -> None:
        """A problem repository in the sandbox, with the App installed on it."""
        self.sandbox.create_repo(full_name, files=files, from_path=from_path)

    def register(self, name: str) -> str:
        """Register a student through a connection of this call's own; its host token."""
        store = Store(self.settings.db_path)
        try:
            return register_student(store, name)
        finally:
            store.close()

    def add_host(
        self,
        name: str,
        *,
        token: str | None = None,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
        unsandboxed: bool = False,
    ) -> subprocess.Popen[bytes]:
        """A real host daemon for student `name`, its output in `host-NAME.log`."""
        from trainer.daemon import spawn

        token = token or self.register(name)
        log = open(self.work / f"host-{name}.log", "wb")  # lives as long as the host
        # Before the daemon runs anything, so every run inherits its cores.
        preexec = functools.partial(os.sched_setaffinity, 0, cpus) if cpus else None
        process = spawn(
            name,
            token,
            self.bot_url,
            self.work / f"host-{name}",
            env={**os.environ, **(env or {})},
            unsandboxed=unsandboxed,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
        log.close()  # the child holds its own copy
        self.hosts[name] = process
        return process

    # ------------------------------------------------------------- reading

    def q(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return self.store.query(sql, params)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 120) -> Any:
        """Poll `predicate` until it is truthy; its value, or AssertionError naming `what`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    # ------------------------------------------------------------- tear-down

    def stop_hosts(self, timeout: float = 20) -> None:
        for process in self.hosts.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.hosts.values():
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()

    def stop(self) -> None:
        self.stop_hosts()
        for thing in reversed(self._started):
            try:
                thing.stop() if hasattr(thing, "stop") else thing.close()
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                print(f"local lab: stopping {type(thing).__name__}: {exc}")
        self._started.clear()

    def __enter__(self) -> LocalLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
