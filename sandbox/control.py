"""`SandboxControl`: act as the sandbox's humans and steer it, over HTTP.

Tests and the demo use it to do what people do on GitHub (open an issue, add a
label, comment, merge) and to inspect what the bot did, without credentials.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from sandbox.control_api import PREFIX


class SandboxError(RuntimeError):
    """The sandbox refused a control request; carries GitHub's status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class SandboxControl:
    """A small client for `/_sandbox/...`; every action names the acting user."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.client = httpx.Client(base_url=base_url.rstrip("/") + PREFIX, timeout=timeout)

    def disconnect(self) -> None:
        """Close the HTTP connection pool (`close` closes an issue)."""
        self.client.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise SandboxError(response.status_code, message)
        return response.json() if response.content else None

    # -- acting as a human ---------------------------------------------------------------

    def open_issue(
        self,
        repo: str,
        title: str,
        body: str = "",
        labels: tuple[str, ...] | list[str] = (),
        as_user: str = "bob",
    ) -> dict[str, Any]:
        payload = {"title": title, "body": body, "labels": list(labels), "as_user": as_user}
        return self._call("POST", f"/repos/{repo}/issues", json=payload)

    def comment(self, repo: str, number: int, body: str, as_user: str = "bob") -> dict[str, Any]:
        return self._call(
            "POST",
            f"/repos/{repo}/issues/{number}/comments",
            json={"body": body, "as_user": as_user},
        )

    def add_labels(
        self, repo: str, number: int, labels: tuple[str, ...] | list[str], as_user: str = "bob"
    ) -> list[dict[str, Any]]:
        return self._call(
            "POST",
            f"/repos/{repo}/issues/{number}/labels",
            json={"labels": list(labels), "as_user": as_user},
        )

    def remove_label(
        self, repo: str, number: int, label: str, as_user: str = "bob"
    ) -> list[dict[str, Any]]:
        return self._call(
            "DELETE",
            f"/repos/{repo}/issues/{number}/labels/{quote(label, safe='')}",
            params={"as_user": as_user},
        )

    def close(self, repo: str, number: int, as_user: str = "bob") -> dict[str, Any]:
        return self._call("POST", f"/repos/{repo}/issues/{number}/close", json={"as_user": as_user})

    def merge(
        self, repo: str, number: int, as_user: str = "alice", merge_method: str = "merge"
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            f"/repos/{repo}/pulls/{number}/merge",
            json={"as_user": as_user, "merge_method": merge_method},
        )

    # -- steering the sandbox ----------------------------------------------------------

    def fault(self, count: int, kind: str = "502", retry_after: int = 1) -> dict[str, Any]:
        """Make the next `count` GitHub API requests fail (502 or secondary rate limit)."""
        return self._call(
            "POST", "/fault", json={"count": count, "kind": kind, "retry_after": retry_after}
        )

    def limits(self) -> dict[str, Any]:
        """The rate limits in force and every caller's budget in its current window."""
        return self._call("GET", "/limits")

    def set_limits(self, *, reset: bool = False, **values: Any) -> dict[str, Any]:
        """Set rate limits: `budget` (requests per window per caller, None: off),
        `window_s` (GitHub's hour), `graphql_budget`, `secondary_per_minute`,
        `secondary_per_hour`; `reset=True` starts every window anew."""
        return self._call("POST", "/limits", json={**values, "reset": reset})

    def requests(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Every GitHub API request recorded (method, route, who, status, counted, write)."""
        return self._call("GET", "/requests", params={"since": str(since)})

    def clear_requests(self) -> int:
        return int(self._call("DELETE", "/requests")["cleared"])

    def deliveries(self, wait: float | None = 10.0) -> list[dict[str, Any]]:
        """Every webhook delivery so far (oldest first), after the queue drains."""
        params = {"wait": str(wait)} if wait else {}
        return self._call("GET", "/deliveries", params=params)

    def set_webhook_url(self, url: str | None) -> None:
        self._call("POST", "/webhook-url", json={"url": url})

    def add_user(self, login: str, role: str | None = None) -> dict[str, Any]:
        """A new human account (`role` None: only what repositories grant it)."""
        return self._call("POST", "/users", json={"login": login, "role": role})

    def set_collaborator(self, repo: str, login: str, permission: str = "read") -> None:
        self._call(
            "PUT",
            f"/repos/{repo}/collaborators/{quote(login, safe='')}",
            json={"permission": permission},
        )

    def set_callback_urls(self, urls: list[str]) -> None:
        """The App's OAuth callback URLs (where the sign-in page may send users back)."""
        self._call("POST", "/callback-urls", json={"urls": urls})

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    def expire_token(self, token: str) -> None:
        self._call("POST", "/tokens/expire", json={"token": token})

    # -- looking ---------------------------------------------------------------------

    def pulls(self, repo: str, state: str = "all") -> list[dict[str, Any]]:
        return self._call("GET", f"/repos/{repo}/pulls", params={"state": state})

    def pull(self, repo: str, number: int) -> dict[str, Any]:
        return self._call("GET", f"/repos/{repo}/pulls/{number}")

    def issue(self, repo: str, number: int) -> dict[str, Any]:
        return self._call("GET", f"/repos/{repo}/issues/{number}")

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return self._call("GET", f"/repos/{repo}/issues/{number}/comments")

    def labels_of(self, repo: str, number: int) -> list[str]:
        return [
            label["name"] for label in self._call("GET", f"/repos/{repo}/issues/{number}/labels")
        ]
