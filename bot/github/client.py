"""The bot's only door to GitHub: App authentication, retries, rate limits, pacing.

Everything that talks to GitHub goes through `GitHubApp.call` (githubkit's
typed REST methods, for an installation or the App) or `GitHubApp.request`
(a raw call, for what has no typed method; built on `call`), so that one
place decides when a failed call is tried again, how long to wait, and how
fast content may be created. The decisions themselves (`classify_failure`,
`backoff_s`, `Pacer.delay`) are pure so that tests can pin them exactly; the
sleep function and the clocks are injected for the same reason.

A write that failed on a 5xx or a dropped connection may still have happened
on GitHub's side. Such a request is only re-sent here when it is idempotent
(GET, PUT, PATCH, DELETE, or a POST the caller vouches for); otherwise the
error goes back to the outbox, which looks for the write's marker before
trying again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import certifi
import httpx
import pydantic
from githubkit import (
    AppAuthStrategy,
    AppInstallationAuthStrategy,
    GitHub,
    Response,
    TokenAuthStrategy,
    UnauthAuthStrategy,
)
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RequestError, RequestFailed

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
R = TypeVar("R")
Clock = Callable[[], float]

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
DEFAULT_API_URL = "https://api.github.com"


class GitHubWriteError(Exception):
    """A GitHub call that did not succeed, after whatever retrying was sensible.

    `status` is the HTTP status (0 when no response arrived). `retryable` says
    whether trying again later may succeed; `retry_after` (seconds), when set,
    is how long GitHub asked us to wait.
    """

    def __init__(
        self, status: int, message: str, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"GitHub {status}: {message}" if status else f"GitHub: {message}")
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reply:
    """A successful GitHub response: status, headers and the decoded JSON body."""

    status: int
    headers: httpx.Headers
    data: Any
    links: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """How to treat one failed attempt.

    `resend_safe` is true when GitHub certainly did not act on the request
    (it was refused for rate limiting, or never reached GitHub), so even a
    non-idempotent write may be sent again.
    """

    status: int
    message: str
    retryable: bool
    wait_s: float | None = None
    resend_safe: bool = False


def classify_failure(
    status: int, headers: Mapping[str, str], message: str, now_epoch: float
) -> Failure:
    """GitHub's documented rules for what an error response means."""
    if status in (403, 429):
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            try:
                wait = max(0.0, float(retry_after))
            except ValueError:
                wait = 60.0
            return Failure(status, message, True, wait, resend_safe=True)
        reset = headers.get("x-ratelimit-reset")
        if headers.get("x-ratelimit-remaining") == "0" and reset:
            try:
                wait = max(0.0, float(reset) - now_epoch)
            except ValueError:
                wait = 60.0
            return Failure(status, message, True, wait, resend_safe=True)
        if "secondary rate limit" in message.lower() or "abuse" in message.lower():
            # No retry-after: GitHub asks for at least a minute.
            return Failure(status, message, True, 60.0, resend_safe=True)
        if status == 429:
            return Failure(status, message, True, 60.0, resend_safe=True)
        return Failure(status, message, False)
    if status >= 500:
        return Failure(status, message, True)
    return Failure(status, message, False)


def classify_transport_error(exc: BaseException) -> Failure:
    """A request that got no response: retryable; resendable if it never left."""
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return Failure(0, f"{type(exc).__name__}: {exc}", True, resend_safe=never_sent)


def backoff_s(attempt: int, base_s: float = 1.0, cap_s: float = 30.0) -> float:
    """Exponential backoff after the `attempt`-th failure (1-based): 1, 2, 4, 8 ..."""
    return min(cap_s, base_s * 2 ** (attempt - 1))


# GitHub's secondary limits (docs: "Rate limits for the REST API", secondary rate limits):
# "no more than 80 content-generating requests per minute and no more than 500
# content-generating requests per hour", and "no more than 900 points per minute" for
# REST endpoints, where a POST, PATCH, PUT or DELETE costs 5 points: 180 writes a minute.
CONTENT_PER_MINUTE = 80
CONTENT_PER_HOUR = 500
WRITES_PER_MINUTE = 900 // 5


def creates_content(method: str) -> bool:
    """Whether a request counts as content creation unless its caller knows better: a POST
    makes something new (an issue, a comment, a PR, a commit, a ref, a label, a reaction).
    Edits (PATCH), label moves, deletions and merges (PUT) change what exists; GitHub's
    content limit is on what is created, so they are paced only as writes."""
    return method.upper() == "POST"


class Pacer:
    """At most `limit` requests in any window of `period_s` seconds.

    A sliding window rather than a refilling bucket, so that GitHub's "80 per
    minute" is never exceeded even across a burst at a window's edge.
    """

    def __init__(self, limit: int, period_s: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.period_s = period_s
        self.clock = clock
        self._sent: deque[float] = deque()

    def delay(self) -> float:
        """Seconds to wait before the next request may go out (0: now)."""
        now = self.clock()
        while self._sent and self._sent[0] <= now - self.period_s:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.period_s - now

    def record(self) -> None:
        self._sent.append(self.clock())


async def acquire(pacers: list[Pacer], sleep: Sleep) -> float:
    """Wait until every pacer allows a request, then count it; returns the time waited."""
    waited = 0.0
    while True:
        delay = max((pacer.delay() for pacer in pacers), default=0.0)
        if delay <= 0:
            for pacer in pacers:
                pacer.record()
            return waited
        waited += delay
        await sleep(delay)


@dataclass(frozen=True)
class Budget:
    """What GitHub said is left of one budget (`x-ratelimit-*` of its latest answer).

    `reset` is GitHub's epoch second at which the window starts anew.
    """

    limit: int
    remaining: int
    used: int
    reset: float
    resource: str = "core"

    def left_at(self, now_epoch: float) -> int:
        """Requests left at `now_epoch`: all of them once the window has reset."""
        return self.limit if now_epoch >= self.reset else self.remaining


def merge_budget(known: Budget | None, seen: Budget) -> Budget:
    """The budget after an answer: answers to concurrent requests arrive out of order, so
    within one window the lowest `remaining` GitHub stated is the one that holds."""
    if known is None or known.reset != seen.reset or known.resource != seen.resource:
        return seen
    if seen.remaining <= known.remaining:
        return seen
    return known


def read_budget(headers: Mapping[str, str]) -> Budget | None:
    """The budget an answer's headers describe; None when it has none (or unreadable ones)."""
    try:
        limit = int(headers["x-ratelimit-limit"])
        remaining = int(headers["x-ratelimit-remaining"])
        reset = float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    try:
        used = int(headers.get("x-ratelimit-used", limit - remaining))
    except ValueError:
        used = limit - remaining
    return Budget(limit, remaining, used, reset, headers.get("x-ratelimit-resource", "core"))


HOUR_S = 3600.0


def on_pace(
    budget: Budget | None, now_epoch: float, window_s: float = HOUR_S, slack: float = 0.1
) -> bool:
    """Whether spending is within the budget's pro-rata share of its window.

    True when what is left is at least what an even spend over the window
    would leave by now, less a `slack` share of the budget for bursts (or when
    nothing is known, or the window has reset). Low-value writes wait while
    this is False, so that what matters (results, merges, closes) never runs
    out of budget; once the window resets, they go.
    """
    if budget is None or now_epoch >= budget.reset:
        return True
    time_left = min(window_s, max(0.0, budget.reset - now_epoch))
    even = budget.limit * time_left / window_s
    return budget.remaining >= even - slack * budget.limit


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        message = str(body.get("message") or response.reason_phrase)
        errors = body.get("errors")
        if errors:
            details = [
                e.get("message") or e.get("code") or str(e) if isinstance(e, dict) else str(e)
                for e in errors
            ]
            message = f"{message} ({'; '.join(str(d) for d in details)})"
        return message
    return str(body)[:500]


def _where(exc: BaseException, method: str) -> str:
    """`METHOD /path` of the request a transport error interrupted, for the log."""
    request = getattr(exc, "_request", None)  # httpx raises when asking for a missing one
    if isinstance(request, httpx.Request):
        return f"{request.method} {request.url.path}"
    return method


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _graphql_path(base_url: str) -> str:
    """GitHub Enterprise serves GraphQL at /api/graphql next to /api/v3."""
    url = httpx.URL(base_url)
    replaced, count = re.subn(r"/api/v3/?$", "/api/graphql", url.path, count=1)
    return str(url.copy_with(path=replaced)) if count else "/graphql"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Building a TLS context loads the CA bundle (slow); one per process is enough."""
    return ssl.create_default_context(cafile=certifi.where())


@dataclass(frozen=True)
class _Cached:
    etag: str
    headers: list[tuple[str, str]]
    content: bytes


# Headers that describe the bytes on the wire, not the decoded body kept here.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class _SharedTransport(httpx.AsyncBaseTransport):
    """One connection pool for all of an App's requests, per event loop; conditional GETs.

    githubkit opens and closes an httpx client per call; handing each of
    them this transport keeps connections (and the TLS context, which is
    slow to build) across calls. Pooled connections belong to the event loop
    that opened them, so a request from another loop gets a pool of its own.
    `GitHubApp.aclose` closes the current one.

    Every GET whose answer had an `ETag` is sent again with `If-None-Match`;
    GitHub answers 304 when nothing changed, which costs no rate limit, and
    the kept answer is handed on as if it had come again (with the 304's
    fresh `x-ratelimit-*` headers). This is the one place that makes every
    repeated read conditional: typed calls and raw ones alike.
    """

    def __init__(
        self, make: Callable[[], httpx.AsyncBaseTransport], cache_size: int = 2048
    ) -> None:
        self._make = make
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inner: httpx.AsyncBaseTransport | None = None
        self._cache: OrderedDict[tuple[str, str, str], _Cached] = OrderedDict()
        self._cache_size = cache_size
        self.not_modified = 0  # answers served from the cache after a 304

    def _current(self) -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        if self._inner is None or self._loop is not loop:
            self._inner, self._loop = self._make(), loop
        return self._inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or self._cache_size <= 0:
            return await self._current().handle_async_request(request)
        key = (
            str(request.url),
            request.headers.get("accept", ""),
            request.headers.get("x-github-api-version", ""),
        )
        cached = self._cache.get(key)
        if cached is not None:
            request.headers["if-none-match"] = cached.etag
        response = await self._current().handle_async_request(request)
        if response.status_code == 304 and cached is not None:
            await response.aclose()
            self._cache.move_to_end(key)
            self.not_modified += 1
            fresh = {k.lower(): v for k, v in response.headers.items()}
            headers = [
                (k, fresh.pop(k.lower(), v))
                for k, v in cached.headers
                if k.lower() not in _WIRE_HEADERS
            ]
            headers += [(k, v) for k, v in fresh.items() if k.startswith("x-ratelimit")]
            return httpx.Response(200, headers=headers, content=cached.content, request=request)
        etag = response.headers.get("etag")
        if response.status_code != 200 or not etag:
            return response
        content = await response.aread()
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _WIRE_HEADERS]
        self._cache[key] = _Cached(etag, headers, content)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return httpx.Response(200, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        pass  # each githubkit client closes its transport; the pool must outlive them

    async def close_pool(self) -> None:
        inner, loop = self._inner, self._loop
        self._inner = self._loop = None
        if inner is not None and loop is asyncio.get_running_loop():
            await inner.aclose()  # another loop's connections die with that loop


class GitHubApp:
    """A GitHub App: its own JWT-authenticated client plus one client per installation."""

    def __init__(
        self,
        app_id: int,
        private_key_pem: str,
        base_url: str = DEFAULT_API_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        max_attempts: int = 5,
        max_wait_s: float = 120.0,
        content_per_minute: int | None = CONTENT_PER_MINUTE,
        content_per_hour: int | None = CONTENT_PER_HOUR,
        writes_per_minute: int | None = WRITES_PER_MINUTE,
        timeout_s: float = 30.0,
        bot_login: str | None = None,
        rate_window_s: float = HOUR_S,
        minute_s: float = 60.0,
    ) -> None:
        self.app_id = app_id
        self.rate_window_s = rate_window_s  # GitHub's rate-limit window (an hour)
        self.minute_s = minute_s  # GitHub's minute, for the per-minute pacing (shorter in tests)
        self._bot_login = bot_login
        self.base_url = base_url
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.content_per_minute = content_per_minute
        self.content_per_hour = content_per_hour
        self.writes_per_minute = writes_per_minute
        self._private_key = private_key_pem
        self._transport = _SharedTransport(
            (lambda: transport)
            if transport is not None
            else (lambda: httpx.AsyncHTTPTransport(verify=_tls_context()))
        )
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._timeout_s = timeout_s
        self._app_client = self._client(AppAuthStrategy(app_id, private_key_pem))
        self._installations: dict[int, GitHub[Any]] = {}
        # Per installation: (every write's pacers, content creation's pacers).
        self._pacers: dict[int, tuple[list[Pacer], list[Pacer]]] = {}
        self._installation_ids: dict[str, int] = {}
        self._graphql_url = _graphql_path(base_url)
        # Job tokens minted ahead, per (installation, repository): (token, expires_at, expiry).
        self._job_tokens: dict[tuple[int, str], tuple[str, str, float]] = {}
        self._job_token_refresh: dict[tuple[int, str], asyncio.Task[Any]] = {}
        # What GitHub last said is left, per (installation or None for the App, resource).
        self._budgets: dict[tuple[int | None, str], Budget] = {}
        # Push tokens kept for reuse, per (installation, repository): (token, expiry).
        self._push_tokens: dict[tuple[int, str], tuple[str, float]] = {}
        self._in_flight: Counter[tuple[int | None, str]] = Counter()  # sent, not yet answered

    def _client(self, auth: Any) -> GitHub[Any]:
        # Each client keeps its own token cache: githubkit's default one is
        # process-wide (shared by every App object with the same id), and a
        # private one can be thrown away when GitHub stops accepting a token.
        return GitHub(
            auth,
            base_url=self.base_url,
            user_agent="kohai",
            timeout=self._timeout_s,
            async_transport=self._transport,
            cache_strategy=MemCacheStrategy(),
            http_cache=False,
            auto_retry=False,
        )

    async def aclose(self) -> None:
        """Close pooled connections (the App stays usable; a new pool opens on demand)."""
        await self._transport.close_pool()

    # -- clients ---------------------------------------------------------

    @property
    def app(self) -> GitHub[Any]:
        """The client authenticated as the App itself (JWT, RS256)."""
        return self._app_client

    def installation(self, installation_id: int) -> GitHub[Any]:
        """A client for one installation; its token is fetched and renewed as needed."""
        client = self._installations.get(installation_id)
        if client is None:
            auth = AppInstallationAuthStrategy(self.app_id, self._private_key, installation_id)
            client = self._client(auth)
            self._installations[installation_id] = client
        return client

    def _forget_credentials(self, installation_id: int | None) -> GitHub[Any]:
        """A fresh client whose JWT and token are made anew (after a 401)."""
        if installation_id is None:
            self._app_client = self._client(AppAuthStrategy(self.app_id, self._private_key))
            return self._app_client
        self._installations.pop(installation_id, None)
        return self.installation(installation_id)

    # -- the rate-limit budget --------------------------------------------

    def budget(self, installation_id: int | None, resource: str = "core") -> Budget | None:
        """What GitHub's latest answer said is left of this budget (None: nothing seen yet)."""
        return self._budgets.get((installation_id, resource))

    def budgets(self) -> dict[tuple[int | None, str], Budget]:
        """Every budget seen: (installation id, or None for the App's JWT; resource)."""
        return dict(self._budgets)

    def on_pace(self, installation_id: int | None, resource: str = "core") -> bool:
        """Whether this installation spends within its hourly share (`on_pace`)."""
        return on_pace(
            self.budget(installation_id, resource), self._wall_clock(), self.rate_window_s
        )

    @property
    def not_modified(self) -> int:
        """Reads answered 304 (free) and served from the kept answer, since start."""
        return self._transport.not_modified

    def _note_budget(self, installation_id: int | None, headers: Mapping[str, str]) -> None:
        budget = read_budget(headers)
        if budget is not None:
            key = (installation_id, budget.resource)
            self._budgets[key] = merge_budget(self._budgets.get(key), budget)

    def _exhausted_wait(self, installation_id: int | None, resource: str) -> float:
        """Seconds until the budget resets when GitHub said nothing is left; else 0.

        Sending anyway would only earn a 403; GitHub asks clients to wait.
        """
        budget = self.budget(installation_id, resource)
        if budget is None:
            return 0.0
        now = self._wall_clock()
        if budget.left_at(now) - self._in_flight[(installation_id, resource)] > 0:
            return 0.0
        return max(0.0, budget.reset - now) + 1.0

    def _pacers_for(self, installation_id: int, creates: bool) -> list[Pacer]:
        """The pacers a write waits for: every write's, and content creation's when it
        creates content (`creates_content`)."""
        pacers = self._pacers.get(installation_id)
        if pacers is None:
            writes = []
            if self.writes_per_minute:
                writes.append(Pacer(self.writes_per_minute, self.minute_s, self._clock))
            content = []
            if self.content_per_minute:
                content.append(Pacer(self.content_per_minute, self.minute_s, self._clock))
            if self.content_per_hour:
                content.append(Pacer(self.content_per_hour, self.rate_window_s, self._clock))
            pacers = self._pacers[installation_id] = (writes, content)
        return pacers[0] + pacers[1] if creates else pacers[0]

    # -- requests --------------------------------------------------------

    async def request(
        self,
        installation_id: int | None,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        resource: str = "core",
        creates: bool | None = None,
    ) -> Reply:
        """One raw GitHub call, for what githubkit has no typed method for (GraphQL,
        a `Link: rel="next"` URL, the App's own endpoints read loosely).

        The same door as `call`: the same retries, waits, pacing and renewal.
        """
        method = method.upper()
        response = await self.call(
            installation_id,
            lambda gh: gh.arequest(method, path, json=json, params=params),
            method=method,
            idempotent=idempotent,
            resource=resource,
            creates=creates,
        )
        raw = response.raw_response
        return Reply(
            raw.status_code,
            raw.headers,
            _json(raw),
            {str(k): v for k, v in raw.links.items()},
        )

    async def call(
        self,
        installation_id: int | None,
        fn: Callable[[GitHub[Any]], Awaitable[R]],
        *,
        method: str,
        idempotent: bool | None = None,
        resource: str = "core",
        creates: bool | None = None,
    ) -> R:
        """Run one of githubkit's typed REST calls as the installation (or as the App
        when `installation_id` is None): `fn` is given the client and makes one request,
        e.g. `lambda gh: gh.rest.issues.async_create_comment(owner, repo, n, body=b)`.

        `method` is that request's HTTP method: it decides whether the call is
        paced (writes are, per installation) and, unless `idempotent` says
        otherwise, whether a failure that may have happened on GitHub's side is
        sent again (everything but POST). `creates` says whether the request
        creates content, which GitHub limits apart (`creates_content`; by
        default a POST does, a caller that only attaches or flips says False).

        Retries what GitHub says may be retried, waits out rate limits up to
        `max_wait_s`, makes new credentials once when GitHub refuses a token
        (401), and raises `GitHubWriteError` for everything else. `fn` is
        called again for each attempt, with the client of the moment.

        Every answer's `x-ratelimit-*` headers are kept (`budget`); while
        GitHub has said that nothing is left of `resource` (core or graphql),
        nothing is sent until the window resets: a wait up to `max_wait_s`,
        else a retryable error carrying the wait.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method != "POST"
        client = self._app_client if installation_id is None else self.installation(installation_id)
        paced = installation_id is not None and method in WRITE_METHODS
        creates = creates_content(method) if creates is None else creates
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            exhausted = self._exhausted_wait(installation_id, resource)
            if exhausted > self.max_wait_s:
                raise GitHubWriteError(
                    403, f"the {resource} rate limit is spent until it resets", True, exhausted
                )
            if exhausted > 0:
                await self._sleep(exhausted)
            if paced:
                await acquire(self._pacers_for(installation_id or 0, creates), self._sleep)
            self._in_flight[(installation_id, resource)] += 1
            try:
                answer = await fn(client)
            except pydantic.ValidationError as exc:
                # githubkit checks a typed call's body before sending it: nothing was sent.
                self._in_flight[(installation_id, resource)] -= 1
                raise GitHubWriteError(0, f"githubkit refused the request: {exc}", False) from exc
            except RequestFailed as exc:
                self._in_flight[(installation_id, resource)] -= 1
                raw = exc.response.raw_response
                self._note_budget(installation_id, raw.headers)
                where = f"{raw.request.method} {raw.request.url.path}"
                failure = classify_failure(
                    raw.status_code, raw.headers, _error_message(raw), self._wall_clock()
                )
            except RequestError as exc:
                self._in_flight[(installation_id, resource)] -= 1
                where = _where(exc.exc, method)
                failure = classify_transport_error(exc.exc)
            except BaseException:
                self._in_flight[(installation_id, resource)] -= 1
                raise
            else:
                self._in_flight[(installation_id, resource)] -= 1
                if isinstance(answer, Response):
                    self._note_budget(installation_id, answer.raw_response.headers)
                return answer
            if failure.status == 401 and not renewed:
                # A token revoked or expired early: GitHub refused it, so the
                # request did nothing; make new credentials and send it again.
                renewed = True
                client = self._forget_credentials(installation_id)
                continue
            if not failure.retryable:
                raise GitHubWriteError(failure.status, failure.message, False)
            if not (idempotent or failure.resend_safe):
                raise GitHubWriteError(failure.status, failure.message, True, failure.wait_s)
            wait = failure.wait_s if failure.wait_s is not None else backoff_s(attempt)
            if attempt >= self.max_attempts or wait > self.max_wait_s:
                tries = f" (gave up after {attempt} attempts)" if attempt > 1 else ""
                raise GitHubWriteError(
                    failure.status,
                    f"{failure.message}{tries}",
                    True,
                    failure.wait_s,  # only a wait GitHub asked for binds the outbox
                )
            log.warning(
                "GitHub %s: %s %s; retrying in %.1fs",
                where,
                failure.status,
                failure.message,
                wait,
            )
            await self._sleep(wait)

    async def bot_login(self) -> str:
        """The login the App writes as (`<slug>[bot]`): asked of GitHub once, then kept.

        Only comments by this login count as the bot's own (see `bot.outbox.worker`):
        a marker copied into anyone else's comment must change nothing.
        """
        if self._bot_login is None:
            reply = await self.request(None, "GET", "/app")
            slug = reply.data.get("slug") if isinstance(reply.data, dict) else None
            if not isinstance(slug, str) or not slug:
                raise GitHubWriteError(reply.status, "GET /app answered without a slug", True)
            self._bot_login = f"{slug}[bot]"
        return self._bot_login

    async def paginate(
        self,
        installation_id: int | None,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        per_page: int = 100,
        max_pages: int = 50,
    ) -> list[Any]:
        """All items of a list endpoint, following `Link: rel="next"`."""
        items: list[Any] = []
        query: dict[str, Any] | None = {**(params or {}), "per_page": per_page}
        url, previous = path, None
        for page in range(1, max_pages + 1):
            reply = await self.request(installation_id, "GET", url, params=query)
            batch = reply.data or []
            if batch == previous:  # a server that ignores `page`
                break
            items.extend(batch)
            next_link = reply.links.get("next", {}).get("url")
            if next_link:
                url, query = next_link, None  # the link carries its query
            elif len(batch) >= per_page:
                # No Link header but a full page: ask for the next one by number.
                query = {**(params or {}), "per_page": per_page, "page": page + 1}
            else:
                break
            previous = batch
        return items

    async def graphql(
        self, installation_id: int, query: str, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A GraphQL call; errors in the body are permanent unless GitHub says rate limit."""
        body: dict[str, Any] = {"query": query}
        if variables:
            body["variables"] = dict(variables)
        reply = await self.request(
            installation_id,
            "POST",
            self._graphql_url,
            json=body,
            idempotent=True,
            resource="graphql",
            creates=False,  # the bot's mutations flip a PR's draft state
        )
        data = reply.data if isinstance(reply.data, dict) else {}
        errors = data.get("errors") or []
        if errors:
            message = "; ".join(str(e.get("message", e)) for e in errors)
            limited = any(e.get("type") in ("RATE_LIMIT", "RATE_LIMITED") for e in errors)
            raise GitHubWriteError(reply.status, message, limited, 60.0 if limited else None)
        return data.get("data") or {}

    # -- App-level calls -------------------------------------------------

    async def reachable(self) -> str | None:
        """None when GitHub answers at `base_url` (whatever it answers), else why not.

        Asked without credentials, once, so that it tells an unreachable GitHub
        apart from a key that cannot sign anything.
        """
        client = self._client(UnauthAuthStrategy())
        try:
            await client.arequest("GET", "/app")
        except RequestFailed:
            return None
        except RequestError as exc:
            return str(exc.exc) or type(exc.exc).__name__
        return None

    async def app_info(self) -> dict[str, Any]:
        """`GET /app` as the App (a JWT signed with its key): its slug, permissions, events.

        Read loosely (raw), for `bot.github.preflight` reports on whatever GitHub says.
        """
        reply = await self.request(None, "GET", "/app")
        return reply.data if isinstance(reply.data, dict) else {}

    async def installation_for_repo(self, full_name: str) -> int:
        """The installation id that covers a repository (cached)."""
        cached = self._installation_ids.get(full_name)
        if cached is not None:
            return cached
        reply = await self.request(None, "GET", f"/repos/{full_name}/installation")
        installation_id = int(reply.data["id"])
        self._installation_ids[full_name] = installation_id
        return installation_id

    async def job_token(self, installation_id: int, repo_full_name: str) -> tuple[str, str]:
        """A short-lived READ-ONLY token for one repository: what a GPU host gets.

        Hosts run agent-written code, so they hold nothing that can write:
        the token can fetch this repository and nothing else, and it expires
        within the hour. Commits come back to the bot as bundles
        (`POST /api/jobs/{id}/push`), which pushes them itself.

        Tokens are minted ahead: one with at least JOB_TOKEN_MIN_LEFT_S to
        live is handed out again (same repository, read only), and once it is
        past half its reuse window the next one is minted in the background,
        so a lease does not wait on GitHub.
        """
        key = (installation_id, repo_full_name)
        cached = self._job_tokens.get(key)
        left = cached[2] - self._wall_clock() if cached else 0.0
        if cached is not None and left >= JOB_TOKEN_MIN_LEFT_S:
            if left < JOB_TOKEN_REFRESH_LEFT_S:
                self._refresh_job_token(key)
            return cached[0], cached[1]
        return await self._mint_job_token(key)

    def _refresh_job_token(self, key: tuple[int, str]) -> None:
        running = self._job_token_refresh.get(key)
        if running is not None and not running.done():
            return

        async def refresh() -> None:
            try:
                await self._mint_job_token(key)
            except Exception as exc:  # noqa: BLE001 - the next lease mints it instead
                log.warning("minting a job token ahead for %s failed: %s", key[1], exc)

        self._job_token_refresh[key] = asyncio.get_running_loop().create_task(refresh())

    async def warm_job_token(self, installation_id: int, repo_full_name: str) -> None:
        """Mint a repository's job token before any host asks for one."""
        await self.job_token(installation_id, repo_full_name)

    async def _mint_job_token(self, key: tuple[int, str]) -> tuple[str, str]:
        token, expires_at = await self._repo_token(key[0], key[1], "read")
        expiry = _parse_expiry(expires_at)
        if expiry is not None:
            self._job_tokens[key] = (token, expires_at, expiry)
        return token, expires_at

    async def push_token(self, installation_id: int, repo_full_name: str) -> str:
        """A token with contents write on one repository, for the bot's own pushes.

        Kept and handed out again while it has PUSH_TOKEN_MIN_LEFT_S to live, then
        left to expire: minting is the App's request, but revoking one after every
        push (`DELETE /installation/token`) spent one of the installation's requests
        per push and protected nothing. The token never leaves the bot (its git
        subprocesses get it in their environment); whoever could read it there
        could read the App's private key, which mints such tokens at will. A push
        that fails with it drops it (`forget_push_token`), so a token GitHub
        stopped accepting is not handed out again.
        """
        key = (installation_id, repo_full_name)
        cached = self._push_tokens.get(key)
        if cached is not None and cached[1] - self._wall_clock() >= PUSH_TOKEN_MIN_LEFT_S:
            return cached[0]
        token, expires_at = await self._repo_token(installation_id, repo_full_name, "write")
        expiry = _parse_expiry(expires_at)
        if expiry is not None:
            self._push_tokens[key] = (token, expiry)
        return token

    def forget_push_token(self, token: str) -> None:
        """Stop handing out `token` (a push with it failed): the next push mints anew."""
        for key, (kept, _) in list(self._push_tokens.items()):
            if kept == token:
                del self._push_tokens[key]

    async def _repo_token(
        self, installation_id: int, repo_full_name: str, level: str
    ) -> tuple[str, str]:
        name = repo_full_name.split("/", 1)[-1]
        reply = await self.request(
            None,
            "POST",
            f"/app/installations/{installation_id}/access_tokens",
            json={"repositories": [name], "permissions": {"contents": level}},
            idempotent=True,
        )
        return str(reply.data["token"]), str(reply.data["expires_at"])

    async def revoke_push_tokens(self) -> int:
        """Revoke every push token kept (at shutdown: none outlives the bot); how many."""
        kept = list(self._push_tokens.items())
        self._push_tokens.clear()
        for (installation_id, _), (token, expiry) in kept:
            if expiry > self._wall_clock():
                await self.revoke_token(token, installation_id)
        return len(kept)

    async def revoke_token(self, token: str, installation_id: int | None = None) -> None:
        """`DELETE /installation/token`: the token stops working now, not in an hour.

        The request spends the installation's budget like any other; while GitHub
        says that budget is spent, the token is left to expire on its own (within
        the hour) rather than earn a 403.
        """
        self.forget_push_token(token)
        if installation_id is not None and self._exhausted_wait(installation_id, "core") > 0:
            log.info("token left to expire: the installation's budget is spent")
            return
        client = self._client(TokenAuthStrategy(token))
        counted = (installation_id, "core")
        self._in_flight[counted] += 1
        try:
            answer = await client.arequest("DELETE", "/installation/token")
        except RequestFailed as exc:  # it still expires on its own
            self._in_flight[counted] -= 1
            if installation_id is not None:
                self._note_budget(installation_id, exc.response.raw_response.headers)
            log.warning("could not revoke a token: %s", exc)
        except RequestError as exc:
            self._in_flight[counted] -= 1
            log.warning("could not revoke a token: %s", exc)
        else:
            self._in_flight[counted] -= 1
            if installation_id is not None:
                self._note_budget(installation_id, answer.raw_response.headers)

    async def list_deliveries(self, *, max_pages: int = 5) -> list[dict[str, Any]]:
        """The App's recent webhook deliveries, newest first."""
        return await self.paginate(None, "/app/hook/deliveries", max_pages=max_pages)

    async def redeliver(self, delivery_id: int | str) -> None:
        """Ask GitHub to send one delivery again."""
        await self.request(
            None, "POST", f"/app/hook/deliveries/{delivery_id}/attempts", idempotent=True
        )

    async def permission(self, installation_id: int, repo: str, login: str) -> str:
        """A user's role on a repository: admin, maintain, write, triage, read or none."""
        try:
            reply = await self.request(
                installation_id,
                "GET",
                f"/repos/{repo}/collaborators/{quote(login, safe='')}/permission",
            )
        except GitHubWriteError as exc:
            if exc.status == 404:
                return "none"
            raise
        return permission_level(reply.data or {})


ROLES = ("admin", "maintain", "write", "triage", "read", "none")


def permission_level(body: Mapping[str, Any]) -> str:
    """GitHub's `permission` field folds maintain into write and triage into read;
    `role_name` keeps them apart, so it wins when it is one of the known roles."""
    role = str(body.get("role_name") or "").lower()
    if role in ROLES:
        return role
    legacy = str(body.get("permission") or "none").lower()
    return legacy if legacy in ROLES else "none"


JOB_TOKEN_MIN_LEFT_S = 40 * 60.0  # a host's job may run this long on one token
JOB_TOKEN_REFRESH_LEFT_S = 50 * 60.0  # below this, the next token is minted ahead
PUSH_TOKEN_MIN_LEFT_S = 10 * 60.0  # a push (fetch, check, push) finishes well within this


def _parse_expiry(expires_at: str) -> float | None:
    """GitHub's `expires_at` (ISO 8601, `Z` or an offset) as a Unix time; None if unreadable."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
