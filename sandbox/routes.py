"""GitHub's REST paths mapped onto the sandbox's operations.

One table, matched in order, keeps every path in one place and lets refs and
label names that contain slashes or colons pass through unmangled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from sandbox import appapi, checks, gitdata, graphql, issues, pulls
from sandbox.auth import Principal
from sandbox.errors import ApiError
from sandbox.world import World

R = r"(?P<repo>[^/]+/[^/]+)"
N = r"(?P<n>\d+)"

Call = Callable[[World, Principal, dict[str, str], dict[str, str], Any], Any]
ROUTES: list[tuple[str, re.Pattern[str], int, Call]] = []
TEMPLATES: dict[
    tuple[str, re.Pattern[str]], str
] = {}  # each route's path as GitHub's docs write it


def template_of(pattern: str) -> str:
    """`/repos/{owner}/{repo}/issues/{n}` for a route's regex: how the request record
    names a route (one name for every issue, whatever its number)."""
    path = pattern.replace(R, "{owner}/{repo}")
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)


def route(method: str, pattern: str, status: int = 200) -> Callable[[Call], Call]:
    def register(fn: Call) -> Call:
        compiled = re.compile(pattern + r"/?")
        ROUTES.append((method, compiled, status, fn))
        TEMPLATES[(method, compiled)] = f"{method} {template_of(pattern)}"
        return fn

    return register


def template_for(method: str, path: str) -> str | None:
    """The route template a request matches (`GET /repos/{owner}/{repo}`), None if none."""
    for route_method, pattern, _, _ in ROUTES:
        if route_method == method and pattern.fullmatch(path):
            return TEMPLATES[(method, pattern)]
    return None


# The App ------------------------------------------------------------------------------
route("GET", r"/app")(lambda w, p, m, q, b: appapi.get_app(w, p))
route("GET", r"/app/installations")(lambda w, p, m, q, b: appapi.list_installations(w, p, q))
route("GET", rf"/app/installations/{N}")(
    lambda w, p, m, q, b: appapi.get_installation(w, p, int(m["n"]))
)
route("POST", rf"/app/installations/{N}/access_tokens", 201)(
    lambda w, p, m, q, b: appapi.create_access_token(w, p, int(m["n"]), b)
)
route("GET", r"/app/hook/deliveries")(lambda w, p, m, q, b: appapi.list_deliveries(w, p, q))
route("GET", rf"/app/hook/deliveries/{N}")(
    lambda w, p, m, q, b: appapi.get_delivery(w, p, int(m["n"]))
)
route("POST", rf"/app/hook/deliveries/{N}/attempts", 202)(
    lambda w, p, m, q, b: appapi.redeliver(w, p, int(m["n"]))
)
route("DELETE", r"/installation/token", 204)(lambda w, p, m, q, b: w.revoke_token(p))
route("GET", r"/installation/repositories")(
    lambda w, p, m, q, b: appapi.installation_repositories(w, p, q)
)
route("GET", r"/user")(lambda w, p, m, q, b: appapi.authenticated_user(w, p))
route("GET", r"/user/installations")(lambda w, p, m, q, b: appapi.user_installations(w, p, q))
route("GET", rf"/user/installations/{N}/repositories")(
    lambda w, p, m, q, b: appapi.user_installation_repositories(w, p, int(m["n"]), q)
)
route("POST", r"/graphql")(lambda w, p, m, q, b: graphql.execute(w, p, b or {}))

# Repositories -------------------------------------------------------------------------
route("GET", rf"/repos/{R}")(lambda w, p, m, q, b: appapi.get_repo(w, p, m["repo"]))
route("GET", rf"/repos/{R}/installation")(
    lambda w, p, m, q, b: appapi.repo_installation(w, p, m["repo"])
)
route("GET", rf"/repos/{R}/collaborators/(?P<user>[^/]+)/permission")(
    lambda w, p, m, q, b: gitdata.collaborator_permission(w, p, m["repo"], m["user"])
)

# Labels -------------------------------------------------------------------------------
route("GET", rf"/repos/{R}/labels")(lambda w, p, m, q, b: issues.list_labels(w, p, m["repo"], q))
route("POST", rf"/repos/{R}/labels", 201)(
    lambda w, p, m, q, b: issues.create_label(w, p, m["repo"], b or {})
)
route("GET", rf"/repos/{R}/labels/(?P<name>.+)")(
    lambda w, p, m, q, b: issues.get_label(w, p, m["repo"], m["name"])
)

# Issue comments (before issues, whose number pattern would not match "comments") -------
route("GET", rf"/repos/{R}/issues/comments/{N}")(
    lambda w, p, m, q, b: issues.get_comment(w, p, m["repo"], int(m["n"]))
)
route("PATCH", rf"/repos/{R}/issues/comments/{N}")(
    lambda w, p, m, q, b: issues.update_comment(w, p, m["repo"], int(m["n"]), b or {})
)
route("DELETE", rf"/repos/{R}/issues/comments/{N}", 204)(
    lambda w, p, m, q, b: issues.delete_comment(w, p, m["repo"], int(m["n"]))
)
route("POST", rf"/repos/{R}/issues/comments/{N}/reactions")(
    lambda w, p, m, q, b: issues.react(w, p, m["repo"], int(m["n"]), b or {})
)

# Issues -------------------------------------------------------------------------------
route("GET", rf"/repos/{R}/issues")(lambda w, p, m, q, b: issues.list_issues(w, p, m["repo"], q))
route("POST", rf"/repos/{R}/issues", 201)(
    lambda w, p, m, q, b: issues.create_issue(w, p, m["repo"], b or {})
)
route("GET", rf"/repos/{R}/issues/{N}")(
    lambda w, p, m, q, b: issues.get_issue(w, p, m["repo"], int(m["n"]))
)
route("PATCH", rf"/repos/{R}/issues/{N}")(
    lambda w, p, m, q, b: issues.update_issue(w, p, m["repo"], int(m["n"]), b or {})
)
route("GET", rf"/repos/{R}/issues/{N}/labels")(
    lambda w, p, m, q, b: issues.list_issue_labels(w, p, m["repo"], int(m["n"]))
)
route("POST", rf"/repos/{R}/issues/{N}/labels")(
    lambda w, p, m, q, b: issues.add_labels(w, p, m["repo"], int(m["n"]), b)
)
route("PUT", rf"/repos/{R}/issues/{N}/labels")(
    lambda w, p, m, q, b: issues.set_labels(w, p, m["repo"], int(m["n"]), b)
)
route("DELETE", rf"/repos/{R}/issues/{N}/labels/(?P<name>.+)")(
    lambda w, p, m, q, b: issues.remove_label(w, p, m["repo"], int(m["n"]), m["name"])
)
route("GET", rf"/repos/{R}/issues/{N}/comments")(
    lambda w, p, m, q, b: issues.list_comments(w, p, m["repo"], int(m["n"]), q)
)
route("POST", rf"/repos/{R}/issues/{N}/comments", 201)(
    lambda w, p, m, q, b: issues.create_comment(w, p, m["repo"], int(m["n"]), b or {})
)

# Pull requests ------------------------------------------------------------------------
route("GET", rf"/repos/{R}/pulls")(lambda w, p, m, q, b: pulls.list_pulls(w, p, m["repo"], q))
route("POST", rf"/repos/{R}/pulls", 201)(
    lambda w, p, m, q, b: pulls.create_pull(w, p, m["repo"], b or {})
)
route("GET", rf"/repos/{R}/pulls/{N}")(
    lambda w, p, m, q, b: pulls.get_pull(w, p, m["repo"], int(m["n"]))
)
route("PATCH", rf"/repos/{R}/pulls/{N}")(
    lambda w, p, m, q, b: pulls.update_pull(w, p, m["repo"], int(m["n"]), b or {})
)
route("GET", rf"/repos/{R}/pulls/{N}/files")(
    lambda w, p, m, q, b: pulls.list_files(w, p, m["repo"], int(m["n"]), q)
)
route("PUT", rf"/repos/{R}/pulls/{N}/merge")(
    lambda w, p, m, q, b: pulls.merge_pull(w, p, m["repo"], int(m["n"]), b or {})
)

# Git data, branches, contents ------------------------------------------------------------
route("POST", rf"/repos/{R}/git/commits", 201)(
    lambda w, p, m, q, b: gitdata.create_commit(w, p, m["repo"], b or {})
)
route("GET", rf"/repos/{R}/git/commits/(?P<sha>[0-9a-fA-F]+)")(
    lambda w, p, m, q, b: gitdata.get_commit(w, p, m["repo"], m["sha"])
)
route("POST", rf"/repos/{R}/git/refs", 201)(
    lambda w, p, m, q, b: gitdata.create_ref(w, p, m["repo"], b or {})
)
route("GET", rf"/repos/{R}/git/ref/(?P<ref>.+)")(
    lambda w, p, m, q, b: gitdata.get_ref(w, p, m["repo"], m["ref"])
)
route("GET", rf"/repos/{R}/git/refs/(?P<ref>.+)")(
    lambda w, p, m, q, b: gitdata.get_ref(w, p, m["repo"], m["ref"])
)
route("PATCH", rf"/repos/{R}/git/refs/(?P<ref>.+)")(
    lambda w, p, m, q, b: gitdata.update_ref(w, p, m["repo"], m["ref"], b or {})
)
route("DELETE", rf"/repos/{R}/git/refs/(?P<ref>.+)", 204)(
    lambda w, p, m, q, b: gitdata.delete_ref(w, p, m["repo"], m["ref"])
)
route("GET", rf"/repos/{R}/branches/(?P<branch>.+)")(
    lambda w, p, m, q, b: gitdata.get_branch(w, p, m["repo"], m["branch"])
)
route("GET", rf"/repos/{R}/contents/(?P<path>.+)")(
    lambda w, p, m, q, b: gitdata.get_contents(w, p, m["repo"], m["path"], q)
)

# Check runs ---------------------------------------------------------------------------
route("POST", rf"/repos/{R}/check-runs", 201)(
    lambda w, p, m, q, b: checks.create_check_run(w, p, m["repo"], b or {})
)
route("GET", rf"/repos/{R}/check-runs/{N}")(
    lambda w, p, m, q, b: checks.get_check_run(w, p, m["repo"], int(m["n"]))
)
route("GET", rf"/repos/{R}/check-runs/{N}/annotations")(
    lambda w, p, m, q, b: checks.list_annotations(w, p, m["repo"], int(m["n"]), q)
)
route("GET", rf"/repos/{R}/commits/(?P<ref>.+)/check-runs")(
    lambda w, p, m, q, b: checks.list_for_ref(w, p, m["repo"], m["ref"], q)
)


def dispatch(
    world: World,
    method: str,
    path: str,
    query: dict[str, str],
    authorization: str | None,
    body: Any,
    principal: Principal | None = None,
) -> tuple[int, Any]:
    """(status, JSON body) for one GitHub API request; raises ApiError for refusals.

    `principal` is the caller when already authenticated (the rate limiter needs it first).
    """
    for route_method, pattern, status, call in ROUTES:
        match = pattern.fullmatch(path)
        if match is None or route_method != method:
            continue
        if principal is None:
            principal = world.authenticate(authorization)
        params = {key: unquote(value) for key, value in match.groupdict().items()}
        result = call(world, principal, params, query, body)
        if isinstance(result, tuple):
            return result
        return (status, result)
    raise ApiError(404, "Not Found")
