"""The advisor's view of a lab's repository: a bare mirror, read-only exports, diffs.

The bot keeps one bare clone per repository under its data directory and
exports the base commit the advisor works in (no `.git`, files read-only), so
the agent reads the code as it is on the base and can change nothing that
anyone else uses.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from trainer import workspace

# repo -> (clone URL, token or None); the bot mints a read-only installation token.
Remote = Callable[[str], Awaitable[tuple[str, str | None]]]


class GitCheckouts:
    def __init__(self, root: Path, remote: Remote) -> None:
        self.root = Path(root)
        self.remote = remote
        self._lock = asyncio.Lock()

    async def checkout(self, repo: str, sha: str) -> Path:
        target = self.root / "checkouts" / workspace.cache_name(repo) / sha
        if (target / ".kohai-complete").exists():
            return target
        async with self._lock:
            mirror = await self._fetch(repo, [sha])
            await asyncio.to_thread(_export_read_only, mirror, sha, target)
        return target

    async def diff(self, repo: str, base_sha: str, head_sha: str) -> str:
        async with self._lock:
            mirror = await self._fetch(repo, [base_sha, head_sha])
        return await asyncio.to_thread(
            workspace.git, mirror, "diff", "--no-color", "--no-ext-diff", f"{base_sha}...{head_sha}"
        )

    async def _fetch(self, repo: str, shas: list[str]) -> Path:
        url, token = await self.remote(repo)
        cache = workspace.Workspace(self.root)
        return await asyncio.to_thread(cache.fetch, repo, url, token, shas)


def _export_read_only(mirror: Path, sha: str, target: Path) -> None:
    workspace.export(mirror, sha, target)
    (target / ".kohai-complete").touch()
    for dirpath, _dirs, files in os.walk(target):
        for name in files:
            path = Path(dirpath) / name
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
