"""`kohai sandbox`: the local GitHub alone, with one repo and the App installed.

Prints the bot's settings as `KOHAI_...=value` lines, ready to paste into the
environment of `kohai serve`, and the human users' tokens for curl or git.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from sandbox.server import SandboxServer

REFERENCE_PROBLEM = Path(__file__).resolve().parent.parent / "trainer" / "examples" / "charlm"


def settings_lines(server: SandboxServer) -> list[str]:
    """The lines a user pastes into the bot's environment, then the users' tokens."""
    lines = [
        f"KOHAI_GITHUB_API_URL={server.url}",
        f"KOHAI_GITHUB_APP_ID={server.app_id}",
        f"KOHAI_GITHUB_PRIVATE_KEY_PATH={server.private_key_path}",
        f"KOHAI_WEBHOOK_SECRET={server.webhook_secret}",
        f"KOHAI_GITHUB_CLIENT_ID={server.client_id}",
        f"KOHAI_GITHUB_CLIENT_SECRET={server.client_secret}",
    ]
    for login, record in sorted(server.world.data["users"].items()):
        if record["type"] == "User":
            lines.append(f"# {login} ({record['role']}): token {record['token']}")
    return lines


def callback_url_for(webhook_url: str) -> str | None:
    """The bot's sign-in callback on the host that receives the webhooks.

    `http://127.0.0.1:8000/webhooks/github` -> `http://127.0.0.1:8000/auth/callback`.
    """
    parts = urlsplit(webhook_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}/auth/callback"


def source_for(from_path: str | None) -> Path | None:
    """The directory to import: --from, else the reference problem if present."""
    if from_path:
        path = Path(from_path)
        if not path.is_dir():
            raise SystemExit(f"--from {from_path}: not a directory")
        return path
    return REFERENCE_PROBLEM if REFERENCE_PROBLEM.is_dir() else None


def limit_settings(args: argparse.Namespace) -> dict[str, int | None]:
    """`--rate-limit` and `--secondary-limit` as `sandbox.limits.Settings` fields (0: off)."""
    budget = getattr(args, "rate_limit", 5000)
    secondary = getattr(args, "secondary_limit", 0)
    return {"budget": budget or None, "secondary_per_minute": secondary or None}


def main(args: argparse.Namespace) -> int:
    server = SandboxServer(
        Path(args.data), webhook_url=args.webhook_url or None, host=args.host, port=args.port
    )
    server.world.limits.configure(limit_settings(args))
    server.start()
    stopped = threading.Event()
    try:
        if args.repo not in server.world.data["repos"]:
            source = source_for(args.from_path)
            files = None if source else {"README.md": f"# {args.repo.split('/')[-1]}\n"}
            server.create_repo(args.repo, from_path=source, files=files)
        callback = callback_url_for(args.webhook_url or "")
        if callback and not server.world.data["app"]["callback_urls"]:
            server.set_callback_urls([callback])
        for line in settings_lines(server):
            print(line)
        print(f"# repository: {server.url}/{args.repo}.git  (state in {Path(args.data).resolve()})")
        print(f"# sign-in callback URLs: {server.world.data['app']['callback_urls'] or 'none'}")
        limits = server.world.limits.settings
        print(
            f"# rate limits: {limits.budget or 'no'} requests/hour per installation, "
            f"{limits.secondary_per_minute or 'no'} content-creating requests/minute"
        )
        print(f"# webhooks go to {server.world.data['app']['webhook_url']}; Ctrl-C stops")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
