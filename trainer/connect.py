"""`kohai host run`'s start-up check of `--bot-url`: scheme, reachable, token accepted.

Without it a mistyped URL (`kohai.example.com`, no scheme) or a rotated
token shows as an endless retry loop in the log. Each problem is one line
naming what to change; the daemon exits with them before leasing anything.
A bot that cannot be reached yet (it may be starting beside the host) is
asked again for a bounded time, `KOHAI_BOT_WAIT_S` (default 30 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import httpx

DEFAULT_WAIT_S = 30.0


def bot_url_problem(url: str) -> str | None:
    """Why `url` cannot be the bot's address, or None: the pure part of the check."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return (
            f"--bot-url {url!r} is not an http(s) URL: write it with its scheme, "
            f"e.g. https://{url.strip().split('://')[-1].lstrip('/') or 'kohai.example.com'}"
        )
    if parts.query or parts.fragment:
        return f"--bot-url {url!r}: give the bot's base URL, without ?query or #fragment"
    return None


def check_bot(
    url: str,
    students: Sequence[tuple[str, str]],
    *,
    wait_s: float = DEFAULT_WAIT_S,
    on_wait: Callable[[str], None] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[str]:
    """The problems with reaching the bot at `url` as each (name, token); [] when all is well.

    Reachability is asked until `wait_s` has passed (`on_wait` hears the
    first failure once); a token is checked once: a refusal does not heal.
    """
    problem = bot_url_problem(url)
    if problem is not None:
        return [problem]
    base = url.strip().rstrip("/")
    with httpx.Client(base_url=base, timeout=10.0, transport=transport) as client:
        unreachable = _wait_reachable(client, base, wait_s, on_wait)
        if unreachable is not None:
            return [unreachable]
        return [p for name, token in students if (p := _token_problem(client, base, name, token))]


def _wait_reachable(
    client: httpx.Client, base: str, wait_s: float, on_wait: Callable[[str], None] | None
) -> str | None:
    deadline = time.monotonic() + max(0.0, wait_s)
    told = False
    while True:
        try:
            response = client.get("/livez")
        except httpx.TransportError as exc:
            reason = f"cannot reach the bot at {base} ({type(exc).__name__}: {exc})"
        else:
            if response.status_code == 200:
                return None
            reason = (
                f"{base}/livez answered {response.status_code}: "
                "is --bot-url the address of a kohai bot (`kohai serve`)?"
            )
            if response.status_code < 500:
                return reason  # something answers, and it is not a kohai bot
        if time.monotonic() >= deadline:
            return reason + f"; check --bot-url (waited {wait_s:g}s, KOHAI_BOT_WAIT_S)"
        if not told and on_wait is not None:
            on_wait(f"{reason}; trying again for up to {wait_s:g}s")
            told = True
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def _token_problem(client: httpx.Client, base: str, name: str, token: str) -> str | None:
    try:
        response = client.get(
            f"/api/hosts/{name}/whoami", headers={"Authorization": f"Bearer {token}"}
        )
    except httpx.TransportError as exc:
        return f"cannot reach the bot at {base} ({type(exc).__name__}: {exc})"
    if response.status_code == 200:
        return None
    if response.status_code == 401:
        return (
            f"the bot at {base} does not accept the token for student {name}: set "
            f"KOHAI_HOST_TOKEN to the one `kohai hosts add {name}` (or `hosts rotate {name}`) "
            "printed, against this bot's database"
        )
    if response.status_code == 403:
        return f"the token given for student {name} belongs to another student"
    return f"the bot at {base} answered {response.status_code} to the token check of {name}"
