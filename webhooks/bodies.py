"""Request bodies, read with a cap: nobody can make the bot hold more than it allows.

Every endpoint has a size: the app's default (`KOHAI_MAX_BODY_BYTES`, for the
host API's events and results, the dashboard and everything else), GitHub's
webhooks (25 MB, GitHub's own maximum) and a job's pushed bundle (the bundle
cap). litestar enforces the size of the route (`request_max_body_size`) while
it streams: a declared `Content-Length` over it is refused before a byte is
read, and a chunked body is cut off the moment it passes. `read_capped` reads a
body that way for handlers that take the bytes themselves, answering 413.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ClientException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from bot.config import DEFAULT_MAX_BODY_BYTES
from bot.github import bundles

MB = 1024 * 1024
WEBHOOK_MAX_BODY_BYTES = 25 * MB  # GitHub caps a delivery's payload at 25 MB
PUSH_MAX_BODY_BYTES = bundles.MAX_BUNDLE_BYTES


class BodyTooLarge(Exception):
    """The body passed its cap; nothing past the cap was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, if it is at most `limit` bytes; BodyTooLarge as soon as it is not.

    A declared Content-Length over the cap is refused before reading; a body
    without one (chunked) is read chunk by chunk and dropped at the cap, so
    the bot never holds more than `limit` bytes of it.
    """
    try:
        declared = request.content_length
    except ClientException:
        declared = None  # a malformed Content-Length: the stream's own count decides
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
    except RequestEntityTooLarge as exc:  # the route's own cap is the smaller one
        raise BodyTooLarge(limit) from exc
    return b"".join(chunks)


def route_limit(request: Request) -> int:
    """The body cap of the route `request` is for (the app's default where it has none)."""
    return request.route_handler.resolve_request_max_body_size() or DEFAULT_MAX_BODY_BYTES


async def read_json(request: Request) -> object:
    """The body as JSON, read within its route's cap (BodyTooLarge past it; None: not JSON)."""
    body = await read_capped(request, route_limit(request))
    try:
        return json.loads(body, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError):
        return None


def _not_json(name: str) -> object:
    """NaN and Infinity are not JSON: a body that holds them is malformed."""
    raise ValueError(f"{name} is not JSON")


def too_large(request: Request, exc: Exception) -> Response[dict[str, str]]:
    """The app's 413 answer, naming the cap (for BodyTooLarge and litestar's own refusal)."""
    limit = exc.limit if isinstance(exc, BodyTooLarge) else route_limit(request)
    return Response({"error": f"the request body is larger than {limit} bytes"}, status_code=413)


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    BodyTooLarge: too_large,
    RequestEntityTooLarge: too_large,
}
