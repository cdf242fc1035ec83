"""Repository sync: read the default branch's head, `kohai.toml` and `program.md`.

Runs when the App is installed and whenever the base moves (a merge, a push).
A new base means a new baseline, and experiments measured on the old base
must be re-run before they may merge.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

from bot.core import configcheck
from bot.engine import labs
from bot.engine.engine import Engine, Repo
from bot.github.client import GitHubApp, GitHubWriteError
from bot.outbox import writes as w
from bot.problem import CONFIG_FILE, PROGRAM_FILE, Problem, ProblemError, Track, loads_problem
from bot.records import OutboxEntry, Repository
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
    found = engine.store.get(Repository, repo_id)
    if found is None or not found.active or found.installation_id is None:
        return None
    inst, name = found.installation_id, found.full_name
    meta = await github.request(inst, "GET", f"/repos/{name}")
    default_branch = meta.data.get("default_branch") or "main"
    branch = await github.request(inst, "GET", f"/repos/{name}/branches/{default_branch}")
    sha = branch.data["commit"]["sha"]
    toml = await _file_at(github, inst, name, CONFIG_FILE, sha)
    program = await _file_at(github, inst, name, PROGRAM_FILE, sha)
    problem, broken = _parse(toml)
    editable = problem.editable if problem is not None else ()
    base_files = await _editable_files(github, inst, name, editable, sha)
    with engine.store.transaction():
        moved = found.base_sha != sha
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
        last = _last_word(engine, name, sha)
        for write in configcheck.config_writes(name, default_branch, sha, toml, broken, last):
            engine.write(repo, write)
        if toml is None:
            log.warning("%s has no %s at %s: nothing to train", name, CONFIG_FILE, sha[:10])
            # Without its kohai.toml the repository is no lab: its queued work stops.
            engine.stop_lab(repo_id, f"{CONFIG_FILE} is no longer on {default_branch}")
        elif broken is not None:
            # A file that does not parse runs nothing, not a default problem in its place.
            log.warning("%s: %s at %s is invalid: %s", name, CONFIG_FILE, sha[:10], broken)
            engine.stop_lab(repo_id, f"{CONFIG_FILE} on {default_branch} is invalid: {broken}")
        elif moved or not engine.store.one(
            "SELECT id FROM jobs WHERE kind = 'baseline' AND repo_id = ? AND track = 'default' "
            "AND base_sha = ?",
            (repo_id, sha),
        ):
            engine.queue_baseline(repo)
            if moved:
                # Results measured on the old base must be re-measured before a merge.
                for exp in engine.store.query(
                    "SELECT id FROM experiments WHERE repo_id = ? AND track = 'default' "
                    "AND state = 'review'",
                    (repo_id,),
                ):
                    engine.store.update("experiments", exp["id"], {"review_requested": 1})
    runs = toml is not None and broken is None
    if runs:
        await sync_tracks(engine, github, repo_id)
    engine.bus.publish("repo", id=repo_id, base_sha=sha)
    if runs:
        try:  # the first lease of this lab then need not wait on GitHub
            await github.warm_job_token(inst, name)
        except Exception as exc:  # noqa: BLE001 - a lease mints it instead
            log.warning("could not mint a job token ahead for %s: %s", name, exc)
    return sha


def _last_word(engine: Engine, repo: str, sha: str) -> configcheck.LastWord:
    """What the bot last asked for about this repository's kohai.toml: its outbox holds it,
    written in the same transactions as the syncs that decided it."""
    issue = engine.store.one(
        "SELECT json_extract(args, '$.open') AS open, json_extract(args, '$.body') AS body "
        "FROM outbox WHERE repo = ? AND op = ? AND json_extract(args, '$.kind') = ? "
        "ORDER BY id DESC LIMIT 1",
        (repo, w.IssueReport.op, configcheck.ISSUE_KIND),
    )
    key = configcheck.check_key(sha)
    checked = engine.store.one(
        "SELECT id FROM outbox WHERE repo = ? AND op = ? AND json_extract(args, '$.key') = ?",
        (repo, w.CheckRun.op, key),
    )
    return configcheck.LastWord(
        issue_open=bool(issue and issue["open"]),
        issue_body=issue["body"] if issue else None,
        checked=frozenset({key} if checked else ()),
    )


def _parse(toml: str | None) -> tuple[Problem | None, str | None]:
    """The problem a kohai.toml states, or why it does not parse (both None without one)."""
    if toml is None:
        return None, None
    try:
        return loads_problem(toml), None
    except ProblemError as exc:
        return None, str(exc)


async def _branch_sha(
    github: GitHubApp, installation_id: int, repo: str, branch: str
) -> str | None:
    try:
        reply = await github.request(installation_id, "GET", f"/repos/{repo}/branches/{branch}")
    except GitHubWriteError as exc:
        if exc.status == 404:
            return None
        raise
    return reply.data["commit"]["sha"]


async def sync_tracks(engine: Engine, github: GitHubApp, repo_id: int) -> list[str]:
    """Read each declared track's base branch; create the missing ones; queue their baselines.

    A missing base branch is created from the default branch's head through
    the outbox (like every write); the track runs once the branch has been
    read back. A track that left kohai.toml stops: its queued work is
    cancelled with the reason. Returns the names of the tracks that run.
    """
    repo = engine.repo_by_id(repo_id)
    if repo.installation_id is None or not repo.base_sha:
        return []
    inst, name = repo.installation_id, repo.full_name
    declared = {t.name: t for t in repo.problem.tracks if t.base != repo.default_branch}
    for track in repo.problem.tracks:
        if track.base == repo.default_branch:
            log.warning("%s: track %s names the default branch as its base", name, track.name)
    running = []
    for track in declared.values():
        sha = await _branch_sha(github, inst, name, track.base)
        if sha is None:
            _create_base(engine, repo, track)
            continue
        program = await _file_at(github, inst, name, track.program, sha)
        files = await _editable_files(github, inst, name, repo.problem.editable, sha)
        _record_track(engine, repo, track, sha, program, files)
        running.append(track.name)
    with engine.store.transaction():
        for row in engine.store.query(
            "SELECT name FROM tracks WHERE repo_id = ? AND base_sha IS NOT NULL", (repo_id,)
        ):
            if row["name"] not in declared:
                engine.store.execute(
                    "UPDATE tracks SET base_sha = NULL, synced_at = ? WHERE repo_id = ? "
                    "AND name = ?",
                    (now(), repo_id, row["name"]),
                )
                labs.stop_track(
                    engine.store,
                    repo_id,
                    row["name"],
                    f"track {row['name']} is no longer declared in {CONFIG_FILE}",
                )
    return running


def _create_base(engine: Engine, repo: Repo, track: Track) -> None:
    """Queue the creation of a track's base branch from the default branch (once)."""
    with engine.store.transaction():
        engine.store.execute(
            "INSERT INTO tracks (repo_id, name, base_branch, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (repo_id, name) DO UPDATE SET base_branch = excluded.base_branch",
            (repo.id, track.name, track.base, now()),
        )
        pending = engine.store.first(
            OutboxEntry,
            "repo = ? AND op = ? AND state = 'pending' AND json_extract(args, '$.branch') = ?",
            (repo.full_name, w.CreateBranch.op, track.base),
        )
        if pending is None:
            log.info("%s: creating %s for track %s", repo.full_name, track.base, track.name)
            engine.write(
                repo, w.CreateBranch(branch=track.base, sha=repo.base_sha or "", track=track.name)
            )


def _record_track(
    engine: Engine,
    repo: Repo,
    track: Track,
    sha: str,
    program: str | None,
    files: dict[str, str],
) -> None:
    """Store what a track's base holds; a moved (or never measured) base gets a baseline."""
    with engine.store.transaction():
        old = engine.store.one(
            "SELECT base_sha FROM tracks WHERE repo_id = ? AND name = ?", (repo.id, track.name)
        )
        engine.store.execute(
            "INSERT INTO tracks (repo_id, name, base_branch, base_sha, program_md, base_files, "
            "synced_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (repo_id, name) DO UPDATE SET base_branch = excluded.base_branch, "
            "base_sha = excluded.base_sha, program_md = excluded.program_md, "
            "base_files = excluded.base_files, synced_at = excluded.synced_at",
            (repo.id, track.name, track.base, sha, program, json.dumps(files), now(), now()),
        )
        line = engine.repo_by_id(repo.id, track.name)
        moved = (old or {}).get("base_sha") != sha
        if moved or not engine.store.one(
            "SELECT id FROM jobs WHERE kind = 'baseline' AND repo_id = ? AND track = ? "
            "AND base_sha = ?",
            (repo.id, track.name, sha),
        ):
            engine.queue_baseline(line)
            if moved:
                for exp in engine.store.query(
                    "SELECT id FROM experiments WHERE repo_id = ? AND track = ? "
                    "AND state = 'review'",
                    (repo.id, track.name),
                ):
                    engine.store.update("experiments", exp["id"], {"review_requested": 1})
    engine.bus.publish("repo", id=repo.id, track=track.name, base_sha=sha)


async def _editable_files(
    github: GitHubApp, installation_id: int, repo: str, editable: Sequence[str], sha: str
) -> dict[str, str]:
    """The base's editable files (those that exist, bounded): where the incumbent's knobs live.

    The offline advisor reads its starting point from them; a file too large to
    be a training script is left out rather than stored.
    """
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
