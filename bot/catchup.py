"""Catching up after downtime: ask GitHub to redeliver what we missed.

GitHub keeps a log of every webhook delivery it attempted for the App
(`GET /app/hook/deliveries`), with the status our endpoint answered. When the
bot was down, those attempts failed (status code 0 or >= 400); on start-up we
ask GitHub to redeliver each such delivery that never arrived, and the inbox
(which is keyed by delivery guid) drops anything that arrives twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from bot.github import GitHubApp, GitHubWriteError

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
        failed = [t for t in tries if since is None or delivered_at_epoch(t) >= since]
        if failed:
            chosen.append(max(failed, key=delivered_at_epoch))
    return sorted(chosen, key=delivered_at_epoch)


async def catch_up(
    github: GitHubApp,
    since: float | None,
    *,
    known_delivery_ids: set[str] | Callable[[str], bool],
    max_pages: int = 5,
) -> list[str]:
    """Ask GitHub to redeliver what failed since `since`; returns the guids asked for.

    A delivery GitHub will no longer redeliver (too old, or gone) is logged
    and skipped: catching up is best effort and must not stop start-up.
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
            continue
        asked.append(str(delivery["guid"]))
    if asked:
        log.info("asked GitHub to redeliver %d missed deliveries", len(asked))
    return asked
