"""The litestar app: GitHub webhooks, the host API, health, the dashboard and the workers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from bot.engine.inbox import inbox_counts
from bot.outbox.worker import budget_status, failed_writes
from webhooks import hosts
from webhooks.context import BotContext
from webhooks.github_hook import github_webhook
from webhooks.workers import DEFAULT_WORKERS

log = logging.getLogger("kohai.app")


def _count(ctx: BotContext, sql: str) -> dict[str, int]:
    return {r["k"]: r["n"] for r in ctx.store.query(sql)}


def health(ctx: BotContext) -> dict[str, Any]:
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
    ok = not ctx.startup_errors and all(w["alive"] for w in workers.values())
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
        "errors": list(ctx.startup_errors),
        "advisor_last_hour": advisor,
        "baselines_unmeasurable": baselines,
        "inbox": inbox_counts(ctx.store),
        "outbox": outbox,
        "failed_writes": failed,
        # Each installation's GitHub budget as last stated, and the writes waiting for it.
        "github_budget": budget_status(ctx.github, ctx.store, t),
        "jobs": jobs,
        "workers": workers,
    }


@get("/healthz", summary="Queue depths and worker liveness")
async def healthz(state: State) -> dict[str, Any]:
    return health(state.kohai)


def _dashboard_routes() -> list[Any]:
    try:
        from webhooks.dashboard import ROUTES
    except ImportError:
        return []
    return list(ROUTES)


def create_app(ctx: BotContext, *, run_workers: bool = True) -> Litestar:
    """The app for one bot process; `ctx.workers` run for the app's lifetime."""
    if run_workers and not ctx.workers:
        ctx.workers = list(DEFAULT_WORKERS)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(job(ctx), name=job.__name__) for job in [*ctx.workers, *ctx.startup]
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # The dashboard's links go to the repositories' own GitHub host; each lab's
    # problem (metric, direction) is read from the store per page.
    state: dict[str, Any] = {
        "kohai": ctx,
        "store": ctx.store,
        "bus": ctx.bus,
        "github_html_url": ctx.settings.html_url,
    }
    return Litestar(
        route_handlers=[github_webhook, healthz, *hosts.ROUTES, *_dashboard_routes()],
        state=State(state),
        lifespan=[lifespan] if run_workers else [],
        openapi_config=OpenAPIConfig(title="kohai", version="0.1.0", path="/schema"),
        request_max_body_size=None,
    )
