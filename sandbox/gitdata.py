"""The git data API, branches, file contents, and what follows a ref moving.

Whether a ref moves through the API, a merge or a push over HTTP, the same
`refs_changed` announces it: a `push` event, and `synchronize` for the PRs
whose head branch it is.
"""

from __future__ import annotations

import base64
from typing import Any

from sandbox import events, gitrepo
from sandbox.auth import Principal
from sandbox.errors import ApiError, not_found, validation_failed
from sandbox.pullshape import announce_pull
from sandbox.state import now_iso
from sandbox.world import World


def refs_changed(
    world: World, repo: dict[str, Any], changes: list[tuple[str, str, str]], sender: str
) -> None:
    """Announce ref moves (ref, before, after); ZERO_SHA stands for absent."""
    path = world.repo_path(repo["full_name"])
    inst = world.installation_id_of(repo["full_name"])
    for ref, before, after in changes:
        if before == after:
            continue
        repo["pushed_at"] = now_iso()
        if inst is not None:
            new_commits = (
                []
                if after == gitrepo.ZERO_SHA
                else gitrepo.commits_between(path, _exclude_for(repo, ref, before), after)
            )
            forced = (
                before != gitrepo.ZERO_SHA
                and after != gitrepo.ZERO_SHA
                and not gitrepo.is_ancestor(path, before, after)
            )
            head = None if after == gitrepo.ZERO_SHA else gitrepo.commit_info(path, after)
            payload = events.push(
                world.render, repo, ref, before, after, new_commits, forced, sender, inst, head
            )
            world.emit("push", payload)
        if ref.startswith("refs/heads/"):
            on_branch_moved(world, repo, ref[len("refs/heads/") :], before, after, sender)


def on_branch_moved(
    world: World, repo: dict[str, Any], branch: str, before: str, after: str, sender: str
) -> None:
    """A push to an open PR's head branch updates the PR and emits `synchronize`."""
    for issue in repo["issues"].values():
        pull = issue.get("pull")
        if (
            pull
            and issue["state"] == "open"
            and pull["head"] == branch
            and after != gitrepo.ZERO_SHA
        ):
            pull["head_sha"] = after
            issue["updated_at"] = now_iso()
            announce_pull(world, "synchronize", repo, issue, sender, before=before, after=after)


def _exclude_for(repo: dict[str, Any], ref: str, before: str) -> str | None:
    """What a push's commit list excludes: the old tip, or for a new branch the default one."""
    if before != gitrepo.ZERO_SHA:
        return before
    default = f"refs/heads/{repo['default_branch']}"
    return None if ref == default else default


def _signature(given: dict[str, Any] | None, fallback: gitrepo.Signature) -> gitrepo.Signature:
    if not given:
        return fallback
    return gitrepo.Signature(
        given.get("name") or fallback.name,
        given.get("email") or fallback.email,
        given.get("date") or fallback.date,
    )


def create_commit(world: World, p: Principal, full: str, body: dict[str, Any]) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "contents", "write")
        path = world.repo_path(full)
        message, tree = body.get("message"), body.get("tree")
        if not message:
            raise validation_failed(resource="Commit", field="message", code="missing_field")
        if not tree or gitrepo.object_type(path, str(tree)) != "tree":
            raise ApiError(422, "Tree SHA does not exist")
        parents = [str(x) for x in body.get("parents") or []]
        for parent in parents:
            if gitrepo.object_type(path, parent) != "commit":
                raise ApiError(422, "Parent SHA does not exist or is not a commit object")
        user = world.data["users"][p.login]
        default = gitrepo.Signature(p.login, user.get("email") or f"{p.login}@sandbox", now_iso())
        author = _signature(body.get("author"), default)
        committer = _signature(body.get("committer"), author)
        sha = gitrepo.commit_tree(path, str(tree), parents, str(message), author, committer)
        info = gitrepo.commit_info(path, sha)
        return world.render.git_commit(repo, info)


def get_commit(world: World, p: Principal, full: str, sha: str) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "contents", "read")
        info = gitrepo.commit_info(world.repo_path(full), sha)
        if info is None:
            raise not_found()
        return world.render.git_commit(repo, info)


def _full_ref(ref: str) -> str:
    return ref if ref.startswith("refs/") else f"refs/{ref}"


def get_ref(world: World, p: Principal, full: str, ref: str) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "contents", "read")
        name = _full_ref(ref)
        sha = gitrepo.list_refs(world.repo_path(full)).get(name)
        if sha is None:
            raise not_found()
        return world.render.git_ref(repo, name, sha)


def create_ref(world: World, p: Principal, full: str, body: dict[str, Any]) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "contents", "write")
        path = world.repo_path(full)
        ref, sha = str(body.get("ref") or ""), str(body.get("sha") or "")
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise ApiError(
                422, "Reference name must start with 'refs/' and have at least two slashes."
            )
        if gitrepo.object_type(path, sha) != "commit":
            raise ApiError(422, "Object does not exist")
        if ref in gitrepo.list_refs(path):
            raise ApiError(422, "Reference already exists")
        gitrepo.update_ref(path, ref, sha, gitrepo.ZERO_SHA)
        refs_changed(world, repo, [(ref, gitrepo.ZERO_SHA, sha)], p.login)
        return world.render.git_ref(repo, ref, sha)


def update_ref(
    world: World, p: Principal, full: str, ref: str, body: dict[str, Any]
) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "contents", "write")
        path = world.repo_path(full)
        name = _full_ref(ref)
        before = gitrepo.list_refs(path).get(name)
        if before is None:
            raise ApiError(422, "Reference does not exist")
        sha = str(body.get("sha") or "")
        if gitrepo.object_type(path, sha) != "commit":
            raise ApiError(422, "Object does not exist")
        if not body.get("force") and not gitrepo.is_ancestor(path, before, sha):
            raise ApiError(422, "Update is not a fast forward")
        gitrepo.update_ref(path, name, sha, before)
        refs_changed(world, repo, [(name, before, sha)], p.login)
        return world.render.git_ref(repo, name, sha)


def delete_ref(world: World, p: Principal, full: str, ref: str) -> None:
    with world.changing():
        repo = world.authorize(p, full, "contents", "write")
        path = world.repo_path(full)
        name = _full_ref(ref)
        before = gitrepo.list_refs(path).get(name)
        if before is None:
            raise ApiError(422, "Reference does not exist")
        gitrepo.delete_ref(path, name)
        refs_changed(world, repo, [(name, before, gitrepo.ZERO_SHA)], p.login)


def get_branch(world: World, p: Principal, full: str, branch: str) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "contents", "read")
        path = world.repo_path(full)
        sha = gitrepo.resolve(path, f"refs/heads/{branch}")
        if sha is None:
            raise ApiError(404, "Branch not found")
        info = gitrepo.commit_info(path, sha)
        assert info is not None
        git_commit = world.render.git_commit(repo, info)
        api = f"{world.render.api}/repos/{full}"
        commit = {
            "url": f"{api}/commits/{sha}",
            "sha": sha,
            "node_id": git_commit["node_id"],
            "html_url": git_commit["html_url"],
            "comments_url": f"{api}/commits/{sha}/comments",
            "commit": {
                "url": git_commit["url"],
                "author": git_commit["author"],
                "committer": git_commit["committer"],
                "message": info.message,
                "comment_count": 0,
                "tree": git_commit["tree"],
                "verification": git_commit["verification"],
            },
            "author": None,
            "committer": None,
            "parents": git_commit["parents"],
        }
        return {
            "name": branch,
            "commit": commit,
            "_links": {
                "html": f"{world.render.web}/{full}/tree/{branch}",
                "self": f"{api}/branches/{branch}",
            },
            "protected": False,
            "protection": {
                "enabled": False,
                "required_status_checks": {
                    "enforcement_level": "off",
                    "contexts": [],
                    "checks": [],
                },
            },
            "protection_url": f"{api}/branches/{branch}/protection",
        }


def get_contents(
    world: World, p: Principal, full: str, file_path: str, query: dict[str, str]
) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "contents", "read")
        ref = query.get("ref") or repo["default_branch"]
        found = gitrepo.read_blob(world.repo_path(full), ref, file_path)
        if found is None:
            raise not_found()
        sha, content = found
        api = f"{world.render.api}/repos/{full}"
        web = f"{world.render.web}/{full}"
        encoded = base64.encodebytes(content).decode()
        return {
            "type": "file",
            "encoding": "base64",
            "size": len(content),
            "name": file_path.rsplit("/", 1)[-1],
            "path": file_path,
            "content": encoded,
            "sha": sha,
            "url": f"{api}/contents/{file_path}?ref={ref}",
            "git_url": f"{api}/git/blobs/{sha}",
            "html_url": f"{web}/blob/{ref}/{file_path}",
            "download_url": f"{web}/raw/{ref}/{file_path}",
            "_links": {
                "git": f"{api}/git/blobs/{sha}",
                "self": f"{api}/contents/{file_path}?ref={ref}",
                "html": f"{web}/blob/{ref}/{file_path}",
            },
        }


def collaborator_permission(world: World, p: Principal, full: str, login: str) -> dict[str, Any]:
    with world.state.lock:
        world.authorize(p, full, "metadata", "read")
        if login not in world.data["users"]:
            raise not_found()
        role = world.role_of(login, full)
        user = world.render.user(login)
        user["permissions"] = {
            "pull": role != "none",
            "triage": role in ("write", "admin"),
            "push": role in ("write", "admin"),
            "maintain": role == "admin",
            "admin": role == "admin",
        }
        user["role_name"] = role
        return {"permission": role, "role_name": role, "user": user}
