"""Routing: `event + current state -> intents`, one pure function driven by one table.

To find what kohai does with an event, look up its `(event, action)` in
`ROUTES`. Everything not in the table is stored and explicitly ignored. The
App manifest's permissions and events are derived from this module, so what
the App asks GitHub for cannot drift from what the bot handles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.core import intents as i
from bot.core.commands import WRITE_LEVELS, Target, build_intents, parse_commands
from bot.core.events import Event

STUDENT_PREFIX = "student:"
STATUS_PREFIX = "status:"
TRACK_PREFIX = "track:"
HOLD = "hold"
DEFAULT_TRACK = "default"


@dataclass(frozen=True)
class ExperimentView:
    """What the router may know about the experiment an event concerns."""

    id: int
    state: str
    student: str | None
    hold: bool
    pr_number: int | None
    issue_number: int | None


@dataclass(frozen=True)
class RouteState:
    bot_login: str
    students: frozenset[str] = frozenset()
    experiment: ExperimentView | None = None  # the one for this issue/PR number, if any
    sender_permission: str | None = None  # looked up for commands and command labels
    author_permission: str | None = None  # the issue author's, when it may become a hypothesis
    known_repo: bool = True
    default_branch: str = "main"
    notes: dict[str, str] = field(default_factory=dict)
    # The repository's research tracks by name, each with its base branch
    # (the default track's is the default branch).
    tracks: dict[str, str] = field(default_factory=dict)


def track_of(labels: tuple[str, ...] | list[str] | frozenset[str]) -> str | None:
    """The track a `track:<name>` label names (lowercased; the first one); None without one."""
    for label in sorted(labels):
        if label.lower().startswith(TRACK_PREFIX):
            return label[len(TRACK_PREFIX) :].strip().lower()
    return None


def _known_tracks(state: RouteState) -> dict[str, str]:
    return {DEFAULT_TRACK: state.default_branch, **state.tracks}


def _unknown_track(event: Event, name: str, state: RouteState) -> i.Intent:
    known = ", ".join(f"`{t}`" for t in sorted(_known_tracks(state)))
    shown = name.replace("`", "'")[:60] or "(empty)"
    return i.Reply(
        event.number or 0,
        f"There is no track `{shown}` in this repository (known: {known}). Tracks are "
        "declared as `[tracks.<name>]` in kohai.toml; without a `track:` label an issue "
        "goes to the default track. Nothing was opened.",
        key=f"unknown-track:{name[:60]}",
    )


Handler = Callable[[Event, RouteState], list[i.Intent]]


def _student_of(label: str | None) -> str | None:
    if label and label.startswith(STUDENT_PREFIX):
        return label[len(STUDENT_PREFIX) :]
    return None


def on_ping(event: Event, state: RouteState) -> list[i.Intent]:
    return [i.Pong()]


def on_installation(event: Event, state: RouteState) -> list[i.Intent]:
    if event.installation_id is None:
        return [i.Ignore("installation event without an installation id")]
    active = {"created": True, "unsuspend": True, "new_permissions_accepted": True}.get(
        event.action or "", False
    )
    return [
        i.RecordInstallation(event.installation_id, event.repos_added, event.repos_removed, active)
    ]


def on_installation_repositories(event: Event, state: RouteState) -> list[i.Intent]:
    if event.installation_id is None:
        return [i.Ignore("installation event without an installation id")]
    return [i.RecordInstallation(event.installation_id, event.repos_added, event.repos_removed)]


def _unknown_student(event: Event, name: str, state: RouteState) -> i.Intent:
    known = ", ".join(sorted(state.students)) or "none registered yet"
    return i.Reply(
        event.number or 0,
        f"There is no student `{name}` (known: {known}). Register one with `kohai hosts add {name}`.",
        key=f"unknown-student:{name}",
    )


def is_command_label(label: str | None) -> bool:
    """Labels that are commands to kohai: `student:<name>`, `track:<name>` and `hold`.

    `status:*` labels are the bot's own projection, repaired rather than obeyed.
    """
    return (
        label == HOLD
        or _student_of(label) is not None
        or (label or "").lower().startswith(TRACK_PREFIX)
    )


def _may_command(state: RouteState) -> bool:
    return state.sender_permission in WRITE_LEVELS


def _same_login(a: str | None, b: str | None) -> bool:
    return (a or "").lower() == (b or "").lower()


def author_trusted(event: Event, state: RouteState) -> bool:
    """Whether the issue's author has write permission (else its text is untrusted data)."""
    if event.author is None or _same_login(event.author, event.sender):
        return state.sender_permission in WRITE_LEVELS
    return state.author_permission in WRITE_LEVELS


def _refuse_label(event: Event, state: RouteState, *, added: bool) -> list[i.Intent]:
    """A label change without write permission: undone, and answered like a command."""
    label = event.label or ""
    level = state.sender_permission or "none"
    verb = "Adding" if added else "Removing"
    return [
        i.Reply(
            event.number or 0,
            f"Sorry @{event.sender}, {verb.lower()} the `{label}` label is a kohai command and "
            f"needs write, maintain or admin permission on this repository, and you have "
            f"`{level}`. The label change was undone; a maintainer can make it for you.",
            key=f"refused-label:{label}",
        ),
        i.RevertLabel(event.number or 0, label, added),
    ]


def _open_from_issue(event: Event, state: RouteState, student: str | None) -> list[i.Intent]:
    track = track_of(event.labels) or DEFAULT_TRACK
    if track not in _known_tracks(state):
        return [_unknown_track(event, track, state)]
    return [
        i.OpenFromIssue(
            event.number or 0,
            event.title,
            event.body,
            student,
            event.sender or "",
            trusted=author_trusted(event, state),
            author=event.author or event.sender or "",
            track=track,
        )
    ]


def on_issue_labeled(event: Event, state: RouteState) -> list[i.Intent]:
    name = _student_of(event.label)
    if is_command_label(event.label) and not _may_command(state):
        return _refuse_label(event, state, added=True)
    if event.label == HOLD:
        return [i.Ignore("hold on an issue without an experiment: nothing to hold yet")]
    if (event.label or "").lower().startswith(TRACK_PREFIX):
        track = (event.label or "")[len(TRACK_PREFIX) :].strip().lower()
        if track not in _known_tracks(state):
            return [_unknown_track(event, track, state)]
        return [i.Ignore(f"track {track} noted: the issue opens with a student label")]
    if name is None:
        return [i.Ignore(f"label {event.label!r} means nothing to kohai")]
    if state.experiment is not None:
        return [i.Ignore(f"issue #{event.number} already has experiment {state.experiment.id}")]
    if name != "any" and name not in state.students:
        return [_unknown_student(event, name, state)]
    if HOLD in event.labels:
        return [i.Ignore("the issue is on hold: it opens when `hold` is removed")]
    student = None if name == "any" else name
    return _open_from_issue(event, state, student)


def on_issue_unlabeled(event: Event, state: RouteState) -> list[i.Intent]:
    if event.label != HOLD or state.experiment is not None:
        return [i.Ignore("unlabel means nothing here")]
    if not _may_command(state):
        return _refuse_label(event, state, added=False)
    names = [n for label in event.labels if (n := _student_of(label))]
    if not names:
        return [i.Ignore("hold removed from an issue without a student label")]
    name = names[0]
    if name != "any" and name not in state.students:
        return [_unknown_student(event, name, state)]
    student = None if name == "any" else name
    return _open_from_issue(event, state, student)


def on_pr_labeled(event: Event, state: RouteState) -> list[i.Intent]:
    exp = state.experiment
    if exp is None:
        return [i.Ignore("not a kohai experiment")]
    name = _student_of(event.label)
    if is_command_label(event.label) and not _may_command(state):
        return _refuse_label(event, state, added=True)
    if event.label == HOLD:
        return [] if exp.hold else [i.SetHold(exp.pr_number or 0, True, event.sender or "", False)]
    if event.label and event.label.startswith(STATUS_PREFIX):
        return [i.RepairLabels(exp.pr_number or 0)]
    if name is None:
        return [i.Ignore(f"label {event.label!r} means nothing to kohai")]
    if name != "any" and name not in state.students:
        return [_unknown_student(event, name, state), i.RepairLabels(exp.pr_number or 0)]
    student = None if name == "any" else name
    if student == exp.student:
        return [i.Ignore("already assigned")]
    return [i.Assign(exp.pr_number or 0, student, event.sender or "")]


def on_pr_unlabeled(event: Event, state: RouteState) -> list[i.Intent]:
    exp = state.experiment
    if exp is None:
        return [i.Ignore("not a kohai experiment")]
    if is_command_label(event.label) and not _may_command(state):
        return _refuse_label(event, state, added=False)
    if event.label == HOLD:
        return [i.SetHold(exp.pr_number or 0, False, event.sender or "", False)] if exp.hold else []
    if event.label and event.label.startswith(STATUS_PREFIX):
        return [i.RepairLabels(exp.pr_number or 0)]
    name = _student_of(event.label)
    if name is None:
        return [i.Ignore(f"label {event.label!r} means nothing to kohai")]
    remaining = [n for label in event.labels if (n := _student_of(label))]
    if remaining or name != (exp.student or "any"):
        return [i.Ignore("another student label remains")]
    return [i.Assign(exp.pr_number or 0, None, event.sender or "")]


def on_pr_closed(event: Event, state: RouteState) -> list[i.Intent]:
    if state.experiment is None:
        return [i.Ignore("not a kohai experiment")]
    if state.experiment.state in ("merged", "closed"):
        return [i.Ignore("outcome already recorded")]
    return [i.RecordOutcome(event.number or 0, event.merged, event.sender or "")]


def on_pr_reopened(event: Event, state: RouteState) -> list[i.Intent]:
    if state.experiment is None:
        return [i.Ignore("not a kohai experiment")]
    if state.experiment.state != "closed":
        return [i.Ignore(f"reopened while {state.experiment.state}")]
    return [i.Reopen(event.number or 0, event.sender or "")]


def on_pr_synchronize(event: Event, state: RouteState) -> list[i.Intent]:
    if state.experiment is None or not event.head_sha:
        return [i.Ignore("not a kohai experiment")]
    return [i.HeadMoved(event.number or 0, event.head_sha, event.sender or "")]


def on_push(event: Event, state: RouteState) -> list[i.Intent]:
    bases = {f"refs/heads/{base}": name for name, base in _known_tracks(state).items()}
    track = bases.get(event.ref or "")
    if track is None or not event.after:
        return [i.Ignore("push to a branch that is no track's base")]
    if set(event.after) == {"0"}:
        return [i.Ignore("branch deleted")]
    return [i.BaseMoved(event.after, event.sender or "", track)]


def on_comment(event: Event, state: RouteState) -> list[i.Intent]:
    invocations = parse_commands(event.comment_body)
    if not invocations:
        return [i.Ignore("no command in the comment")]
    number = event.number or 0
    if state.sender_permission not in WRITE_LEVELS:
        level = state.sender_permission or "none"
        names = ", ".join(f"`/{inv.name}`" for inv in invocations)
        return [
            i.Reply(
                number,
                f"Sorry @{event.sender}, {names} needs write, maintain or admin permission on "
                f"this repository, and you have `{level}`. A maintainer can run it for you.",
                key=f"refused:{event.comment_id}",
            )
        ]
    target = Target(
        number=number,
        is_experiment=state.experiment is not None and state.experiment.pr_number == number,
        title=event.title,
        body=event.body,
        is_pull_request=event.is_pull_request,
        trusted=author_trusted(event, state),
        author=event.author or event.sender or "",
    )
    out: list[i.Intent] = []
    if event.comment_id is not None:
        out.append(i.Acknowledge(event.comment_id))
    out.extend(build_intents(invocations, target, event.sender or "", state.students))
    return out


# The table. (event, action) -> handler; action None matches events without one.
ROUTES: dict[tuple[str, str | None], Handler] = {
    ("ping", None): on_ping,
    ("installation", "created"): on_installation,
    ("installation", "deleted"): on_installation,
    ("installation", "suspend"): on_installation,
    ("installation", "unsuspend"): on_installation,
    ("installation", "new_permissions_accepted"): on_installation,
    ("installation_repositories", "added"): on_installation_repositories,
    ("installation_repositories", "removed"): on_installation_repositories,
    ("issues", "labeled"): on_issue_labeled,
    ("issues", "unlabeled"): on_issue_unlabeled,
    ("pull_request", "labeled"): on_pr_labeled,
    ("pull_request", "unlabeled"): on_pr_unlabeled,
    ("pull_request", "closed"): on_pr_closed,
    ("pull_request", "reopened"): on_pr_reopened,
    ("pull_request", "synchronize"): on_pr_synchronize,
    ("push", None): on_push,
    ("issue_comment", "created"): on_comment,
}

# Events about the App itself arrive whoever acted; all others are ignored
# when the App caused them.
_ALWAYS_ROUTED = frozenset({"ping", "installation", "installation_repositories"})


def caused_by_app(event: Event, bot_login: str) -> bool:
    """The App's own doing: a `Bot` sender, or its login (empty while not yet known)."""
    return event.sender_type == "Bot" or (bool(bot_login) and event.sender == bot_login)


def route(event: Event, state: RouteState) -> list[i.Intent]:
    """The one routing decision: what `event` means given `state`. Pure."""
    handler = ROUTES.get((event.name, event.action))
    if handler is None:
        return [i.Ignore(f"{event.name}.{event.action or '-'} is not handled")]
    if event.name not in _ALWAYS_ROUTED:
        if caused_by_app(event, state.bot_login):
            return [i.Ignore("caused by the App itself")]
        if not state.known_repo:
            return [i.Ignore(f"the App is not installed on {event.repo}")]
    return handler(event, state)


_LABEL_EVENTS = frozenset(
    {
        ("issues", "labeled"),
        ("issues", "unlabeled"),
        ("pull_request", "labeled"),
        ("pull_request", "unlabeled"),
    }
)


def once_key(event: Event) -> str | None:
    """What makes a human's command the same command, whatever delivery carries it. Pure.

    A delivery id is only a header: a signed body replayed under a new id (or
    GitHub's own redelivery of it) must not run its command again. A slash
    command is its comment (one comment runs once; an edited comment runs
    nothing: `issue_comment.edited` is not routed). A label change is its
    issue, action, label and the time GitHub stamped on the issue for it.
    None: nothing identifies the event beyond its delivery (it runs once per
    delivery id, as stored).
    """
    if not event.repo:
        return None
    if event.name == "issue_comment" and event.comment_id is not None:
        # Only comments that hold a command: the others (the bot's own among them) run nothing.
        if not parse_commands(event.comment_body):
            return None
        return f"comment:{event.repo}:{event.comment_id}"
    if (event.name, event.action) in _LABEL_EVENTS and event.label and event.updated_at:
        return f"label:{event.repo}#{event.number}:{event.action}:{event.label}:{event.updated_at}"
    return None


def needs_permission(event: Event) -> bool:
    """Whether routing this event needs the sender's permission level (an API call).

    Slash commands do, and so does a change of a label that is a command.
    """
    if (event.name, event.action) in _LABEL_EVENTS:
        return is_command_label(event.label)
    return (
        event.name == "issue_comment"
        and event.action == "created"
        and bool(parse_commands(event.comment_body))
    )


def permission_logins(event: Event) -> tuple[str, ...]:
    """Whose permission levels routing `event` needs: the sender's, and the issue author's
    when the event may turn the issue's text into a hypothesis (then quoted as data
    unless the author may write)."""
    if not needs_permission(event) or not event.sender:
        return ()
    opens = not event.is_pull_request and (
        event.name == "issue_comment"
        or _student_of(event.label) is not None
        or (event.action == "unlabeled" and event.label == HOLD)
    )
    if opens and event.author and not _same_login(event.author, event.sender):
        return (event.sender, event.author)
    return (event.sender,)


SUBSCRIBED_EVENTS: tuple[str, ...] = tuple(sorted({name for name, _ in ROUTES if name != "ping"}))
# What the handlers' writes need: branches and empty commits (contents), draft
# PRs, merges and ready-for-review (pull_requests), labels, comments and
# reactions (issues), and repository metadata.
REQUIRED_PERMISSIONS: dict[str, str] = {
    "checks": "write",  # a failing check run on a commit whose kohai.toml is invalid
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
}
