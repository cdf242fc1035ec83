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
# A failed catch-up is asked again after 5, 10, 20, 40, then every 60 s (or when GitHub's
# Retry-After says): a missed `/rerun` is handled within a minute of GitHub allowing it.
CATCH_UP_RETRY_START_S = 5.0
CATCH_UP_RETRY_CAP_S = 60.0
# GitHub stamps `delivered_at` by its clock, the mark is ours: a minute of overlap costs
# nothing (the inbox drops what it holds, delivered attempts are skipped).
CATCH_UP_CLOCK_MARGIN_S = 60.0


def catch_up_retry_s(failures: int, retry_after: float | None) -> float:
    """Seconds until catch-up is tried again after its `failures`-th failure in a row.

    Exponential backoff capped at a minute; when GitHub named the time
    (`Retry-After` on a rate limit), exactly that: sooner would be refused
    again, later would leave a missed command waiting.
    """
    if retry_after is not None:
        return max(0.0, float(retry_after))
    return min(CATCH_UP_RETRY_CAP_S, CATCH_UP_RETRY_START_S * 2 ** max(0, failures - 1))


def catch_up_due(state: dict[str, float], now: float, every_s: float) -> bool:
    """Is catch-up due: the first pass, a retry whose time came, or the periodic pass."""
    if not state.get("caught_up"):
        return True
    retry_at = state.get("retry_at")
    if retry_at:
        return now >= retry_at
    return now - state["caught_up"] >= every_s


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
    if ctx.settings.catch_up and catch_up_due(state, t, every):
        state["caught_up"] = t
        await catch_up_once(ctx)


async def check_github(ctx: Any) -> None:
    """Wrong App id, unreadable key, unreachable GitHub: one clear line each, on /healthz."""
    from bot.github.preflight import preflight

    settings = ctx.settings
    try:
        report = await preflight(
            settings.app_id,
            settings.private_key,
            settings.github_api_url,
            key_source=settings.private_key_source,
        )
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
    listed_at = time.time()
    since = catch_up_start(store)
    known = {r["delivery_id"] for r in store.query("SELECT delivery_id FROM inbox")}
    refused: list[str] = []
    waits: list[float] = []
    try:
        asked = await catch_up(
            ctx.github, since, known_delivery_ids=known, refused=refused, waits=waits
        )
    except Exception as exc:  # noqa: BLE001 - catch-up is best effort; start-up goes on
        delay = _catch_up_failed(ctx, getattr(exc, "retry_after", None))
        _set_problems(
            ctx,
            "catch-up",
            [f"catch-up of missed deliveries failed: {exc}; retrying in {delay:.0f}s"],
        )
        log.warning("catch-up failed: %s; retrying in %.0fs", exc, delay)
        return []
    if refused:
        delay = _catch_up_failed(ctx, max(waits) if waits else None)
        _set_problems(
            ctx,
            "catch-up",
            [f"GitHub refused to redeliver {len(refused)} delivery(ies); retrying in {delay:.0f}s"],
        )
    else:
        state = ctx.extra.setdefault("github_pass", {"checked": 0.0, "caught_up": 0.0})
        state.pop("retry_at", None)
        state["failures"] = 0
        _set_problems(ctx, "catch-up", [])
        # Every delivery GitHub had attempted when this pass listed them is in the inbox
        # or asked for again (a redelivery that fails is a newer failed attempt): the next
        # pass starts there, less a margin for the difference between GitHub's clock and ours.
        with store.transaction():
            store.execute(
                "INSERT INTO bot_state (key, value) VALUES ('catch_up_since', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (repr(listed_at - CATCH_UP_CLOCK_MARGIN_S),),
            )
    if asked:
        log.info("asked GitHub to redeliver %d deliveries", len(asked))
    return asked


def catch_up_start(store: Any) -> float | None:
    """Where a catch-up pass starts looking: the last complete pass's mark.

    Before any pass completed, the store's first delivery (a bot that has
    received nothing yet looks at everything GitHub lists). Never the newest
    delivery: one that arrived just after a restart would hide every
    delivery that failed while the bot was down.
    """
    mark = store.one("SELECT value FROM bot_state WHERE key = 'catch_up_since'")
    if mark:
        return float(mark["value"])
    first = store.one("SELECT MIN(received_at) AS t FROM inbox")
    value = (first or {}).get("t")
    return None if value is None else float(value) - CATCH_UP_CLOCK_MARGIN_S


def _catch_up_failed(ctx: Any, retry_after: float | None) -> float:
    """Count a failed catch-up and schedule its retry; returns the seconds until then."""
    state = ctx.extra.setdefault("github_pass", {"checked": 0.0, "caught_up": 0.0})
    state["failures"] = int(state.get("failures", 0)) + 1
    delay = catch_up_retry_s(state["failures"], retry_after)
    state["retry_at"] = time.time() + delay
    return delay


def startup_refusals(settings: Settings) -> list[str]:
    """Why `kohai serve` should not start: GitHub rejects the App or cannot be reached.

    A rate limit is not a refusal (it passes by itself); every line names
    the setting to change.
    """
    import asyncio

    from bot.github.preflight import preflight

    report = asyncio.run(
        preflight(
            settings.app_id,
            settings.private_key,
            settings.github_api_url,
            key_source=settings.private_key_source,
        )
    )
    return report.refusals


def main(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"kohai serve: {exc}", file=sys.stderr)
        return 2
    # Checked before logging is set up: a refusal is its own lines, not a request log.
    if not getattr(args, "wait_for_github", False):
        refusals = startup_refusals(settings)
        for line in refusals:
            print(f"kohai serve: {line}", file=sys.stderr)
        if refusals:
            print(
                "kohai serve: not starting; fix the setting above, or start with "
                "--wait-for-github to serve anyway (/healthz answers 503 until GitHub accepts)",
                file=sys.stderr,
            )
            return 1
    logging.basicConfig(
        level=os.environ.get("KOHAI_LOG", "INFO"), format="%(asctime)s %(name)s %(message)s"
    )
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
