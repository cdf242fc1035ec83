"""GitHub's OAuth web flow for the App's own client: sign a user in, hand out user tokens.

- `GET /login/oauth/authorize?client_id=&redirect_uri=&state=` shows the page where
  one of the sandbox's users signs in (by login: the sandbox has no passwords) and
  authorizes the App; `login=` fills the field in.
- `POST /login/oauth/authorize` is that page's form: it redirects back to
  `redirect_uri` with `code` and `state`, or with `error=access_denied` on Cancel.
- `POST /login/oauth/access_token` exchanges the code (or, with
  `grant_type=refresh_token`, a refresh token) for an expiring user access token
  (`ghu_`) and a refresh token (`ghr_`), as GitHub does for GitHub Apps: JSON with
  `Accept: application/json`, form-encoded otherwise, and errors as a 200 whose
  body names them (`bad_verification_code`, `incorrect_client_credentials`, ...).

These are web pages on GitHub's own host, not API routes: no Authorization
header, no fault switch. The redirect URI must be one of the App's registered
callback URLs (the control API sets them); a mismatch goes back to the first
registered one with `error=redirect_uri_mismatch`, as GitHub does.
"""

from __future__ import annotations

import base64
import html
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sandbox import auth
from sandbox.state import all_apps
from sandbox.world import World

AUTHORIZE_PATH = "/login/oauth/authorize"
TOKEN_PATH = "/login/oauth/access_token"
CODE_LIFETIME_S = 600  # GitHub's codes expire after ten minutes
USER_TOKEN_LIFETIME_S = 28_800  # eight hours, as GitHub Apps' user access tokens
REFRESH_TOKEN_LIFETIME_S = 15_897_600  # six months
ERROR_URI = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the OAuth pages."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "text/html; charset=utf-8"


def is_oauth_path(path: str) -> bool:
    return path.rstrip("/") in (AUTHORIZE_PATH, TOKEN_PATH)


def handle(
    world: World, method: str, path: str, query_string: str, headers: dict[str, str], raw: bytes
) -> Answer:
    """Answer one request to the OAuth pages; runs in a worker thread."""
    params = dict(parse_qsl(query_string))
    params.update(_body_params(headers, raw))
    target = path.rstrip("/")
    if target == AUTHORIZE_PATH and method == "GET":
        return authorize_page(world, params)
    if target == AUTHORIZE_PATH and method == "POST":
        return authorize_submit(world, params)
    if target == TOKEN_PATH and method == "POST":
        answer = access_token(world, params, headers.get("authorization"))
        return _token_answer(answer, headers.get("accept", ""))
    return _page(404, "Not Found", "<p>There is nothing here.</p>")


# -- the authorize page ------------------------------------------------------------------


def authorize_page(world: World, params: dict[str, str]) -> Answer:
    """The sign-in and authorize page, or GitHub's error for a bad client or redirect."""
    checked = _check_client_and_redirect(world, params)
    if isinstance(checked, Answer):
        return checked
    app_name = html.escape(str(_app_for_client(world, params.get("client_id"))["slug"]))
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in (
            ("client_id", params.get("client_id", "")),
            ("redirect_uri", checked),
            ("state", params.get("state", "")),
        )
    )
    login = html.escape(params.get("login", ""))
    body = (
        f"<p><strong>{app_name}</strong> by the sandbox wants to know who you are.</p>"
        f'<form method="post" action="{AUTHORIZE_PATH}">{hidden}'
        f'<label>Username <input name="login" id="login" value="{login}" autocomplete="username">'
        "</label> "
        '<button type="submit" name="action" value="authorize" id="authorize">'
        f"Authorize {app_name}</button> "
        '<button type="submit" name="action" value="cancel" id="cancel">Cancel</button></form>'
        f'<p class="muted">Authorizing will redirect to {html.escape(checked)}</p>'
    )
    return _page(200, f"Authorize {app_name}", body)


def authorize_submit(world: World, params: dict[str, str]) -> Answer:
    """The form: back to the client with a one-time code, or with access_denied."""
    checked = _check_client_and_redirect(world, params)
    if isinstance(checked, Answer):
        return checked
    state = params.get("state", "")
    if params.get("action") == "cancel":
        return _redirect(
            checked,
            {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": ERROR_URI,
                "state": state,
            },
        )
    login = params.get("login", "").strip()
    with world.changing():
        user = world.data["users"].get(login)
        if user is None or user["type"] != "User":
            return _page(401, "Sign in", "<p>Incorrect username.</p>")
        code = secrets.token_hex(10)
        world.data["oauth_codes"][code] = {
            "login": login,
            "client_id": params.get("client_id", ""),
            "redirect_uri": checked,
            "expires_at": time.time() + CODE_LIFETIME_S,
        }
    return _redirect(checked, {"code": code, "state": state})


def _check_client_and_redirect(world: World, params: dict[str, str]) -> str | Answer:
    """The redirect URI to use, or the answer GitHub gives instead."""
    app = _app_for_client(world, params.get("client_id"))
    if params.get("client_id") != auth.client_id_of(app["id"]):
        return _page(404, "Not Found", "<p>No application has that client id.</p>")
    registered = [str(url) for url in app.get("callback_urls", [])]
    if not registered:
        return _page(400, "Callback URL missing", "<p>The App has no callback URL.</p>")
    wanted = params.get("redirect_uri")
    if wanted is None or wanted == "":
        return registered[0]
    if wanted not in registered:
        return _redirect(
            registered[0],
            {
                "error": "redirect_uri_mismatch",
                "error_description": "The redirect_uri MUST match the registered callback "
                "URL for this application.",
                "error_uri": ERROR_URI,
                "state": params.get("state", ""),
            },
        )
    return wanted


# -- the token endpoint ------------------------------------------------------------------


def access_token(
    world: World, params: dict[str, str], authorization: str | None = None
) -> dict[str, Any]:
    """A user access token for a code or a refresh token, or GitHub's error object."""
    client_id, client_secret = params.get("client_id", ""), params.get("client_secret", "")
    basic = _basic_credentials(authorization)
    if basic is not None and not client_secret:
        client_id, client_secret = basic
    app = _app_for_client(world, client_id)
    if client_id != auth.client_id_of(app["id"]) or not secrets.compare_digest(
        client_secret.encode(), str(app["client_secret"]).encode()
    ):
        return _error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        )
    now = time.time()
    with world.changing():
        if params.get("grant_type") == "refresh_token":
            record = world.data["refresh_tokens"].pop(params.get("refresh_token", ""), None)
            if record is None or record["expires_at"] <= now:
                return _error(
                    "bad_refresh_token", "The refresh token passed is incorrect or expired."
                )
            return _issue(world, record["login"], now, record.get("app_id"))
        code = world.data["oauth_codes"].pop(params.get("code", ""), None)  # one use only
        if code is None or code["expires_at"] <= now or code["client_id"] != client_id:
            return _error("bad_verification_code", "The code passed is incorrect or expired.")
        wanted = params.get("redirect_uri")
        if wanted and wanted != code["redirect_uri"]:
            return _error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            )
        return _issue(world, code["login"], now, app["id"])


def _app_for_client(world: World, client_id: str | None) -> dict[str, Any]:
    """The App whose OAuth client id this is (the default App when none is)."""
    for app in all_apps(world.data):
        if client_id == auth.client_id_of(app["id"]):
            return app
    default: dict[str, Any] = world.data["app"]
    return default


def _issue(world: World, login: str, now: float, app_id: int | None) -> dict[str, Any]:
    token, refresh = auth.new_token("ghu_"), auth.new_token("ghr_")
    world.data["tokens"][token] = {
        "kind": "user_app",
        "login": login,
        "expires_at": now + USER_TOKEN_LIFETIME_S,
        "app_id": app_id,
    }
    world.data["refresh_tokens"][refresh] = {
        "login": login,
        "expires_at": now + REFRESH_TOKEN_LIFETIME_S,
        "app_id": app_id,
    }
    return {
        "access_token": token,
        "expires_in": USER_TOKEN_LIFETIME_S,
        "refresh_token": refresh,
        "refresh_token_expires_in": REFRESH_TOKEN_LIFETIME_S,
        "scope": "",
        "token_type": "bearer",
    }


def _error(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description, "error_uri": ERROR_URI}


def _token_answer(content: dict[str, Any], accept: str) -> Answer:
    """GitHub answers 200 either way: JSON when asked for it, a form otherwise."""
    if "application/json" in accept.lower():
        return Answer(200, json.dumps(content).encode(), media_type="application/json")
    form = urlencode({key: str(value) for key, value in content.items()})
    return Answer(200, form.encode(), media_type="application/x-www-form-urlencoded")


# -- plumbing ------------------------------------------------------------------------------


def _body_params(headers: dict[str, str], raw: bytes) -> dict[str, str]:
    """Parameters of a form or JSON body (the token endpoint takes either)."""
    if not raw:
        return {}
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            decoded = json.loads(raw)
        except ValueError:
            return {}
        if not isinstance(decoded, dict):
            return {}
        return {str(k): str(v) for k, v in decoded.items() if v is not None}
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except ValueError:
        return None
    return (user, password) if sep else None


def _redirect(url: str, query: dict[str, str]) -> Answer:
    joiner = "&" if "?" in url else "?"
    return Answer(302, headers={"location": f"{url}{joiner}{urlencode(query)}"})


def _page(status: int, title: str, body: str) -> Answer:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · GitHub sandbox</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Answer(status, page.encode())
