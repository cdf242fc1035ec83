"""A smee-compatible webhook channel, so the bot can be tested without a public URL.

`POST /_channels/{name}` takes a webhook delivery (set the App's webhook
URL to it); `GET /_channels/{name}` streams each delivery to every
listener as a server-sent event, the way smee.io does: an `event: ready` first,
then one JSON object per delivery holding the request's headers (lower-cased),
its parsed `body`, its `query` and a `timestamp` in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream

KEEPALIVE_S = 15.0


class Channels:
    """Listeners per channel name; what is posted while nobody listens is dropped, like smee."""

    def __init__(self) -> None:
        self.listeners: dict[str, set[asyncio.Queue[str]]] = {}

    def publish(self, name: str, message: dict[str, Any]) -> int:
        data = json.dumps(message, separators=(",", ":"))
        queues = self.listeners.get(name, set())
        for queue in queues:
            queue.put_nowait(data)
        return len(queues)

    async def listen(self, name: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.listeners.setdefault(name, set()).add(queue)
        try:
            yield "event: ready\ndata: {}\n\n"
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    yield "event: ping\ndata: {}\n\n"
                    continue
                yield f"data: {data}\n\n"
        finally:
            self.listeners[name].discard(queue)


def handlers(channels: Channels) -> list[Any]:
    @get("/_channels/{name:str}")
    async def listen(name: FromPath[str]) -> Stream:
        return Stream(
            channels.listen(name),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    @post("/_channels/{name:str}", status_code=200)
    async def publish(
        name: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[dict[str, Any]]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return Response({"error": "the body is not JSON"}, status_code=400)
        message: dict[str, Any] = {key.lower(): value for key, value in request.headers.items()}
        message.update(
            body=body, query=dict(request.query_params), timestamp=int(time.time() * 1000)
        )
        return Response({"listeners": channels.publish(name, message)}, status_code=200)

    return [listen, publish]
