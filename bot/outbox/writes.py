"""The outbox's vocabulary: the GitHub writes the engine can ask for.

The engine never calls GitHub. It records a write here, in the same
transaction as the state change that caused it; the outbox worker
(`bot.outbox.worker`) performs it later, exactly once, and hands any result (a new
PR's number, a merge commit) back to the engine. Comment writes carry a hidden
marker so that a retried write finds its earlier attempt instead of posting
twice.

Ops and their args (all also carry the repo and installation in the row):

| op             | args                                                                  | result |
|----------------|-----------------------------------------------------------------------|--------|
| start_branch   | experiment_id, base, base_sha, branch, commit_message                 | {branch, head_sha} |
| create_branch  | branch, sha, track   (a track's base branch, from the default branch)   | {branch, sha, created} |
| ensure_labels  | labels: [{name, color, description}]                                  | {} |
| open_pr        | experiment_id, base, branch, title, body, commit_message, labels, issue_number | {number, node_id, head_sha, html_url} |
| add_labels     | number, labels                                                        | {} |
| remove_label   | number, label                                                         | {} |
| comment        | number, kind, key, body                                               | {comment_id} |
| sticky         | number, kind, key, body   (edited in place when it exists)            | {comment_id} |
| react          | comment_id, content                                                   | {} |
| mark_ready     | number                                                                | {} |
| convert_to_draft | number                                                              | {} |
| merge          | number, sha, method, title                                            | {sha, merged} |
| close          | number                                                                | {} |

`start_branch` is performed before any other pending write (a new
experiment's job is queued as soon as its branch exists, and the draft PR
follows); every other write keeps its order.

Row states: pending -> done | failed, or superseded (a sticky edit replaced by a
newer one before it was made).
"""

from __future__ import annotations

import re
from typing import Any

from bot.store import Store, dumps, now

OPS = frozenset(
    {
        "start_branch",
        "create_branch",
        "ensure_labels",
        "open_pr",
        "add_labels",
        "remove_label",
        "comment",
        "sticky",
        "react",
        "mark_ready",
        "convert_to_draft",
        "merge",
        "close",
    }
)

MARKER_RE = re.compile(r"<!-- kohai:([\w-]+):([\w.:/-]+) -->")


def marker(kind: str, key: str | int) -> str:
    return f"<!-- kohai:{kind}:{key} -->"


def with_marker(body: str, kind: str, key: str | int) -> str:
    """The body as posted: the marker first, so it is found even in truncated listings."""
    return f"{marker(kind, key)}\n{body}"


def enqueue(
    store: Store,
    repo: str,
    installation_id: int | None,
    op: str,
    **args: Any,
) -> int:
    """Record one GitHub write; call inside the transaction that caused it."""
    if op not in OPS:
        raise ValueError(f"unknown outbox op {op!r}")
    mark = None
    if op in ("comment", "sticky"):
        mark = marker(args["kind"], args["key"])
    if op == "sticky":
        # Only the latest body of a sticky comment matters: an older edit that
        # has not been made yet need not be made at all.
        store.execute(
            "UPDATE outbox SET state = 'superseded', done_at = ? "
            "WHERE op = 'sticky' AND repo = ? AND marker = ? AND state = 'pending'",
            (now(), repo, mark),
        )
    return store.insert(
        "outbox",
        {
            "repo": repo,
            "installation_id": installation_id,
            "op": op,
            "args": dumps(args),
            "marker": mark,
            "state": "pending",
            "created_at": now(),
            "next_attempt_at": 0,
        },
    )
