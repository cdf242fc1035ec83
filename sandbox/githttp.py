"""Git over smart HTTP through `git http-backend`, authenticated like GitHub.

Clients clone and push `http://HOST:PORT/{owner}/{repo}.git` with HTTP Basic
`x-access-token:<token>`. A push is refused when the token is expired, foreign
or read-only; an accepted one is announced like any other ref move.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from sandbox import gitdata, gitrepo
from sandbox.errors import ApiError
from sandbox.world import World

GIT_PATH = re.compile(r"^/(?P<owner>[^/]+)/(?P<name>[^/]+?)\.git(?P<rest>/.*)?$")


@dataclass
class GitResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def is_git_path(path: str) -> bool:
    return GIT_PATH.match(path) is not None


def _challenge(status: int, message: str) -> GitResponse:
    headers = {"content-type": "text/plain"}
    if status == 401:
        headers["www-authenticate"] = 'Basic realm="GitHub"'
    return GitResponse(status, headers, message.encode() + b"\n")


def _token(authorization: str | None) -> str | None:
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization.split(" ", 1)[1]).decode()
    except ValueError:
        return None
    _, _, password = decoded.partition(":")
    return password or None


def _check_access(world: World, full: str, token: str | None, push: bool) -> str:
    """The acting login if this token may read (or push to) the repo; raise otherwise."""
    if token is None:
        raise ApiError(401, "Authentication required")
    principal = world.principal_for_token(token)
    world.authorize(principal, full, "contents", "write" if push else "read")
    return principal.login


def _parse_cgi(output: bytes) -> GitResponse:
    head, _, body = output.partition(b"\r\n\r\n")
    if not body and b"\n\n" in output and b"\r\n\r\n" not in output:
        head, _, body = output.partition(b"\n\n")
    status, headers = 200, {}
    for line in head.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.strip().split()[0])
        elif key:
            headers[key.strip().lower()] = value.strip()
    return GitResponse(status, headers, body)


def handle(
    world: World,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> GitResponse:
    match = GIT_PATH.match(path)
    assert match is not None
    full = f"{match['owner']}/{match['name']}"
    rest = match["rest"] or "/"
    push = "git-receive-pack" in rest or "service=git-receive-pack" in query
    try:
        with world.state.lock:
            world.repo(full)
            login = _check_access(world, full, _token(headers.get("authorization")), push)
    except ApiError as exc:
        if exc.status == 401:
            return _challenge(401, "Invalid username or token.")
        if exc.status == 404:
            return _challenge(404, "Repository not found.")
        return _challenge(403, f"Permission to {full}.git denied to {_login_hint(world, headers)}.")
    env = {
        **os.environ,
        "GIT_PROJECT_ROOT": str(world.repos_dir()),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{full}.git{rest}",
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_USER": login,
        "REMOTE_ADDR": "127.0.0.1",
        "GIT_HTTP_MAX_REQUEST_BUFFER": "100M",
    }
    if headers.get("content-encoding"):
        env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
    if headers.get("git-protocol"):
        env["GIT_PROTOCOL"] = headers["git-protocol"]
    repo_dir = world.repo_path(full)
    if method == "POST" and rest.endswith("git-receive-pack"):
        # Hold the lock so the webhooks of this push follow those queued before it.
        with world.changing():
            before = gitrepo.list_refs(repo_dir)
            response = _run_backend(env, body)
            after = gitrepo.list_refs(repo_dir)
            changes = [
                (ref, before.get(ref, gitrepo.ZERO_SHA), after.get(ref, gitrepo.ZERO_SHA))
                for ref in sorted(set(before) | set(after))
                if before.get(ref) != after.get(ref)
            ]
            gitdata.refs_changed(world, world.repo(full), changes, login)
        return response
    return _run_backend(env, body)


def _run_backend(env: dict[str, Any], body: bytes) -> GitResponse:
    result = subprocess.run(
        ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
    )
    if result.returncode != 0 and not result.stdout:
        return GitResponse(500, {"content-type": "text/plain"}, result.stderr)
    return _parse_cgi(result.stdout)


def _login_hint(world: World, headers: dict[str, str]) -> str:
    token = _token(headers.get("authorization"))
    try:
        return world.principal_for_token(token).login if token else "anonymous"
    except ApiError:
        return "anonymous"
