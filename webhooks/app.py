"""The litestar app: GitHub webhooks, the host API, health, the dashboard and the workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from bot.engine.inbox import inbox_counts
from bot.outbox.worker import budget_status, failed_writes
from bot.problem import CONFIG_FILE, ProblemError, loads_problem
from webhooks import hosts
from webhooks.bodies import EXCEPTION_HANDLERS
from webhooks.context import BotContext
from webhooks.github_hook import github_webhook
from webhooks.workers import DEFAULT_WORKERS

log = logging.getLogger("kohai.app")


def _count(ctx: BotContext, sql: str) -> dict[str, int]:
    return {r["k"]: r["n"] for r in ctx.store.query(sql)}


def stopped_labs(ctx: BotContext) -> list[str]:
    """Labs stopped by a mistake someone must fix: an installed repository whose kohai.toml
    on its default branch does not parse (it runs nothing until a valid file lands)."""
    stopped = []
    for row in ctx.store.query(
        "SELECT full_name, default_branch, problem_toml FROM repos "
        "WHERE active = 1 AND problem_toml IS NOT NULL ORDER BY full_name"
    ):
        try:
            loads_problem(row["problem_toml"])
        except ProblemError as exc:
            stopped.append(
                f"lab {row['full_name']} is stopped: {CONFIG_FILE} on "
                f"{row['default_branch']} is invalid: {exc}"
            )
    return stopped


# A worker that has not finished a pass for this long is stuck (an advisor pass may
# legitimately take minutes; `alive` in the report is the short, informative view).
WORKER_STALL_S = 600.0


def stalled_workers(ctx: BotContext, t: float) -> list[str]:
    """Workers that have not finished a pass in WORKER_STALL_S (counting from start-up)."""
    started = ctx.extra.get("started_at")
    lines = []
    for worker in ctx.workers:
        name = worker.__name__.removesuffix("_worker")
        since = ctx.heartbeats.get(name, started)
        if since is not None and t - since > WORKER_STALL_S:
            lines.append(f"worker {name} has not finished a pass for {t - since:.0f}s")
    return lines


def health(ctx: BotContext) -> dict[str, Any]:
    """Readiness: `ok` and the `reasons` it is not, with queue depths and workers either way."""
    t = time.time()
    expected = [w.__name__.removesuffix("_worker") for w in ctx.workers]
    workers = {}
    for name in expected:
        beat = ctx.heartbeats.get(name)
        age = None if beat is None else round(t - beat, 1)
        workers[name] = {"last_beat_s_ago": age, "alive": age is not None and age < 30}
    outbox = _count(ctx, "SELECT state AS k, COUNT(*) AS n FROM outbox GROUP BY state")
    jobs = _count(ctx, "SELECT state AS k, COUNT(*) AS n FROM jobs GROUP BY state")
    failed = [
        {"id": e.id, "op": e.op, "repo": e.repo, "last_error": e.last_error}
        for e in failed_writes(ctx.store, limit=10)
    ]
    labs_stopped = stopped_labs(ctx)
    reasons = [
        *ctx.startup_errors,
        *stalled_workers(ctx, t),
        *labs_stopped,
    ]
    ok = not reasons
    advisor = (
        ctx.store.one(
            "SELECT COUNT(*) AS calls, COALESCE(SUM(error IS NOT NULL), 0) AS failed, "
            "COALESCE(SUM(cost_usd), 0) AS cost_usd FROM advisor_calls WHERE created_at > ?",
            (t - 3600,),
        )
        or {}
    )
    advisor["failing_reviews"] = [
        {"experiment": r["id"], "pr": r["pr_number"], "failures": r["advisor_failures"]}
        for r in ctx.store.query(
            "SELECT id, pr_number, advisor_failures FROM experiments "
            "WHERE advisor_failures > 0 AND state = 'review' ORDER BY id"
        )
    ]
    baselines = [
        {"repo": r["full_name"], "problem": r["baseline_problem"]}
        for r in ctx.store.query(
            "SELECT full_name, baseline_problem FROM repos WHERE baseline_problem IS NOT NULL"
        )
    ]
    return {
        "ok": ok,
        "reasons": reasons,
        "errors": list(ctx.startup_errors),
        "labs_stopped": labs_stopped,
        "app_slug": ctx.extra.get("app_slug"),  # from GitHub's GET /app, once it answered
        "advisor_last_hour": advisor,
        "baselines_unmeasurable": baselines,
        "inbox": inbox_counts(ctx.store),
        "outbox": outbox,
        "failed_writes": failed,
        # Each installation's GitHub budget as last stated, and the writes waiting for it.
        "github_budget": budget_status(ctx.github, ctx.store, t),
        "jobs": jobs,
        "workers": workers,
        # What each host said it enforces at its last lease (sandbox, per-job limits),
        # the ones on a weaker fallback named under "degraded".
        "hosts": dict(sorted(ctx.extra.get("host_defences", {}).items())),
    }


@get(
    "/healthz",
    summary="Readiness: 200 when everything works, 503 with the reasons",
    description="Queue depths, failed writes and worker liveness either way.",
)
async def healthz(state: State) -> Response[dict[str, Any]]:
    report = health(state.kohai)
    return Response(report, status_code=200 if report["ok"] else 503)


@get("/livez", summary="Liveness: 200 while the process serves")
async def livez() -> dict[str, bool]:
    return {"ok": True}


def _dashboard_routes() -> list[Any]:
    try:
        from webhooks.dashboard import ROUTES
    except ImportError:
        return []
    return list(ROUTES)


def _dashboard_access(ctx: BotContext) -> Any:
    """Who may read the dashboard: public, or a GitHub sign-in checked per repository."""
    try:
        from webhooks.dashboard.signin import Access
    except ImportError:
        return None
    access = Access.from_settings(ctx.settings, ctx.permissions.level)
    if not access.public and not access.configured:
        log.warning(
            "the dashboard is closed: set KOHAI_GITHUB_CLIENT_ID and KOHAI_GITHUB_CLIENT_SECRET "
            "for a GitHub sign-in, or KOHAI_DASHBOARD_PUBLIC=1 for an open dashboard"
        )
    return access


def create_app(ctx: BotContext, *, run_workers: bool = True) -> Litestar:
    """The app for one bot process; `ctx.workers` run for the app's lifetime."""
    if run_workers and not ctx.workers:
        ctx.workers = list(DEFAULT_WORKERS)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        ctx.extra.setdefault("started_at", time.time())
        tasks = [
            asyncio.create_task(job(ctx), name=job.__name__) for job in [*ctx.workers, *ctx.startup]
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # GitHub away: they expire within the hour
                await asyncio.wait_for(ctx.github.revoke_push_tokens(), timeout=5)

    # The dashboard's links go to the repositories' own GitHub host; each lab's
    # problem (metric, direction) is read from the store per page.
    state: dict[str, Any] = {
        "kohai": ctx,
        "store": ctx.store,
        "bus": ctx.bus,
        "github_html_url": ctx.settings.html_url,
        "dashboard_access": _dashboard_access(ctx),
    }
    return Litestar(
        route_handlers=[github_webhook, healthz, livez, *hosts.ROUTES, *_dashboard_routes()],
        state=State(state),
        lifespan=[lifespan] if run_workers else [],
        openapi_config=OpenAPIConfig(title="kohai", version="0.1.0", path="/schema"),
        # Every body is capped while it streams: this default, or the route's own size
        # (webhooks 25 MB, a pushed bundle its cap); past it, 413.
        request_max_body_size=ctx.settings.max_body_bytes,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
