"""The bot's background loops, run inside the web app's event loop.

Each loop does one job, records a heartbeat for /healthz under its name (the
function's name without `_worker`), and survives its own errors: one bad pass
is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bot.engine import write_results
from bot.engine.inbox import process_pending
from bot.github.sync import stale_repos, sync_repo
from bot.outbox import writes as w
from bot.outbox.worker import OutboxWorker
from webhooks.context import BotContext

log = logging.getLogger("kohai.workers")


async def run_loop(
    ctx: BotContext,
    name: str,
    step: Callable[[], Awaitable[object]],
    wake: asyncio.Event | None,
    idle_s: float,
) -> None:
    while True:
        if wake is not None:
            wake.clear()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s pass failed", name)
        ctx.beat(name)
        if wake is None:
            await asyncio.sleep(idle_s)
        else:
            try:
                await asyncio.wait_for(wake.wait(), timeout=idle_s)
            except TimeoutError:
                pass


async def inbox_worker(ctx: BotContext) -> None:
    await run_loop(
        ctx,
        "inbox",
        lambda: process_pending(ctx.engine, ctx.permissions.level),
        ctx.inbox_wake,
        1.0,
    )


BRANCH_WRITES = frozenset(w.BRANCH_WRITES)


async def outbox_worker(ctx: BotContext) -> None:
    """The outbox in two lanes: new experiment branches, and every other write in order.

    A new branch is what a queued job waits for; in its own lane it never
    waits behind a slow write (a PR being opened, a comment) to any repository.
    """

    def lane(**options: Any) -> OutboxWorker:
        return OutboxWorker(
            ctx.store,
            ctx.github,
            on_done=functools.partial(write_results.write_done, ctx.engine),
            on_failed=functools.partial(write_results.write_failed, ctx.engine),
            bus=ctx.bus,
            **options,
        )

    # The branch lane has GitHub to itself while it writes: the rest waits a moment.
    branches = lane(only=BRANCH_WRITES)
    worker = lane(skip=BRANCH_WRITES, defer_to=branches)
    ctx.extra["outbox"] = worker
    wakes = (asyncio.Event(), asyncio.Event())

    async def fan_out() -> None:
        while True:
            await ctx.outbox_wake.wait()
            ctx.outbox_wake.clear()
            for wake in wakes:
                wake.set()

    tasks = [
        asyncio.create_task(fan_out()),
        asyncio.create_task(run_loop(ctx, "outbox-branches", branches.run_once, wakes[1], 1.0)),
    ]
    try:
        await run_loop(ctx, "outbox", worker.run_once, wakes[0], 1.0)
    finally:
        for task in tasks:
            task.cancel()


async def sync_worker(ctx: BotContext) -> None:
    async def step() -> None:
        for repo_id in stale_repos(ctx.engine):
            try:
                await sync_repo(ctx.engine, ctx.github, repo_id)
            except Exception as exc:  # noqa: BLE001 - one repository's failed sync must not stop the worker
                log.warning("sync of repo %s failed: %s", repo_id, exc)

    async def wake_on_repo_events() -> None:
        async with ctx.bus.subscribe() as queue:
            while True:
                message = await queue.get()
                if message.get("topic") == "repo":
                    ctx.sync_wake.set()

    listener = asyncio.create_task(wake_on_repo_events())
    try:
        await run_loop(ctx, "sync", step, ctx.sync_wake, 2.0)
    finally:
        listener.cancel()


class Heartbeats:
    """Hosts' heartbeats, written in batches: one transaction per pass for every host.

    A heartbeat only extends its lease; with a thousand hosts beating every
    few seconds, one SQLite transaction each is most of what the bot does.
    The host API checks each heartbeat against the store (its lease must be
    current) and notes it here; the leases worker writes them all at once,
    just before it looks for expired leases. A heartbeat lost in a crash
    costs nothing: the bot's downtime extends every lease at start-up.
    """

    def __init__(self, store: Any, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.pending: dict[int, tuple[float, str, str]] = {}  # job -> (time, lease, student)

    def note(self, job_id: int, lease_id: str, student: str, at: float) -> float:
        """Keep one heartbeat; returns the lease's new expiry, as the host is told."""
        self.pending[job_id] = (at, lease_id, student)
        return at + self.lease_seconds

    def flush(self) -> int:
        """Write every kept heartbeat in one transaction; returns how many."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        with self.store.transaction():
            self.store.conn.executemany(
                "UPDATE jobs SET lease_expires = ?, last_event_at = ?, updated_at = ? "
                "WHERE id = ? AND lease_id = ? AND state = 'leased'",
                [
                    (t + self.lease_seconds, t, t, job, lease)
                    for job, (t, lease, _) in batch.items()
                ],
            )
            self.store.conn.executemany(
                "UPDATE students SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE name = ?",
                [(t, student) for t, _, student in batch.values()],
            )
        return len(batch)


async def leases_worker(ctx: BotContext) -> None:
    """Expire silent hosts' leases; first extend them all by the bot's own downtime.

    Heartbeats noted since the last pass are written first (`Heartbeats`).
    """
    ctx.jobs.survive_downtime()
    heartbeats = Heartbeats(ctx.store, ctx.jobs.lease_seconds)
    ctx.extra["heartbeats"] = heartbeats

    async def step() -> None:
        heartbeats.flush()
        ctx.jobs.beat()
        ctx.jobs.expire_leases()

    try:
        await run_loop(ctx, "leases", step, None, 1.0)
    finally:
        ctx.extra.pop("heartbeats", None)
        heartbeats.flush()


DEFAULT_WORKERS: list[Callable[[BotContext], Coroutine[Any, Any, None]]] = [
    inbox_worker,
    outbox_worker,
    sync_worker,
    leases_worker,
]
