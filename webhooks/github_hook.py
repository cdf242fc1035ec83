"""`POST /webhooks/github`: verify, store, acknowledge. Routing happens after the 202."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

from litestar import Request, Response, post
from litestar.datastructures import State

from bot.engine.inbox import store_delivery
from webhooks.bodies import WEBHOOK_MAX_BODY_BYTES, BodyTooLarge, read_capped

MAX_BODY = WEBHOOK_MAX_BODY_BYTES
# An event name (`issue_comment`) or a delivery id (a GUID; redeliveries keep it).
HEADER_WORD = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """HMAC-SHA256 of the exact body bytes, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def _error(status: int, message: str) -> Response[dict[str, str]]:
    return Response({"error": message}, status_code=status)


@post(
    "/webhooks/github",
    status_code=202,
    include_in_schema=True,
    summary="GitHub webhook intake",
    request_max_body_size=WEBHOOK_MAX_BODY_BYTES,
)
async def github_webhook(request: Request, state: State) -> Response[dict[str, str]]:
    """202 stored; 200 duplicate; 401 bad signature; 400 malformed; 413 over 25 MB."""
    ctx = state.kohai
    try:
        body = await read_capped(request, MAX_BODY)
    except BodyTooLarge:
        return _error(413, "payload over 25 MB")
    if not signature_ok(
        ctx.settings.webhook_secret, body, request.headers.get("x-hub-signature-256")
    ):
        return _error(401, "missing or invalid X-Hub-Signature-256")
    event = request.headers.get("x-github-event")
    delivery = request.headers.get("x-github-delivery")
    if not event or not delivery:
        return _error(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    if not HEADER_WORD.fullmatch(event) or not HEADER_WORD.fullmatch(delivery):
        # Neither header is signed: they are stored, shown and logged, so they are words.
        return _error(400, "malformed X-GitHub-Event or X-GitHub-Delivery header")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not UTF-8 JSON")
    if not isinstance(payload, dict):
        return _error(400, "body is not a JSON object")
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    if not store_delivery(ctx.store, delivery, event, action, body):
        return Response({"status": "duplicate", "delivery": delivery}, status_code=200)
    ctx.inbox_wake.set()
    return Response({"status": "stored", "delivery": delivery}, status_code=202)
