"""The litestar application: one catch-all handler that sorts requests three ways.

`/{owner}/{repo}.git/...` goes to git's smart-HTTP backend, `/_sandbox/...` to
the control API, `/login/oauth/...` to the OAuth web flow's pages, the App
manifest flow's pages and conversion to `manifest`, everything
else to GitHub's REST and GraphQL routes (where the fault switch applies). Work runs in a thread: it takes the state lock and
spawns git.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from litestar import Litestar, Request, Response, route
from litestar.enums import HttpMethod

from sandbox import channel, control_api, githttp, manifest, oauth, routes
from sandbox.auth import Principal
from sandbox.errors import ApiError
from sandbox.limits import etag_of, matches
from sandbox.paging import link_header
from sandbox.world import World

log = logging.getLogger(__name__)
METHODS = [HttpMethod.GET, HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE]
MAX_BODY = 512 * 1024 * 1024
API_HEADERS = {"x-github-media-type": "github.v3; format=json"}


def _json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    merged = {**API_HEADERS, **(headers or {})}
    if status == 204 or content is None:
        return Response(content=b"", status_code=status, headers=merged)
    body = json.dumps(content).encode()
    return Response(content=body, status_code=status, headers=merged, media_type="application/json")


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "Problems parsing JSON") from exc


def handle_sync(
    world: World, method: str, path: str, query_string: str, headers: dict[str, str], raw: bytes
) -> Response:
    """Answer one request; runs in a worker thread."""
    if githttp.is_git_path(path):
        answer = githttp.handle(world, method, path, query_string, headers, raw)
        return Response(content=answer.body, status_code=answer.status, headers=answer.headers)
    if oauth.is_oauth_path(path) or manifest.is_manifest_path(path):
        pages = oauth if oauth.is_oauth_path(path) else manifest
        page = pages.handle(world, method, path, query_string, headers, raw)
        return Response(
            content=page.body,
            status_code=page.status,
            headers=page.headers,
            media_type=page.media_type,
        )
    query = dict(parse_qsl(query_string))
    try:
        if path.startswith(control_api.PREFIX + "/"):
            status, content = control_api.dispatch(world, method, path, query, _decode(raw))
            return _json_response(status, content)
        return _api(world, method, path, query, headers, raw)
    except ApiError as exc:
        return _json_response(exc.status, exc.body(), exc.headers)
    except Exception:  # noqa: BLE001 - answer like GitHub's 500, keep serving
        log.exception("sandbox: %s %s failed", method, path)
        return _json_response(500, ApiError(500, "Server Error").body())


def _api(
    world: World,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    raw: bytes,
) -> Response:
    """One GitHub API request through the rate limits, recorded (`sandbox.limits`).

    As on GitHub: the caller is authenticated first, a request past its budget
    (or past the secondary limit, for content creation) is refused without
    acting, a GET answers with an ETag and a matching `If-None-Match` gets a
    304 that costs nothing, and every answer says what is left.
    """
    route = routes.template_for(method, path) or f"{method} (unknown)"
    resource = "graphql" if route == "POST /graphql" else "core"
    who, status, counted = "anonymous", 500, False
    try:
        principal = world.authenticate(headers.get("authorization"))
        who = who_of(principal)
        world.limits.admit(who, resource, method, route)
        fault = world.apply_fault()
        if fault is not None:
            raise fault
        try:
            status, content = routes.dispatch(
                world, method, path, query, None, _decode(raw), principal=principal
            )
        except ApiError:
            counted = True  # a refused request still costs one
            world.limits.count(who, resource)
            raise
        extra = link_header(world.base_url, path, content)
        if method == "GET" and status == 200:
            extra["etag"] = etag_of(content, extra.get("link", ""))
            if matches(headers.get("if-none-match"), extra["etag"]):
                status = 304  # not counted: GitHub's rule for an authorised conditional request
                limit_headers = world.limits.headers(who, resource)
                return Response(
                    content=b"",
                    status_code=304,
                    headers={**API_HEADERS, **limit_headers, "etag": extra["etag"]},
                )
        counted = True
        world.limits.count(who, resource)
        extra.update(world.limits.headers(who, resource))
        return _json_response(status, content, extra)
    except ApiError as exc:
        status = exc.status
        if who != "anonymous":
            exc.headers = {**world.limits.headers(who, resource), **exc.headers}
        raise
    finally:
        world.limits.note(method, route, who, resource, status, counted)


def who_of(principal: Principal) -> str:
    """Whose budget a request spends: an installation's tokens share one, as on GitHub."""
    if principal.kind == "installation":
        return f"installation:{principal.installation_id}"
    if principal.kind == "user":
        return f"user:{principal.login}"
    return "app"


def build_app(world: World) -> Litestar:
    @route(["/", "/{path:path}"], http_method=METHODS)
    async def everything(request: Request[Any, Any, Any]) -> Response:
        raw = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        path = request.scope.get("raw_path", b"").decode() or request.url.path
        query_string = request.scope.get("query_string", b"").decode()
        return await anyio.to_thread.run_sync(
            handle_sync, world, request.method, path, query_string, headers, raw
        )

    return Litestar(
        route_handlers=[everything, *channel.handlers(channel.Channels())],
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        debug=False,
    )
