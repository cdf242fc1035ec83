"""Start-up checks against GitHub: is the key a key, is GitHub there, does it accept the App.

A bot with a wrong App id or key starts, acknowledges webhooks and then
fails at its first write, minutes later and far from the cause. These checks
make the same mistakes fail at start-up (and show on `/healthz`) with one
line naming the setting to fix. They ask through `GitHubApp`, once each,
with a client of their own, so that they also run before the bot's client is
set up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bot.core import router
from bot.deploy import ALWAYS_DELIVERED_EVENTS
from bot.github.client import GitHubApp, GitHubWriteError

PERMISSION_RANK = {"none": 0, "read": 1, "write": 2, "admin": 3}


@dataclass(frozen=True)
class Check:
    """One check. `fatal` ones stop start-up when they fail; the others are warnings."""

    name: str
    ok: bool
    message: str
    fatal: bool = True
    # GitHub asked us to wait (a rate limit): the check passes later by itself.
    transient: bool = False


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
    def refusals(self) -> list[str]:
        """What stops `kohai serve` at start-up: fatal failures that waiting will not fix."""
        return [c.message for c in self.checks if not c.ok and c.fatal and not c.transient]

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


def check_private_key(private_key_pem: str, source: str = "KOHAI_GITHUB_PRIVATE_KEY") -> Check:
    """Is the key an RSA private key; `source` is the setting it came from, named on failure."""
    try:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check("private key", False, f"{source} is not a PEM private key ({reason})")
    if not isinstance(key, RSAPrivateKey):
        return Check("private key", False, f"{source} is not an RSA key, as GitHub Apps use")
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
    app_id: int,
    private_key_pem: str,
    api_url: str,
    *,
    timeout: float = 10,
    key_source: str = "KOHAI_GITHUB_PRIVATE_KEY",
) -> PreflightReport:
    """Check the key, then `GET /app` as the App; every failure is one line naming its cause.

    Asked once each, through `GitHubApp` (the one door to GitHub, which signs
    the App's JWT): a start-up check reports what GitHub says now rather than
    retrying it away.
    """
    report = PreflightReport()
    base = api_url.rstrip("/")
    key_check = check_private_key(private_key_pem, key_source)
    report.checks.append(key_check)
    github = GitHubApp(
        app_id,
        private_key_pem,
        base,
        max_attempts=1,
        timeout_s=timeout,
        content_per_minute=None,
        content_per_hour=None,
        writes_per_minute=None,
    )
    try:
        if not key_check.ok:
            # Nothing to sign with: only whether GitHub is there; the key's own check says why.
            unreachable = await github.reachable()
            report.checks.append(_reach_check(base, unreachable))
            return report
        try:
            app = await github.app_info()
        except GitHubWriteError as exc:
            if exc.status == 0:
                report.checks.append(_reach_check(base, exc.message))
                return report
            report.checks.append(_reach_check(base, None))
            limited = exc.status in (403, 429) and exc.retryable
            report.checks.append(
                Check("App credentials", False, _refusal(app_id, base, exc), transient=limited)
            )
            return report
    finally:
        await github.aclose()
    report.checks.append(_reach_check(base, None))
    slug = app.get("slug") or app.get("name") or f"id {app_id}"
    report.checks.append(Check("App credentials", True, f"authenticated as the App {slug}"))
    report.checks.append(check_permissions(app))
    return report


def _reach_check(base: str, unreachable: str | None) -> Check:
    if unreachable is not None:
        return Check("GitHub", False, f"cannot reach GitHub at {base}: {unreachable}")
    return Check("GitHub", True, f"GitHub answers at {base}")


def _refusal(app_id: int, base: str, exc: GitHubWriteError) -> str:
    """What GitHub's refusal of `GET /app` means: a rate limit is never bad credentials."""
    if exc.status in (403, 429) and exc.retryable:
        return (
            f"GitHub is rate limiting the App ({exc.status} {exc.message}); "
            "the check is repeated until it passes"
        )
    if exc.status in (401, 403):
        return f"GitHub rejected the App credentials (app id {app_id}): {exc.status} {exc.message}"
    return f"GitHub answered {exc.status} to GET {base}/app: {exc.message}"
