"""`POST /webhooks/github`: verify, store, acknowledge. Routing happens after the 202."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

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


def accept_delivery(
    ctx: Any, body: bytes, headers: Mapping[str, str]
) -> tuple[int, dict[str, str]]:
    """Verify, store, wake the inbox: (HTTP status, answer). One intake for every way in.

    GitHub's own POST and a webhook channel (`webhooks.relay`) both come here:
    the signature is checked over the body bytes as if GitHub had posted them.
    """
    if len(body) > MAX_BODY:  # the POST stops reading at the cap; a channel's event is checked here
        return 413, {"error": "payload over 25 MB"}
    if not signature_ok(ctx.settings.webhook_secret, body, headers.get("x-hub-signature-256")):
        return 401, {"error": "missing or invalid X-Hub-Signature-256"}
    event = headers.get("x-github-event")
    delivery = headers.get("x-github-delivery")
    if not event or not delivery:
        return 400, {"error": "missing X-GitHub-Event or X-GitHub-Delivery header"}
    if not HEADER_WORD.fullmatch(event) or not HEADER_WORD.fullmatch(delivery):
        # Neither header is signed: they are stored, shown and logged, so they are words.
        return 400, {"error": "malformed X-GitHub-Event or X-GitHub-Delivery header"}
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return 400, {"error": "body is not UTF-8 JSON"}
    if not isinstance(payload, dict):
        return 400, {"error": "body is not a JSON object"}
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    if not store_delivery(ctx.store, delivery, event, action, body):
        return 200, {"status": "duplicate", "delivery": delivery}
    ctx.inbox_wake.set()
    return 202, {"status": "stored", "delivery": delivery}


@post(
    "/webhooks/github",
    status_code=202,
    include_in_schema=True,
    summary="GitHub webhook intake",
    request_max_body_size=WEBHOOK_MAX_BODY_BYTES,
)
async def github_webhook(request: Request, state: State) -> Response[dict[str, str]]:
    """202 stored; 200 duplicate; 401 bad signature; 400 malformed; 413 over 25 MB."""
    try:
        body = await read_capped(request, MAX_BODY)
    except BodyTooLarge:
        return _error(413, "payload over 25 MB")
    headers = {key.lower(): value for key, value in request.headers.items()}
    status, answer = accept_delivery(state.kohai, body, headers)
    return Response(answer, status_code=status)
