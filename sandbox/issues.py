"""Labels, issues, issue comments and reactions, with their webhooks.

Pull requests are issues too: the same number space, the same labels and
comments. A label or state change on one is announced as a `pull_request`
event, as GitHub does.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox import events
from sandbox.auth import Principal
from sandbox.errors import ApiError, not_found, validation_failed
from sandbox.paging import page
from sandbox.pullshape import pull_shape
from sandbox.state import now_iso
from sandbox.world import World

REACTIONS = {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}
COLOR = re.compile(r"^[0-9a-fA-F]{6}$")


def _issue(repo: dict[str, Any], number: int) -> dict[str, Any]:
    issue = repo["issues"].get(str(number))
    if issue is None:
        raise not_found()
    return issue


def _is_pull(issue: dict[str, Any]) -> bool:
    return bool(issue.get("pull"))


def announce(
    world: World,
    action: str,
    repo: dict[str, Any],
    issue: dict[str, Any],
    sender: str,
    **extra: Any,
) -> None:
    """Emit `issues` for an issue, `pull_request` for a PR."""
    inst = world.installation_id_of(repo["full_name"])
    if inst is None:
        return
    if _is_pull(issue):
        payload = events.pull_request(
            world.render, action, repo, pull_shape(world, repo, issue), sender, inst, **extra
        )
        world.emit("pull_request", payload)
    else:
        world.emit(
            "issues", events.issues(world.render, action, repo, issue, sender, inst, **extra)
        )


# -- labels -------------------------------------------------------------------------


def list_labels(world: World, p: Principal, full: str, query: dict[str, str]) -> list[Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "issues", "read", alternatives=("pull_requests",))
        return page([world.render.label(repo, name) for name in repo["labels"]], query)


def create_label(world: World, p: Principal, full: str, body: dict[str, Any]) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "issues", "write", alternatives=("pull_requests",))
        name = str(body.get("name") or "")
        if not name:
            raise validation_failed(resource="Label", field="name", code="missing_field")
        color = str(body.get("color") or "ededed").lstrip("#")
        if not COLOR.match(color):
            raise validation_failed(resource="Label", field="color", code="invalid")
        if any(existing.lower() == name.lower() for existing in repo["labels"]):
            raise validation_failed(resource="Label", field="name", code="already_exists")
        repo["labels"][name] = {
            "id": world.state.next_id("label", start=2_000_001),
            "color": color.lower(),
            "description": body.get("description"),
        }
        return world.render.label(repo, name)


def ensure_label(world: World, repo: dict[str, Any], name: str) -> None:
    """Adding an unknown label to an issue creates it, as GitHub does."""
    if name not in repo["labels"]:
        repo["labels"][name] = {
            "id": world.state.next_id("label", start=2_000_001),
            "color": "ededed",
            "description": None,
        }


def get_label(world: World, p: Principal, full: str, name: str) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "issues", "read", alternatives=("pull_requests",))
        if name not in repo["labels"]:
            raise not_found()
        return world.render.label(repo, name)


# -- issues -------------------------------------------------------------------------


def create_issue(world: World, p: Principal, full: str, body: dict[str, Any]) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "issues", "write", user_level="read")
        title = body.get("title")
        if not title:
            raise validation_failed(resource="Issue", field="title", code="missing_field")
        labels = [str(x) for x in body.get("labels") or []]
        number = world.state.next_id(f"issue:{full}")
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
            "pull": None,
        }
        repo["issues"][str(number)] = issue
        # As on GitHub: `opened` already shows the labels, one `labeled` follows per label.
        for name in dict.fromkeys(labels):
            ensure_label(world, repo, name)
            issue["labels"].append(name)
        announce(world, "opened", repo, issue, p.login)
        for name in issue["labels"]:
            announce(world, "labeled", repo, issue, p.login, label=name)
        return world.render.issue(repo, issue)


def get_issue(world: World, p: Principal, full: str, number: int) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "issues", "read", alternatives=("pull_requests",))
        return world.render.issue(repo, _issue(repo, number))


def list_issues(world: World, p: Principal, full: str, query: dict[str, str]) -> list[Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "issues", "read", alternatives=("pull_requests",))
        state = query.get("state", "open")
        wanted = {x for x in query.get("labels", "").split(",") if x}
        chosen = [
            issue
            for issue in repo["issues"].values()
            if (state == "all" or issue["state"] == state) and wanted <= set(issue["labels"])
        ]
        chosen.sort(key=lambda issue: issue["number"], reverse=query.get("direction") != "asc")
        return page([world.render.issue(repo, issue) for issue in chosen], query)


def set_state(
    world: World,
    repo: dict[str, Any],
    issue: dict[str, Any],
    state: str,
    sender: str,
    reason: str | None = None,
) -> None:
    """Close or reopen, announcing it (no event when nothing changes)."""
    if state not in ("open", "closed"):
        raise validation_failed(resource="Issue", field="state", code="invalid")
    if issue["state"] == state:
        return
    if state == "open" and issue.get("pull", {}) and issue["pull"].get("merged"):
        raise validation_failed("Cannot reopen a merged pull request")
    stamp = now_iso()
    issue["state"] = state
    issue["updated_at"] = stamp
    if state == "closed":
        issue["closed_at"] = stamp
        issue["closed_by"] = sender
        issue["state_reason"] = None if _is_pull(issue) else (reason or "completed")
        announce(world, "closed", repo, issue, sender)
    else:
        issue["closed_at"] = None
        issue["closed_by"] = None
        issue["state_reason"] = None if _is_pull(issue) else "reopened"
        announce(world, "reopened", repo, issue, sender)


def edit_text(
    world: World, repo: dict[str, Any], issue: dict[str, Any], body: dict[str, Any], sender: str
) -> None:
    changes: dict[str, Any] = {}
    for field in ("title", "body"):
        if field in body and body[field] != issue[field]:
            if field == "title" and not body[field]:
                raise validation_failed(resource="Issue", field="title", code="missing_field")
            changes[field] = {"from": issue[field]}
            issue[field] = body[field]
    if changes:
        issue["updated_at"] = now_iso()
        announce(world, "edited", repo, issue, sender, changes=changes)


def update_issue(
    world: World, p: Principal, full: str, number: int, body: dict[str, Any]
) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(p, full, "issues", "write", alternatives=("pull_requests",))
        issue = _issue(repo, number)
        if p.kind == "user" and issue["user"] != p.login:
            world.authorize(p, full, "issues", "write")
        edit_text(world, repo, issue, body, p.login)
        if "labels" in body:
            _set_labels(world, repo, issue, [str(x) for x in body["labels"] or []], p.login)
        if "state" in body:
            set_state(world, repo, issue, body["state"], p.login, body.get("state_reason"))
        return world.render.issue(repo, issue)


# -- issue labels -----------------------------------------------------------------------


def _add_labels(
    world: World, repo: dict[str, Any], issue: dict[str, Any], names: list[str], sender: str
) -> None:
    for name in names:
        if name in issue["labels"]:
            continue
        ensure_label(world, repo, name)
        issue["labels"].append(name)
        issue["updated_at"] = now_iso()
        announce(world, "labeled", repo, issue, sender, label=name)


def _remove_label(
    world: World, repo: dict[str, Any], issue: dict[str, Any], name: str, sender: str
) -> None:
    issue["labels"].remove(name)
    issue["updated_at"] = now_iso()
    announce(world, "unlabeled", repo, issue, sender, label=name)


def _set_labels(
    world: World, repo: dict[str, Any], issue: dict[str, Any], names: list[str], sender: str
) -> None:
    for name in [n for n in issue["labels"] if n not in names]:
        _remove_label(world, repo, issue, name, sender)
    _add_labels(world, repo, issue, names, sender)


def _label_names(body: Any) -> list[str]:
    """GitHub accepts `{"labels": [...]}`, a bare list, or a list of `{"name": ...}`."""
    raw = body.get("labels", []) if isinstance(body, dict) else body or []
    return [str(x["name"] if isinstance(x, dict) else x) for x in raw]


def add_labels(world: World, p: Principal, full: str, number: int, body: Any) -> list[Any]:
    with world.changing():
        repo = world.authorize(p, full, "issues", "write", alternatives=("pull_requests",))
        issue = _issue(repo, number)
        _add_labels(world, repo, issue, _label_names(body), p.login)
        return [world.render.label(repo, name) for name in issue["labels"]]


def set_labels(world: World, p: Principal, full: str, number: int, body: Any) -> list[Any]:
    with world.changing():
        repo = world.authorize(p, full, "issues", "write", alternatives=("pull_requests",))
        issue = _issue(repo, number)
        _set_labels(world, repo, issue, _label_names(body), p.login)
        return [world.render.label(repo, name) for name in issue["labels"]]


def remove_label(world: World, p: Principal, full: str, number: int, name: str) -> list[Any]:
    with world.changing():
        repo = world.authorize(p, full, "issues", "write", alternatives=("pull_requests",))
        issue = _issue(repo, number)
        if name not in issue["labels"]:
            raise ApiError(404, "Label does not exist")
        _remove_label(world, repo, issue, name, p.login)
        return [world.render.label(repo, label) for label in issue["labels"]]


def list_issue_labels(world: World, p: Principal, full: str, number: int) -> list[Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "issues", "read", alternatives=("pull_requests",))
        return [world.render.label(repo, name) for name in _issue(repo, number)["labels"]]


# -- comments -----------------------------------------------------------------------


def _comment(repo: dict[str, Any], comment_id: int) -> dict[str, Any]:
    comment = repo["comments"].get(str(comment_id))
    if comment is None:
        raise not_found()
    return comment


def _announce_comment(
    world: World,
    action: str,
    repo: dict[str, Any],
    comment: dict[str, Any],
    sender: str,
    **extra: Any,
) -> None:
    inst = world.installation_id_of(repo["full_name"])
    if inst is None:
        return
    issue = repo["issues"][str(comment["issue"])]
    world.emit(
        "issue_comment",
        events.issue_comment(world.render, action, repo, issue, comment, sender, inst, **extra),
    )


def create_comment(
    world: World, p: Principal, full: str, number: int, body: dict[str, Any]
) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(
            p, full, "issues", "write", user_level="read", alternatives=("pull_requests",)
        )
        issue = _issue(repo, number)
        if not body.get("body"):
            raise validation_failed(resource="IssueComment", field="body", code="missing_field")
        stamp = now_iso()
        comment = {
            "id": world.state.next_id("comment", start=5_000_001),
            "issue": number,
            "body": str(body["body"]),
            "user": p.login,
            "created_at": stamp,
            "updated_at": stamp,
            "reactions": [],
        }
        repo["comments"][str(comment["id"])] = comment
        issue["updated_at"] = stamp
        _announce_comment(world, "created", repo, comment, p.login)
        return world.render.comment(repo, comment)


def list_comments(
    world: World, p: Principal, full: str, number: int, query: dict[str, str]
) -> list[Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "issues", "read", alternatives=("pull_requests",))
        _issue(repo, number)
        chosen = sorted(
            (c for c in repo["comments"].values() if c["issue"] == number),
            key=lambda c: c["id"],
        )
        return page([world.render.comment(repo, c) for c in chosen], query)


def get_comment(world: World, p: Principal, full: str, comment_id: int) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "issues", "read", alternatives=("pull_requests",))
        return world.render.comment(repo, _comment(repo, comment_id))


def _check_author(world: World, p: Principal, full: str, comment: dict[str, Any]) -> None:
    if p.kind == "user" and comment["user"] != p.login:
        world.authorize(p, full, "issues", "write")


def update_comment(
    world: World, p: Principal, full: str, comment_id: int, body: dict[str, Any]
) -> dict[str, Any]:
    with world.changing():
        repo = world.authorize(
            p, full, "issues", "write", user_level="read", alternatives=("pull_requests",)
        )
        comment = _comment(repo, comment_id)
        _check_author(world, p, full, comment)
        if not body.get("body"):
            raise validation_failed(resource="IssueComment", field="body", code="missing_field")
        if body["body"] != comment["body"]:
            changes = {"body": {"from": comment["body"]}}
            comment["body"] = str(body["body"])
            comment["updated_at"] = now_iso()
            _announce_comment(world, "edited", repo, comment, p.login, changes=changes)
        return world.render.comment(repo, comment)


def delete_comment(world: World, p: Principal, full: str, comment_id: int) -> None:
    with world.changing():
        repo = world.authorize(
            p, full, "issues", "write", user_level="read", alternatives=("pull_requests",)
        )
        comment = _comment(repo, comment_id)
        _check_author(world, p, full, comment)
        _announce_comment(world, "deleted", repo, comment, p.login)
        del repo["comments"][str(comment_id)]


def react(
    world: World, p: Principal, full: str, comment_id: int, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """201 with a new reaction, 200 with the one this user already left."""
    with world.changing():
        repo = world.authorize(
            p, full, "issues", "write", user_level="read", alternatives=("pull_requests",)
        )
        comment = _comment(repo, comment_id)
        content = body.get("content")
        if content not in REACTIONS:
            raise validation_failed(resource="Reaction", field="content", code="invalid")
        for reaction in comment["reactions"]:
            if reaction["user"] == p.login and reaction["content"] == content:
                return 200, world.render.reaction(reaction)
        reaction = {
            "id": world.state.next_id("reaction", start=6_000_001),
            "user": p.login,
            "content": content,
            "created_at": now_iso(),
        }
        comment["reactions"].append(reaction)
        return 201, world.render.reaction(reaction)
