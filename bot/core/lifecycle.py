"""The experiment lifecycle: one table of legal state changes, and who may cause each.

Every change of an experiment's state goes through `transition`. Keeping the
rules in one pure table makes them reviewable at a glance and testable row by
row; an engine that asks for a move the table does not hold is refused (the
caller logs it and leaves the state alone), so a late host report, a stale
advisor verdict or a replayed delivery can never drag a closed experiment
back to review or merge a PR that is still training.

```
proposed ─> queued ─> implementing ─> training ─> review ─> merged
   ^                                      │          ├──> closed
   └──────────── changes requested <──────┴──────────┘
```

`merged` and `closed` are final: only a human reopening the PR on GitHub
brings a closed experiment back (to review, where the gate looks at it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["proposed", "queued", "implementing", "training", "review", "merged", "closed"]
Actor = Literal["bot", "host", "advisor", "human"]

STATES: tuple[str, ...] = (
    "proposed",
    "queued",
    "implementing",
    "training",
    "review",
    "merged",
    "closed",
)
FINAL_STATES: frozenset[str] = frozenset({"merged", "closed"})
OPEN_STATES: frozenset[str] = frozenset(STATES) - FINAL_STATES
WORKING_STATES: frozenset[str] = frozenset({"implementing", "training"})

BOT: frozenset[str] = frozenset({"bot"})
BOT_HUMAN: frozenset[str] = frozenset({"bot", "human"})
DECIDERS: frozenset[str] = frozenset({"bot", "advisor", "human"})
HOSTLIKE: frozenset[str] = frozenset({"bot", "host"})


@dataclass(frozen=True)
class Rule:
    """One legal move: from `state` on `event` to `to`, if the actor is one of `actors`."""

    state: str
    event: str
    to: str
    actors: frozenset[str]
    why: str


def _rules() -> list[Rule]:
    rules = [
        # Work is queued: the PR was opened, or a decision sends it back to be (re)trained.
        Rule("proposed", "queue", "queued", BOT_HUMAN, "the draft PR is open; a job is queued"),
        Rule("queued", "queue", "queued", DECIDERS, "another job joins the queue"),
        Rule("review", "queue", "queued", DECIDERS, "rerun, confirmation seeds, changes, new base"),
        # A host leased the job and reports its phase.
        Rule("queued", "implement", "implementing", HOSTLIKE, "a student implements"),
        Rule("queued", "train", "training", HOSTLIKE, "a host trains"),
        Rule("implementing", "implement", "implementing", HOSTLIKE, "still implementing"),
        Rule("implementing", "train", "training", HOSTLIKE, "implemented; training"),
        Rule("training", "train", "training", HOSTLIKE, "still training"),
        # The lease was lost (expired, given back, cancelled by a re-queue).
        Rule("implementing", "requeue", "queued", BOT, "the job went back to the queue"),
        Rule("training", "requeue", "queued", BOT, "the job went back to the queue"),
        Rule("queued", "requeue", "queued", BOT, "the job went back to the queue"),
        # Results (or a failure for good) land: the gate and the advisor decide next.
        Rule("implementing", "results", "review", HOSTLIKE, "the job finished"),
        Rule("training", "results", "review", HOSTLIKE, "the job finished"),
        Rule("queued", "results", "review", HOSTLIKE, "the job finished"),
        Rule("implementing", "fail", "review", BOT, "the job failed for good"),
        Rule("training", "fail", "review", BOT, "the job failed for good"),
        Rule("queued", "fail", "review", BOT, "the job failed for good"),
        # A /stop leaves the PR held where the work stopped.
        Rule("implementing", "stop", "review", BOT_HUMAN, "stopped"),
        Rule("training", "stop", "review", BOT_HUMAN, "stopped"),
        Rule("queued", "stop", "review", BOT_HUMAN, "stopped before a host took it"),
        # The bot's merge lands only from review; a human may merge on GitHub at any time.
        Rule("review", "merged", "merged", BOT_HUMAN, "the merge landed"),
        # Reopening a PR on GitHub is the only way out of a final state.
        Rule("closed", "reopen", "review", frozenset({"human"}), "a human reopened the PR"),
    ]
    for state in OPEN_STATES:
        rules.append(Rule(state, "close", "closed", DECIDERS, "closed with a reason"))
        if state != "review":
            rules.append(
                Rule(state, "merged", "merged", frozenset({"human"}), "a human merged on GitHub")
            )
    return rules


TABLE: dict[tuple[str, str], Rule] = {(r.state, r.event): r for r in _rules()}
EVENTS: frozenset[str] = frozenset(event for _, event in TABLE)


@dataclass(frozen=True)
class Move:
    """The answer for one requested change: allowed (with the new state) or refused, and why."""

    allowed: bool
    state: str
    to: str
    event: str
    actor: str
    reason: str

    @property
    def changes(self) -> bool:
        return self.allowed and self.to != self.state


def transition(state: str, event: str, actor: str) -> Move:
    """The move `event` caused by `actor` makes from `state`; refused when the table lacks it."""
    rule = TABLE.get((state, event))
    if rule is None:
        if state in FINAL_STATES:
            reason = f"{state} is final (only a human reopening the PR changes it)"
        else:
            reason = f"no transition from {state} on {event}"
        return Move(False, state, state, event, actor, reason)
    if actor not in rule.actors:
        allowed = ", ".join(sorted(rule.actors))
        return Move(False, state, state, event, actor, f"{event} from {state} is for {allowed}")
    return Move(True, state, rule.to, event, actor, rule.why)


def actor_kind(actor: str) -> str:
    """The table's actor for a recorded one: `human:<login>` is human, the gate is the bot."""
    kind = actor.split(":", 1)[0]
    return "bot" if kind in ("gate", "kohai") else kind


def table_rows() -> list[tuple[str, str, str, str]]:
    """(state, event, new state, actors) for docs/reliability.md and the dashboard, in a stable order."""
    order = {s: n for n, s in enumerate(STATES)}
    rows = sorted(TABLE.values(), key=lambda r: (order[r.state], r.event))
    return [(r.state, r.event, r.to, ", ".join(sorted(r.actors))) for r in rows]
