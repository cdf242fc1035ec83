"""Webhook payloads, assembled from the shapes in `render` as GitHub does."""

from __future__ import annotations

from typing import Any

from sandbox.gitrepo import ZERO_SHA, CommitInfo
from sandbox.render import Renderer, node_id


def _envelope(
    r: Renderer, repo: dict[str, Any] | None, sender: str, installation_id: int | None
) -> dict[str, Any]:
    shape: dict[str, Any] = {}
    if repo is not None:
        shape["repository"] = r.repo(repo)
    shape["sender"] = r.user(sender)
    if installation_id is not None:
        shape["installation"] = {
            "id": installation_id,
            "node_id": node_id("Installation", installation_id),
        }
    return shape


def issues(
    r: Renderer,
    action: str,
    repo: dict[str, Any],
    issue: dict[str, Any],
    sender: str,
    installation_id: int,
    *,
    label: str | None = None,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action, "issue": r.issue(repo, issue)}
    if label is not None:
        payload["label"] = r.label(repo, label)
    if changes is not None:
        payload["changes"] = changes
    payload.update(_envelope(r, repo, sender, installation_id))
    return payload


def issue_comment(
    r: Renderer,
    action: str,
    repo: dict[str, Any],
    issue: dict[str, Any],
    comment: dict[str, Any],
    sender: str,
    installation_id: int,
    *,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "action": action,
        "issue": r.issue(repo, issue),
        "comment": r.comment(repo, comment),
    }
    if changes is not None:
        payload["changes"] = changes
    payload.update(_envelope(r, repo, sender, installation_id))
    return payload


def pull_request(
    r: Renderer,
    action: str,
    repo: dict[str, Any],
    pull_shape: dict[str, Any],
    sender: str,
    installation_id: int,
    *,
    label: str | None = None,
    before: str | None = None,
    after: str | None = None,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "action": action,
        "number": pull_shape["number"],
        "pull_request": pull_shape,
    }
    if label is not None:
        payload["label"] = r.label(repo, label)
    if before is not None:
        payload["before"] = before
        payload["after"] = after
    if changes is not None:
        payload["changes"] = changes
    payload.update(_envelope(r, repo, sender, installation_id))
    return payload


def _push_commit(r: Renderer, repo: dict[str, Any], info: CommitInfo) -> dict[str, Any]:
    full = repo["full_name"]
    return {
        "id": info.sha,
        "tree_id": info.tree,
        "distinct": True,
        "message": info.message,
        "timestamp": info.committer.date.replace("Z", "+00:00"),
        "url": f"{r.web}/{full}/commit/{info.sha}",
        "author": {"name": info.author.name, "email": info.author.email, "username": None},
        "committer": {
            "name": info.committer.name,
            "email": info.committer.email,
            "username": None,
        },
        "added": [],
        "removed": [],
        "modified": [],
    }


def push(
    r: Renderer,
    repo: dict[str, Any],
    ref: str,
    before: str,
    after: str,
    commits: list[CommitInfo],
    forced: bool,
    sender: str,
    installation_id: int,
    head: CommitInfo | None = None,
) -> dict[str, Any]:
    """`head` is the new tip, shown even when no commit is new (a branch created at a tip)."""
    full = repo["full_name"]
    rendered = [_push_commit(r, repo, info) for info in commits]
    sender_record = r.world["users"][sender]
    payload: dict[str, Any] = {
        "ref": ref,
        "before": before,
        "after": after,
        "created": before == ZERO_SHA,
        "deleted": after == ZERO_SHA,
        "forced": forced,
        "base_ref": None,
        "compare": f"{r.web}/{full}/compare/{before[:12]}...{after[:12]}",
        "commits": rendered,
        "head_commit": _push_commit(r, repo, head) if head else None,
        "pusher": {"name": sender, "email": sender_record.get("email")},
    }
    payload.update(_envelope(r, repo, sender, installation_id))
    return payload


def _repo_brief(r: Renderer, repo: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": repo["id"],
        "node_id": node_id("Repository", repo["id"]),
        "name": repo["name"],
        "full_name": repo["full_name"],
        "private": False,
    }


def installation_created(
    r: Renderer, inst: dict[str, Any], repos: list[dict[str, Any]], sender: str
) -> dict[str, Any]:
    return {
        "action": "created",
        "installation": r.installation(inst),
        "repositories": [_repo_brief(r, repo) for repo in repos],
        "requester": None,
        "sender": r.user(sender),
    }


def installation_repositories_added(
    r: Renderer, inst: dict[str, Any], repos: list[dict[str, Any]], sender: str
) -> dict[str, Any]:
    return {
        "action": "added",
        "installation": r.installation(inst),
        "repository_selection": "selected",
        "repositories_added": [_repo_brief(r, repo) for repo in repos],
        "repositories_removed": [],
        "requester": None,
        "sender": r.user(sender),
    }


def ping(
    r: Renderer, hook_id: int, url: str | None, app: dict[str, Any] | None = None
) -> dict[str, Any]:
    """GitHub's `ping` to an App's hook (the default App's unless another is given)."""
    app = r.world["app"] if app is None else app
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": hook_id,
        "hook": {
            "type": "App",
            "id": hook_id,
            "name": "web",
            "active": True,
            "events": ["issues", "issue_comment", "pull_request", "push"],
            "config": {"content_type": "json", "insecure_ssl": "0", "url": url or ""},
            "updated_at": app["created_at"],
            "created_at": app["created_at"],
            "app_id": app["id"],
            "deliveries_url": f"{r.api}/app/hook/deliveries",
        },
    }
