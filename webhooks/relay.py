"""Webhooks without a public URL: read them from a smee-compatible channel.

On a laptop GitHub cannot reach `POST /webhooks/github`. With
`KOHAI_WEBHOOK_PROXY_URL` set (the name Probot's users know), the App's webhook
URL points at a channel (smee.io, or the GitHub sandbox's own), and this worker
holds the channel's server-sent event stream open: each event carries GitHub's
headers and the JSON body, and goes through the same intake as a direct POST
(`webhooks.github_hook.accept_delivery`), signature checked as if GitHub had
posted it. A dropped stream is reopened with backoff; `/healthz` says while the
channel cannot be read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from bot.render.escape import for_log
from webhooks.github_hook import accept_delivery

log = logging.getLogger("kohai.relay")

BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# The headers a channel event carries that the intake reads (smee lower-cases them).
HEADERS = ("x-github-event", "x-github-delivery", "x-hub-signature-256", "x-github-hook-id")


def bodies(body: Any) -> Iterator[bytes]:
    """The body bytes GitHub may have signed, from a channel's parsed JSON body. Pure.

    A channel hands the body on parsed, so the bytes are rebuilt: GitHub's
    compact JSON, first as a JavaScript `JSON.stringify` writes it (what smee
    clients re-post), then with non-ASCII escaped.
    """
    yield json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    yield json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def delivery_of(data: str) -> tuple[dict[str, str], Any] | None:
    """(headers, parsed body) of one channel event, or None for a ready/ping event. Pure."""
    try:
        event = json.loads(data)
    except ValueError:
        return None
    if not isinstance(event, dict) or "body" not in event:
        return None
    headers = {k.lower(): str(v) for k, v in event.items() if k.lower() in HEADERS}
    if "x-github-event" not in headers:
        return None
    return headers, event["body"]


def relay_one(ctx: Any, data: str) -> int | None:
    """Feed one channel event to the intake; its HTTP-like status, None when not a delivery."""
    found = delivery_of(data)
    if found is None:
        return None
    headers, body = found
    status = 401
    for raw in bodies(body):
        status, answer = accept_delivery(ctx, raw, headers)
        if status != 401:
            break
    if status >= 400:
        log.warning(
            "webhook channel: delivery %s refused (%s)",
            for_log(headers.get("x-github-delivery"), 100),
            status,
        )
    return status


async def run_relay(
    ctx: Any,
    url: str,
    on_problems: Callable[[list[str]], None],
    *,
    client: httpx.AsyncClient | None = None,
) -> None:
    """Hold the channel open for the process's lifetime, reopening it with backoff."""
    attempt = 0
    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
    alive = asyncio.create_task(_beat(ctx))  # a quiet channel is not a dead worker
    try:
        while True:
            try:
                async with aconnect_sse(http, "GET", url) as source:
                    source.response.raise_for_status()
                    attempt = 0
                    on_problems([])
                    log.info("webhook channel %s open", url)
                    async for event in source.aiter_sse():
                        if event.event in ("message", "") and event.data:
                            relay_one(ctx, event.data)
                raise httpx.ReadError("the channel closed the stream")
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, SSEError) as exc:
                wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                attempt += 1
                on_problems([f"webhook channel {url} cannot be read: {exc}; retrying in {wait:g}s"])
                log.warning("webhook channel %s: %s; retrying in %gs", url, exc, wait)
                await asyncio.sleep(wait)
    finally:
        alive.cancel()
        if own:
            await http.aclose()


async def _beat(ctx: Any, every_s: float = 5.0) -> None:
    while True:
        ctx.beat("relay")
        await asyncio.sleep(every_s)
