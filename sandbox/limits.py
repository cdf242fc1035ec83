"""GitHub's rate limits, as the sandbox enforces them, and the record of every request.

What GitHub documents, and the sandbox does:

- **Primary limit**: each caller has a budget of requests per hour, counted
  in a fixed window that starts with its first request and resets an hour
  later. An installation's tokens share one budget (5,000 an hour; 15,000 on
  Enterprise Cloud), each user has one, the App's JWT has one, and GraphQL
  has its own (resource `graphql`). Every answer carries
  `x-ratelimit-limit/remaining/used/reset/resource`; past the budget GitHub
  answers 403 "API rate limit exceeded" with `x-ratelimit-remaining: 0` and
  does nothing.
- **Conditional requests**: a GET answer carries an `ETag`; the same GET sent
  with `If-None-Match` answers 304 with no body while nothing changed, and a
  304 to an authorised request does not count against the budget.
- **Secondary limit on content creation**: at most N content-generating
  requests a minute and M an hour per caller (GitHub: "in general, no more
  than 80 content-generating requests per minute and no more than 500
  content-generating requests per hour"); past it, 403 "You have exceeded a
  secondary rate limit" with `retry-after`. What generates content is a POST
  that makes something new: an issue, a comment, a pull request, a commit, a
  ref, a label, a reaction, a check run (`creates_content`). Edits, label
  changes on an issue, deletions, merges, draft flips and token requests
  change what exists and are not counted here (they spend the primary
  budget like every request).

Every API request is recorded (method, route template, who, status, whether
it counted) so that benchmarks and tests can count what a client spent. The
control API reads and resets the record and sets the limits
(`/_sandbox/limits`, `/_sandbox/requests`).

Defaults: the primary budget is on at GitHub's 5,000 an hour (no test comes
near it, and every answer's headers are then GitHub's real ones); the
secondary limit is off unless set, because a bot restarted mid-test (the
chaos tests) forgets its own pacing and would wait out minutes of
`retry-after` that tell the test nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.errors import ApiError

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# POST routes that act on what exists instead of making something new.
NOT_CONTENT = frozenset(
    {
        "POST /repos/{owner}/{repo}/issues/{n}/labels",  # attaches existing labels
        "POST /graphql",  # the sandbox's mutations flip a PR's draft state
        "POST /app/installations/{n}/access_tokens",  # credentials, not content
        "POST /app/hook/deliveries/{n}/attempts",  # a redelivery
    }
)


def creates_content(method: str, route: str) -> bool:
    """Whether a request counts against the content-creation limit: a POST that makes
    something new (`route` is its template, e.g. `POST /repos/{owner}/{repo}/pulls`)."""
    return method == "POST" and route not in NOT_CONTENT


DEFAULT_BUDGET = 5000
HOUR_S = 3600.0
MAX_RECORD = 500_000  # requests kept (a benchmark's worth); the oldest go first
PRIMARY_MESSAGE = "API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please include the request ID."
SECONDARY_MESSAGE = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID."


@dataclass
class Settings:
    """The limits in force; `None` turns one off. `window_s` is GitHub's hour
    (shorter in tests, so that a reset can be waited for)."""

    budget: int | None = DEFAULT_BUDGET
    window_s: float = HOUR_S
    graphql_budget: int | None = DEFAULT_BUDGET
    secondary_per_minute: int | None = None
    secondary_per_hour: int | None = None
    minute_s: float = 60.0

    def update(self, values: dict[str, Any]) -> None:
        """Set the fields named in `values` (a control request's JSON); 422 on nonsense."""
        for name, value in values.items():
            if name not in self.__dataclass_fields__:
                raise ApiError(422, f"unknown limit {name!r}")
            if value is None and name not in ("window_s", "minute_s"):
                setattr(self, name, None)
                continue
            try:
                number = float(value) if name.endswith("_s") else int(value)
            except (TypeError, ValueError) as exc:
                raise ApiError(422, f"{name} must be a number") from exc
            if number <= 0 and name.endswith("_s"):
                raise ApiError(422, f"{name} must be positive")
            if number < 0:
                raise ApiError(422, f"{name} must not be negative")
            setattr(self, name, number)


@dataclass
class Window:
    """One caller's primary budget: requests counted since `started`, resetting at `reset_at`."""

    started: float
    reset_at: float
    used: int = 0


@dataclass(frozen=True)
class Entry:
    """One API request as the record keeps it."""

    at: float
    method: str
    route: str  # the route template, e.g. `GET /repos/{owner}/{repo}/issues/{n}/comments`
    who: str  # the budget it counts against: `installation:ID`, `user:LOGIN`, `app`, `anonymous`
    resource: str  # core or graphql
    status: int
    counted: bool  # against the primary budget (a 304 is not, nor a request refused for it)
    write: bool  # a write (POST, PATCH, PUT, DELETE)
    content: bool = False  # content-creating (`creates_content`): the secondary limit's count


def etag_of(content: Any, extra: str = "") -> str:
    """A weak ETag for an answer's JSON (and its Link header): equal answers, equal tags."""
    digest = hashlib.sha256(
        json.dumps(content, sort_keys=True, default=str).encode() + extra.encode()
    ).hexdigest()
    return f'W/"{digest[:40]}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (weak comparison, lists and `*` allowed)."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


@dataclass
class Limits:
    """The sandbox's rate limiter and request record; thread-safe (requests run in threads)."""

    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], float] = time.time
    windows: dict[tuple[str, str], Window] = field(default_factory=dict)
    writes: dict[str, deque[float]] = field(default_factory=dict)
    record: deque[Entry] = field(default_factory=lambda: deque(maxlen=MAX_RECORD))
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the primary budget ---------------------------------------------------------------

    def budget_of(self, resource: str) -> int | None:
        return self.settings.graphql_budget if resource == "graphql" else self.settings.budget

    def _window(self, who: str, resource: str, now: float) -> Window:
        key = (who, resource)
        window = self.windows.get(key)
        if window is None or now >= window.reset_at:
            window = Window(started=now, reset_at=now + self.settings.window_s)
            self.windows[key] = window
        return window

    def headers(self, who: str, resource: str) -> dict[str, str]:
        """GitHub's `x-ratelimit-*` headers for `who` as things stand."""
        with self.lock:
            return self._headers(who, resource, self.clock())

    def _headers(self, who: str, resource: str, now: float) -> dict[str, str]:
        budget = self.budget_of(resource)
        window = self._window(who, resource, now)
        limit = budget if budget is not None else DEFAULT_BUDGET
        used = window.used
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(math.ceil(window.reset_at)),
            "x-ratelimit-resource": resource,
        }

    def admit(self, who: str, resource: str, method: str, route: str = "") -> None:
        """Raise GitHub's refusal if `who` may not make this request now; counts nothing.

        `route` is the request's template: it decides whether the request creates
        content (`creates_content`); without one, every POST does."""
        if who == "anonymous":
            return
        with self.lock:
            now = self.clock()
            budget = self.budget_of(resource)
            window = self._window(who, resource, now)
            if budget is not None and window.used >= budget:
                headers = self._headers(who, resource, now)
                headers["retry-after"] = str(max(1, math.ceil(window.reset_at - now)))
                raise ApiError(
                    403, PRIMARY_MESSAGE.format(who=who.replace(":", " ID ")), headers=headers
                )
            if creates_content(method, route):
                wait = self._secondary_wait(who, now)
                if wait > 0:
                    headers = self._headers(who, resource, now)
                    headers["retry-after"] = str(max(1, math.ceil(wait)))
                    raise ApiError(403, SECONDARY_MESSAGE, headers=headers)
                self.writes.setdefault(who, deque()).append(now)

    def _secondary_wait(self, who: str, now: float) -> float:
        """Seconds until one more content-creating request fits `who`'s sliding windows."""
        sent = self.writes.get(who)
        if not sent:
            return 0.0
        hour = self.settings.window_s
        while sent and sent[0] <= now - max(hour, self.settings.minute_s):
            sent.popleft()
        wait = 0.0
        for limit, period in (
            (self.settings.secondary_per_minute, self.settings.minute_s),
            (self.settings.secondary_per_hour, hour),
        ):
            if limit is None:
                continue
            inside = [t for t in sent if t > now - period]
            if len(inside) >= limit:
                wait = max(wait, inside[len(inside) - limit] + period - now)
        return wait

    def count(self, who: str, resource: str) -> None:
        """Spend one request of `who`'s budget (an answered request that was not a 304)."""
        if who == "anonymous":
            return
        with self.lock:
            self._window(who, resource, self.clock()).used += 1

    # -- the record --------------------------------------------------------------------

    def note(
        self,
        method: str,
        route: str,
        who: str,
        resource: str,
        status: int,
        counted: bool,
    ) -> None:
        with self.lock:
            self.record.append(
                Entry(
                    at=self.clock(),
                    method=method,
                    route=route,
                    who=who,
                    resource=resource,
                    status=status,
                    counted=counted,
                    write=method in WRITE_METHODS,
                    content=creates_content(method, route),
                )
            )

    def entries(self, since: float = 0.0) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(e) for e in self.record if e.at >= since]

    def clear_record(self) -> int:
        with self.lock:
            dropped = len(self.record)
            self.record.clear()
            return dropped

    # -- steering -------------------------------------------------------------------------

    def configure(self, values: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.settings.update(values)
            if "window_s" in values:
                self.windows.clear()
            return self._describe()

    def reset(self) -> dict[str, Any]:
        """Every budget starts a new window now (GitHub's hour has passed)."""
        with self.lock:
            self.windows.clear()
            self.writes.clear()
            return self._describe()

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return self._describe()

    def _describe(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "settings": asdict(self.settings),
            "budgets": [
                {
                    "who": who,
                    "resource": resource,
                    "used": window.used,
                    "limit": self.budget_of(resource),
                    "reset": window.reset_at,
                }
                for (who, resource), window in self.windows.items()
                if now < window.reset_at
            ],
        }
