"""Catching up after downtime: ask GitHub to redeliver what we missed.

GitHub keeps a log of every webhook delivery it attempted for the App
(`GET /app/hook/deliveries`), with the status our endpoint answered. When the
bot was down, those attempts failed (status code 0 or >= 400); on start-up we
ask GitHub to redeliver each such delivery that never arrived, and the inbox
(which is keyed by delivery guid) drops anything that arrives twice.

Catch-up runs at start-up and every few minutes after (a delivery GitHub
failed to hand over while the bot was up, or a redelivery GitHub refused
under a rate limit, is asked for again on the next pass). GitHub's
`delivered_at` has whole seconds, so the cut-off is widened to the whole
second before `since`: a delivery that failed in the same second as the last
one stored is never skipped (the inbox drops what it already holds).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from bot.github.client import GitHubApp, GitHubWriteError

log = logging.getLogger(__name__)


def delivered_at_epoch(delivery: Mapping[str, Any]) -> float:
    value = delivery.get("delivered_at")
    if not value:
        return 0.0
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def delivery_ok(delivery: Mapping[str, Any]) -> bool:
    """Did our endpoint accept this attempt?"""
    code = int(delivery.get("status_code") or 0)
    return 200 <= code < 300 and str(delivery.get("status", "OK")).upper() == "OK"


def cutoff(since: float) -> float:
    """The earliest `delivered_at` still considered: whole seconds, one second of slack."""
    return float(math.floor(since) - 1)


def select_redeliveries(
    deliveries: Iterable[Mapping[str, Any]],
    since: float | None,
    known: Callable[[str], bool],
) -> list[Mapping[str, Any]]:
    """The deliveries to ask for again: one per guid, oldest first.

    A guid qualifies when an attempt at it failed at or after `since`, no
    attempt at it (say a later redelivery) succeeded, and our inbox does not
    already hold it. The attempt returned is the newest failed one.
    """
    attempts: dict[str, list[Mapping[str, Any]]] = {}
    for delivery in deliveries:
        guid = str(delivery.get("guid") or "")
        if guid:
            attempts.setdefault(guid, []).append(delivery)
    chosen = []
    for guid, tries in attempts.items():
        if any(delivery_ok(t) for t in tries) or known(guid):
            continue
        failed = [t for t in tries if since is None or delivered_at_epoch(t) >= cutoff(since)]
        if failed:
            chosen.append(max(failed, key=delivered_at_epoch))
    return sorted(chosen, key=delivered_at_epoch)


async def catch_up(
    github: GitHubApp,
    since: float | None,
    *,
    known_delivery_ids: set[str] | Callable[[str], bool],
    max_pages: int = 5,
    refused: list[str] | None = None,
    waits: list[float] | None = None,
) -> list[str]:
    """Ask GitHub to redeliver what failed since `since`; returns the guids asked for.

    A delivery GitHub refuses to redeliver now (rate limit, gone) is logged,
    added to `refused`, and skipped: the next pass asks again. Where GitHub
    said how long to wait (`Retry-After`), that goes to `waits`.
    """
    known = (
        known_delivery_ids.__contains__
        if isinstance(known_delivery_ids, set)
        else known_delivery_ids
    )
    deliveries = await github.list_deliveries(max_pages=max_pages)
    asked = []
    for delivery in select_redeliveries(deliveries, since, known):
        try:
            await github.redeliver(delivery["id"])
        except GitHubWriteError as exc:
            log.warning(
                "could not redeliver %s (%s): %s", delivery.get("guid"), delivery["id"], exc
            )
            if refused is not None:
                refused.append(str(delivery.get("guid")))
            if waits is not None and exc.retry_after is not None:
                waits.append(exc.retry_after)
            continue
        asked.append(str(delivery["guid"]))
    if asked:
        log.info("asked GitHub to redeliver %d missed deliveries", len(asked))
    return asked
