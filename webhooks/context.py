"""What the web app's handlers and workers share: one object, set up once per process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bot.config import Settings
from bot.engine.bus import Bus
from bot.engine.engine import Engine
from bot.engine.jobs import JobBook
from bot.github.client import GitHubApp
from bot.github.permissions import PermissionCache
from bot.store import Store


class Waiters:
    """Long-poll wake-ups: one event per student, set the moment a job it may take is queued."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, student: str) -> asyncio.Event:
        return self._events.setdefault(student, asyncio.Event())

    def notify(self, student: str | None) -> None:
        if student is None:
            for event in self._events.values():
                event.set()
        else:
            self.event(student).set()


@dataclass
class BotContext:
    settings: Settings
    store: Store
    bus: Bus
    github: GitHubApp
    engine: Engine
    jobs: JobBook
    permissions: PermissionCache
    waiters: Waiters
    inbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    outbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    sync_wake: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeats: dict[str, float] = field(default_factory=dict)
    startup_errors: list[str] = field(default_factory=list)
    workers: list[Callable[[BotContext], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # One-off tasks at start-up (credential check, catch-up), run beside the workers.
    startup: list[Callable[[BotContext], Coroutine[Any, Any, None]]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def beat(self, worker: str) -> None:
        self.heartbeats[worker] = time.time()

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        github: GitHubApp | None = None,
        max_experiments: int = 0,
    ) -> BotContext:
        store = Store(settings.db_path)
        bus = Bus()
        waiters = Waiters()
        github = github or GitHubApp(settings.app_id, settings.private_key, settings.github_api_url)
        holder: dict[str, BotContext] = {}

        def wake_outbox() -> None:
            if "ctx" in holder:
                holder["ctx"].outbox_wake.set()

        engine = Engine(
            store,
            # Not a setting: learned from GitHub (`GET /app`) once it answers (see
            # `bot.cli.serve.check_github`); until then the App's own events are known
            # by their sender's type, `Bot`.
            bot_login="",
            bus=bus,
            implement_mode="claude" if settings.anthropic_api_key else "offline",
            max_experiments=max_experiments,
            on_job_queued=waiters.notify,
            on_outbox=wake_outbox,
        )
        ctx = cls(
            settings=settings,
            store=store,
            bus=bus,
            github=github,
            engine=engine,
            jobs=JobBook(engine),
            permissions=PermissionCache(github),
            waiters=waiters,
        )
        holder["ctx"] = ctx
        return ctx
