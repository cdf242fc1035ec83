"""The outbox's vocabulary: the GitHub writes the engine can ask for, one type each.

The engine never calls GitHub. It records a write here, in the same
transaction as the state change that caused it; the outbox worker
(`bot.outbox.worker`) performs it later, exactly once, and hands any result (a new
PR's number, a merge commit) back to the engine. Comment writes carry a hidden
marker so that a retried write finds its earlier attempt instead of posting
twice.

Each write is a frozen dataclass; its `op` names it in the `outbox` table, and
its fields are the row's JSON `args` (the row also carries the repo and the
installation). Rows written before a field existed still decode: unknown keys
are ignored and missing optional fields take their defaults (`decode`).

| write            | op               | fields                                                  | result |
|------------------|------------------|---------------------------------------------------------|--------|
| StartBranch      | start_branch     | experiment_id, base, branch, base_sha, commit_message   | {branch, head_sha} |
| CreateBranch     | create_branch    | branch, sha, track (a track's base, from the default branch) | {branch, sha, created} |
| EnsureLabels     | ensure_labels    | labels: [{name, color, description}]                    | {} |
| OpenPullRequest  | open_pr          | experiment_id, base, branch, title, body, commit_message, labels, issue_number | {number, node_id, head_sha, html_url} |
| AddLabels        | add_labels       | number, labels                                          | {} |
| RemoveLabel      | remove_label     | number, label                                           | {} |
| Comment          | comment          | number, kind, key, body                                 | {comment_id} |
| StatusComment    | sticky           | number, kind, key, body (edited in place when it exists) | {comment_id} |
| React            | react            | comment_id, content                                     | {} |
| MarkReady        | mark_ready       | number                                                  | {} |
| ConvertToDraft   | convert_to_draft | number                                                  | {} |
| Merge            | merge            | number, sha, method, title, experiment_id, base, base_sha, editable, frozen, trusted | {sha, merged} |
| Close            | close            | number                                                  | {} |
| CheckRun         | check_run        | head_sha, name, key, conclusion, title, summary, path, line, message | {check_run_id} |
| IssueReport      | issue_report     | kind, key, title, body, open, closing_note, closing_key | {number} |

`StartBranch` and `CreateBranch` are performed before any other pending write
(a new experiment's job is queued as soon as its branch exists, and the draft
PR follows); every other write keeps its order.

Row states: pending -> done | failed, or superseded (a status comment's edit
replaced by a newer one before it was made).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from bot.store import Store, dumps, now

MARKER_RE = re.compile(r"<!-- kohai:([\w-]+):([\w.:/-]+) -->")

W = TypeVar("W", bound="Write")


def marker(kind: str, key: str | int) -> str:
    return f"<!-- kohai:{kind}:{key} -->"


def with_marker(body: str, kind: str, key: str | int) -> str:
    """The body as posted: the marker first, so it is found even in truncated listings."""
    return f"{marker(kind, key)}\n{body}"


@dataclass(frozen=True)
class Write:
    """One GitHub write. Subclasses name their row's `op` and hold its arguments."""

    op: ClassVar[str]

    def args(self) -> dict[str, Any]:
        """The row's JSON arguments: every field, by name."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_args(cls: type[W], args: Mapping[str, Any]) -> W:
        """The write a row's arguments describe; unknown keys are ignored (rows outlive
        fields), a missing required one is a `KeyError` (a malformed row)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {name: value for name, value in args.items() if name in known}
        for name, f in known.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in values:
                raise KeyError(name)
        return cls(**values)


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts: what the row's JSON holds."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _frozen(items: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(items or ())


# Writes on an issue or PR carry its `number`. The engine may build one while the
# experiment's PR is still being opened (number None); it drops such a write,
# and `bot.engine.write_results.pr_caught_up` writes what matters once the PR exists.


@dataclass(frozen=True)
class StartBranch(Write):
    """The experiment's branch: one empty commit on the base, so a PR can be opened."""

    op: ClassVar[str] = "start_branch"
    experiment_id: int
    base: str
    branch: str
    base_sha: str | None = None
    commit_message: str = ""


@dataclass(frozen=True)
class CreateBranch(Write):
    """A track's base branch at `sha` (the default branch's head); an existing one is kept."""

    op: ClassVar[str] = "create_branch"
    branch: str
    sha: str
    track: str | None = None


@dataclass(frozen=True)
class EnsureLabels(Write):
    """Labels the repository must have: `{name, color, description}` each."""

    op: ClassVar[str] = "ensure_labels"
    labels: Sequence[Mapping[str, str]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True)
class OpenPullRequest(Write):
    """The experiment's draft PR (its branch started first when missing), labelled,
    and linked from the issue that asked for it."""

    op: ClassVar[str] = "open_pr"
    experiment_id: int
    base: str
    branch: str
    title: str
    body: str = ""
    commit_message: str = ""
    labels: Sequence[str] = ()
    issue_number: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True)
class AddLabels(Write):
    op: ClassVar[str] = "add_labels"
    number: int
    labels: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True)
class RemoveLabel(Write):
    op: ClassVar[str] = "remove_label"
    number: int
    label: str


@dataclass(frozen=True)
class Comment(Write):
    """A comment posted once: its marker (`kind`, `key`) finds an earlier attempt."""

    op: ClassVar[str] = "comment"
    number: int
    kind: str
    key: str | int
    body: str


@dataclass(frozen=True)
class StatusComment(Comment):
    """The sticky comment: posted once, then edited in place; only the latest body counts."""

    op: ClassVar[str] = "sticky"


@dataclass(frozen=True)
class React(Write):
    op: ClassVar[str] = "react"
    comment_id: int
    content: str = "eyes"


@dataclass(frozen=True)
class MarkReady(Write):
    op: ClassVar[str] = "mark_ready"
    number: int


@dataclass(frozen=True)
class ConvertToDraft(Write):
    op: ClassVar[str] = "convert_to_draft"
    number: int


# Begins the reason of a merge the bot's own last check stopped (not GitHub's refusal).
MERGE_CHECK = "the bot's merge check stopped it"


@dataclass(frozen=True)
class Merge(Write):
    """Merge the PR at head `sha`; with `base_sha`, only while `base` is still there.

    `editable`, `frozen` and `trusted` are the lab's rules at the decision: the
    merge re-reads the PR's files from GitHub and lands only if they hold.
    """

    op: ClassVar[str] = "merge"
    number: int
    sha: str | None = None
    method: str = "squash"
    title: str = ""
    experiment_id: int | None = None
    base: str | None = None
    base_sha: str | None = None
    editable: Sequence[str] = ()
    frozen: Sequence[str] = ()
    trusted: Sequence[str] = ()  # the files the [eval] and [data] commands run

    def __post_init__(self) -> None:
        for name in ("editable", "frozen", "trusted"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))


@dataclass(frozen=True)
class Close(Write):
    op: ClassVar[str] = "close"
    number: int


@dataclass(frozen=True)
class CheckRun(Write):
    """A completed check run on commit `head_sha`: the bot's verdict on it, where the
    commit's author looks. `key` is its `external_id`, which finds an earlier attempt.
    With `path` and `line`, one annotation points at the line the verdict is about."""

    op: ClassVar[str] = "check_run"
    head_sha: str
    name: str
    key: str
    conclusion: str
    title: str
    summary: str = ""
    path: str | None = None
    line: int | None = None
    message: str = ""


@dataclass(frozen=True)
class IssueReport(Write):
    """The bot's own issue about a standing problem, found again by its marker (`kind`,
    `key`): opened (or its body brought up to date) while `open`; otherwise closed,
    after one comment `closing_note` (marked with `closing_key`) saying why."""

    op: ClassVar[str] = "issue_report"
    kind: str
    key: str
    title: str
    body: str = ""
    open: bool = True
    closing_note: str = ""
    closing_key: str = ""


WRITES: dict[str, type[Write]] = {
    cls.op: cls
    for cls in (
        StartBranch,
        CreateBranch,
        EnsureLabels,
        OpenPullRequest,
        AddLabels,
        RemoveLabel,
        Comment,
        StatusComment,
        React,
        MarkReady,
        ConvertToDraft,
        Merge,
        Close,
        CheckRun,
        IssueReport,
    )
}

BRANCH_WRITES: tuple[type[Write], ...] = (CreateBranch, StartBranch)
"""Performed before every other pending write, in this order."""


def decode(op: str, args: Mapping[str, Any] | str) -> Write:
    """The write an outbox row holds (its `op` and JSON `args`)."""
    cls = WRITES.get(op)
    if cls is None:
        raise ValueError(f"unknown outbox op {op!r}")
    values = json.loads(args) if isinstance(args, str) else args
    if not isinstance(values, Mapping):
        raise TypeError(f"outbox args of {op} are not an object")
    return cls.from_args(values)


def enqueue(store: Store, repo: str, installation_id: int | None, write: Write) -> int:
    """Record one GitHub write; call inside the transaction that caused it."""
    if WRITES.get(write.op) is not type(write):
        raise ValueError(f"unknown outbox write {type(write).__name__}")
    mark = None
    if isinstance(write, Comment):  # a status comment is one too
        mark = marker(write.kind, write.key)
    if isinstance(write, StatusComment):
        # Only the latest body of a status comment matters: an older edit that
        # has not been made yet need not be made at all.
        store.execute(
            "UPDATE outbox SET state = 'superseded', done_at = ? "
            "WHERE op = ? AND repo = ? AND marker = ? AND state = 'pending'",
            (now(), StatusComment.op, repo, mark),
        )
    return store.insert(
        "outbox",
        {
            "repo": repo,
            "installation_id": installation_id,
            "op": write.op,
            "args": dumps(write.args()),
            "marker": mark,
            "state": "pending",
            "created_at": now(),
            "next_attempt_at": 0,
        },
    )
