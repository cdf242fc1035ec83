"""Who is looking at the dashboard: a GitHub sign-in through the App's own OAuth client.

The dashboard shows hypotheses, branches and diffs, so it is not public: a
visitor signs in with GitHub (the user-to-server web flow GitHub Apps provide)
and sees only the labs whose repositories they can read. Whether they can read
one is asked of GitHub through the installation (the collaborator permission
API, the same answer and the same short cache as for slash commands), so a
revoked collaborator stops seeing the lab within a minute.

- `GET /login` sends the browser to GitHub with a random `state`, kept in a
  signed, short-lived cookie that binds it to this browser.
- `GET /auth/callback` checks that `state`, exchanges the code for a user
  access token (githubkit's OAuth web flow), reads who the user is, and keeps
  only that (login and id) in a signed session cookie: the token itself is not
  stored anywhere.
- `GET /logout` drops the session cookie.

Cookies are HMAC-SHA256 signed with `KOHAI_SESSION_SECRET`, or with a key
derived from the webhook secret; they are HttpOnly, SameSite=Lax, and Secure
when the public URL is https. `KOHAI_DASHBOARD_PUBLIC=1` (the local demo)
skips all of this and shows everything to anyone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.exceptions import NotAuthorizedException
from litestar.response import Redirect

from bot.config import Settings
from bot.store import Store

log = logging.getLogger("kohai.dashboard.signin")

SESSION_COOKIE = "kohai_session"
STATE_COOKIE = "kohai_signin"
SESSION_TTL_S = 8 * 3600  # as long as GitHub's user access tokens live
STATE_TTL_S = 600  # as long as GitHub's codes live
MAX_COOKIE = 4096
VISIBLE = "kohai_visible"  # request.state: the repo ids the viewer may read (None: all)
VIEWER = "kohai_viewer"  # request.state: the signed-in Viewer (absent when public)
KEY_CONTEXT = b"kohai dashboard session cookies v1"

Level = Callable[[int, str, str], Awaitable[str]]


@dataclass(frozen=True)
class Viewer:
    """A signed-in GitHub user, as the session cookie names them."""

    login: str
    user_id: int


@dataclass(frozen=True)
class Access:
    """How the dashboard decides who sees what; one per app, in its state as `dashboard_access`.

    `level` answers a user's role on a repository through the installation
    (`PermissionCache.level`): a lab is visible unless that role is `none`.
    """

    public: bool
    client_id: str = ""
    client_secret: str = ""
    api_url: str = ""
    html_url: str = ""
    public_url: str = ""
    key: bytes = b""
    level: Level | None = None

    @classmethod
    def open(cls) -> Access:
        """Everything, to anyone (`KOHAI_DASHBOARD_PUBLIC=1`)."""
        return cls(public=True)

    @classmethod
    def from_settings(cls, settings: Settings, level: Level | None) -> Access:
        if settings.dashboard_public:
            return cls.open()
        return cls(
            public=False,
            client_id=settings.github_client_id,
            client_secret=settings.github_client_secret,
            api_url=settings.github_api_url,
            html_url=settings.html_url,
            public_url=settings.public_url.rstrip("/"),
            key=session_key(settings.session_secret, settings.webhook_secret),
            level=level,
        )

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.client_secret and self.key and self.level)

    @property
    def secure(self) -> bool:
        """Cookies only over https when the dashboard is served over https."""
        return self.public_url.startswith("https://")

    @property
    def callback_url(self) -> str:
        return f"{self.public_url}/auth/callback"

    def authorize_url(self, state: str) -> str:
        query = urlencode(
            {"client_id": self.client_id, "redirect_uri": self.callback_url, "state": state}
        )
        return f"{self.html_url.rstrip('/')}/login/oauth/authorize?{query}"


# -- signed cookies (pure) ----------------------------------------------------------------


def session_key(session_secret: str, webhook_secret: str) -> bytes:
    """The cookie key: the setting, else one derived from (never equal to) the webhook secret."""
    if session_secret:
        return hashlib.sha256(session_secret.encode()).digest()
    if not webhook_secret:
        return b""
    return hmac.new(webhook_secret.encode(), KEY_CONTEXT, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(payload: dict[str, Any], key: bytes, use: str) -> str:
    """`payload` as `body.mac`; `use` ties it to one cookie (a state is never a session)."""
    body = _b64(json.dumps({**payload, "use": use}, separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def unsign(value: str | None, key: bytes, use: str, now: float) -> dict[str, Any] | None:
    """The payload of a cookie this server signed for `use`, unexpired; None otherwise."""
    if not value or not key or len(value) > MAX_COOKIE:
        return None
    body, _, mac = value.rpartition(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not body or not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict) or payload.get("use") != use:
        return None
    expires = payload.get("exp")
    if not isinstance(expires, int | float) or isinstance(expires, bool) or expires <= now:
        return None
    return payload


def viewer_of(cookie: str | None, key: bytes, now: float) -> Viewer | None:
    """The signed-in user a session cookie names, or None (missing, forged, expired)."""
    payload = unsign(cookie, key, "session", now)
    if payload is None:
        return None
    login, user_id = payload.get("login"), payload.get("id")
    if not isinstance(login, str) or not login or not isinstance(user_id, int):
        return None
    return Viewer(login, user_id)


def session_cookie(viewer: Viewer, key: bytes, now: float) -> str:
    return sign(
        {"login": viewer.login, "id": viewer.user_id, "exp": int(now + SESSION_TTL_S)},
        key,
        "session",
    )


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw) or len(raw) > 1000:
        return "/"
    return raw


# -- who sees what -----------------------------------------------------------------------


def access_of(state: State) -> Access | None:
    access = state.get("dashboard_access")
    return access if isinstance(access, Access) else None


async def readable_repos(access: Access, store: Store, viewer: Viewer) -> frozenset[int]:
    """The ids of the repositories `viewer` can read, asked of GitHub per repository.

    A repository the App is not installed on, or one GitHub cannot answer for
    right now, is not visible: the dashboard fails closed.
    """
    if access.level is None:
        return frozenset()
    level = access.level
    rows = store.query(
        "SELECT id, full_name, installation_id FROM repos WHERE installation_id IS NOT NULL"
    )

    async def readable(row: dict[str, Any]) -> int | None:
        try:
            role = await level(int(row["installation_id"]), str(row["full_name"]), viewer.login)
        except Exception as exc:  # noqa: BLE001 - GitHub down: show nothing, not everything
            log.warning("cannot check %s on %s: %s", viewer.login, row["full_name"], exc)
            return None
        return int(row["id"]) if role != "none" else None

    found = await asyncio.gather(*(readable(row) for row in rows))
    return frozenset(repo_id for repo_id in found if repo_id is not None)


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/events"


def _not_configured() -> Response[str]:
    return _page(
        503,
        "Sign-in is not configured",
        "<p>The dashboard needs a GitHub sign-in: set KOHAI_GITHUB_CLIENT_ID and "
        "KOHAI_GITHUB_CLIENT_SECRET (the App's OAuth client), or KOHAI_DASHBOARD_PUBLIC=1 "
        "for a dashboard anyone who reaches it may read.</p>",
    )


async def require_viewer(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Before every dashboard page, JSON route and the event stream: who is looking.

    Public: everything. Otherwise a valid session cookie, or pages redirect to
    `/login` and JSON answers 401; then the repositories the user can read go
    into `request.state` for the handler to filter by.
    """
    access = access_of(request.app.state)
    if access is not None and access.public:
        request.state[VISIBLE] = None
        return None
    if access is None or not access.configured:
        if _wants_json(request):
            return Response({"detail": "sign-in is not configured"}, status_code=503)
        return _not_configured()
    viewer = viewer_of(request.cookies.get(SESSION_COOKIE), access.key, time.time())
    if viewer is None:
        if _wants_json(request):
            return Response(
                {"detail": "sign in first: /login"},
                status_code=401,
                headers={"WWW-Authenticate": 'Cookie realm="kohai", sign-in="/login"'},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(f"/login?next={quote(target, safe='')}", status_code=303)
    request.state[VIEWER] = viewer
    request.state[VISIBLE] = await readable_repos(access, request.app.state.store, viewer)
    return None


def visible_of(request: Request[Any, Any, Any]) -> frozenset[int] | None:
    """What `require_viewer` decided; a handler it did not guard shows nothing."""
    if VISIBLE not in request.state:
        raise NotAuthorizedException("sign in first")
    value = request.state[VISIBLE]
    return value if value is None else frozenset(value)


def viewer_name(request: Request[Any, Any, Any]) -> str | None:
    viewer = request.state.get(VIEWER)
    return viewer.login if isinstance(viewer, Viewer) else None


# -- the routes ----------------------------------------------------------------------------


def _page(status: int, title: str, body: str) -> Response[str]:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{html.escape(title)} · kohai</title><link rel="stylesheet" '
        'href="/static/dashboard.css"></head><body><header><h1><a href="/">kohai</a></h1>'
        f"</header><main><section><h2>{html.escape(title)}</h2>{body}</section></main>"
        "</body></html>"
    )
    return Response(page, status_code=status, media_type=MediaType.HTML)


def _cookie_options(access: Access) -> dict[str, Any]:
    return {"httponly": True, "samesite": "lax", "secure": access.secure, "path": "/"}


@get("/login", include_in_schema=False)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    """Off to GitHub's sign-in page, with a fresh `state` bound to this browser."""
    access = access_of(request.app.state)
    if access is not None and access.public:
        return Redirect("/", status_code=303)
    if access is None or not access.configured:
        return _not_configured()
    state = secrets.token_urlsafe(24)
    target = safe_next(request.query_params.get("next"))
    held = sign(
        {"state": state, "next": target, "exp": int(time.time() + STATE_TTL_S)},
        access.key,
        "state",
    )
    response: Response[Any] = Redirect(access.authorize_url(state), status_code=302)
    response.set_cookie(STATE_COOKIE, held, max_age=STATE_TTL_S, **_cookie_options(access))
    response.headers["Cache-Control"] = "no-store"
    return response


async def github_viewer(access: Access, code: str) -> Viewer:
    """Exchange the code for a user access token and ask GitHub whose it is."""
    from githubkit import GitHub, OAuthWebAuthStrategy, TokenAuthStrategy

    strategy = OAuthWebAuthStrategy(
        access.client_id, access.client_secret, code, access.callback_url
    )
    token = await strategy.async_exchange_token(GitHub(base_url=access.api_url))
    user = GitHub(TokenAuthStrategy(str(token.token)), base_url=access.api_url)
    me = (await user.rest.users.async_get_authenticated()).parsed_data
    return Viewer(me.login, int(me.id))


@get("/auth/callback", include_in_schema=False)
async def auth_callback(request: Request[Any, Any, Any]) -> Response[Any]:
    """GitHub's redirect back: the state must be this browser's, the code GitHub's."""
    access = access_of(request.app.state)
    if access is not None and access.public:
        return Redirect("/", status_code=303)
    if access is None or not access.configured:
        return _not_configured()
    now = time.time()
    held = unsign(request.cookies.get(STATE_COOKIE), access.key, "state", now)
    given = request.query_params.get("state") or ""
    expected = str(held.get("state", "")) if held else ""
    if not given or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        refused = _page(
            400,
            "Sign-in refused",
            "<p>This sign-in was not started from this browser, or took too long. "
            '<a href="/login">Sign in again</a>.</p>',
        )
        refused.delete_cookie(STATE_COOKIE, path="/")
        return refused
    if request.query_params.get("error"):
        reason = html.escape(str(request.query_params.get("error"))[:100])
        cancelled = _page(
            403,
            "Not signed in",
            f'<p>GitHub did not sign you in ({reason}). <a href="/login">Try again</a>.</p>',
        )
        cancelled.delete_cookie(STATE_COOKIE, path="/")
        return cancelled
    code = request.query_params.get("code") or ""
    try:
        if not code or len(code) > 256:
            raise ValueError("no code")
        viewer = await github_viewer(access, code)
    except Exception as exc:  # noqa: BLE001 - whatever GitHub said, the visitor is not signed in
        log.warning("sign-in failed: %s", exc)
        failed = _page(
            502,
            "Sign-in failed",
            '<p>GitHub did not confirm this sign-in. <a href="/login">Try again</a>.</p>',
        )
        failed.delete_cookie(STATE_COOKIE, path="/")
        return failed
    log.info("dashboard sign-in: %s", viewer.login)
    response: Response[Any] = Redirect(
        safe_next(str(held.get("next")) if held else "/"), status_code=303
    )
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie(viewer, access.key, now),
        max_age=SESSION_TTL_S,
        **_cookie_options(access),
    )
    response.delete_cookie(STATE_COOKIE, path="/")
    return response


@get("/logout", include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    """Forget the session in this browser."""
    response = _page(200, "Signed out", '<p><a href="/login">Sign in again</a>.</p>')
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


ROUTES: list[Any] = [login, auth_callback, logout]
