"""`kohai serve`: the bot server, with the advisor and catch-up wired in."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
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

    async def github_worker(c: Any) -> None:
        await run_loop(c, "github", lambda: github_pass(c), None, 2.0)

    ctx.workers = [*DEFAULT_WORKERS, advisor_worker, github_worker]
    if settings.webhook_proxy_url:
        from webhooks.relay import run_relay

        proxy = settings.webhook_proxy_url

        async def relay_worker(c: Any) -> None:
            await run_relay(c, proxy, lambda problems: _set_problems(c, "relay", problems))

        ctx.workers.append(relay_worker)
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


CATCH_UP_EVERY_S = 180.0
RECHECK_EVERY_S = 30.0


def _set_problems(ctx: Any, owner: str, problems: list[str]) -> None:
    """Replace what `owner` reported on /healthz: a problem that went away stops showing."""
    owned: dict[str, list[str]] = ctx.extra.setdefault("problems", {})
    for old in owned.get(owner, []):
        if old in ctx.startup_errors:
            ctx.startup_errors.remove(old)
    owned[owner] = list(problems)
    ctx.startup_errors.extend(problems)


async def github_pass(ctx: Any) -> None:
    """The GitHub check (until it passes, then now and then) and catch-up, every few minutes.

    Both run at start-up; the check is repeated while it fails so /healthz
    recovers when GitHub does, and catch-up is repeated so a delivery missed
    while the bot was up, or one GitHub refused to redeliver, is asked for again.
    """
    t = time.time()
    state = ctx.extra.setdefault("github_pass", {"checked": 0.0, "caught_up": 0.0})
    failing = bool(ctx.extra.get("problems", {}).get("preflight"))
    if not state["checked"] or (failing and t - state["checked"] >= RECHECK_EVERY_S):
        state["checked"] = t
        await check_github(ctx)
    every = float(ctx.extra.get("catch_up_every_s", CATCH_UP_EVERY_S))
    if ctx.settings.catch_up and (not state["caught_up"] or t - state["caught_up"] >= every):
        state["caught_up"] = t
        await catch_up_once(ctx)


async def check_github(ctx: Any) -> None:
    """Wrong App id, unreadable key, unreachable GitHub: one clear line each, on /healthz."""
    from bot.github.preflight import preflight

    settings = ctx.settings
    try:
        report = await preflight(settings.app_id, settings.private_key, settings.github_api_url)
    except Exception as exc:  # noqa: BLE001 - the check itself must never stop the bot
        _set_problems(ctx, "preflight", [f"GitHub preflight failed: {exc}"])
        return
    ctx.extra["preflight"] = report.as_dict()
    for error in report.errors:
        log.error("%s", error)
    _set_problems(ctx, "preflight", list(report.errors))
    if report.ok:
        await learn_identity(ctx)


async def learn_identity(ctx: Any) -> None:
    """The App's slug and bot login, from GitHub (`GET /app`): never from a setting, so
    the App's own comments are recognised whatever name it was registered under."""
    try:
        login = await ctx.github.bot_login()
    except Exception as exc:  # noqa: BLE001 - the next check asks again
        log.warning("could not read the App's slug from GitHub: %s", exc)
        return
    ctx.engine.bot_login = login
    ctx.extra["app_slug"] = login.removesuffix("[bot]")


async def catch_up_once(ctx: Any) -> list[str]:
    """Ask GitHub to redeliver what failed since the last complete catch-up."""
    from bot.github.catchup import catch_up

    store = ctx.store
    mark = store.one("SELECT value FROM bot_state WHERE key = 'catch_up_since'")
    last = store.one("SELECT MAX(received_at) AS t FROM inbox")
    since = float(mark["value"]) if mark else (last or {}).get("t")
    known = {r["delivery_id"] for r in store.query("SELECT delivery_id FROM inbox")}
    refused: list[str] = []
    try:
        asked = await catch_up(ctx.github, since, known_delivery_ids=known, refused=refused)
    except Exception as exc:  # noqa: BLE001 - catch-up is best effort; start-up goes on
        _set_problems(ctx, "catch-up", [f"catch-up of missed deliveries failed: {exc}"])
        log.warning("catch-up failed: %s", exc)
        return []
    if refused:
        _set_problems(
            ctx, "catch-up", [f"GitHub refused to redeliver {len(refused)} delivery(ies); retrying"]
        )
    else:
        _set_problems(ctx, "catch-up", [])
        # Everything up to the newest stored delivery is in: the next pass starts there.
        if last and last.get("t"):
            with store.transaction():
                store.execute(
                    "INSERT INTO bot_state (key, value) VALUES ('catch_up_since', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (repr(float(last["t"])),),
                )
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
