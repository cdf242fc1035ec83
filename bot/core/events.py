"""Incoming webhooks, read leniently: only the fields the router needs.

GitHub's payloads have changed shape over the years (real deliveries lack
fields that strict models require), so nothing here validates a schema: a
missing field becomes None and the router decides what that means. Only a
body that is not a JSON object is malformed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class MalformedEvent(ValueError):
    pass


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _labels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(name for item in value if isinstance(name := _get(item, "name"), str))


def _repo_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(name for item in value if isinstance(name := _get(item, "full_name"), str))


@dataclass(frozen=True)
class Event:
    name: str
    action: str | None = None
    delivery_id: str = ""
    repo: str | None = None
    installation_id: int | None = None
    sender: str | None = None
    sender_type: str | None = None
    author: str | None = None  # who wrote the issue or PR (not who acted)
    number: int | None = None
    is_pull_request: bool = False
    title: str = ""
    body: str = ""
    label: str | None = None
    labels: tuple[str, ...] = ()
    comment_id: int | None = None
    comment_body: str = ""
    merged: bool = False
    draft: bool = False
    head_sha: str | None = None
    head_ref: str | None = None
    base_ref: str | None = None
    default_branch: str | None = None
    repos_added: tuple[str, ...] = ()
    repos_removed: tuple[str, ...] = ()
    ref: str | None = None  # push
    after: str | None = None  # push
    # When the issue or PR last changed (GitHub's `updated_at`): a label change is
    # identified by its issue, label, action and this time (bot.core.router.once_key).
    updated_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_event(name: str, body: bytes | str | dict[str, Any], delivery_id: str = "") -> Event:
    """Read a delivery; raise MalformedEvent only when the body is not a JSON object."""
    if isinstance(body, dict):
        data = body
    else:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedEvent(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedEvent("body is not a JSON object")
    issue = _get(data, "issue")
    pull = _get(data, "pull_request")
    subject = pull if isinstance(pull, dict) else issue if isinstance(issue, dict) else {}
    is_pr = isinstance(pull, dict) or isinstance(_get(issue, "pull_request"), dict)
    repos_added = _repo_names(_get(data, "repositories_added"))
    if name == "installation" and _get(data, "action") == "created":
        repos_added = _repo_names(_get(data, "repositories"))
    repos_removed = _repo_names(_get(data, "repositories_removed"))
    if name == "installation" and _get(data, "action") == "deleted":
        repos_removed = _repo_names(_get(data, "repositories"))
    return Event(
        name=name,
        action=_str(_get(data, "action")),
        delivery_id=delivery_id,
        repo=_str(_get(data, "repository", "full_name")),
        installation_id=_int(_get(data, "installation", "id")),
        sender=_str(_get(data, "sender", "login")),
        sender_type=_str(_get(data, "sender", "type")),
        author=_str(_get(subject, "user", "login")),
        number=_int(_get(subject, "number")) or _int(_get(data, "number")),
        is_pull_request=is_pr,
        title=_str(_get(subject, "title")) or "",
        body=_str(_get(subject, "body")) or "",
        label=_str(_get(data, "label", "name")),
        labels=_labels(_get(subject, "labels")),
        comment_id=_int(_get(data, "comment", "id")),
        comment_body=_str(_get(data, "comment", "body")) or "",
        merged=bool(_get(pull, "merged")),
        draft=bool(_get(pull, "draft")),
        head_sha=_str(_get(pull, "head", "sha")),
        head_ref=_str(_get(pull, "head", "ref")),
        base_ref=_str(_get(pull, "base", "ref")),
        default_branch=_str(_get(data, "repository", "default_branch")),
        repos_added=repos_added,
        repos_removed=repos_removed,
        ref=_str(_get(data, "ref")),
        after=_str(_get(data, "after")),
        updated_at=_str(_get(subject, "updated_at")),
    )
