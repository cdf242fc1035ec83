"""Pull requests: opened on real branches, merged with real git merges.

GitHub's refusals are reproduced where a client must cope with them: no PR
without commits beyond its base (422), no merge of a draft or a conflicting
head (405), no merge when the head moved since the caller looked (409).
"""

from __future__ import annotations

from typing import Any

from sandbox import gitdata, gitrepo, issues
from sandbox.auth import Principal
from sandbox.errors import ApiError, not_found, validation_failed
from sandbox.paging import page
from sandbox.pullshape import announce_pull, pull_shape
from sandbox.render import node_id
from sandbox.state import now_iso
from sandbox.world import World


def _pull_issue(repo: dict[str, Any], number: int) -> dict[str, Any]:
    issue = repo["issues"].get(str(number))
    if issue is None or not issue.get("pull"):
        raise not_found()
    return issue


def create_pull(world: World, p: Principal, full: str, body: dict[str, Any]) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "pull_requests", "write")
        path = world.repo_path(full)
        title = body.get("title")
        head = str(body.get("head") or "").split(":")[-1]
        base = str(body.get("base") or "")
        if not title:
            raise validation_failed(resource="PullRequest", field="title", code="missing_field")
        head_sha = gitrepo.resolve(path, f"refs/heads/{head}") if head else None
        if head_sha is None:
            raise validation_failed(resource="PullRequest", field="head", code="invalid")
        base_sha = gitrepo.resolve(path, f"refs/heads/{base}") if base else None
        if base_sha is None:
            raise validation_failed(resource="PullRequest", field="base", code="invalid")
        if gitrepo.count_ahead(path, base_sha, head_sha) == 0:
            raise validation_failed(
                resource="PullRequest",
                code="custom",
                message=f"No commits between {base} and {head}",
            )
        for other in repo["issues"].values():
            pull = other.get("pull")
            if pull and other["state"] == "open" and pull["head"] == head and pull["base"] == base:
                raise validation_failed(
                    resource="PullRequest",
                    code="custom",
                    message=f"A pull request already exists for {repo['owner']}:{head}.",
                )
        number = world.state.next_id(f"issue:{full}")
        pull_id = world.state.next_id("pull", start=8_000_001)
        stamp = now_iso()
        issue: dict[str, Any] = {
            "id": world.state.next_id("issue", start=3_000_001),
            "number": number,
            "title": str(title),
            "body": body.get("body"),
            "state": "open",
            "state_reason": None,
            "user": p.login,
            "labels": [],
            "created_at": stamp,
            "updated_at": stamp,
            "closed_at": None,
            "closed_by": None,
            "pull": {
                "id": pull_id,
                "node_id": node_id("PullRequest", pull_id),
                "head": head,
                "base": base,
                "head_sha": head_sha,
                "draft": bool(body.get("draft", False)),
                "merged": False,
                "merged_at": None,
                "merged_by": None,
                "merge_commit_sha": None,
            },
        }
        repo["issues"][str(number)] = issue
        announce_pull(world, "opened", repo, issue, p.login)
        return pull_shape(world, repo, issue)


def get_pull(world: World, p: Principal, full: str, number: int) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "pull_requests", "read")
        return pull_shape(world, repo, _pull_issue(repo, number))


def list_files(
    world: World, p: Principal, full: str, number: int, query: dict[str, str]
) -> list[Any]:
    """GET /pulls/{n}/files: what the head changes against its base, as GitHub lists it."""
    with world.state.lock:
        repo = world.authorize(p, full, "pull_requests", "read")
        pull = _pull_issue(repo, number)["pull"]
        path = world.repo_path(full)
        base = pull.get("base_sha_at_merge") or gitrepo.resolve(path, f"refs/heads/{pull['base']}")
        changes = gitrepo.changed_files(path, base or pull["head_sha"], pull["head_sha"])
        return page([world.render.pull_file(full, pull["head_sha"], c) for c in changes], query)


def list_pulls(world: World, p: Principal, full: str, query: dict[str, str]) -> list[Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "pull_requests", "read")
        state = query.get("state", "open")
        head = query.get("head", "").split(":")[-1]
        base = query.get("base", "")
        chosen = [
            issue
            for issue in repo["issues"].values()
            if issue.get("pull")
            and (state == "all" or issue["state"] == state)
            and (not head or issue["pull"]["head"] == head)
            and (not base or issue["pull"]["base"] == base)
        ]
        chosen.sort(key=lambda issue: issue["number"], reverse=query.get("direction") != "asc")
        return page([pull_shape(world, repo, issue) for issue in chosen], query)


def update_pull(
    world: World, p: Principal, full: str, number: int, body: dict[str, Any]
) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "pull_requests", "write")
        issue = _pull_issue(repo, number)
        issues.edit_text(world, repo, issue, body, p.login)
        if "base" in body and body["base"] != issue["pull"]["base"]:
            if gitrepo.resolve(world.repo_path(full), f"refs/heads/{body['base']}") is None:
                raise validation_failed(resource="PullRequest", field="base", code="invalid")
            issue["pull"]["base"] = str(body["base"])
        if "state" in body:
            issues.set_state(world, repo, issue, body["state"], p.login)
        return pull_shape(world, repo, issue)


def merge_pull(
    world: World, p: Principal, full: str, number: int, body: dict[str, Any]
) -> dict[str, Any]:
    """PUT /pulls/{n}/merge: a real merge (or squash) commit on the base branch."""
    with world.changing():
        repo = world.authorize(p, full, "contents", "write")
        issue = _pull_issue(repo, number)
        pull = issue["pull"]
        path = world.repo_path(full)
        if pull["merged"] or issue["state"] == "closed":
            raise ApiError(405, "Pull Request is not mergeable")
        if pull["draft"]:
            raise ApiError(405, "Pull Request is still a draft")
        if body.get("sha") and body["sha"] != pull["head_sha"]:
            raise ApiError(409, "Head branch was modified. Review and try the merge again.")
        method = body.get("merge_method", "merge")
        if method not in ("merge", "squash"):
            raise ApiError(405, "Rebase merges are not allowed on this repository.")
        base_ref = f"refs/heads/{pull['base']}"
        base_sha = gitrepo.resolve(path, base_ref)
        if base_sha is None:
            raise ApiError(405, "Pull Request is not mergeable")
        tree = gitrepo.merge_tree(path, base_sha, pull["head_sha"])
        if tree is None:
            raise ApiError(405, "Pull Request is not mergeable")
        user = world.data["users"][p.login]
        who = gitrepo.Signature(p.login, user.get("email") or f"{p.login}@sandbox", now_iso())
        if method == "squash":
            title = body.get("commit_title") or f"{issue['title']} (#{number})"
            parents = [base_sha]
        else:
            title = body.get("commit_title") or (
                f"Merge pull request #{number} from {repo['owner']}/{pull['head']}"
            )
            parents = [base_sha, pull["head_sha"]]
        message = title + "\n\n" + (body.get("commit_message") or issue["title"]) + "\n"
        sha = gitrepo.commit_tree(path, tree, parents, message, who)
        gitrepo.update_ref(path, base_ref, sha, base_sha)
        stamp = now_iso()
        pull.update(
            {
                "merged": True,
                "merged_at": stamp,
                "merged_by": p.login,
                "merge_commit_sha": sha,
                "base_sha_at_merge": base_sha,
            }
        )
        gitdata.refs_changed(world, repo, [(base_ref, base_sha, sha)], p.login)
        issue.update({"state": "closed", "closed_at": stamp, "closed_by": p.login})
        issue["updated_at"] = stamp
        announce_pull(world, "closed", repo, issue, p.login)
        return {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}


def set_draft(world: World, p: Principal, pull_node_id: str, draft: bool) -> dict[str, Any]:
    """The GraphQL mutations: ready for review / convert to draft, by node id."""
    with world.changing():
        for repo in world.data["repos"].values():
            for issue in repo["issues"].values():
                pull = issue.get("pull")
                if pull and pull["node_id"] == pull_node_id:
                    world.authorize(p, repo["full_name"], "pull_requests", "write")
                    if issue["state"] != "open":
                        raise ApiError(422, "Pull request is closed")
                    if pull["draft"] != draft:
                        pull["draft"] = draft
                        issue["updated_at"] = now_iso()
                        action = "converted_to_draft" if draft else "ready_for_review"
                        announce_pull(world, action, repo, issue, p.login)
                    return {
                        "id": pull["node_id"],
                        "number": issue["number"],
                        "isDraft": pull["draft"],
                        "state": "MERGED" if pull["merged"] else issue["state"].upper(),
                        "url": f"{world.render.web}/{repo['full_name']}/pull/{issue['number']}",
                    }
        raise ApiError(404, f"Could not resolve to a node with the global id of '{pull_node_id}'")
