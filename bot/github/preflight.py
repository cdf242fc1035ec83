"""Start-up checks against GitHub: is the key a key, is GitHub there, does it accept the App.

A bot with a wrong App id or key starts, acknowledges webhooks and then
fails at its first write, minutes later and far from the cause. These checks
make the same mistakes fail at start-up (and show on `/healthz`) with one
line naming the setting to fix. They use httpx and PyJWT directly, so that
they also run before the GitHub client is set up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bot.core import router
from bot.deploy import ALWAYS_DELIVERED_EVENTS

# GitHub accepts App JWTs valid for at most ten minutes; back-date for clock drift.
JWT_BACKDATE_S = 60
JWT_LIFETIME_S = 540
USER_AGENT = "kohai-preflight"

PERMISSION_RANK = {"none": 0, "read": 1, "write": 2, "admin": 3}


@dataclass(frozen=True)
class Check:
    """One check. `fatal` ones stop start-up when they fail; the others are warnings."""

    name: str
    ok: bool
    message: str
    fatal: bool = True


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks if check.fatal)

    @property
    def errors(self) -> list[str]:
        return [c.message for c in self.checks if not c.ok and c.fatal]

    @property
    def warnings(self) -> list[str]:
        return [c.message for c in self.checks if not c.ok and not c.fatal]

    def as_dict(self) -> dict[str, object]:
        """For `/healthz`."""
        return {
            "ok": self.ok,
            "checks": [
                {"name": c.name, "ok": c.ok, "message": c.message, "fatal": c.fatal}
                for c in self.checks
            ],
        }


def app_jwt(app_id: int, private_key_pem: str, now: float | None = None) -> str:
    """The JSON Web Token an App authenticates with as itself (RS256, issuer = App id)."""
    issued = int(now if now is not None else time.time()) - JWT_BACKDATE_S
    claims = {"iat": issued, "exp": issued + JWT_LIFETIME_S, "iss": str(app_id)}
    return jwt.encode(claims, private_key_pem, algorithm="RS256")


def check_private_key(private_key_pem: str) -> Check:
    try:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check(
            "private key", False, f"KOHAI_GITHUB_PRIVATE_KEY is not a PEM private key ({reason})"
        )
    if not isinstance(key, RSAPrivateKey):
        return Check(
            "private key", False, "KOHAI_GITHUB_PRIVATE_KEY is not an RSA key, as GitHub Apps use"
        )
    return Check("private key", True, f"RSA private key, {key.key_size} bits")


def check_permissions(app: dict[str, object]) -> Check:
    """Compare what the App was granted with what the router needs (a warning, not fatal).

    GitHub reports an App's `permissions` and `events` on `GET /app`; an App
    registered by hand with a permission missing starts fine and then fails
    on exactly the writes that need it.
    """
    granted = app.get("permissions")
    if not isinstance(granted, dict) or not granted:
        return Check("App permissions", True, "GitHub did not report the App's permissions", False)
    lacking = [
        f"{name}: {level} (has {granted.get(name, 'none')})"
        for name, level in router.REQUIRED_PERMISSIONS.items()
        if PERMISSION_RANK.get(str(granted.get(name, "none")), 0) < PERMISSION_RANK[level]
    ]
    events = app.get("events")
    missing_events: list[str] = []
    if isinstance(events, list):
        wanted = [e for e in router.SUBSCRIBED_EVENTS if e not in ALWAYS_DELIVERED_EVENTS]
        missing_events = [e for e in wanted if e not in events]
    if not lacking and not missing_events:
        return Check("App permissions", True, "the App has the permissions and events kohai needs")
    parts = []
    if lacking:
        parts.append("permissions " + ", ".join(lacking))
    if missing_events:
        parts.append("events " + ", ".join(missing_events))
    message = "the App lacks " + "; ".join(parts) + " (see `kohai app manifest`)"
    return Check("App permissions", False, message, False)


async def preflight(
    app_id: int, private_key_pem: str, api_url: str, *, timeout: float = 10
) -> PreflightReport:
    """Check the key, then `GET /app` as the App; every failure is one line naming its cause."""
    report = PreflightReport()
    base = api_url.rstrip("/")
    key_check = check_private_key(private_key_pem)
    report.checks.append(key_check)
    headers = {"Accept": "application/vnd.github+json", "User-Agent": USER_AGENT}
    if key_check.ok:
        headers["Authorization"] = f"Bearer {app_jwt(app_id, private_key_pem)}"
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
        try:
            response = await client.get(f"{base}/app")
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            report.checks.append(Check("GitHub", False, f"cannot reach GitHub at {base}: {reason}"))
            return report
    report.checks.append(Check("GitHub", True, f"GitHub answers at {base}"))
    if not key_check.ok:
        return report  # nothing to authenticate with: the key's own check says why
    if _rate_limited(response):
        report.checks.append(
            Check(
                "App credentials",
                False,
                f"GitHub is rate limiting the App ({response.status_code} "
                f"{_github_message(response)}); the check is repeated until it passes",
            )
        )
        return report
    if response.status_code in (401, 403):
        report.checks.append(
            Check(
                "App credentials",
                False,
                f"GitHub rejected the App credentials (app id {app_id}): "
                f"{response.status_code} {_github_message(response)}",
            )
        )
        return report
    if response.status_code != 200:
        report.checks.append(
            Check(
                "App credentials",
                False,
                f"GitHub answered {response.status_code} to GET {base}/app: "
                f"{_github_message(response)}",
            )
        )
        return report
    try:
        app = response.json()
    except ValueError:
        app = {}
    if not isinstance(app, dict):
        app = {}
    slug = app.get("slug") or app.get("name") or f"id {app_id}"
    report.checks.append(Check("App credentials", True, f"authenticated as the App {slug}"))
    report.checks.append(check_permissions(app))
    return report


def _github_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.reason_phrase


def _rate_limited(response: httpx.Response) -> bool:
    """A 403/429 that is GitHub's rate limit (primary or secondary), not a refusal of the key."""
    if response.status_code not in (403, 429):
        return False
    if response.status_code == 429 or "retry-after" in response.headers:
        return True
    if response.headers.get("x-ratelimit-remaining") == "0":
        return True
    message = _github_message(response).lower()
    return "rate limit" in message or "abuse" in message
