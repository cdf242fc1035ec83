"""Repository sync: read the default branch's head, `kohai.toml` and `program.md`.

Runs when the App is installed and whenever the base moves (a merge, a push).
A new base means a new baseline, and experiments measured on the old base
must be re-run before they may merge.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from bot.engine import Engine
from bot.github import GitHubApp, GitHubWriteError
from bot.problem import CONFIG_FILE, PROGRAM_FILE, ProblemError, loads_problem
from bot.store import now

log = logging.getLogger("kohai.sync")

MAX_BASE_FILES = 20
MAX_BASE_FILE_CHARS = 256_000


async def _file_at(
    github: GitHubApp, installation_id: int, repo: str, path: str, ref: str
) -> str | None:
    try:
        reply = await github.request(
            installation_id, "GET", f"/repos/{repo}/contents/{path}", params={"ref": ref}
        )
    except GitHubWriteError as exc:
        if exc.status == 404:
            return None
        raise
    data: Any = reply.data
    if isinstance(data, dict) and data.get("encoding") == "base64":
        return base64.b64decode(data.get("content", "")).decode("utf-8", "replace")
    return None


async def sync_repo(engine: Engine, github: GitHubApp, repo_id: int) -> str | None:
    """Refresh one repo from GitHub; queue a baseline when its base moved. Returns the base sha."""
    row = engine.store.one("SELECT * FROM repos WHERE id = ?", (repo_id,))
    if row is None or not row["active"] or row["installation_id"] is None:
        return None
    inst, name = row["installation_id"], row["full_name"]
    meta = await github.request(inst, "GET", f"/repos/{name}")
    default_branch = meta.data.get("default_branch") or "main"
    branch = await github.request(inst, "GET", f"/repos/{name}/branches/{default_branch}")
    sha = branch.data["commit"]["sha"]
    toml = await _file_at(github, inst, name, CONFIG_FILE, sha)
    program = await _file_at(github, inst, name, PROGRAM_FILE, sha)
    base_files = await _editable_files(github, inst, name, toml, sha)
    with engine.store.transaction():
        moved = row["base_sha"] != sha
        engine.store.update(
            "repos",
            repo_id,
            {
                "default_branch": default_branch,
                "base_sha": sha,
                "problem_toml": toml,
                "program_md": program,
                "base_files": json.dumps(base_files),
                "synced_at": now(),
            },
        )
        repo = engine.repo_by_id(repo_id)
        if toml is None:
            log.warning("%s has no %s at %s: nothing to train", name, CONFIG_FILE, sha[:10])
            # Without its kohai.toml the repository is no lab: its queued work stops.
            engine.stop_lab(repo_id, f"{CONFIG_FILE} is no longer on {default_branch}")
        elif moved or not engine.store.one(
            "SELECT id FROM jobs WHERE kind = 'baseline' AND repo_id = ? AND base_sha = ?",
            (repo_id, sha),
        ):
            engine.queue_baseline(repo)
            if moved:
                # Results measured on the old base must be re-measured before a merge.
                for exp in engine.store.query(
                    "SELECT id FROM experiments WHERE repo_id = ? AND state = 'review'", (repo_id,)
                ):
                    engine.store.update("experiments", exp["id"], {"review_requested": 1})
    engine.bus.publish("repo", id=repo_id, base_sha=sha)
    if toml is not None:
        try:  # the first lease of this lab then need not wait on GitHub
            await github.warm_job_token(inst, name)
        except Exception as exc:  # noqa: BLE001 - a lease mints it instead
            log.warning("could not mint a job token ahead for %s: %s", name, exc)
    return sha


async def _editable_files(
    github: GitHubApp, installation_id: int, repo: str, toml: str | None, sha: str
) -> dict[str, str]:
    """The base's editable files (those that exist, bounded): where the incumbent's knobs live.

    The offline advisor reads its starting point from them; a file too large to
    be a training script is left out rather than stored.
    """
    if toml is None:
        return {}
    try:
        editable = loads_problem(toml).editable
    except ProblemError:
        return {}
    files: dict[str, str] = {}
    for path in editable[:MAX_BASE_FILES]:
        text = await _file_at(github, installation_id, repo, path, sha)
        if text is not None and len(text) <= MAX_BASE_FILE_CHARS:
            files[path] = text
    return files


def stale_repos(engine: Engine) -> list[int]:
    return [
        r["id"]
        for r in engine.store.query(
            "SELECT id FROM repos WHERE active = 1 AND synced_at IS NULL AND installation_id IS NOT NULL"
        )
    ]
