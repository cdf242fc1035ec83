"""What the outbox knows it already wrote, so that a write need not ask GitHub first.

Every write is idempotent because it looks for its earlier attempt before
acting: a comment's marker among the issue's comments, a PR for its branch,
a PR's draft state. Each look is a request against the installation's hourly
budget. But the outbox table records every write it made and what GitHub
answered (a comment's id, a PR's number and node id), and, before a write's
first attempt, that the attempt began (`result = {"attempted_at": T}` on the
pending row). So:

- a write that was never attempted, whose marker no other row ever used,
  cannot have an earlier attempt on GitHub: it is made straight away;
- a comment whose marker an earlier row wrote has that row's comment id: the
  sticky status is edited by id (not at all when its body is unchanged);
- a PR the outbox opened has its node id: its draft state is flipped without
  reading the PR first.

Only when the table cannot tell (a crash mid-write, a failed attempt, rows
written by an older bot) does the write look on GitHub, as before. The
worker hands each write its `Recall` through a context variable
(`RECALL`), so the perform functions keep their signature; outside the
worker the default knows nothing, and every write looks first.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from bot.records import OutboxEntry
from bot.store import Store

# Rows whose attempt is recorded before it begins: the writes that search first.
TRACKED_OPS = frozenset({"comment", "sticky", "open_pr"})


def never_attempted(entry: OutboxEntry) -> bool:
    """No attempt of this row ever began (none failed, none was cut short by a crash)."""
    return entry.attempts == 0 and not entry.result


@dataclass(frozen=True)
class Recall:
    """The outbox's memory of its own writes, for one row being performed."""

    store: Store | None = None
    entry: OutboxEntry | None = None
    first_attempt: bool = False  # decided before the worker marked the attempt

    @classmethod
    def of(cls, store: Store, entry: OutboxEntry) -> Recall:
        """The recall for one row; a PR is opened afresh only if no other row ever tried
        to open one for the same branch (its link comment has no row of its own)."""
        first = never_attempted(entry)
        branch = entry.args.get("branch") if isinstance(entry.args, dict) else None
        if first and entry.op == "open_pr":
            first = not store.query(
                "SELECT 1 FROM outbox WHERE repo = ? AND op = 'open_pr' AND id != ?"
                " AND json_extract(args, '$.branch') IS ?"
                " AND (state = 'done' OR attempts > 0 OR result IS NOT NULL) LIMIT 1",
                (entry.repo, entry.id, branch),
            )
        return cls(store, entry, first_attempt=first)

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        if self.store is None:
            return []
        return self.store.query(sql, params)

    def fresh(self, repo: str, mark: str) -> bool:
        """Whether nothing with `mark` can exist on GitHub yet: this is the row's first
        attempt and no other row with the same marker was ever attempted or done."""
        if not self.first_attempt or self.entry is None:
            return False
        tried = self._rows(
            "SELECT 1 FROM outbox WHERE repo = ? AND marker = ? AND id != ?"
            " AND (state = 'done' OR attempts > 0 OR result IS NOT NULL) LIMIT 1",
            (repo, mark, self.entry.id),
        )
        return not tried

    def written(self, repo: str, mark: str) -> tuple[int, str] | None:
        """(comment id, body as sent) of the latest done write carrying `mark`, if any."""
        rows = self._rows(
            "SELECT op, args, result FROM outbox WHERE repo = ? AND marker = ?"
            " AND state = 'done' ORDER BY id DESC LIMIT 1",
            (repo, mark),
        )
        if not rows:
            return None
        try:
            result = json.loads(rows[0]["result"] or "{}")
            args = json.loads(rows[0]["args"] or "{}")
        except ValueError:
            return None
        comment_id = result.get("comment_id") if isinstance(result, dict) else None
        if not isinstance(comment_id, int) or not isinstance(args, dict):
            return None
        return comment_id, str(args.get("body") or "")

    def pull(self, repo: str, number: int) -> dict[str, Any] | None:
        """What GitHub answered when the outbox opened PR `number` (number, node_id, ...)."""
        rows = self._rows(
            "SELECT result FROM outbox WHERE repo = ? AND op = 'open_pr' AND state = 'done'"
            " AND json_extract(result, '$.number') = ? ORDER BY id DESC LIMIT 1",
            (repo, number),
        )
        if not rows:
            return None
        try:
            result = json.loads(rows[0]["result"] or "{}")
        except ValueError:
            return None
        return result if isinstance(result, dict) else None

    def branch_started(self, repo: str, branch: str) -> bool:
        """Whether the outbox already created `branch` (a done StartBranch for it)."""
        return bool(
            self._rows(
                "SELECT 1 FROM outbox WHERE repo = ? AND op = 'start_branch' AND state = 'done'"
                " AND json_extract(args, '$.branch') = ? LIMIT 1",
                (repo, branch),
            )
        )


RECALL: ContextVar[Recall] = ContextVar("outbox_recall", default=Recall())  # noqa: B039 - immutable
