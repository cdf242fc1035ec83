"""The coding agent's only way out of its sandbox: a relay to its model endpoint.

The Claude Code CLI runs in a bubblewrap sandbox with a private network
namespace: nothing but its own loopback. Inside, `inside_main` listens on a
loopback port and relays each connection to a unix socket bound in from the
host; on the host, `ModelRelay` accepts on that socket and connects to one
target only, the model's host and port:

- an `https://` model URL: the CLI inside is given `HTTPS_PROXY` pointing at
  the relay, and the host side accepts only `CONNECT <model host>:<port>`, so
  TLS stays end to end between the CLI and the model API;
- an `http://` model URL (a local gateway, the tests' scripted API): the CLI
  inside is given a loopback base URL, and the host side connects every
  connection straight to the model's host and port.

Any other destination is unreachable from inside: there is no route, and
the relay names one target. Standard library only; this file also runs,
read-only, inside the sandbox (`python -I relay.py PORT SOCKET -- CLI ...`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

INSIDE_PROXY_PORT = 3128
DEFAULT_MODEL_URL = "https://api.anthropic.com"
BUFFER = 65536
CONNECT_HEAD_MAX = 8192


@dataclass(frozen=True)
class RelayPlan:
    """Where the relay connects, how, and what the CLI inside is told. Pure data."""

    host: str
    port: int
    mode: str  # "connect" (HTTPS through a CONNECT proxy) or "direct" (plain TCP)
    listen_port: int  # the loopback port the relay listens on inside the sandbox
    inside_env: dict[str, str]


def plan(base_url: str | None) -> RelayPlan:
    """The relay for a model base URL (None: Anthropic's API). Pure."""
    url = urlsplit(base_url or DEFAULT_MODEL_URL)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"the model URL must be http(s)://host[:port][/path], not {base_url!r}")
    host = url.hostname
    if url.scheme == "https":
        port = url.port or 443
        proxy = f"http://127.0.0.1:{INSIDE_PROXY_PORT}"
        env = {"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
        if base_url:
            env["ANTHROPIC_BASE_URL"] = base_url
        return RelayPlan(host, port, "connect", INSIDE_PROXY_PORT, env)
    port = url.port or 80
    netloc = f"127.0.0.1:{port}"
    inside = urlunsplit(("http", netloc, url.path, url.query, url.fragment))
    return RelayPlan(host, port, "direct", port, {"ANTHROPIC_BASE_URL": inside})


def connect_target(head: bytes) -> tuple[str, int] | None:
    """host and port of a `CONNECT host:port HTTP/1.1` request head, else None. Pure."""
    try:
        line = head.split(b"\r\n", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = line.split()
    if len(parts) != 3 or parts[0].upper() != "CONNECT" or not parts[2].startswith("HTTP/"):
        return None
    host, sep, port = parts[1].rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]").lower(), int(port)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides are done, then close both."""
    other = threading.Thread(target=_pump, args=(b, a), daemon=True)
    other.start()
    _pump(a, b)
    other.join()
    a.close()
    b.close()


class ModelRelay:
    """Host side: a unix socket in a private directory that reaches the model only."""

    def __init__(self, relay: RelayPlan) -> None:
        self.plan = relay
        self.refused: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="kohai-relay-")
        self.directory = Path(self._dir.name)
        self.socket_path = self.directory / "model.sock"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.socket_path))
        self._server.listen(16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="kohai-model-relay", daemon=True)

    def __enter__(self) -> ModelRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)
        self._dir.cleanup()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.plan.mode == "connect":
                head = b""
                while b"\r\n\r\n" not in head and len(head) < CONNECT_HEAD_MAX:
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                target = connect_target(head)
                if target != (self.plan.host.lower(), self.plan.port):
                    self.refused.append(repr(head[:100]))
                    client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    client.close()
                    return
                upstream = socket.create_connection((self.plan.host, self.plan.port), timeout=30)
                upstream.settimeout(None)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = head.split(b"\r\n\r\n", 1)[1]
                if rest:
                    upstream.sendall(rest)
            else:
                upstream = socket.create_connection((self.plan.host, self.plan.port), timeout=30)
                upstream.settimeout(None)
        except OSError:
            client.close()
            return
        _splice(client, upstream)


def inside_main(argv: list[str]) -> int:
    """In the sandbox: relay 127.0.0.1:PORT to SOCKET, run the command, exit with its code."""
    port, sock_path, sep, *command = argv
    if sep != "--" or not command:
        print("usage: relay.py PORT SOCKET -- COMMAND...", file=sys.stderr)
        return 2
    server = socket.create_server(("127.0.0.1", int(port)))

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(sock_path)
            except OSError:
                client.close()
                continue
            threading.Thread(target=_splice, args=(client, upstream), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130
    finally:
        server.close()


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(inside_main(sys.argv[1:]))
