"""A pull request's JSON shape, which needs git (head, base, mergeability), and its event."""

from __future__ import annotations

from typing import Any

from sandbox import events, gitrepo
from sandbox.world import World


def mergeable(world: World, repo: dict[str, Any], issue: dict[str, Any]) -> bool | None:
    pull = issue["pull"]
    if pull.get("merged") or issue["state"] == "closed":
        return None
    path = world.repo_path(repo["full_name"])
    base_sha = gitrepo.resolve(path, f"refs/heads/{pull['base']}")
    if base_sha is None:
        return None
    return gitrepo.merge_tree(path, base_sha, pull["head_sha"]) is not None


def pull_shape(world: World, repo: dict[str, Any], issue: dict[str, Any]) -> dict[str, Any]:
    pull = issue["pull"]
    path = world.repo_path(repo["full_name"])
    base_sha = pull.get("base_sha_at_merge") or gitrepo.resolve(path, f"refs/heads/{pull['base']}")
    shape = world.render.pull(repo, issue, mergeable(world, repo, issue), base_sha or "")
    if base_sha and not pull.get("merged"):
        shape["commits"] = gitrepo.count_ahead(path, base_sha, pull["head_sha"])
    return shape


def announce_pull(
    world: World, action: str, repo: dict[str, Any], issue: dict[str, Any], sender: str, **kw: Any
) -> None:
    inst = world.installation_id_of(repo["full_name"])
    if inst is not None:
        payload = events.pull_request(
            world.render, action, repo, pull_shape(world, repo, issue), sender, inst, **kw
        )
        world.emit("pull_request", payload)
