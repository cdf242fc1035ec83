"""Webhook delivery: signed POSTs, in order, off the request path, logged.

GitHub answers the API call first and delivers the webhook later; it never
retries a failed delivery by itself, but keeps a log from which an App can ask
for a redelivery. The sandbox does the same, so that the bot's recovery after
downtime can be tested for real.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from sandbox.state import State, app_record, now_iso

USER_AGENT = "GitHub-Hookshot/sandbox"
TIMEOUT_S = 10.0


def sign(secret: str, body: bytes) -> str:
    """GitHub's `X-Hub-Signature-256` value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def headers_for(record: dict[str, Any], body: bytes, secret: str, hook_id: int) -> dict[str, str]:
    return {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-GitHub-Delivery": record["guid"],
        "X-GitHub-Event": record["event"],
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(record["app_id"]),
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-Hub-Signature-256": sign(secret, body),
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
    }


def listing(record: dict[str, Any]) -> dict[str, Any]:
    """The summary GET /app/hook/deliveries lists."""
    keys = (
        "id",
        "guid",
        "delivered_at",
        "redelivery",
        "duration",
        "status",
        "status_code",
        "event",
        "action",
        "installation_id",
        "repository_id",
        "throttled_at",
    )
    return {key: record.get(key) for key in keys}


def detail(record: dict[str, Any]) -> dict[str, Any]:
    """The full delivery GET /app/hook/deliveries/{id} returns."""
    shape = listing(record)
    shape["url"] = record.get("url") or ""
    shape["request"] = record["request"]
    shape["response"] = record["response"]
    return shape


class Deliverer:
    """One background thread posting queued events in the order they happened."""

    def __init__(self, state: State, *, on_change: Callable[[], None]) -> None:
        self.state = state
        self.on_change = on_change
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.pending = 0
        self.idle = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self.client = httpx.Client(timeout=TIMEOUT_S)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=TIMEOUT_S + 2)
        self.client.close()

    def enqueue(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        guid: str | None = None,
        redelivery: bool = False,
        app_id: int | None = None,
    ) -> None:
        """Queue one delivery to an App's hook (None: the default App's); call with the
        state lock held so order is preserved."""
        repository = payload.get("repository") or {}
        installation = payload.get("installation") or {}
        item = {
            "event": event,
            "action": payload.get("action"),
            "payload": payload,
            "guid": guid or str(uuid.uuid4()),
            "redelivery": redelivery,
            "app_id": app_id,
            "installation_id": installation.get("id"),
            "repository_id": repository.get("id"),
        }
        with self.idle:
            self.pending += 1
        self.queue.put(item)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued delivery has been attempted."""
        deadline = time.monotonic() + timeout
        with self.idle:
            while self.pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.idle.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                self._deliver(item)
            finally:
                with self.idle:
                    self.pending -= 1
                    self.idle.notify_all()

    def _deliver(self, item: dict[str, Any]) -> None:
        with self.state.lock:
            app = app_record(self.state.data, item.get("app_id")) or self.state.data["app"]
            url, secret, hook_id, app_id = (
                app["webhook_url"],
                app["webhook_secret"],
                app["hook_id"],
                app["id"],
            )
            delivery_id = self.state.next_id("delivery", start=10_000_001)
        record: dict[str, Any] = {
            "id": delivery_id,
            "guid": item["guid"],
            "delivered_at": now_iso(),
            "redelivery": item["redelivery"],
            "event": item["event"],
            "action": item["action"],
            "installation_id": item["installation_id"],
            "repository_id": item["repository_id"],
            "throttled_at": None,
            "url": url or "",
            "app_id": app_id,
        }
        body = encode(item["payload"])
        headers = headers_for(record, body, secret, hook_id)
        record["request"] = {"headers": headers, "payload": item["payload"]}
        started = time.monotonic()
        if not url:
            status_code, status, response = 0, "No webhook URL configured", {}
        else:
            try:
                answer = self.client.post(url, content=body, headers=headers)
                status_code = answer.status_code
                status = (
                    "OK" if 200 <= status_code < 300 else f"Invalid HTTP Response: {status_code}"
                )
                response = {"headers": dict(answer.headers), "payload": answer.text[:10_000]}
            except httpx.HTTPError as exc:
                status_code, status, response = 0, f"failed to connect to host: {exc}", {}
        record["duration"] = round(time.monotonic() - started, 3)
        record["status_code"] = status_code
        record["status"] = status
        record["response"] = {
            "headers": response.get("headers", {}),
            "payload": response.get("payload"),
        }
        with self.state.lock:
            self.state.append_delivery(record)
            self.on_change()
