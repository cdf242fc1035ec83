"""Who may run slash commands: a user's role on the repository, cached briefly.

GitHub is asked (the collaborator permission endpoint) rather than trusting
anything in the webhook payload; the answer is kept for a short while so a
burst of commands costs one call, and a revoked permission stops working
within `ttl_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.github.client import GitHubApp

COMMAND_LEVELS = frozenset({"write", "maintain", "admin"})


def can_command(level: str) -> bool:
    """Slash commands need write, maintain or admin on the repository."""
    return level in COMMAND_LEVELS


class PermissionCache:
    def __init__(
        self,
        github: GitHubApp,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.github = github
        self.ttl_s = ttl_s
        self.clock = clock
        self._levels: dict[tuple[str, str], tuple[float, str]] = {}

    async def level(self, installation_id: int, repo: str, login: str) -> str:
        """admin | maintain | write | triage | read | none (a non-collaborator is none)."""
        key = (repo.lower(), login.lower())
        cached = self._levels.get(key)
        now = self.clock()
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        level = await self.github.permission(installation_id, repo, login)
        self._levels[key] = (self.clock(), level)
        return level

    def forget(self, repo: str, login: str | None = None) -> None:
        """Drop cached answers (e.g. on a `member` or `repository` webhook)."""
        for key in list(self._levels):
            if key[0] == repo.lower() and (login is None or key[1] == login.lower()):
                del self._levels[key]
