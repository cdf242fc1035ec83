"""The outbox worker: performs the GitHub writes the engine recorded, exactly once.

The engine never calls GitHub; it records writes (`bot.outbox.writes.enqueue`) in
the transaction that changed its state. This worker performs each pending
write and then, in ONE transaction, marks it done and hands the result to the
engine's `on_done` hook. A crash between the GitHub call and that commit
leaves the row pending, so the write is performed again on restart — and
every op is written to find its earlier attempt first (a comment's hidden
marker, a PR's branch, a label that is already there), which makes the
second performance a no-op.

Failures are never dropped: a retryable one (5xx, rate limit, lost
connection) puts the row back with a growing delay; a permanent one, or too
many attempts, marks it `failed` with GitHub's message, where `/healthz` and
the dashboard show it (`failed_writes`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from bot.github.client import GitHubApp, GitHubWriteError
from bot.outbox.writes import marker, with_marker
from bot.store import Store, dumps

log = logging.getLogger(__name__)

OnDone = Callable[[dict[str, Any], dict[str, Any]], None]
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
) -> dict[str, Any]:
    """The row's new columns after a failed attempt (pure, so the policy is testable)."""
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
    """(message, retryable, retry_after) for any exception an op raised.

    GitHub's errors say for themselves; a malformed row (missing or mistyped
    argument) is a bug that retrying cannot fix; anything else is given the
    benefit of the doubt, within the attempt limit.
    """
    if isinstance(exc, GitHubWriteError):
        return str(exc), exc.retryable, exc.retry_after
    if isinstance(exc, KeyError | ValueError | TypeError):
        return f"bad outbox row: {type(exc).__name__}: {exc}", False, None
    return f"{type(exc).__name__}: {exc}", True, None


# -- the ops -------------------------------------------------------------------
#
# Each op takes (github, installation_id, repo, args) and returns the result
# stored on the row. Each is safe to perform twice.

Op = Callable[[GitHubApp, int, str, dict[str, Any]], Awaitable[dict[str, Any]]]


MAX_BODY = 65_536  # GitHub refuses longer comment and PR bodies (422)


def fit_body(body: str) -> str:
    """A body GitHub will accept: over-long text is cut, keeping its start (the marker)."""
    if len(body) <= MAX_BODY:
        return body
    note = "\n\n… (truncated)"
    return body[: MAX_BODY - len(note)] + note


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
    github: GitHubApp, installation_id: int, repo: str, number: int, mark: str
) -> dict[str, Any] | None:
    """The bot's earlier comment carrying `mark`, if any (never a user's copy)."""
    bot_login = await github.bot_login()
    comments = await github.paginate(installation_id, f"/repos/{repo}/issues/{number}/comments")
    for comment in comments:
        if is_marked_by(comment, mark, bot_login):
            return comment
    return None


async def _create_comment(
    github: GitHubApp, installation_id: int, repo: str, number: int, body: str
) -> dict[str, Any]:
    # Not idempotent: after an ambiguous failure the outbox retries the whole
    # op, which looks for the marker first.
    reply = await github.request(
        installation_id,
        "POST",
        f"/repos/{repo}/issues/{number}/comments",
        json={"body": fit_body(body)},
        idempotent=False,
    )
    return reply.data


async def op_comment(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    number, kind, key = int(args["number"]), args["kind"], args["key"]
    existing = await find_marked_comment(github, installation_id, repo, number, marker(kind, key))
    if existing is None:
        existing = await _create_comment(
            github, installation_id, repo, number, with_marker(args["body"], kind, key)
        )
    return {"comment_id": existing["id"]}


async def op_sticky(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    number, kind, key = int(args["number"]), args["kind"], args["key"]
    body = fit_body(with_marker(args["body"], kind, key))
    existing = await find_marked_comment(github, installation_id, repo, number, marker(kind, key))
    if existing is None:
        existing = await _create_comment(github, installation_id, repo, number, body)
    elif existing.get("body") != body:
        await github.request(
            installation_id,
            "PATCH",
            f"/repos/{repo}/issues/comments/{existing['id']}",
            json={"body": body},
        )
    return {"comment_id": existing["id"]}


async def _find_pr_for_branch(
    github: GitHubApp, installation_id: int, repo: str, branch: str
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


async def _ref_sha(github: GitHubApp, installation_id: int, repo: str, branch: str) -> str | None:
    try:
        reply = await github.request(
            installation_id, "GET", f"/repos/{repo}/git/ref/heads/{quote(branch)}"
        )
    except GitHubWriteError as exc:
        if exc.status == 404:
            return None
        raise
    return str(reply.data["object"]["sha"])


async def _start_branch(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> str:
    """The experiment's branch, started with an empty commit on the base's tree.

    GitHub refuses a PR whose head adds nothing to its base, so the branch
    gets one commit (carrying the hypothesis) that changes no file.
    """
    branch = args["branch"]
    existing = await _ref_sha(github, installation_id, repo, branch)
    if existing is not None:
        return existing
    base_sha = await _ref_sha(github, installation_id, repo, args["base"])
    if base_sha is None:
        raise GitHubWriteError(404, f"base branch {args['base']!r} not found in {repo}", False)
    base_commit = await github.request(
        installation_id, "GET", f"/repos/{repo}/git/commits/{base_sha}"
    )
    commit = await github.request(
        installation_id,
        "POST",
        f"/repos/{repo}/git/commits",
        json={
            "message": args.get("commit_message") or args["title"],
            "tree": base_commit.data["tree"]["sha"],
            "parents": [base_sha],
        },
        idempotent=True,  # a duplicate commit object is unreachable and harmless
    )
    sha = str(commit.data["sha"])
    try:
        await github.request(
            installation_id,
            "POST",
            f"/repos/{repo}/git/refs",
            json={"ref": f"refs/heads/{branch}", "sha": sha},
            idempotent=True,
        )
    except GitHubWriteError as exc:
        if exc.status != 422:
            raise
        raced = await _ref_sha(github, installation_id, repo, branch)
        if raced is None:
            raise
        return raced
    return sha


_BASE_TREES: dict[
    tuple[str, str], str
] = {}  # (repo, base commit) -> its tree: commits never change


async def op_start_branch(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    """The experiment's branch, created in as few calls as GitHub allows.

    The base commit is known when the experiment opens, and a commit's tree
    never changes, so a new branch is two writes: the empty commit and the
    ref. A ref that exists already (a retry, a race) is read back.
    """
    branch, base_sha = args["branch"], args.get("base_sha")
    if not base_sha:
        sha = await _start_branch(github, installation_id, repo, args)
        return {"branch": branch, "head_sha": sha}
    tree = _BASE_TREES.get((repo, base_sha))
    if tree is None:
        base_commit = await github.request(
            installation_id, "GET", f"/repos/{repo}/git/commits/{base_sha}"
        )
        tree = str(base_commit.data["tree"]["sha"])
        if len(_BASE_TREES) > 1000:
            _BASE_TREES.clear()
        _BASE_TREES[(repo, base_sha)] = tree
    commit = await github.request(
        installation_id,
        "POST",
        f"/repos/{repo}/git/commits",
        json={
            "message": args.get("commit_message") or branch,
            "tree": tree,
            "parents": [base_sha],
        },
        idempotent=True,  # a duplicate commit object is unreachable and harmless
    )
    sha = str(commit.data["sha"])
    try:
        await github.request(
            installation_id,
            "POST",
            f"/repos/{repo}/git/refs",
            json={"ref": f"refs/heads/{branch}", "sha": sha},
            idempotent=True,
        )
    except GitHubWriteError as exc:
        if exc.status != 422:
            raise
        existing = await _ref_sha(github, installation_id, repo, branch)
        if existing is None:
            raise
        sha = existing
    return {"branch": branch, "head_sha": sha}


async def op_create_branch(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    """A track's base branch, pointing at the default branch's head; an existing one is kept.

    Creating a ref that exists answers 422: the branch is then read back and
    left as it is (a track's base is never moved by this write).
    """
    branch = args["branch"]
    existing = await _ref_sha(github, installation_id, repo, branch)
    if existing is not None:
        return {"branch": branch, "sha": existing, "created": False}
    try:
        await github.request(
            installation_id,
            "POST",
            f"/repos/{repo}/git/refs",
            json={"ref": f"refs/heads/{branch}", "sha": args["sha"]},
            idempotent=True,
        )
    except GitHubWriteError as exc:
        if exc.status != 422:
            raise
        raced = await _ref_sha(github, installation_id, repo, branch)
        if raced is None:
            raise
        return {"branch": branch, "sha": raced, "created": False}
    return {"branch": branch, "sha": args["sha"], "created": True}


async def op_open_pr(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    experiment_id, branch = args["experiment_id"], args["branch"]
    pull = await _find_pr_for_branch(github, installation_id, repo, branch)
    if pull is None:
        await _start_branch(github, installation_id, repo, args)
        try:
            reply = await github.request(
                installation_id,
                "POST",
                f"/repos/{repo}/pulls",
                json={
                    "title": args["title"],
                    "head": branch,
                    "base": args["base"],
                    "body": fit_body(
                        with_marker(args.get("body") or "", "experiment", experiment_id)
                    ),
                    "draft": True,
                },
                idempotent=True,  # a second one is refused with 422 and found below
            )
            pull = reply.data
        except GitHubWriteError as exc:
            if exc.status != 422 or "already exists" not in exc.message.lower():
                raise
            pull = await _find_pr_for_branch(github, installation_id, repo, branch)
            if pull is None:
                raise
    number = int(pull["number"])
    labels = list(args.get("labels") or [])
    if labels:
        await op_add_labels(github, installation_id, repo, {"number": number, "labels": labels})
    issue_number = args.get("issue_number")
    if issue_number:
        link = f"Opened #{number} for this hypothesis: {pull.get('html_url', '')}".rstrip(": ")
        await op_comment(
            github,
            installation_id,
            repo,
            {"number": issue_number, "kind": "link", "key": experiment_id, "body": link},
        )
    return {
        "number": number,
        "node_id": pull.get("node_id"),
        "head_sha": (pull.get("head") or {}).get("sha"),
        "html_url": pull.get("html_url"),
    }


async def op_ensure_labels(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    existing = await github.paginate(installation_id, f"/repos/{repo}/labels")
    names = {str(label.get("name", "")).lower() for label in existing}
    for label in args.get("labels") or []:
        if label["name"].lower() in names:
            continue
        body = {"name": label["name"], "color": str(label.get("color") or "ededed").lstrip("#")}
        if label.get("description"):
            body["description"] = label["description"]
        try:
            await github.request(
                installation_id, "POST", f"/repos/{repo}/labels", json=body, idempotent=True
            )
        except GitHubWriteError as exc:
            if exc.status != 422:  # already_exists: someone made it meanwhile
                raise
    return {}


async def op_add_labels(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    await github.request(
        installation_id,
        "POST",
        f"/repos/{repo}/issues/{int(args['number'])}/labels",
        json={"labels": list(args["labels"])},
        idempotent=True,  # adding a label twice leaves one label
    )
    return {}


async def op_remove_label(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    label = quote(str(args["label"]), safe="")
    try:
        await github.request(
            installation_id, "DELETE", f"/repos/{repo}/issues/{int(args['number'])}/labels/{label}"
        )
    except GitHubWriteError as exc:
        if exc.status != 404:  # not there: already the state we want
            raise
    return {}


async def op_react(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    await github.request(
        installation_id,
        "POST",
        f"/repos/{repo}/issues/comments/{int(args['comment_id'])}/reactions",
        json={"content": args.get("content") or "eyes"},
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


async def _set_draft(
    github: GitHubApp, installation_id: int, repo: str, number: int, draft: bool
) -> dict[str, Any]:
    """Draft state can only change through GraphQL; skip the call when already there."""
    pull = (await github.request(installation_id, "GET", f"/repos/{repo}/pulls/{number}")).data
    if bool(pull.get("draft")) == draft:
        return {}
    mutation = CONVERT_TO_DRAFT if draft else MARK_READY
    await github.graphql(installation_id, mutation, {"id": pull["node_id"]})
    return {}


async def op_mark_ready(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    return await _set_draft(github, installation_id, repo, int(args["number"]), draft=False)


async def op_convert_to_draft(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    return await _set_draft(github, installation_id, repo, int(args["number"]), draft=True)


async def op_merge(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    number = int(args["number"])
    pull = (await github.request(installation_id, "GET", f"/repos/{repo}/pulls/{number}")).data
    if pull.get("merged"):
        return {"sha": pull.get("merge_commit_sha"), "merged": True}
    if args.get("base_sha"):
        # Merges are decided on a measured base: if the base moved since, do not land.
        branch = args.get("base") or (pull.get("base") or {}).get("ref") or "main"
        head = (
            await github.request(installation_id, "GET", f"/repos/{repo}/branches/{branch}")
        ).data["commit"]["sha"]
        if head != args["base_sha"]:
            raise GitHubWriteError(
                409,
                f"the base moved since the candidate was measured (measured on "
                f"{str(args['base_sha'])[:10]}, {branch} is now at {head[:10]})",
                False,
            )
    body: dict[str, Any] = {"merge_method": args.get("method") or "squash"}
    if args.get("sha"):
        body["sha"] = args["sha"]  # GitHub refuses (409) if the head moved since we decided
    if args.get("title"):
        body["commit_title"] = args["title"]
    reply = await github.request(
        installation_id, "PUT", f"/repos/{repo}/pulls/{number}/merge", json=body
    )
    return {"sha": reply.data.get("sha"), "merged": bool(reply.data.get("merged", True))}


async def op_close(
    github: GitHubApp, installation_id: int, repo: str, args: dict[str, Any]
) -> dict[str, Any]:
    await github.request(
        installation_id,
        "PATCH",
        f"/repos/{repo}/issues/{int(args['number'])}",
        json={"state": "closed"},
    )
    return {}


OPS: dict[str, Op] = {
    "ensure_labels": op_ensure_labels,
    "start_branch": op_start_branch,
    "create_branch": op_create_branch,
    "open_pr": op_open_pr,
    "add_labels": op_add_labels,
    "remove_label": op_remove_label,
    "comment": op_comment,
    "sticky": op_sticky,
    "react": op_react,
    "mark_ready": op_mark_ready,
    "convert_to_draft": op_convert_to_draft,
    "merge": op_merge,
    "close": op_close,
}


# -- the worker ----------------------------------------------------------------


class OutboxWorker:
    """Performs due outbox rows in id order, one at a time."""

    def __init__(
        self,
        store: Store,
        github: GitHubApp,
        *,
        on_done: OnDone | None = None,
        on_failed: Callable[[dict[str, Any], str], None] | None = None,
        bus: Any = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = MAX_ATTEMPTS,
        idle_s: float = 2.0,
        only_ops: frozenset[str] | None = None,
        skip_ops: frozenset[str] = frozenset(),
        defer_to: OutboxWorker | None = None,
    ) -> None:
        """`only_ops` / `skip_ops` make a lane of the outbox: the bot runs new branches
        in a lane of their own, beside the rest, so a job never waits behind a PR.
        A lane with `defer_to` starts no write while that lane has one to make."""
        self.only_ops = only_ops
        self.skip_ops = skip_ops
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

    def due(self) -> list[dict[str, Any]]:
        """Pending rows whose time has come: new branches first, then in the order written."""
        rows = self.store.query(
            "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? "
            "ORDER BY op = 'create_branch' DESC, op = 'start_branch' DESC, id",
            (self.clock(),),
        )
        return [
            row
            for row in rows
            if row["op"] not in self.skip_ops
            and (self.only_ops is None or row["op"] in self.only_ops)
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
            row = next(
                (r for r in self.due() if r["repo"] not in blocked and r["id"] not in tried),
                None,
            )
            if row is None:
                break
            if self.defer_to is not None and await self._deferred():
                continue  # the other lane wrote meanwhile: read the due rows again
            tried.add(row["id"])
            state = await self.perform(row)
            if state == "done":
                done += 1
            elif state == "pending":
                blocked.add(row["repo"])
        self.last_run_at = self.clock()
        return done

    def busy(self) -> bool:
        """Writing now, or with a write due."""
        return self.performing or bool(self.due())

    async def _deferred(self, limit_s: float = 2.0) -> bool:
        """Wait (up to `limit_s`) while the lane deferred to is busy; True if it was."""
        assert self.defer_to is not None
        waited = False
        deadline = time.monotonic() + limit_s
        while self.defer_to.busy() and time.monotonic() < deadline:
            waited = True
            await asyncio.sleep(0.002)
        return waited

    async def perform(self, row: dict[str, Any]) -> str:
        """Perform one row; returns its new state (done, pending or failed)."""
        self.performing = True
        try:
            return await self._perform(row)
        finally:
            self.performing = False

    async def _perform(self, row: dict[str, Any]) -> str:
        try:
            installation_id = row["installation_id"]
            if installation_id is None:
                installation_id = await self.github.installation_for_repo(row["repo"])
            op = OPS[row["op"]]
            result = await op(
                self.github, int(installation_id), row["repo"], json.loads(row["args"])
            )
        except Exception as exc:  # noqa: BLE001 - any failure of a write is recorded and retried
            return self._record_failure(row, exc)
        try:
            with self.store.transaction():
                self.store.update(
                    "outbox",
                    row["id"],
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
            log.exception("outbox %s: on_done failed", row["id"])
            return self._record_failure(row, RuntimeError(f"on_done: {type(exc).__name__}: {exc}"))
        self._publish(row, "done")
        return "done"

    def _record_failure(self, row: dict[str, Any], exc: Exception) -> str:
        message, retryable, retry_after = describe_failure(exc)
        values = failure_update(
            row["attempts"], message, retryable, retry_after, self.clock(), self.max_attempts
        )
        with self.store.transaction():
            self.store.update("outbox", row["id"], values)
            if values.get("state") == "failed" and self.on_failed is not None:
                self.on_failed(row, message)
        level = logging.ERROR if values.get("state") == "failed" else logging.WARNING
        log.log(level, "outbox %s %s %s: %s", row["id"], row["op"], row["repo"], message)
        state = str(values.get("state", "pending"))
        self._publish(row, state, error=message)
        return state

    def _publish(self, row: dict[str, Any], state: str, **extra: Any) -> None:
        if self.bus is not None:
            self.bus.publish(
                "outbox", id=row["id"], op=row["op"], repo=row["repo"], state=state, **extra
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


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for column in ("args", "result"):
        if row.get(column):
            row[column] = json.loads(row[column])
    return row


def failed_writes(store: Store) -> list[dict[str, Any]]:
    """Writes that will not be retried, newest first, with GitHub's reason."""
    rows = store.query("SELECT * FROM outbox WHERE state = 'failed' ORDER BY id DESC")
    return [_decoded(row) for row in rows]


def pending_count(store: Store) -> int:
    row = store.one("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
    return int(row["n"]) if row else 0


def requeue(store: Store, outbox_id: int) -> bool:
    """Give a failed write another round of attempts (after fixing its cause)."""
    with store.transaction():
        cursor = store.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0,"
            " done_at = NULL WHERE id = ? AND state = 'failed'",
            (outbox_id,),
        )
    return cursor.rowcount > 0
