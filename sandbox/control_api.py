"""The control API under `/_sandbox/`: act as a human, steer the sandbox.

Humans' actions go through the very operations the REST API uses, under the
human's identity, so they produce exactly the webhooks GitHub would send.
No GitHub path starts with `/_sandbox`, and it needs no credentials: the
sandbox listens on loopback for tests and demos.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from sandbox import auth, delivery, issues, pulls
from sandbox.auth import Principal
from sandbox.errors import ApiError
from sandbox.world import World

PREFIX = "/_sandbox"
R = r"(?P<repo>[^/]+/[^/]+)"
N = r"(?P<n>\d+)"

Control = Callable[[World, dict[str, str], dict[str, str], dict[str, Any]], tuple[int, Any]]
ROUTES: list[tuple[str, re.Pattern[str], Control]] = []


def control(method: str, pattern: str) -> Callable[[Control], Control]:
    def register(fn: Control) -> Control:
        ROUTES.append((method, re.compile(PREFIX + pattern), fn))
        return fn

    return register


def _actor(
    world: World, body: dict[str, Any], query: dict[str, str], default: str = "bob"
) -> Principal:
    """The human a control request acts as (`as_user` in the body or the query)."""
    return world.user_principal(str(body.get("as_user") or query.get("as_user") or default))


@control("GET", r"/info")
def info(world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]) -> tuple[int, Any]:
    with world.state.lock:
        app = world.data["app"]
        users = {
            login: {"role": record["role"], "token": record["token"], "type": record["type"]}
            for login, record in world.data["users"].items()
            if record["type"] == "User"
        }
        return 200, {
            "api_url": world.base_url,
            "app_id": app["id"],
            "client_id": auth.client_id_of(app["id"]),
            "client_secret": app["client_secret"],
            "callback_urls": list(app["callback_urls"]),
            "app_slug": app["slug"],
            "bot_login": app["bot_login"],
            "webhook_secret": app["webhook_secret"],
            "webhook_url": app["webhook_url"],
            "private_key_path": str(world.private_key_path),
            "users": users,
            "repos": sorted(world.data["repos"]),
            # Apps registered through the manifest flow (sandbox/manifest.py).
            "apps": [
                {
                    "id": other["id"],
                    "slug": other["slug"],
                    "owner": other["owner"],
                    "bot_login": other["bot_login"],
                    "webhook_url": other["webhook_url"],
                }
                for other in world.data.get("apps", {}).values()
            ],
        }


@control("POST", r"/repos")
def create_repo(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    files = b.get("files")
    return 201, world.create_repo(
        str(b.get("full_name")),
        files=files,
        install=b.get("install", True),
        private=bool(b.get("private", False)),
    )


@control("POST", r"/users")
def create_user(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    """A new human: `{"login": ..., "role": null}` has only what repositories grant it."""
    role = b.get("role")
    return 201, world.create_user(str(b.get("login") or ""), None if role is None else str(role))


@control("PUT", rf"/repos/{R}/collaborators/(?P<user>[^/]+)")
def set_collaborator(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    """Give a user `permission` (read, write, admin; none removes it) on one repository."""
    world.set_collaborator(m["repo"], m["user"], str(b.get("permission", "read")))
    return 200, {"repo": m["repo"], "user": m["user"], "permission": b.get("permission", "read")}


@control("POST", r"/callback-urls")
def callback_urls(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    """Register the App's OAuth callback URLs (the first is the default redirect)."""
    urls = b.get("urls")
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ApiError(422, "urls must be a list of URLs")
    world.set_callback_urls(urls)
    return 200, {"callback_urls": urls}


@control("POST", rf"/repos/{R}/issues")
def open_issue(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    return 201, issues.create_issue(world, _actor(world, b, q), m["repo"], b)


@control("GET", rf"/repos/{R}/issues/{N}")
def get_issue(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    return 200, issues.get_issue(world, _actor(world, b, q, "alice"), m["repo"], int(m["n"]))


@control("POST", rf"/repos/{R}/issues/{N}/comments")
def comment(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    actor = _actor(world, b, q)
    return 201, issues.create_comment(world, actor, m["repo"], int(m["n"]), b)


@control("GET", rf"/repos/{R}/issues/{N}/comments")
def comments(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    actor = _actor(world, b, q, "alice")
    everything = {"per_page": "100", "page": "1"}
    found: list[Any] = []
    while True:
        batch = issues.list_comments(world, actor, m["repo"], int(m["n"]), everything)
        found += batch
        if len(batch) < 100:
            return 200, found
        everything["page"] = str(int(everything["page"]) + 1)


@control("POST", rf"/repos/{R}/issues/{N}/labels")
def add_labels(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    actor = _actor(world, b, q)
    return 200, issues.add_labels(world, actor, m["repo"], int(m["n"]), b)


@control("GET", rf"/repos/{R}/issues/{N}/labels")
def labels_of(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    actor = _actor(world, b, q, "alice")
    return 200, issues.list_issue_labels(world, actor, m["repo"], int(m["n"]))


@control("DELETE", rf"/repos/{R}/issues/{N}/labels/(?P<name>.+)")
def remove_label(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    actor = _actor(world, b, q)
    return 200, issues.remove_label(world, actor, m["repo"], int(m["n"]), m["name"])


@control("POST", rf"/repos/{R}/issues/{N}/close")
def close(world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]) -> tuple[int, Any]:
    actor = _actor(world, b, q)
    return 200, issues.update_issue(world, actor, m["repo"], int(m["n"]), {"state": "closed"})


@control("POST", rf"/repos/{R}/pulls/{N}/merge")
def merge(world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]) -> tuple[int, Any]:
    actor = _actor(world, b, q)
    return 200, pulls.merge_pull(world, actor, m["repo"], int(m["n"]), b)


@control("GET", rf"/repos/{R}/pulls")
def list_pulls(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    query = {"state": q.get("state", "all"), "per_page": "100", "direction": "asc"}
    return 200, pulls.list_pulls(world, _actor(world, b, q, "alice"), m["repo"], query)


@control("GET", rf"/repos/{R}/pulls/{N}")
def get_pull(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    return 200, pulls.get_pull(world, _actor(world, b, q, "alice"), m["repo"], int(m["n"]))


@control("POST", r"/fault")
def fault(world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]) -> tuple[int, Any]:
    world.arm_fault(int(b.get("count", 1)), str(b.get("kind", "502")), int(b.get("retry_after", 1)))
    return 200, dict(world.faults)


@control("GET", r"/limits")
def limits(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    """The rate limits in force and each caller's budget in its current window."""
    return 200, world.limits.describe()


@control("POST", r"/limits")
def set_limits(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    """Set limits (`budget`, `window_s`, `graphql_budget`, `secondary_per_minute`, ...);
    `null` turns one off. `{"reset": true}` starts every budget's window anew."""
    values = {key: value for key, value in b.items() if key != "reset"}
    described = world.limits.configure(values)
    if b.get("reset"):
        described = world.limits.reset()
    return 200, described


@control("GET", r"/requests")
def requests(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    """Every GitHub API request since the record was last cleared (or since `?since=T`)."""
    return 200, world.limits.entries(float(q.get("since", 0)))


@control("DELETE", r"/requests")
def clear_requests(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    return 200, {"cleared": world.limits.clear_record()}


@control("GET", r"/deliveries")
def deliveries(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    """Every delivery attempted so far, oldest first; `?wait=S` first drains the queue."""
    if q.get("wait"):
        world.deliverer.wait_idle(float(q["wait"]))
    with world.state.lock:
        return 200, [delivery.detail(r) for r in world.data["deliveries"]]


@control("POST", r"/webhook-url")
def webhook_url(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    world.set_webhook_url(b.get("url") or None)
    return 200, {"webhook_url": b.get("url") or None}


@control("POST", r"/tokens/expire")
def expire_token(
    world: World, m: dict[str, str], q: dict[str, str], b: dict[str, Any]
) -> tuple[int, Any]:
    token = str(b.get("token"))
    if token not in world.data["tokens"]:
        raise ApiError(404, "No such token")
    world.expire_token(token)
    return 200, {}


def dispatch(
    world: World, method: str, path: str, query: dict[str, str], body: Any
) -> tuple[int, Any]:
    for route_method, pattern, fn in ROUTES:
        match = pattern.fullmatch(path.rstrip("/"))
        if match and route_method == method:
            params = {key: unquote(value) for key, value in match.groupdict().items()}
            return fn(world, params, query, body if isinstance(body, dict) else {})
    raise ApiError(404, "Not Found")
