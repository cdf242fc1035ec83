"""`kohai setup`: register the GitHub App through GitHub's manifest flow, Probot-style.

kohai serves a small local page whose form posts the App's manifest (the one
`kohai app manifest` prints, from `bot.deploy.app_manifest`) to GitHub, for the
user's account or an organisation (`--org`). GitHub shows its own confirmation,
creates the App and sends the browser back to kohai's own callback with a
one-time code; kohai converts the code (`POST /app-manifests/{code}/conversions`)
into the App's credentials and writes them all to one file, mode 0600, that
`kohai serve` reads. Nothing is copied by hand from an address bar.

On a machine without a browser (`--no-browser`) the page's address is printed;
open it through an SSH tunnel (`ssh -L PORT:127.0.0.1:PORT host`), since GitHub
sends the browser back to that same local address.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import secrets
import sys
import threading
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import APP_FILE_DEFAULT, APP_FILE_VARIABLE, html_url_for
from bot.deploy import app_manifest

GITHUB_URL = "https://github.com"
GITHUB_API_URL = "https://api.github.com"
CALLBACK_PATH = "/callback"


class SetupError(RuntimeError):
    """Something the user can fix; the message is one line saying what."""


# --- pure parts -------------------------------------------------------------------------


def api_url_for(github_url: str) -> str:
    """The API of a GitHub web host: github.com's is api.github.com, GitHub Enterprise
    Cloud's `api.<host>`; anything else (the sandbox) serves its API at the same address.
    GitHub Enterprise Server users name theirs (`--github-api-url https://HOST/api/v3`)."""
    url = github_url.rstrip("/")
    scheme, sep, host = url.partition("://")
    if sep and host.lower() == "github.com":
        return GITHUB_API_URL
    if sep and host.lower().endswith(".ghe.com") and "/" not in host:
        return f"{scheme}://api.{host}"
    return url


def new_app_url(github_url: str, org: str | None) -> str:
    """Where GitHub takes a manifest: the user's settings, or an organisation's."""
    base = github_url.rstrip("/")
    if org:
        return f"{base}/organizations/{org}/settings/apps/new"
    return f"{base}/settings/apps/new"


def setup_manifest(public_url: str, name: str, webhook_url: str, callback: str) -> dict[str, Any]:
    """`kohai app manifest`'s manifest, with GitHub's redirect sent to kohai's own callback
    and the webhook sent where the bot receives it (its URL, or a relay channel)."""
    manifest = app_manifest(public_url, name)
    manifest["redirect_url"] = callback
    manifest["hook_attributes"]["url"] = webhook_url
    return manifest


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    named = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
    named["\r"] = "\\r"
    out = []
    for ch in value:
        if ch in named:
            out.append(named[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def app_file_text(
    app: dict[str, Any],
    *,
    api_url: str,
    html_url: str,
    public_url: str,
    webhook_proxy_url: str | None,
) -> str:
    """The App file: every credential of the conversion, and where this App's GitHub is.

    `slug`, `name`, `owner` and `install_url` are notes for people; `kohai serve`
    reads the slug from GitHub (`GET /app`), never from here.
    """
    owner = app.get("owner") or {}
    lines = [
        "# The GitHub App registered by `kohai setup`. Secrets: keep this file 0600.",
        "# `kohai serve` reads it; an environment variable overrides the value it stands for.",
        f"app_id = {int(app['id'])}",
        f"slug = {toml_string(str(app.get('slug') or ''))}",
        f"name = {toml_string(str(app.get('name') or ''))}",
        f"owner = {toml_string(str(owner.get('login') or ''))}",
        f"client_id = {toml_string(str(app['client_id']))}",
        f"client_secret = {toml_string(str(app['client_secret']))}",
        f"webhook_secret = {toml_string(str(app['webhook_secret']))}",
        f"github_api_url = {toml_string(api_url)}",
    ]
    if html_url.rstrip("/") != html_url_for(api_url):
        lines.append(f"github_html_url = {toml_string(html_url)}")
    lines.append(f"public_url = {toml_string(public_url)}")
    if webhook_proxy_url:
        lines.append(f"webhook_proxy_url = {toml_string(webhook_proxy_url)}")
    lines.append(f"install_url = {toml_string(install_url(html_url, str(app.get('slug'))))}")
    lines.append(f"private_key = {toml_string(str(app['pem']))}")
    return "\n".join(lines) + "\n"


def install_url(html_url: str, slug: str) -> str:
    return f"{html_url.rstrip('/')}/apps/{slug}/installations/new"


def default_app_file() -> Path:
    return Path.home() / APP_FILE_DEFAULT


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only, replacing it atomically.

    The file is created 0600 (never briefly wider), its directory 0700 when kohai
    makes it; a crash leaves the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- the local page and GitHub's redirect ------------------------------------------------


@dataclass
class Flow:
    """One registration: the manifest posted, the state GitHub must send back, the result."""

    manifest: dict[str, Any]
    target: str  # GitHub's new-App page the form posts to
    api_url: str
    html_url: str
    public_url: str
    webhook_proxy_url: str | None
    out: Path
    state: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    done: threading.Event = field(default_factory=threading.Event)
    app: dict[str, Any] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def convert_code(api_url: str, code: str) -> dict[str, Any]:
    """GitHub's conversion of the one-time code, validated by githubkit's model."""
    from githubkit import GitHub
    from githubkit.exception import RequestError, RequestFailed

    github: GitHub[Any] = GitHub(base_url=api_url)
    try:
        reply = await github.rest.apps.async_create_from_manifest(code)
    except RequestFailed as exc:
        status = exc.response.status_code
        if status == 404:
            raise SetupError(
                "GitHub did not accept the code (it is used once and expires after an hour): "
                "run kohai setup again"
            ) from exc
        raise SetupError(f"GitHub answered {status} to the code's conversion") from exc
    except RequestError as exc:
        raise SetupError(f"cannot reach GitHub at {api_url}: {exc}") from exc
    converted: dict[str, Any] = reply.parsed_data.model_dump(mode="json")
    return converted


def _page(title: str, body: str, status: int = 200) -> Any:
    from litestar import Response

    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · kohai setup</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(document, status_code=status, media_type="text/html")


def build_app(flow: Flow) -> Any:
    """The local pages: `/` posts the manifest to GitHub, `/callback` takes GitHub's redirect."""
    from litestar import Litestar, Request, get

    @get("/", sync_to_thread=False)
    def start() -> Any:
        if flow.app is not None:
            return _page("Done", "<p>The App is registered; this page has nothing more to do.</p>")
        action = f"{flow.target}?state={flow.state}"
        body = (
            f"<p>kohai will ask GitHub to create the App <strong>"
            f"{html.escape(str(flow.manifest['name']))}</strong> with the permissions and "
            "events it needs. GitHub shows you everything before you confirm.</p>"
            f'<form method="post" action="{html.escape(action)}">'
            f'<input type="hidden" name="manifest" '
            f'value="{html.escape(json.dumps(flow.manifest))}">'
            '<button type="submit" id="submit">Create the GitHub App</button></form>'
        )
        return _page("Register kohai's GitHub App", body)

    @get(CALLBACK_PATH)
    async def callback(request: Request[Any, Any, Any]) -> Any:
        code = str(request.query_params.get("code") or "")
        state = str(request.query_params.get("state") or "")
        if not state or not secrets.compare_digest(state.encode(), flow.state.encode()):
            return _page(
                "Not this registration",
                "<p>This address was not reached from the page kohai setup served; "
                "nothing was registered.</p>",
                400,
            )
        if not code:
            return _page("No code", "<p>GitHub sent no code; nothing was registered.</p>", 400)
        if flow.lock.locked() or flow.app is not None:
            return _page("Done", "<p>The App is already registered.</p>", 409)
        async with flow.lock:
            try:
                app = await convert_code(flow.api_url, code)
                text = app_file_text(
                    app,
                    api_url=flow.api_url,
                    html_url=flow.html_url,
                    public_url=flow.public_url,
                    webhook_proxy_url=flow.webhook_proxy_url,
                )
                write_secret_file(flow.out, text)
            except (SetupError, OSError) as exc:
                print(f"kohai setup: {exc}", file=sys.stderr, flush=True)
                return _page("Not registered", f"<p>{html.escape(str(exc))}</p>", 502)
            flow.app = app
        link = install_url(flow.html_url, str(app["slug"]))
        body = (
            f'<p id="done">The GitHub App <strong>{html.escape(str(app["slug"]))}</strong> '
            f"is registered; its credentials are in {html.escape(str(flow.out))}.</p>"
            f'<p>Next, <a id="install" href="{html.escape(link)}">install it on your '
            "repositories</a>, then start the bot: "
            f"<code>{html.escape(serve_command(flow.out))}</code></p>"
        )
        flow.done.set()
        return _page("Done", body)

    return Litestar(route_handlers=[start, callback], openapi_config=None, debug=False)


def serve_command(out: Path) -> str:
    if out == default_app_file():
        return "kohai serve"
    return f"{APP_FILE_VARIABLE}={out} kohai serve"


# --- the command ---------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except SetupError as exc:
        print(f"kohai setup: {exc}", file=sys.stderr)
        return 2


def _http_url(name: str, value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise SetupError(f"{name} must be an http(s) URL, got {value!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from bot.cli.lab import ServerThread, free_port

    out = Path(args.out).expanduser() if args.out else default_app_file()
    if out.exists() and not args.force:
        raise SetupError(
            f"{out} exists (an App is registered already); --force replaces it, "
            "--out writes another file"
        )
    github_url = _http_url("--github-url", args.github_url or GITHUB_URL)
    api_url = _http_url(
        "--github-api-url",
        args.github_api_url or os.environ.get("KOHAI_GITHUB_API_URL") or api_url_for(github_url),
    )
    public_url = _http_url(
        "--url", args.url or os.environ.get("KOHAI_PUBLIC_URL") or "http://127.0.0.1:8000"
    )
    proxy = args.webhook_proxy_url or os.environ.get("KOHAI_WEBHOOK_PROXY_URL") or None
    if proxy:
        proxy = _http_url("--webhook-proxy-url", proxy)
    port = args.port or free_port()
    local = f"http://127.0.0.1:{port}"
    manifest = setup_manifest(
        public_url, args.name, proxy or f"{public_url}/webhooks/github", local + CALLBACK_PATH
    )
    flow = Flow(
        manifest=manifest,
        target=new_app_url(github_url, args.org),
        api_url=api_url,
        html_url=github_url,
        public_url=public_url,
        webhook_proxy_url=proxy,
        out=out,
    )
    server = ServerThread(build_app(flow), port)
    try:
        server.start()
    except RuntimeError as exc:
        raise SetupError(f"cannot serve the setup page on {local}: {exc}") from exc
    try:
        who = f"the organisation {args.org}" if args.org else "your GitHub account"
        print(f"kohai setup: registering the GitHub App {args.name!r} for {who} on {github_url}")
        print(f"kohai setup: open {local}/ in a browser on this machine", flush=True)
        if not args.no_browser:
            webbrowser.open(local + "/")
        else:
            print(
                f"kohai setup: on a remote machine, forward the port first: "
                f"ssh -L {port}:127.0.0.1:{port} THIS_HOST",
                flush=True,
            )
        while not flow.done.wait(0.5):
            pass
    finally:
        server.stop()
    app = flow.app or {}
    print(f"kohai setup: registered the App {app.get('slug')} (id {app.get('id')})")
    print(f"kohai setup: wrote its credentials to {out} (mode 0600)")
    print(f"Install it on your repositories: {install_url(github_url, str(app.get('slug')))}")
    print(f"Then start the bot: {serve_command(out)}", flush=True)
    return 0
