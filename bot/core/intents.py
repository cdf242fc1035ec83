"""What the router asks the engine to do. Plain immutable values, no behaviour.

The router (pure) turns an event and a snapshot of state into a list of these;
the engine applies them in one transaction together with the GitHub writes
they cause.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Pong:
    zen: str = ""


@dataclass(frozen=True)
class RecordInstallation:
    installation_id: int
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    active: bool | None = None  # False: suspended or deleted; True: unsuspended


@dataclass(frozen=True)
class OpenFromIssue:
    issue_number: int
    title: str
    body: str
    student: str | None  # None: whichever student is free first
    actor: str
    # False when the issue's author lacks write permission: its text reaches the
    # agents quoted as data, never as instructions.
    trusted: bool = True
    author: str = ""
    track: str = "default"  # the research track (`track:<name>` on the issue)


@dataclass(frozen=True)
class RevertLabel:
    """Undo a label change the sender had no permission to make (labels are commands)."""

    number: int
    label: str
    added: bool  # True: the label was added, so remove it; False: put it back


@dataclass(frozen=True)
class Assign:
    number: int
    student: str | None  # None: any student
    actor: str


@dataclass(frozen=True)
class SetHold:
    number: int
    on: bool
    actor: str
    label_change: bool = True  # False when the label already reflects it


@dataclass(frozen=True)
class RecordOutcome:
    number: int
    merged: bool
    actor: str


@dataclass(frozen=True)
class Reopen:
    """A human reopened a closed experiment's PR: the one way out of a final state."""

    number: int
    actor: str


@dataclass(frozen=True)
class HeadMoved:
    number: int
    sha: str
    actor: str


@dataclass(frozen=True)
class BaseMoved:
    sha: str
    actor: str
    track: str = "default"  # whose base branch moved


@dataclass(frozen=True)
class RepairLabels:
    number: int


@dataclass(frozen=True)
class Acknowledge:
    comment_id: int


@dataclass(frozen=True)
class Reply:
    number: int
    body: str
    key: str  # idempotency key for the comment marker


@dataclass(frozen=True)
class Rerun:
    number: int
    seeds: int | None
    actor: str


@dataclass(frozen=True)
class Stop:
    number: int
    actor: str


@dataclass(frozen=True)
class Review:
    number: int
    actor: str


@dataclass(frozen=True)
class Merge:
    number: int
    actor: str


@dataclass(frozen=True)
class Close:
    number: int
    actor: str


@dataclass(frozen=True)
class PostStatus:
    number: int


Intent = (
    Ignore
    | Pong
    | RecordInstallation
    | OpenFromIssue
    | Assign
    | SetHold
    | RecordOutcome
    | Reopen
    | HeadMoved
    | BaseMoved
    | RepairLabels
    | RevertLabel
    | Acknowledge
    | Reply
    | Rerun
    | Stop
    | Review
    | Merge
    | Close
    | PostStatus
)
