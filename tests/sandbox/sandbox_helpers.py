"""Helpers for the sandbox tests: git on the command line, the bot's branch recipe."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from githubkit import GitHub

from sandbox.server import SandboxServer

REPO = "lab/charlm"
OWNER, NAME = REPO.split("/")


class Receiver:
    """A loopback webhook endpoint that records every delivery it gets."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(receiver.delay_s)
                receiver.received.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/github"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self, name: str, action: str | None = None) -> list[dict[str, Any]]:
        found = []
        for item in self.received:
            if item["headers"].get("X-GitHub-Event") != name:
                continue
            payload = json.loads(item["body"])
            if action is None or payload.get("action") == action:
                found.append(payload)
        return found


def git(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "fern",
        "GIT_AUTHOR_EMAIL": "fern@hosts.sandbox",
        "GIT_COMMITTER_NAME": "fern",
        "GIT_COMMITTER_EMAIL": "fern@hosts.sandbox",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=check
    )


def token_url(sandbox: SandboxServer | str, token: str, repo: str = REPO) -> str:
    """A clone URL carrying `token` as GitHub expects it (x-access-token:<token>)."""
    base = sandbox if isinstance(sandbox, str) else sandbox.url
    return base.replace("http://", f"http://x-access-token:{token}@") + f"/{repo}.git"


def start_branch(gh: GitHub[Any], branch: str, message: str, base: str = "main") -> str:
    """What the bot does: an empty commit on the base tree, then the branch ref."""
    base_sha = gh.rest.git.get_ref(OWNER, NAME, f"heads/{base}").parsed_data.object_.sha
    tree = gh.rest.git.get_commit(OWNER, NAME, base_sha).parsed_data.tree.sha
    commit = gh.rest.git.create_commit(
        OWNER, NAME, message=message, tree=tree, parents=[base_sha]
    ).parsed_data
    gh.rest.git.create_ref(OWNER, NAME, ref=f"refs/heads/{branch}", sha=commit.sha)
    return commit.sha
