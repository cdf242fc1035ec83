"""`kohai serve`: the bot server, with the advisor and catch-up wired in."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from bot.config import ConfigError, Settings

log = logging.getLogger("kohai.serve")


def build_context(
    settings: Settings,
    *,
    max_experiments: int = 0,
    advisor_options: dict[str, Any] | None = None,
    github: Any = None,
) -> Any:
    """The bot's context with every worker: inbox, outbox, sync, leases, advisor, catch-up."""
    from agents.advisor import make_advisor
    from agents.loop import AdvisorLoop
    from webhooks.context import BotContext
    from webhooks.workers import DEFAULT_WORKERS, run_loop

    ctx = BotContext.build(settings, max_experiments=max_experiments, github=github)
    options = dict(advisor_options or {})
    if settings.anthropic_api_key and "checkouts" not in options:
        options["checkouts"] = advisor_checkouts(ctx)
    advisor = make_advisor(settings.anthropic_api_key, **options)
    loop = AdvisorLoop(
        ctx.engine,
        advisor,
        alpha=settings.alpha,
        plateau_after=settings.plateau_after,
        max_experiments=max_experiments,
        propose=settings.advisor,
    )

    async def advisor_worker(c: Any) -> None:
        await run_loop(c, "advisor", loop.step, None, 1.0)

    async def check_and_catch_up(c: Any) -> None:
        await check_github(c)
        if settings.catch_up:
            await catch_up_once(c)

    ctx.workers = [*DEFAULT_WORKERS, advisor_worker]
    ctx.startup = [check_and_catch_up]
    ctx.extra["advisor_loop"] = loop
    return ctx


def advisor_checkouts(ctx: Any) -> Any:
    """The advisor's read-only checkouts: a mirror beside the database, fetched as the App."""
    from pathlib import Path

    from agents.claude.checkouts import GitCheckouts
    from webhooks.hosts import clone_url

    settings = ctx.settings

    async def remote(repo: str) -> tuple[str, str | None]:
        installation = await ctx.github.installation_for_repo(repo)
        token, _ = await ctx.github.job_token(installation, repo)
        return clone_url(settings.github_api_url, repo), token

    return GitCheckouts(Path(settings.db_path).resolve().parent / "advisor", remote)


async def check_github(ctx: Any) -> None:
    """Wrong App id, unreadable key, unreachable GitHub: one clear line each, on /healthz."""
    from bot.preflight import preflight

    settings = ctx.settings
    try:
        report = await preflight(settings.app_id, settings.private_key, settings.github_api_url)
    except Exception as exc:  # noqa: BLE001 - the check itself must never stop the bot
        ctx.startup_errors.append(f"GitHub preflight failed: {exc}")
        return
    ctx.extra["preflight"] = report.as_dict()
    for error in report.errors:
        log.error("%s", error)
        ctx.startup_errors.append(error)


async def catch_up_once(ctx: Any) -> list[str]:
    """Ask GitHub to redeliver what failed while the bot was down."""
    from bot.catchup import catch_up

    last = ctx.store.one("SELECT MAX(received_at) AS t FROM inbox")
    known = {r["delivery_id"] for r in ctx.store.query("SELECT delivery_id FROM inbox")}
    try:
        asked = await catch_up(ctx.github, (last or {}).get("t"), known_delivery_ids=known)
    except Exception as exc:
        ctx.startup_errors.append(f"catch-up after downtime failed: {exc}")
        log.warning("catch-up failed: %s", exc)
        return []
    if asked:
        log.info("asked GitHub to redeliver %d deliveries", len(asked))
    return asked


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("KOHAI_LOG", "INFO"), format="%(asctime)s %(name)s %(message)s"
    )
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"kohai serve: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from webhooks.app import create_app

    ctx = build_context(settings, max_experiments=settings.max_experiments)
    app = create_app(ctx)
    print(
        f"kohai serve: listening on http://{args.host}:{args.port} (GitHub API {settings.github_api_url})",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
