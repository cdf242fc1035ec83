"""The outbox worker: performs the GitHub writes the engine recorded, exactly once.

The engine never calls GitHub; it records writes (`bot.outbox.writes.enqueue`) in
the transaction that changed its state. This worker performs each pending
write and then, in ONE transaction, marks it done and hands the result to the
engine's `on_done` hook. A crash between the GitHub call and that commit
leaves the row pending, so the write is performed again on restart — and
every write is performed so as to find its earlier attempt first (a comment's hidden
marker, a PR's branch, a label that is already there), which makes the
second performance a no-op.

Failures are never dropped: a retryable one (5xx, rate limit, lost
connection) puts the row back with a growing delay; a permanent one, or too
many attempts, marks it `failed` with GitHub's message, where `/healthz` and
the dashboard show it (`failed_writes`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

import pydantic
from githubkit import GitHub, Response
from githubkit.utils import UNSET
from githubkit_schemas.latest.models import PullRequest

from bot.core import diffcheck
from bot.core import labels as lab
from bot.github.client import HOUR_S, Budget, GitHubApp, GitHubWriteError, on_pace
from bot.outbox import writes as w
from bot.outbox.recall import RECALL, TRACKED_OPS, Recall, never_attempted
from bot.records import OutboxEntry
from bot.store import Store, dumps

log = logging.getLogger(__name__)

R = TypeVar("R")
OnDone = Callable[[OutboxEntry, dict[str, Any]], None]
OnFailed = Callable[[OutboxEntry, str], None]
MAX_ATTEMPTS = 8


def retry_delay_s(attempts: int, retry_after: float | None = None) -> float:
    """When to try a row again after its `attempts`-th failure: 5 s doubling to 10 min,
    or later if GitHub asked for longer."""
    delay = min(600.0, 5.0 * 2 ** (attempts - 1))
    return max(delay, retry_after or 0.0)


def failure_update(
    attempts_before: int,
    message: str,
    retryable: bool,
    retry_after: float | None,
    now: float,
    max_attempts: int,
    rate_limited: bool = False,
) -> dict[str, Any]:
    """The row's new columns after a failed attempt (pure, so the policy is testable).

    A write held back by GitHub's rate limit is not at fault: it waits for the
    time GitHub named and keeps its attempts (else a long busy spell would fail it).
    """
    if rate_limited and retryable and retry_after is not None:
        return {"last_error": message, "next_attempt_at": now + retry_after}
    attempts = attempts_before + 1
    if not retryable or attempts >= max_attempts:
        if retryable:
            message = f"{message} (after {attempts} attempts)"
        return {"state": "failed", "attempts": attempts, "last_error": message, "done_at": now}
    return {
        "attempts": attempts,
        "last_error": message,
        "next_attempt_at": now + retry_delay_s(attempts, retry_after),
    }


def describe_failure(exc: Exception) -> tuple[str, bool, float | None]:
    """(message, retryable, retry_after) for any exception performing a write raised.

    GitHub's errors say for themselves; an answer that githubkit's model
    refuses is a mismatch that retrying cannot fix; so is a malformed row
    (missing or mistyped argument); anything else is given the benefit of the
    doubt, within the attempt limit.
    """
    if isinstance(exc, GitHubWriteError):
        return str(exc), exc.retryable, exc.retry_after
    if isinstance(exc, pydantic.ValidationError):
        return f"GitHub's answer does not fit githubkit's model: {exc}", False, None
    if isinstance(exc, KeyError | ValueError | TypeError):
        return f"bad outbox row: {type(exc).__name__}: {exc}", False, None
    return f"{type(exc).__name__}: {exc}", True, None


# -- the clients the writes need -------------------------------------------------
#
# Each write's coroutine names, as a Protocol, only the client calls it makes;
# `GitHubApp` satisfies them all, and a test can hand any one a smaller stand-in.


@runtime_checkable
class Calls(Protocol):
    """githubkit's typed REST calls, through the App's retries and pacing."""

    async def call(
        self,
        installation_id: int | None,
        fn: Callable[[GitHub[Any]], Awaitable[R]],
        *,
        method: str,
        idempotent: bool | None = None,
        creates: bool | None = None,
    ) -> R: ...


@runtime_checkable
class Lists(Protocol):
    """Every item of a list endpoint, following GitHub's `Link: rel="next"` URLs."""

    async def paginate(
        self,
        installation_id: int | None,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        per_page: int = 100,
        max_pages: int = 50,
    ) -> list[Any]: ...


@runtime_checkable
class KnowsItself(Protocol):
    async def bot_login(self) -> str: ...


@runtime_checkable
class GraphQL(Protocol):
    async def graphql(
        self, installation_id: int, query: str, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]: ...


@runtime_checkable
class CommentClient(Calls, Lists, KnowsItself, Protocol):
    """Find the App's marked comment on an issue; create or edit one."""


@runtime_checkable
class LabelCatalogClient(Calls, Lists, Protocol):
    """List a repository's labels and create the missing ones."""


@runtime_checkable
class PullClient(Calls, Lists, KnowsItself, Protocol):
    """Start a branch, find or open its PR, label it, link it from its issue."""


@runtime_checkable
class DraftClient(Calls, GraphQL, Protocol):
    """Read a PR; flip its draft state (GraphQL only)."""


# -- one coroutine per write ---------------------------------------------------
#
# Each takes (client, installation_id, repo, write) and returns the result stored
# on the row. Each is safe to perform twice. Raw requests remain only where
# githubkit has no typed call that does the job:
#   - listing comments, pulls and labels (`paginate`): GitHub's `Link: rel="next"`
#     URL is followed as given, and a server that ignores `page` is noticed;
#     githubkit's typed list calls fetch one page by number;
#   - draft state (`MarkReady`, `ConvertToDraft`): GitHub changes it through
#     GraphQL only (`GitHubApp.graphql`, which reads GraphQL's rate-limit errors).

Perform = Callable[[Any, int, str, Any], Awaitable[dict[str, Any]]]
PERFORMERS: dict[type[w.Write], Perform] = {}


def performs(write_type: type[w.Write]) -> Callable[[Perform], Perform]:
    """Register the coroutine that performs `write_type`; one each, no more."""

    def register(perform: Perform) -> Perform:
        if write_type in PERFORMERS:
            raise ValueError(f"{write_type.__name__} is performed twice")
        PERFORMERS[write_type] = perform
        return perform

    return register


async def perform(
    github: GitHubApp, installation_id: int, repo: str, write: w.Write
) -> dict[str, Any]:
    """Perform one write with the coroutine registered for its type."""
    return await PERFORMERS[type(write)](github, installation_id, repo, write)


MAX_BODY = 65_536  # GitHub refuses longer comment and PR bodies (422)


def fit_body(body: str) -> str:
    """A body GitHub will accept: over-long text is cut, keeping its start (the marker)."""
    if len(body) <= MAX_BODY:
        return body
    note = "\n\n… (truncated)"
    return body[: MAX_BODY - len(note)] + note


def owner_name(repo: str) -> tuple[str, str]:
    """`owner/name` as githubkit's calls take it."""
    owner, _, name = repo.partition("/")
    if not owner or not name:
        raise ValueError(f"not a repository: {repo!r}")
    return owner, name


def is_marked_by(comment: dict[str, Any], mark: str, bot_login: str) -> bool:
    """Whether `comment` is the App's own comment carrying `mark`.

    Only the App's comments count: the author must be the App's bot account
    (login `<slug>[bot]`, type Bot), and the marker must open the body, where
    `with_marker` puts it. Anyone can paste a marker into a comment; a copy in a
    user's comment, or quoted further down in one of the bot's own, is not one.
    """
    user = comment.get("user") or {}
    if user.get("login") != bot_login or user.get("type") != "Bot":
        return False
    first_line = (comment.get("body") or "").split("\n", 1)[0]
    return first_line.rstrip("\r") == mark


async def find_marked_comment(
    github: CommentClient, installation_id: int, repo: str, number: int, mark: str
) -> dict[str, Any] | None:
    """The bot's earlier comment carrying `mark`, if any (never a user's copy)."""
    bot_login = await github.bot_login()
    comments = await github.paginate(installation_id, f"/repos/{repo}/issues/{number}/comments")
    for comment in comments:
        if is_marked_by(comment, mark, bot_login):
            return comment
    return None


async def _create_comment(
    github: Calls, installation_id: int, repo: str, number: int, body: str
) -> int:
    owner, name = owner_name(repo)
    # Not idempotent: after an ambiguous failure the outbox retries the whole
    # write, which looks for the marker first.
    reply = await github.call(
        installation_id,
        lambda gh: gh.rest.issues.async_create_comment(owner, name, number, body=fit_body(body)),
        method="POST",
        idempotent=False,
    )
    return reply.parsed_data.id


@performs(w.Comment)
async def comment(
    github: CommentClient, installation_id: int, repo: str, write: w.Comment
) -> dict[str, Any]:
    """Post once: a marker the outbox wrote before is done; one it never tried is posted
    without a search (`bot.outbox.recall`); otherwise the issue's comments are searched."""
    mark = w.marker(write.kind, write.key)
    recall = RECALL.get()
    known = recall.written(repo, mark)
    if known is not None:
        return {"comment_id": known[0]}
    if not recall.fresh(repo, mark):
        existing = await find_marked_comment(github, installation_id, repo, write.number, mark)
        if existing is not None:
            return {"comment_id": existing["id"]}
    body = w.with_marker(write.body or "", write.kind, write.key)
    return {"comment_id": await _create_comment(github, installation_id, repo, write.number, body)}


@performs(w.StatusComment)
async def status_comment(
    github: CommentClient, installation_id: int, repo: str, write: w.StatusComment
) -> dict[str, Any]:
    """Edit the sticky status in place: by the id the outbox got when it posted it (not
    at all when the body is what it last wrote); searched for only when that is unknown
    or GitHub no longer has it (a human deleted it)."""
    body = fit_body(w.with_marker(write.body or "", write.kind, write.key))
    mark = w.marker(write.kind, write.key)
    recall = RECALL.get()
    known = recall.written(repo, mark)
    if known is not None:
        comment_id, last_body = known
        if last_body == (write.body or ""):
            return {"comment_id": comment_id}
        owner, name = owner_name(repo)
        try:
            await github.call(
                installation_id,
                lambda gh: gh.rest.issues.async_update_comment(owner, name, comment_id, body=body),
                method="PATCH",
            )
            return {"comment_id": comment_id}
        except GitHubWriteError as exc:
            if exc.status != 404:
                raise
    elif recall.fresh(repo, mark):
        return {
            "comment_id": await _create_comment(github, installation_id, repo, write.number, body)
        }
    existing = await find_marked_comment(github, installation_id, repo, write.number, mark)
    if existing is None:
        return {
            "comment_id": await _create_comment(github, installation_id, repo, write.number, body)
        }
    if existing.get("body") != body:
        owner, name = owner_name(repo)
        comment_id = int(existing["id"])
        await github.call(
            installation_id,
            lambda gh: gh.rest.issues.async_update_comment(owner, name, comment_id, body=body),
            method="PATCH",
        )
    return {"comment_id": existing["id"]}


async def _find_pr_for_branch(
    github: Lists, installation_id: int, repo: str, branch: str
) -> dict[str, Any] | None:
    owner = repo.split("/", 1)[0]
    pulls = await github.paginate(
        installation_id,
        f"/repos/{repo}/pulls",
        {"head": f"{owner}:{branch}", "state": "all"},
        max_pages=5,
    )
    for pull in pulls:  # filter again: not every server honours `head`
        head = pull.get("head") or {}
        head_repo = (head.get("repo") or {}).get("full_name", repo)
        if head.get("ref") == branch and head_repo == repo:
            return pull
    return None


async def _ref_sha(github: Calls, installation_id: int, repo: str, branch: str) -> str | None:
    owner, name = owner_name(repo)
    try:
        reply = await github.call(
            installation_id,
            lambda gh: gh.rest.git.async_get_ref(owner, name, f"heads/{quote(branch)}"),
            method="GET",
        )
    except GitHubWriteError as exc:
        if exc.status == 404:
            return None
        raise
    return reply.parsed_data.object_.sha


async def _tree_of(github: Calls, installation_id: int, repo: str, sha: str) -> str:
    owner, name = owner_name(repo)
    reply = await github.call(
        installation_id,
        lambda gh: gh.rest.git.async_get_commit(owner, name, sha),
        method="GET",
    )
    return reply.parsed_data.tree.sha


async def _empty_commit(
    github: Calls, installation_id: int, repo: str, message: str, tree: str, parent: str
) -> str:
    owner, name = owner_name(repo)
    reply = await github.call(
        installation_id,
        lambda gh: gh.rest.git.async_create_commit(
            owner, name, message=message, tree=tree, parents=[parent]
        ),
        method="POST",
        idempotent=True,  # a duplicate commit object is unreachable and harmless
    )
    return reply.parsed_data.sha


async def _create_ref(
    github: Calls, installation_id: int, repo: str, branch: str, sha: str
) -> str | None:
    """Point a new branch at `sha`; when it exists already (422), its sha as it is."""
    owner, name = owner_name(repo)
    try:
        await github.call(
            installation_id,
            lambda gh: gh.rest.git.async_create_ref(
                owner, name, ref=f"refs/heads/{branch}", sha=sha
            ),
            method="POST",
            idempotent=True,
        )
    except GitHubWriteError as exc:
        if exc.status != 422:
            raise
        raced = await _ref_sha(github, installation_id, repo, branch)
        if raced is None:
            raise
        return raced
    return None


async def _start_branch(
    github: Calls, installation_id: int, repo: str, branch: str, base: str, message: str
) -> str:
    """The experiment's branch, started with an empty commit on the base's tree.

    GitHub refuses a PR whose head adds nothing to its base, so the branch
    gets one commit (carrying the hypothesis) that changes no file.
    """
    existing = await _ref_sha(github, installation_id, repo, branch)
    if existing is not None:
        return existing
    base_sha = await _ref_sha(github, installation_id, repo, base)
    if base_sha is None:
        raise GitHubWriteError(404, f"base branch {base!r} not found in {repo}", False)
    tree = await _tree_of(github, installation_id, repo, base_sha)
    sha = await _empty_commit(github, installation_id, repo, message, tree, base_sha)
    raced = await _create_ref(github, installation_id, repo, branch, sha)
    return raced or sha


_BASE_TREES: dict[
    tuple[str, str], str
] = {}  # (repo, base commit) -> its tree: commits never change


@performs(w.StartBranch)
async def start_branch(
    github: Calls, installation_id: int, repo: str, write: w.StartBranch
) -> dict[str, Any]:
    """The experiment's branch, created in as few calls as GitHub allows.

    The base commit is known when the experiment opens, and a commit's tree
    never changes, so a new branch is two writes: the empty commit and the
    ref. A ref that exists already (a retry, a race) is read back.
    """
    branch, base_sha = write.branch, write.base_sha
    message = write.commit_message or branch
    if not base_sha:
        sha = await _start_branch(github, installation_id, repo, branch, write.base, message)
        return {"branch": branch, "head_sha": sha}
    tree = _BASE_TREES.get((repo, base_sha))
    if tree is None:
        tree = await _tree_of(github, installation_id, repo, base_sha)
        if len(_BASE_TREES) > 1000:
            _BASE_TREES.clear()
        _BASE_TREES[(repo, base_sha)] = tree
    sha = await _empty_commit(github, installation_id, repo, message, tree, base_sha)
    raced = await _create_ref(github, installation_id, repo, branch, sha)
    return {"branch": branch, "head_sha": raced or sha}


@performs(w.CreateBranch)
async def create_branch(
    github: Calls, installation_id: int, repo: str, write: w.CreateBranch
) -> dict[str, Any]:
    """A track's base branch, pointing at the default branch's head; an existing one is kept.

    Creating a ref that exists answers 422: the branch is then read back and
    left as it is (a track's base is never moved by this write).
    """
    branch = write.branch
    existing = await _ref_sha(github, installation_id, repo, branch)
    if existing is not None:
        return {"branch": branch, "sha": existing, "created": False}
    raced = await _create_ref(github, installation_id, repo, branch, write.sha)
    if raced is not None:
        return {"branch": branch, "sha": raced, "created": False}
    return {"branch": branch, "sha": write.sha, "created": True}


@performs(w.OpenPullRequest)
async def open_pull_request(
    github: PullClient, installation_id: int, repo: str, write: w.OpenPullRequest
) -> dict[str, Any]:
    owner, name = owner_name(repo)
    branch = write.branch
    recall = RECALL.get()
    # Never attempted: no PR of ours can exist for the branch (a stranger's is refused
    # with 422 "already exists" and found below).
    found = (
        None
        if recall.first_attempt
        else await _find_pr_for_branch(github, installation_id, repo, branch)
    )
    if found is not None:
        number = int(found["number"])
        node_id, html_url = found.get("node_id"), found.get("html_url")
        head_sha = (found.get("head") or {}).get("sha")
    else:
        message = write.commit_message or write.title
        if not recall.branch_started(repo, branch):
            await _start_branch(github, installation_id, repo, branch, write.base, message)
        body = fit_body(w.with_marker(write.body or "", "experiment", write.experiment_id))
        try:
            reply = await github.call(
                installation_id,
                lambda gh: gh.rest.pulls.async_create(
                    owner,
                    name,
                    title=write.title,
                    head=branch,
                    base=write.base,
                    body=body,
                    draft=True,
                ),
                method="POST",
                idempotent=True,  # a second one is refused with 422 and found below
            )
        except GitHubWriteError as exc:
            if exc.status != 422 or "already exists" not in exc.message.lower():
                raise
            raced = await _find_pr_for_branch(github, installation_id, repo, branch)
            if raced is None:
                raise
            number = int(raced["number"])
            node_id, html_url = raced.get("node_id"), raced.get("html_url")
            head_sha = (raced.get("head") or {}).get("sha")
        else:
            pull = reply.parsed_data
            number, node_id, html_url, head_sha = (
                pull.number,
                pull.node_id,
                pull.html_url,
                pull.head.sha,
            )
    if write.labels:
        await add_labels(
            github, installation_id, repo, w.AddLabels(number=number, labels=write.labels)
        )
    if write.issue_number:
        link = f"Opened #{number} for this hypothesis: {html_url or ''}".rstrip(": ")
        await comment(
            github,
            installation_id,
            repo,
            w.Comment(number=write.issue_number, kind="link", key=write.experiment_id, body=link),
        )
    return {"number": number, "node_id": node_id, "head_sha": head_sha, "html_url": html_url}


async def _create_label(
    github: Calls, installation_id: int, owner: str, name: str, label: Mapping[str, str]
) -> None:
    color = str(label.get("color") or "ededed").lstrip("#")
    description = label.get("description") or UNSET
    await github.call(
        installation_id,
        lambda gh: gh.rest.issues.async_create_label(
            owner, name, name=label["name"], color=color, description=description
        ),
        method="POST",
        idempotent=True,
    )


@performs(w.EnsureLabels)
async def ensure_labels(
    github: LabelCatalogClient, installation_id: int, repo: str, write: w.EnsureLabels
) -> dict[str, Any]:
    owner, name = owner_name(repo)
    existing = await github.paginate(installation_id, f"/repos/{repo}/labels")
    names = {str(label.get("name", "")).lower() for label in existing}
    for label in write.labels:
        if label["name"].lower() in names:
            continue
        try:
            await _create_label(github, installation_id, owner, name, label)
        except GitHubWriteError as exc:
            if exc.status != 422:  # already_exists: someone made it meanwhile
                raise
    return {}


@performs(w.AddLabels)
async def add_labels(
    github: Calls, installation_id: int, repo: str, write: w.AddLabels
) -> dict[str, Any]:
    owner, name = owner_name(repo)
    await github.call(
        installation_id,
        lambda gh: gh.rest.issues.async_add_labels(
            owner, name, write.number, labels=list(write.labels)
        ),
        method="POST",
        idempotent=True,  # adding a label twice leaves one label
        creates=False,  # attaches labels that exist: GitHub's content limit is not spent
    )
    return {}


@performs(w.RemoveLabel)
async def remove_label(
    github: Calls, installation_id: int, repo: str, write: w.RemoveLabel
) -> dict[str, Any]:
    owner, name = owner_name(repo)
    label = quote(str(write.label), safe="")  # githubkit puts it in the path as given
    try:
        await github.call(
            installation_id,
            lambda gh: gh.rest.issues.async_remove_label(owner, name, write.number, label),
            method="DELETE",
        )
    except GitHubWriteError as exc:
        if exc.status != 404:  # not there: already the state we want
            raise
    return {}


@performs(w.React)
async def react(github: Calls, installation_id: int, repo: str, write: w.React) -> dict[str, Any]:
    owner, name = owner_name(repo)
    content: Any = write.content or "eyes"  # githubkit checks it is one of GitHub's reactions
    await github.call(
        installation_id,
        lambda gh: gh.rest.reactions.async_create_for_issue_comment(
            owner, name, write.comment_id, content=content
        ),
        method="POST",
        idempotent=True,  # GitHub answers 200 with the existing reaction
    )
    return {}


MARK_READY = """
mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) {
  pullRequest { number isDraft } } }
"""
CONVERT_TO_DRAFT = """
mutation($id: ID!) { convertPullRequestToDraft(input: {pullRequestId: $id}) {
  pullRequest { number isDraft } } }
"""


async def _get_pull(
    github: Calls, installation_id: int, repo: str, number: int
) -> Response[PullRequest, Any]:
    owner, name = owner_name(repo)
    return await github.call(
        installation_id, lambda gh: gh.rest.pulls.async_get(owner, name, number), method="GET"
    )


async def _set_draft(
    github: DraftClient, installation_id: int, repo: str, number: int, draft: bool
) -> dict[str, Any]:
    """Draft state can only change through GraphQL; skip the call when already there.

    For a PR the outbox opened, its node id is known: the mutation is sent
    without reading the PR (GitHub answers it the same when there is nothing
    to change), which spends no REST request.
    """
    opened = RECALL.get().pull(repo, number)
    node_id = opened.get("node_id") if opened else None
    if isinstance(node_id, str) and node_id:
        mutation = CONVERT_TO_DRAFT if draft else MARK_READY
        try:
            await github.graphql(installation_id, mutation, {"id": node_id})
            return {}
        except GitHubWriteError as exc:
            if exc.retryable:
                raise
            # Refused (closed meanwhile, say): read the PR and decide as below.
    pull = (await _get_pull(github, installation_id, repo, number)).parsed_data
    if bool(pull.draft) == draft:
        return {}
    mutation = CONVERT_TO_DRAFT if draft else MARK_READY
    await github.graphql(installation_id, mutation, {"id": pull.node_id})
    return {}


@performs(w.MarkReady)
async def mark_ready(
    github: DraftClient, installation_id: int, repo: str, write: w.MarkReady
) -> dict[str, Any]:
    return await _set_draft(github, installation_id, repo, write.number, draft=False)


@performs(w.ConvertToDraft)
async def convert_to_draft(
    github: DraftClient, installation_id: int, repo: str, write: w.ConvertToDraft
) -> dict[str, Any]:
    return await _set_draft(github, installation_id, repo, write.number, draft=True)


@performs(w.Merge)
async def merge(github: Calls, installation_id: int, repo: str, write: w.Merge) -> dict[str, Any]:
    owner, name = owner_name(repo)
    number = write.number
    reply = await _get_pull(github, installation_id, repo, number)
    pull = reply.parsed_data
    if pull.merged:
        # The REST version githubkit speaks (2026-03-10) dropped `merge_commit_sha`
        # from its model; it is read from the answer, where GitHub still sends it.
        answer = reply.json()
        sha = answer.get("merge_commit_sha") if isinstance(answer, dict) else None
        return {"sha": sha, "merged": True}
    await _merge_check(github, installation_id, repo, write, pull.head.sha)
    if write.base_sha:
        # Merges are decided on a measured base: if the base moved since, do not land.
        branch = write.base or pull.base.ref or "main"
        branch_reply = await github.call(
            installation_id,
            lambda gh: gh.rest.repos.async_get_branch(owner, name, branch),
            method="GET",
        )
        head = branch_reply.parsed_data.commit.sha
        if head != write.base_sha:
            raise GitHubWriteError(
                409,
                f"the base moved since the candidate was measured (measured on "
                f"{str(write.base_sha)[:10]}, {branch} is now at {head[:10]})",
                False,
            )
    method: Any = write.method or "squash"  # githubkit checks it is merge, squash or rebase
    head_sha = write.sha or UNSET  # GitHub refuses (409) if the head moved since we decided
    title = write.title or UNSET
    merged = await github.call(
        installation_id,
        lambda gh: gh.rest.pulls.async_merge(
            owner, name, number, merge_method=method, sha=head_sha, commit_title=title
        ),
        method="PUT",
    )
    result = merged.parsed_data
    return {"sha": result.sha, "merged": bool(result.merged)}


MAX_PR_FILE_PAGES = 30  # GitHub lists at most 3,000 files of a pull request


def _list_files(
    gh: GitHub[Any], *, owner: str, name: str, number: int, page: int
) -> Awaitable[Any]:
    return gh.rest.pulls.async_list_files(owner, name, number, per_page=100, page=page)


async def _merge_check(
    github: Calls, installation_id: int, repo: str, write: w.Merge, head: str
) -> None:
    """Land only what was measured and allowed, read from GitHub itself just before merging.

    The PR's head must be the tip the bot decided on, and every file GitHub
    lists for the PR must keep to the lab's rules (`bot.core.diffcheck`): a
    change that reached the branch some other way than the bot's checked push
    stops here. Raises a non-retryable GitHubWriteError naming what is wrong.
    """
    if write.sha and head != write.sha:
        raise GitHubWriteError(
            409,
            f"{w.MERGE_CHECK}: the PR's head is {head[:12]}, not the measured {write.sha[:12]}",
            False,
        )
    if not write.editable:
        return  # a row from before the lab's rules travelled with the merge
    owner, name = owner_name(repo)
    paths: list[str] = []
    page = 1
    while True:
        listed = await github.call(
            installation_id,
            functools.partial(_list_files, owner=owner, name=name, number=write.number, page=page),
            method="GET",
        )
        files: list[Any] = list(listed.parsed_data)
        for entry in files:
            paths.append(entry.filename)
            if entry.previous_filename:
                paths.append(entry.previous_filename)
        if len(files) < 100:
            break
        if page >= MAX_PR_FILE_PAGES:
            raise GitHubWriteError(
                422, f"{w.MERGE_CHECK}: the PR changes more files than GitHub lists", False
            )
        page += 1
    found = diffcheck.file_findings(paths, write.editable, write.frozen, write.trusted)
    if found:
        raise GitHubWriteError(422, f"{w.MERGE_CHECK}: {diffcheck.summary(found)}", False)


@performs(w.Close)
async def close(github: Calls, installation_id: int, repo: str, write: w.Close) -> dict[str, Any]:
    owner, name = owner_name(repo)
    await github.call(
        installation_id,
        lambda gh: gh.rest.issues.async_update(owner, name, write.number, state="closed"),
        method="PATCH",
    )
    return {}


@performs(w.CheckRun)
async def check_run(
    github: Calls, installation_id: int, repo: str, write: w.CheckRun
) -> dict[str, Any]:
    """A completed check run on the commit; an earlier attempt (same `external_id`)
    is found first, so a retry posts no second verdict."""
    owner, name = owner_name(repo)
    listed = await github.call(
        installation_id,
        lambda gh: gh.rest.checks.async_list_for_ref(
            owner, name, write.head_sha, check_name=write.name, filter_="all", per_page=100
        ),
        method="GET",
    )
    for run in listed.parsed_data.check_runs:
        if run.external_id == write.key:
            return {"check_run_id": run.id}
    output: dict[str, Any] = {
        "title": write.title[:1000],
        "summary": fit_body(write.summary or write.title),
    }
    if write.path and write.line:
        level = "failure" if write.conclusion == "failure" else "notice"
        output["annotations"] = [
            {
                "path": write.path,
                "start_line": write.line,
                "end_line": write.line,
                "annotation_level": level,
                "message": fit_body(write.message or write.title),
            }
        ]
    data: Any = {  # githubkit checks it against GitHub's schema before sending
        "name": write.name,
        "head_sha": write.head_sha,
        "external_id": write.key,
        "status": "completed",
        "conclusion": write.conclusion,
        "output": output,
    }
    reply = await github.call(
        installation_id,
        lambda gh: gh.rest.checks.async_create(owner, name, data=data),
        method="POST",
        idempotent=False,  # a retry lists the commit's runs first
    )
    return {"check_run_id": reply.parsed_data.id}


async def find_marked_issue(
    github: CommentClient, installation_id: int, repo: str, mark: str
) -> dict[str, Any] | None:
    """The bot's own open issue carrying `mark` (never a user's copy, never a PR)."""
    bot_login = await github.bot_login()
    issues = await github.paginate(
        installation_id, f"/repos/{repo}/issues", {"state": "open", "creator": bot_login}
    )
    for issue in issues:
        if not issue.get("pull_request") and is_marked_by(issue, mark, bot_login):
            return issue
    return None


@performs(w.IssueReport)
async def issue_report(
    github: CommentClient, installation_id: int, repo: str, write: w.IssueReport
) -> dict[str, Any]:
    """Open the bot's issue about a problem (or bring its body up to date), or close it.

    Like a sticky comment, the issue is found by its marker first, so a problem
    that stands gets one issue however often it is reported.
    """
    owner, name = owner_name(repo)
    mark = w.marker(write.kind, write.key)
    existing = await find_marked_issue(github, installation_id, repo, mark)
    if not write.open:
        if existing is None:
            return {"number": None}
        number = int(existing["number"])
        if write.closing_note:
            note = w.Comment(
                number=number, kind=write.kind, key=write.closing_key, body=write.closing_note
            )
            await comment(github, installation_id, repo, note)
        await github.call(
            installation_id,
            lambda gh: gh.rest.issues.async_update(
                owner, name, number, state="closed", state_reason="completed"
            ),
            method="PATCH",
        )
        return {"number": number}
    body = fit_body(w.with_marker(write.body, write.kind, write.key))
    if existing is None:
        reply = await github.call(
            installation_id,
            lambda gh: gh.rest.issues.async_create(owner, name, title=write.title, body=body),
            method="POST",
            idempotent=False,  # a retry looks for the marker first
        )
        return {"number": reply.parsed_data.number}
    number = int(existing["number"])
    if existing.get("body") != body or existing.get("title") != write.title:
        await github.call(
            installation_id,
            lambda gh: gh.rest.issues.async_update(
                owner, name, number, title=write.title, body=body
            ),
            method="PATCH",
        )
    return {"number": number}


# -- spending GitHub's budget ------------------------------------------------------

LABEL_OPS = frozenset({w.AddLabels.op, w.RemoveLabel.op})
STATUS_LABELS = frozenset(lab.STATUS_LABELS.values())


def low_value(
    op: str, args: Mapping[str, Any] | str, decided: frozenset[int] = frozenset()
) -> bool:
    """Writes that only show progress: the sticky comments' edits and status-label moves.

    They wait while an installation spends faster than its budget allows
    (meanwhile a newer sticky body replaces an older one, and label moves
    on one PR collapse to their net effect); merges, closes, decisions, PRs
    and branches never wait for them. Once a PR's close or merge is written
    (its number in `decided`), what is left on it is its final state, not
    progress: it goes like any other write, so a lab that spends its whole
    budget on new experiments cannot leave its decided PRs without their
    status and results.
    """
    if isinstance(args, Mapping) and args.get("number") in decided:
        return False
    if op == w.StatusComment.op:
        return True
    if op not in LABEL_OPS or not isinstance(args, Mapping):
        return False
    labels = args.get("labels") if op == w.AddLabels.op else [args.get("label")]
    return bool(labels) and all(label in STATUS_LABELS for label in labels or ())


def hold_back(
    is_low_value: bool, budget: Budget | None, now_epoch: float, window_s: float = HOUR_S
) -> str | None:
    """Why a write waits for GitHub's budget now, or None when it may go.

    Everything waits while GitHub has said nothing is left (until the window
    resets); low-value writes also wait while spending is ahead of the
    window's pro-rata share (`bot.github.client.on_pace`).
    """
    if budget is None:
        return None
    if budget.left_at(now_epoch) <= 0:
        return "budget spent"
    if is_low_value and not on_pace(budget, now_epoch, window_s):
        return "behind pace"
    return None


def net_labels(writes: list[w.AddLabels | w.RemoveLabel]) -> tuple[list[str], list[str]]:
    """(labels to add, labels to remove) that leave a PR as `writes` in order would.

    A label whose first write here adds it was off before, as far as the bot
    knows: if it is removed again by the end, it needs no request at all (a
    status label moved queued -> wip -> review is one removal and one addition).
    """
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    for write in writes:
        names = list(write.labels) if isinstance(write, w.AddLabels) else [write.label]
        kind = "add" if isinstance(write, w.AddLabels) else "remove"
        for name in names:
            first.setdefault(name, kind)
            last[name] = kind
    adds = [name for name, kind in last.items() if kind == "add"]
    removes = [name for name, kind in last.items() if kind == "remove" and first[name] != "add"]
    return adds, removes


async def perform_labels(
    github: Calls, installation_id: int, repo: str, writes: list[w.AddLabels | w.RemoveLabel]
) -> dict[str, Any]:
    """Several label writes on one issue as few requests as GitHub allows: one POST for
    every label to add, one DELETE per label to remove."""
    if not writes:
        return {}
    number = writes[0].number
    adds, removes = net_labels(writes)
    if adds:
        await add_labels(github, installation_id, repo, w.AddLabels(number=number, labels=adds))
    for label in removes:
        await remove_label(github, installation_id, repo, w.RemoveLabel(number=number, label=label))
    return {}


def budget_status(
    github: Any, store: Store, now_epoch: float | None = None
) -> list[dict[str, Any]]:
    """Each installation's budget as GitHub last stated it, and the writes waiting for it:
    what `/healthz` and the dashboard show."""
    budgets = github.budgets() if hasattr(github, "budgets") else {}
    window_s = float(getattr(github, "rate_window_s", HOUR_S))
    now_epoch = time.time() if now_epoch is None else now_epoch
    pending = store.query(
        "SELECT installation_id, repo, op, args FROM outbox WHERE state = 'pending'"
        " AND installation_id IS NOT NULL"
    )
    decided = decided_numbers(store)
    shown = []
    for (installation_id, resource), budget in sorted(
        budgets.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1])
    ):
        waiting: Counter[str] = Counter()
        if installation_id is not None and resource == "core":
            for row in pending:
                if row["installation_id"] != installation_id:
                    continue
                try:
                    args = json.loads(row["args"])
                except ValueError:
                    continue
                final = decided.get(row["repo"], frozenset())
                if hold_back(low_value(row["op"], args, final), budget, now_epoch, window_s):
                    waiting[row["op"]] += 1
        shown.append(
            {
                "installation_id": installation_id,
                "resource": resource,
                "limit": budget.limit,
                "remaining": budget.left_at(now_epoch),
                "used": budget.used if now_epoch < budget.reset else 0,
                "reset": budget.reset,
                "on_pace": on_pace(budget, now_epoch, window_s),
                "deferred": sum(waiting.values()),
                "deferred_by_op": dict(waiting),
            }
        )
    return shown


def decided_numbers(store: Store) -> dict[str, frozenset[int]]:
    """Per repository, the PRs whose close or merge the outbox has written."""
    found: dict[str, set[int]] = {}
    for row in store.query(
        "SELECT DISTINCT repo, json_extract(args, '$.number') AS number FROM outbox"
        " WHERE op IN (?, ?) AND state = 'done'",
        (w.Close.op, w.Merge.op),
    ):
        if isinstance(row["number"], int):
            found.setdefault(row["repo"], set()).add(row["number"])
    return {repo: frozenset(numbers) for repo, numbers in found.items()}


# -- the worker ----------------------------------------------------------------


class OutboxWorker:
    """Performs due outbox rows in id order, one at a time."""

    def __init__(
        self,
        store: Store,
        github: GitHubApp,
        *,
        on_done: OnDone | None = None,
        on_failed: OnFailed | None = None,
        bus: Any = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = MAX_ATTEMPTS,
        idle_s: float = 2.0,
        only: frozenset[type[w.Write]] | None = None,
        skip: frozenset[type[w.Write]] = frozenset(),
        defer_to: OutboxWorker | None = None,
    ) -> None:
        """`only` / `skip` (write types) make a lane of the outbox: the bot runs new
        branches in a lane of their own, beside the rest, so a job never waits behind
        a PR. A lane with `defer_to` starts no write while that lane has one to make."""
        self.only_ops = None if only is None else frozenset(t.op for t in only)
        self.skip_ops = frozenset(t.op for t in skip)
        self.defer_to = defer_to
        self.performing = False
        self.store = store
        self.github = github
        self.on_done = on_done
        self.on_failed = (
            on_failed  # a write that failed for good: tell the engine, same transaction
        )
        self.bus = bus
        self.clock = clock
        self.max_attempts = max_attempts
        self.idle_s = idle_s
        self.last_run_at: float | None = None
        self.completed = 0  # rows done since start (label writes on one issue count each)
        self._decided: tuple[int, dict[str, frozenset[int]]] | None = None

    def due(self) -> list[OutboxEntry]:
        """Pending rows whose time has come: new branches first, then in the order written."""
        first, second = (t.op for t in w.BRANCH_WRITES)
        entries = self.store.rows(
            OutboxEntry,
            "state = 'pending' AND next_attempt_at <= ?",
            (self.clock(), first, second),  # the last two fill `order_by`
            order_by="op = ? DESC, op = ? DESC, id",
        )
        return [
            entry
            for entry in entries
            if entry.op not in self.skip_ops
            and (self.only_ops is None or entry.op in self.only_ops)
        ]

    async def run_once(self) -> int:
        """Perform every due row; returns how many were completed.

        After a retryable failure the rest of that repository's rows wait for
        the next pass, so writes to one repository keep their order and a
        rate-limited installation is not hammered. The due rows are read again
        after each write, so a branch asked for meanwhile does not wait for
        the rest of the pass.
        """
        done = 0
        blocked: set[str] = set()
        tried: set[int] = set()
        while True:
            entry = next(
                (
                    e
                    for e in self.due()
                    if e.repo not in blocked and e.id not in tried and not self.held(e)
                ),
                None,
            )
            if entry is None:
                break
            if self.defer_to is not None and await self._deferred():
                continue  # the other lane wrote meanwhile: read the due rows again
            tried.add(entry.id)
            before = self.completed
            state = await self.perform(entry)
            if state == "done":
                done += self.completed - before  # label writes on one issue go together
            elif state == "pending":
                blocked.add(entry.repo)
        self.last_run_at = self.clock()
        return done

    def busy(self) -> bool:
        """Writing now, or with a write due (and not waiting for GitHub's budget)."""
        return self.performing or any(not self.held(e) for e in self.due())

    def held(self, entry: OutboxEntry) -> bool:
        """Whether this row waits for its installation's budget (`hold_back`)."""
        budget_of = getattr(self.github, "budget", None)
        if entry.installation_id is None or budget_of is None:
            return False
        budget = budget_of(entry.installation_id)
        window_s = float(getattr(self.github, "rate_window_s", HOUR_S))
        now = self.clock()
        is_low = low_value(entry.op, entry.args)
        if is_low and hold_back(True, budget, now, window_s) == "behind pace":
            # Only then does it matter whether the PR is decided (a query, kept per write).
            is_low = low_value(entry.op, entry.args, self.decided().get(entry.repo, frozenset()))
        return hold_back(is_low, budget, now, window_s) is not None

    def decided(self) -> dict[str, frozenset[int]]:
        """`decided_numbers`, read again only after this worker completed a write."""
        if self._decided is None or self._decided[0] != self.completed:
            self._decided = (self.completed, decided_numbers(self.store))
        return self._decided[1]

    async def _deferred(self, limit_s: float = 2.0) -> bool:
        """Wait (up to `limit_s`) while the lane deferred to is busy; True if it was."""
        assert self.defer_to is not None
        waited = False
        deadline = time.monotonic() + limit_s
        while self.defer_to.busy() and time.monotonic() < deadline:
            waited = True
            await asyncio.sleep(0.002)
        return waited

    async def perform(self, entry: OutboxEntry) -> str:
        """Perform one row; returns its new state (done, pending or failed)."""
        self.performing = True
        try:
            return await self._perform(entry)
        finally:
            self.performing = False

    def _label_group(self, entry: OutboxEntry) -> list[tuple[OutboxEntry, Any]]:
        """Every pending label write on the same issue as `entry`, in order, decoded:
        performed together as their net effect (`perform_labels`)."""
        write = w.decode(entry.op, entry.args)
        group = []
        for row in self.store.rows(
            OutboxEntry,
            "state = 'pending' AND repo = ? AND op IN (?, ?)",
            (entry.repo, w.AddLabels.op, w.RemoveLabel.op),
            order_by="id",
        ):
            try:
                other = w.decode(row.op, row.args)
            except (KeyError, ValueError, TypeError):
                continue  # a malformed row fails on its own turn
            if getattr(other, "number", None) == getattr(write, "number", None):
                group.append((row, other))
        return group or [(entry, write)]

    def _mark_attempt(self, entry: OutboxEntry) -> None:
        """Record that this row's first attempt begins (`bot.outbox.recall`)."""
        with self.store.transaction():
            self.store.update("outbox", entry.id, {"result": dumps({"attempted_at": self.clock()})})

    async def _perform(self, entry: OutboxEntry) -> str:
        rows = [entry]
        try:
            installation_id = entry.installation_id
            if installation_id is None:
                installation_id = await self.github.installation_for_repo(entry.repo)
            if entry.op in LABEL_OPS:
                group = self._label_group(entry)
                rows = [row for row, _ in group]
                result = await perform_labels(
                    self.github, int(installation_id), entry.repo, [write for _, write in group]
                )
            else:
                write = w.decode(entry.op, entry.args)
                recall = Recall.of(self.store, entry)
                if entry.op in TRACKED_OPS and never_attempted(entry):
                    self._mark_attempt(entry)
                token = RECALL.set(recall)
                try:
                    result = await perform(self.github, int(installation_id), entry.repo, write)
                finally:
                    RECALL.reset(token)
        except Exception as exc:  # noqa: BLE001 - any failure of a write is recorded and retried
            return self._record_failure(entry, exc)
        try:
            with self.store.transaction():
                for row in rows:
                    self.store.update(
                        "outbox",
                        row.id,
                        {
                            "state": "done",
                            "result": dumps(result),
                            "done_at": self.clock(),
                            "last_error": None,
                        },
                    )
                    if self.on_done is not None:
                        self.on_done(row, result)
        except Exception as exc:  # the engine's hook failed: keep the row, try later
            log.exception("outbox %s: on_done failed", entry.id)
            return self._record_failure(
                entry, RuntimeError(f"on_done: {type(exc).__name__}: {exc}")
            )
        self.completed += len(rows)
        for row in rows:
            self.publish(row, "done")
        return "done"

    def _record_failure(self, entry: OutboxEntry, exc: Exception) -> str:
        message, retryable, retry_after = describe_failure(exc)
        rate_limited = isinstance(exc, GitHubWriteError) and exc.status in (403, 429)
        values = failure_update(
            entry.attempts,
            message,
            retryable,
            retry_after,
            self.clock(),
            self.max_attempts,
            rate_limited=rate_limited,
        )
        with self.store.transaction():
            self.store.update("outbox", entry.id, values)
            if values.get("state") == "failed" and self.on_failed is not None:
                self.on_failed(entry, message)
        level = logging.ERROR if values.get("state") == "failed" else logging.WARNING
        log.log(level, "outbox %s %s %s: %s", entry.id, entry.op, entry.repo, message)
        state = str(values.get("state", "pending"))
        self.publish(entry, state, error=message)
        return state

    def publish(self, entry: OutboxEntry, state: str, **extra: Any) -> None:
        if self.bus is not None:
            self.bus.publish(
                "outbox", id=entry.id, op=entry.op, repo=entry.repo, state=state, **extra
            )

    async def run_forever(self, wake: asyncio.Event) -> None:
        """Drain the outbox whenever `wake` is set, and every `idle_s` regardless
        (for rows whose retry time has come)."""
        while True:
            wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("outbox pass failed")
            try:
                await asyncio.wait_for(wake.wait(), timeout=self.idle_s)
            except TimeoutError:
                pass


# -- what the rest of the bot shows ------------------------------------------------


def failed_writes(store: Store, limit: int | None = None) -> list[OutboxEntry]:
    """Writes that will not be retried, newest first, with GitHub's reason."""
    return store.rows(OutboxEntry, "state = 'failed'", order_by="id DESC", limit=limit)


def pending_count(store: Store) -> int:
    return store.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")


def requeue(store: Store, outbox_id: int) -> bool:
    """Give a failed write another round of attempts (after fixing its cause)."""
    with store.transaction():
        cursor = store.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0,"
            " done_at = NULL WHERE id = ? AND state = 'failed'",
            (outbox_id,),
        )
    return cursor.rowcount > 0
