"""The inbox: deliveries are stored before they are acknowledged, then routed here.

Storing first means a crash after the 202 loses nothing: on restart the
pending rows are routed. A delivery whose routing fails for a transient
reason (GitHub down while looking up a permission) stays pending and is
retried; one that fails for good is marked `failed` with the reason, visible
on /healthz, never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.core.events import MalformedEvent, parse_event
from bot.core.router import once_key, permission_logins, route
from bot.engine import handlers
from bot.engine.engine import Engine
from bot.records import Delivery
from bot.render.escape import for_log
from bot.store import Store, now

log = logging.getLogger("kohai.inbox")

PermissionLookup = Callable[[int, str, str], Awaitable[str]]
MAX_TRIES = 5


class Transient(Exception):
    """Routing could not finish now; try this delivery again later."""


def store_delivery(
    store: Store, delivery_id: str, event: str, action: str | None, body: bytes
) -> bool:
    """Insert a delivery; False when it was already stored (a duplicate)."""
    with store.transaction():
        cursor = store.execute(
            "INSERT OR IGNORE INTO inbox (delivery_id, event, action, payload, received_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (delivery_id, event, action, body.decode("utf-8"), now()),
        )
    return cursor.rowcount == 1


def claim_once(store: Store, key: str | None, delivery_id: str) -> str | None:
    """Record that `delivery_id` runs the command `key`; the earlier delivery's id if one did.

    Called inside the delivery's routing transaction, so the claim and the
    command's effects commit together (a crash leaves neither).
    """
    if key is None:
        return None
    cursor = store.execute(
        "INSERT OR IGNORE INTO command_runs (key, delivery_id, created_at) VALUES (?, ?, ?)",
        (key, delivery_id, now()),
    )
    if cursor.rowcount == 1:
        return None
    row = store.one("SELECT delivery_id FROM command_runs WHERE key = ?", (key,))
    return str((row or {}).get("delivery_id") or "?")


def pending(store: Store, limit: int = 100) -> list[Delivery]:
    """The oldest deliveries still to route, in arrival order."""
    return store.rows(Delivery, "status = 'pending'", order_by="id", limit=limit)


async def route_one(engine: Engine, delivery: Delivery, permission: PermissionLookup | None) -> str:
    """Route one stored delivery; return its final status."""
    store = engine.store
    try:
        event = parse_event(delivery.event, delivery.payload, delivery.delivery_id)
    except MalformedEvent as exc:
        _finish(store, delivery.id, "failed", str(exc))
        return "failed"
    levels: dict[str, str] = {}
    logins = permission_logins(event)
    repo = engine.repo(event.repo) if logins and event.repo else None
    if repo is not None and repo.installation_id is not None and permission is not None:
        try:
            for login in logins:
                levels[login.lower()] = await permission(
                    repo.installation_id, event.repo or repo.full_name, login
                )
        except Exception as exc:  # noqa: BLE001 - GitHub unreachable: keep the delivery for later
            tries = _bump(store, delivery.id, f"permission lookup failed: {exc}")
            if tries >= MAX_TRIES:
                _finish(store, delivery.id, "failed", f"permission lookup failed: {exc}")
                return "failed"
            return "pending"
    try:
        # The delivery's effects and its routed status commit together: a crash
        # in between can neither apply it twice nor lose it.
        with store.transaction():
            current = store.one("SELECT status FROM inbox WHERE id = ?", (delivery.id,))
            if current is None or current["status"] != "pending":
                return str((current or {}).get("status", "failed"))
            first = claim_once(store, once_key(event), delivery.delivery_id)
            if first is not None:
                _finish(store, delivery.id, "ignored", f"ignored: already run by delivery {first}")
                return "ignored"
            snapshot = engine.snapshot(
                event,
                levels.get((event.sender or "").lower()),
                author_permission=levels.get((event.author or "").lower()),
            )
            intents = route(event, snapshot)
            notes = handlers.apply(engine, event, intents)
            ignored = all(n.startswith("ignored") for n in notes)
            status = "ignored" if ignored else "routed"
            _finish(store, delivery.id, status, "; ".join(notes))
    except Exception as exc:
        log.exception("routing delivery %s failed", for_log(delivery.delivery_id, 100))
        _finish(store, delivery.id, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    return status


def _finish(store: Store, row_id: int, status: str, note: str) -> None:
    with store.transaction():
        store.update(
            "inbox", row_id, {"status": status, "note": note[:2000], "processed_at": now()}
        )


def _bump(store: Store, row_id: int, note: str) -> int:
    """Record one failed try (a line of the note); return how many there have been."""
    with store.transaction():
        row = store.one("SELECT note FROM inbox WHERE id = ?", (row_id,))
        previous = (row or {}).get("note") or ""
        store.update("inbox", row_id, {"note": previous + note[:200] + "\n"})
    return previous.count("\n") + 1


async def process_pending(engine: Engine, permission: PermissionLookup | None) -> int:
    """Route every pending delivery in arrival order; return how many were finished."""
    done = 0
    for delivery in pending(engine.store):
        status = await route_one(engine, delivery, permission)
        if status != "pending":
            done += 1
    return done


def inbox_counts(store: Store) -> dict[str, int]:
    rows = store.query("SELECT status, COUNT(*) AS n FROM inbox GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
