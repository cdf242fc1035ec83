"""`SandboxServer`: the sandbox in-process, for tests, the demo and the CLI.

uvicorn runs in a background thread; `start()` returns once the port is
listening, so a caller can point githubkit at `.url` straight away.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from sandbox import auth
from sandbox.app import build_app
from sandbox.world import World


class SandboxServer:
    """A local GitHub on loopback, its state kept under `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        webhook_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.world = World(self.data_dir)
        self._initial_webhook_url = webhook_url
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> SandboxServer:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only
        # for sockets that say they are TCP, and without it every answer waits ~40 ms
        # for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        self.world.base_url = self.url
        self.world.deliverer.start()
        config = uvicorn.Config(
            build_app(self.world), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="sandbox-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox's HTTP server did not start")
            time.sleep(0.01)
        if self._initial_webhook_url is not None and (
            self._initial_webhook_url != self.world.data["app"]["webhook_url"]
        ):
            self.world.set_webhook_url(self._initial_webhook_url)
        return self

    def stop(self) -> None:
        """Stop serving, let queued webhooks go out, close everything; safe to repeat."""
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.world.deliverer.wait_idle(timeout=5)
        self.world.deliverer.stop()
        if self._socket is not None:
            self._socket.close()
        self.world.state.save()
        self._server = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def app_id(self) -> int:
        return int(self.world.data["app"]["id"])

    @property
    def app_slug(self) -> str:
        return str(self.world.data["app"]["slug"])

    @property
    def bot_login(self) -> str:
        return self.world.bot_login

    @property
    def private_key_pem(self) -> str:
        return str(self.world.data["app"]["private_key_pem"])

    @property
    def private_key_path(self) -> Path:
        return self.world.private_key_path

    @property
    def client_id(self) -> str:
        """The App's OAuth client id, for the user sign-in flow."""
        return auth.client_id_of(self.app_id)

    @property
    def client_secret(self) -> str:
        return str(self.world.data["app"]["client_secret"])

    def set_callback_urls(self, urls: list[str]) -> None:
        self.world.set_callback_urls(urls)

    @property
    def webhook_secret(self) -> str:
        return str(self.world.data["app"]["webhook_secret"])

    def create_repo(
        self,
        full_name: str,
        from_path: Path | None = None,
        files: dict[str, str] | None = None,
        install: bool = True,
        private: bool = False,
    ) -> dict[str, Any]:
        return self.world.create_repo(
            full_name,
            from_path=Path(from_path) if from_path else None,
            files=files,
            install=install,
            private=private,
        )

    def set_webhook_url(self, url: str | None) -> None:
        self.world.set_webhook_url(url)

    def repo_path(self, full_name: str) -> Path:
        return self.world.repo_path(full_name)

    def clone_url(self, full_name: str) -> str:
        return f"{self.url}/{full_name}.git"

    def user_token(self, login: str) -> str:
        return self.world.user_token(login)

    def installation_id(self, full_name: str) -> int | None:
        return self.world.installation_id_of(full_name)

    def wait_deliveries(self, timeout: float = 10.0) -> bool:
        """Block until every queued webhook has been attempted."""
        return self.world.deliverer.wait_idle(timeout)
