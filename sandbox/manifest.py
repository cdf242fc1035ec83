"""GitHub's App-from-manifest flow and the App's installation page, on the sandbox.

What `kohai setup` drives (GitHub's "Creating a GitHub App from a manifest"):

- `POST /settings/apps/new?state=` (or `/organizations/{org}/settings/apps/new`) with a
  form field `manifest` (JSON) shows the confirmation page: who the App will belong
  to, its name (editable, as on GitHub), and a "Create GitHub App" button.
- The confirmation posts back with `confirm=1`: a NEW App is registered in the
  sandbox world (its slug from the name, its permissions, events, webhook URL and
  callback URLs from the manifest; a fresh private key, webhook secret and OAuth
  client secret), and the browser is redirected to the manifest's `redirect_url`
  with `?code=...&state=...`.
- `POST /app-manifests/{code}/conversions` (no authentication, as on GitHub) answers
  the App with its credentials (`pem`, `webhook_secret`, `client_secret`) once; the
  code expires after an hour.
- `GET /apps/{slug}/installations/new` is the page where a user picks repositories and
  installs the App; installing creates the installation and sends the `installation`
  webhook to the App's own hook, then goes to the App's `setup_url` if it has one.

These are pages on GitHub's web host (no Authorization header, no fault switch),
except the conversion, which is an API call that answers JSON. The sandbox has no
sessions: the pages ask which user is acting (`login`, default the admin `alice`).
"""

from __future__ import annotations

import html
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sandbox import auth, events
from sandbox.errors import ApiError
from sandbox.oauth import Answer
from sandbox.state import BOT_USER_ID, all_apps, now_iso
from sandbox.world import ADMIN_LOGIN, World

CODE_LIFETIME_S = 3600  # GitHub: "You must complete this step within one hour"
NAME_MAX = 34  # GitHub refuses longer App names
MAX_CALLBACK_URLS = 10
# Delivered to every App; GitHub refuses a manifest that subscribes to them.
ALWAYS_DELIVERED = frozenset({"installation", "installation_repositories"})

NEW_APP = re.compile(r"(?:/organizations/(?P<org>[^/]+))?/settings/apps/new/?")
CONVERSION = re.compile(r"/app-manifests/(?P<code>[^/]+)/conversions/?")
INSTALL = re.compile(r"/apps/(?P<slug>[^/]+)/installations/new/?")


def is_manifest_path(path: str) -> bool:
    return any(p.fullmatch(path) for p in (NEW_APP, CONVERSION, INSTALL))


def handle(
    world: World, method: str, path: str, query_string: str, headers: dict[str, str], raw: bytes
) -> Answer:
    """Answer one request to the manifest pages or the conversion; runs in a worker thread."""
    pairs = parse_qsl(query_string) + _form_pairs(headers, raw)
    params = dict(pairs)
    if (m := CONVERSION.fullmatch(path)) is not None:
        if method != "POST":
            return _json(404, ApiError(404, "Not Found").body())
        try:
            return _json(201, convert(world, m["code"]))
        except ApiError as exc:
            return _json(exc.status, exc.body())
    if (m := NEW_APP.fullmatch(path)) is not None:
        owner = m["org"]
        if method == "POST" and params.get("confirm") == "1":
            return create_app(world, owner, params)
        if method == "POST" and "manifest" in params:
            return confirm_page(world, path, owner, params)
        return _page(
            200, "Register new GitHub App", "<p>Post a manifest here to register an App.</p>"
        )
    if (m := INSTALL.fullmatch(path)) is not None:
        if method == "POST":
            chosen = [value for key, value in pairs if key == "repository"]
            return install_submit(world, m["slug"], params.get("login", ADMIN_LOGIN), chosen)
        return install_page(world, m["slug"], params.get("login", ADMIN_LOGIN))
    return _page(404, "Not Found", "<p>There is nothing here.</p>")


# -- the manifest ----------------------------------------------------------------------


def slug_of(name: str) -> str:
    """GitHub's slug of an App name: lower case, runs of other characters become `-`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _http_url(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(("http://", "https://"))
        and not any(c.isspace() for c in value)
    )


def manifest_errors(manifest: Any) -> list[str]:
    """What GitHub would refuse in a manifest, one sentence each (empty: acceptable)."""
    if not isinstance(manifest, dict):
        return ["The manifest must be a JSON object."]
    errors: list[str] = []
    if not _http_url(manifest.get("url")):
        errors.append("Homepage URL (url) must be an http(s) URL.")
    hook = manifest.get("hook_attributes", {})
    if not isinstance(hook, dict):
        errors.append("hook_attributes must be an object.")
    elif hook.get("active", True) and not _http_url(hook.get("url")):
        errors.append("Webhook URL (hook_attributes.url) must be an http(s) URL.")
    for key in ("redirect_url", "setup_url"):
        if manifest.get(key) is not None and not _http_url(manifest[key]):
            errors.append(f"{key} must be an http(s) URL.")
    callbacks = manifest.get("callback_urls", [])
    if not isinstance(callbacks, list) or not all(_http_url(u) for u in callbacks):
        errors.append("callback_urls must be a list of http(s) URLs.")
    elif len(callbacks) > MAX_CALLBACK_URLS:
        errors.append(f"At most {MAX_CALLBACK_URLS} callback URLs.")
    permissions = manifest.get("default_permissions", {})
    if not isinstance(permissions, dict) or not all(
        isinstance(k, str) and v in ("read", "write", "admin") for k, v in permissions.items()
    ):
        errors.append("default_permissions must map permission names to read, write or admin.")
    events = manifest.get("default_events", [])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        errors.append("default_events must be a list of event names.")
    elif ALWAYS_DELIVERED & set(events):
        names = ", ".join(sorted(ALWAYS_DELIVERED & set(events)))
        errors.append(f"Default events unsupported: {names} (every App receives them).")
    return errors


def name_errors(world: World, name: str) -> list[str]:
    if not name.strip():
        return ["Name can't be blank."]
    if len(name) > NAME_MAX:
        return [f"Name is too long (maximum is {NAME_MAX} characters)."]
    slug = slug_of(name)
    if not slug:
        return ["Name must contain a letter or a digit."]
    taken = {str(app["slug"]) for app in all_apps(world.data)}
    if slug in taken or f"{slug}[bot]" in world.data["users"]:
        return ["Name is already in use."]
    return []


def _decode_manifest(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _owner_problem(world: World, owner: str | None, login: str) -> str | None:
    """Why `login` may not register an App for `owner` (None: it may)."""
    user = world.data["users"].get(login)
    if user is None or user["type"] != "User":
        return "Incorrect username."
    if owner is None:
        return None
    account = world.data["users"].get(owner)
    if account is None or account["type"] != "Organization":
        return f"No organisation named {owner}."
    if user.get("role") != "admin":  # the sandbox's stand-in for an organisation owner
        return f"{login} is not an owner of {owner}."
    return None


def confirm_page(world: World, path: str, owner: str | None, params: dict[str, str]) -> Answer:
    """The page between kohai's form and the new App: shows what will be created."""
    manifest = _decode_manifest(params.get("manifest", ""))
    errors = manifest_errors(manifest)
    if errors:
        return _errors_page(errors)
    login = params.get("login", ADMIN_LOGIN)
    name = str(manifest.get("name") or "")
    events = ", ".join(manifest.get("default_events", [])) or "none"
    permissions = ", ".join(
        f"{k}: {v}" for k, v in sorted(manifest.get("default_permissions", {}).items())
    )
    hidden = "".join(
        f'<input type="hidden" name="{key}" value="{html.escape(value)}">'
        for key, value in (
            ("manifest", params.get("manifest", "")),
            ("state", params.get("state", "")),
            ("confirm", "1"),
        )
    )
    who = f"the organisation <strong>{html.escape(owner)}</strong>" if owner else "your account"
    body = (
        f"<p>Create a GitHub App for {who} from the manifest below.</p>"
        f'<form method="post" action="{html.escape(path)}">{hidden}'
        f'<label>GitHub App name <input name="name" id="name" value="{html.escape(name)}">'
        "</label><br>"
        f'<label>Signed in as <input name="login" id="login" value="{html.escape(login)}">'
        "</label><br>"
        '<button type="submit" id="create">Create GitHub App</button></form>'
        f"<p>Permissions: {html.escape(permissions or 'none')}</p>"
        f"<p>Events: {html.escape(events)}</p>"
        f"<p>Webhook URL: {html.escape(str(manifest.get('hook_attributes', {}).get('url')))}</p>"
    )
    return _page(200, "Create GitHub App", body)


def create_app(world: World, owner: str | None, params: dict[str, str]) -> Answer:
    """Register the App and send the browser back to the manifest's redirect_url."""
    manifest = _decode_manifest(params.get("manifest", ""))
    errors = manifest_errors(manifest)
    if errors:
        return _errors_page(errors)
    login = params.get("login", ADMIN_LOGIN).strip()
    name = params.get("name", str(manifest.get("name") or "")).strip()
    with world.changing():
        problem = _owner_problem(world, owner, login)
        if problem is not None:
            return _page(403, "Create GitHub App", f"<p>{html.escape(problem)}</p>")
        errors = name_errors(world, name)
        if errors:
            return _errors_page(errors)
        app = register(world, manifest, name, owner or login)
        code = secrets.token_hex(10)
        world.data.setdefault("manifest_codes", {})[code] = {
            "app_id": app["id"],
            "expires_at": time.time() + CODE_LIFETIME_S,
        }
    redirect = manifest.get("redirect_url")
    if not redirect:
        body = f"<p>The App {html.escape(app['slug'])} was created.</p>"
        return _page(201, "GitHub App created", body)
    joiner = "&" if "?" in redirect else "?"
    query = urlencode({"code": code, "state": params.get("state", "")})
    return Answer(302, headers={"location": f"{redirect}{joiner}{query}"})


def register(world: World, manifest: dict[str, Any], name: str, owner: str) -> dict[str, Any]:
    """A new App in the world (call with the state lock held)."""
    taken = {int(app["id"]) for app in all_apps(world.data)}
    app_id = 100_000 + secrets.randbelow(900_000)
    while app_id in taken:
        app_id = 100_000 + secrets.randbelow(900_000)
    slug = slug_of(name)
    hook = manifest.get("hook_attributes") or {}
    app = {
        "id": app_id,
        "slug": slug,
        "name": name,
        "owner": owner,
        "description": manifest.get("description"),
        "external_url": manifest["url"],
        "created_at": now_iso(),
        "webhook_secret": secrets.token_hex(20),
        "webhook_url": hook.get("url") if hook.get("active", True) else None,
        "hook_id": world.state.next_id("hook", start=400_002),
        "bot_login": f"{slug}[bot]",
        "private_key_pem": auth.generate_private_key_pem(),
        "permissions": {"metadata": "read", **manifest.get("default_permissions", {})},
        "events": list(manifest.get("default_events", [])),
        "client_secret": secrets.token_hex(20),
        "callback_urls": list(manifest.get("callback_urls", [])),
        "setup_url": manifest.get("setup_url"),
        "public": bool(manifest.get("public", False)),
    }
    world.data["apps"][str(app_id)] = app
    if app["webhook_url"]:  # GitHub pings a new App's hook at once
        ping = events.ping(world.render, app["hook_id"], app["webhook_url"], app)
        world.emit("ping", ping, app_id=app_id)
    bot_id = world.state.next_id("bot", start=BOT_USER_ID + 1)
    world.data["users"][app["bot_login"]] = {
        "id": bot_id,
        "type": "Bot",
        "role": None,
        "email": f"{bot_id}+{app['bot_login']}@users.noreply.sandbox",
    }
    return app


def convert(world: World, code: str) -> dict[str, Any]:
    """`POST /app-manifests/{code}/conversions`: the App and its secrets, once."""
    with world.changing():
        record = world.data.setdefault("manifest_codes", {}).pop(code, None)
        if record is None or record["expires_at"] <= time.time():
            raise ApiError(404, "Not Found")
        app = world.app(record["app_id"])
        shape = world.render.app(app)
        shape.update(
            {
                "client_secret": app["client_secret"],
                "webhook_secret": app["webhook_secret"],
                "pem": app["private_key_pem"],
            }
        )
        return shape


# -- installing ------------------------------------------------------------------------


def _app_by_slug(world: World, slug: str) -> dict[str, Any] | None:
    return next((app for app in all_apps(world.data) if app["slug"] == slug), None)


def install_page(world: World, slug: str, login: str) -> Answer:
    """The repositories `login` administers, to tick and install the App on."""
    with world.state.lock:
        app = _app_by_slug(world, slug)
        if app is None:
            return _page(404, "Not Found", "<p>No App has that name.</p>")
        user = world.data["users"].get(login)
        if user is None or user["type"] != "User":
            return _page(401, "Install", "<p>Incorrect username.</p>")
        repos = sorted(f for f in world.data["repos"] if world.role_of(login, f) == "admin")
    boxes = "".join(
        f'<li><label><input type="checkbox" name="repository" value="{html.escape(f)}"> '
        f"{html.escape(f)}</label></li>"
        for f in repos
    )
    name = html.escape(str(app.get("name", slug)))
    body = (
        f'<form method="post" action="/apps/{html.escape(slug)}/installations/new">'
        f'<input type="hidden" name="login" value="{html.escape(login)}">'
        f"<p>Install <strong>{name}</strong> on these repositories:</p>"
        f'<ul id="repositories">{boxes}</ul>'
        '<button type="submit" id="install">Install</button></form>'
    )
    return _page(200, f"Install {name}", body)


def install_submit(world: World, slug: str, login: str, chosen: list[str]) -> Answer:
    """Install on the chosen repositories, then go to the App's setup URL, as GitHub does."""
    with world.state.lock:
        app = _app_by_slug(world, slug)
        if app is None:
            return _page(404, "Not Found", "<p>No App has that name.</p>")
        if not chosen:
            return _page(422, "Install", "<p>Choose at least one repository.</p>")
        for full in chosen:
            if full not in world.data["repos"] or world.role_of(login, full) != "admin":
                return _page(403, "Install", f"<p>You cannot install on {html.escape(full)}.</p>")
        by_account: dict[str, list[str]] = {}
        for full in dict.fromkeys(chosen):
            by_account.setdefault(full.split("/")[0], []).append(full)
        inst: dict[str, Any] = {}
        for names in by_account.values():
            inst = world.install_repos(names, app["id"], sender=login)
        setup_url = app.get("setup_url")
    if setup_url:
        query = urlencode({"installation_id": inst["id"], "setup_action": "install"})
        joiner = "&" if "?" in setup_url else "?"
        return Answer(302, headers={"location": f"{setup_url}{joiner}{query}"})
    listed = ", ".join(html.escape(f) for f in chosen)
    return _page(
        200, "Installed", f'<p id="installed">Installed {html.escape(slug)} on {listed}.</p>'
    )


# -- plumbing ----------------------------------------------------------------------------


def _form_pairs(headers: dict[str, str], raw: bytes) -> list[tuple[str, str]]:
    if not raw:
        return []
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return []
    return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)


def _json(status: int, content: dict[str, Any]) -> Answer:
    return Answer(status, json.dumps(content).encode(), media_type="application/json")


def _errors_page(errors: list[str]) -> Answer:
    items = "".join(f"<li>{html.escape(e)}</li>" for e in errors)
    return _page(422, "The manifest was refused", f'<ul id="errors">{items}</ul>')


def _page(status: int, title: str, body: str) -> Answer:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · GitHub sandbox</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Answer(status, page.encode())
