"""Which engine code applies which intent: one function per intent type, in a registry.

The router (`bot.core.router`) turns an event into intents; `apply` runs each
intent's handler, found by its type in `HANDLERS`, inside one transaction with
the outbox writes it causes. `grep '@handles(i.Merge)'` finds who applies a merge.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.core import intents as i
from bot.core import labels as lab
from bot.core.events import Event
from bot.core.untrusted import quote_as_data
from bot.engine.engine import HUMAN_PRIORITY, Engine, Repo, knobs_from_text
from bot.outbox import writes as w
from bot.store import now

Handler = Callable[[Engine, Any, Event, "Repo | None"], "str | None"]
HANDLERS: dict[type, Handler] = {}


def handles(kind: type) -> Callable[[Handler], Handler]:
    """Register the decorated function as the one that applies intents of `kind`."""

    def register(function: Handler) -> Handler:
        if kind in HANDLERS:
            raise TypeError(f"{kind.__name__} already has a handler")
        HANDLERS[kind] = function
        return function

    return register


def apply(engine: Engine, event: Event, intents: list[i.Intent]) -> list[str]:
    """Apply intents for one event in one transaction; return notes for the inbox."""
    notes: list[str] = []
    with engine.store.transaction():
        repo = engine.repo(event.repo)
        if repo is not None and event.number is not None:
            # An event on a PR or issue speaks for the experiment's own track.
            repo = engine.lab_of(repo, engine.experiment_by_number(repo.id, event.number))
        for intent in intents:
            note = HANDLERS[type(intent)](engine, intent, event, repo)
            notes.append(note or type(intent).__name__)
    engine.publish("event", name=event.name, action=event.action)
    return notes


@handles(i.Ignore)
def _on_Ignore(engine: Engine, intent: i.Ignore, event: Event, repo: Repo | None) -> str:
    return f"ignored: {intent.reason}"


@handles(i.Pong)
def _on_Pong(engine: Engine, intent: i.Pong, event: Event, repo: Repo | None) -> str:
    return "pong"


@handles(i.RecordInstallation)
def _on_RecordInstallation(
    engine: Engine, intent: i.RecordInstallation, event: Event, repo: Repo | None
) -> str:
    t = now()
    for name in intent.added:
        existing = engine.store.one("SELECT id FROM repos WHERE full_name = ?", (name,))
        if existing:
            engine.store.update(
                "repos",
                existing["id"],
                {"installation_id": intent.installation_id, "active": 1, "synced_at": None},
            )
        else:
            engine.store.insert(
                "repos",
                {
                    "full_name": name,
                    "installation_id": intent.installation_id,
                    "active": 1,
                    "created_at": t,
                },
            )
    for name in intent.removed:
        engine.store.execute("UPDATE repos SET active = 0 WHERE full_name = ?", (name,))
        row = engine.store.one("SELECT id FROM repos WHERE full_name = ?", (name,))
        if row:
            engine.stop_lab(row["id"], f"the App was removed from {name}")
    if intent.active is not None:
        engine.store.execute(
            "UPDATE repos SET active = ? WHERE installation_id = ?",
            (1 if intent.active else 0, intent.installation_id),
        )
        if not intent.active:
            for row in engine.store.query(
                "SELECT id FROM repos WHERE installation_id = ?", (intent.installation_id,)
            ):
                engine.stop_lab(
                    row["id"],
                    f"installation {intent.installation_id} was removed or suspended",
                )
        if intent.active:
            engine.store.execute(
                "UPDATE repos SET synced_at = NULL WHERE installation_id = ?",
                (intent.installation_id,),
            )
    return f"installation {intent.installation_id}: +{len(intent.added)} -{len(intent.removed)}"


@handles(i.OpenFromIssue)
def _on_OpenFromIssue(
    engine: Engine, intent: i.OpenFromIssue, event: Event, repo: Repo | None
) -> str:
    if repo is None:
        return "no repo"
    repo = engine.on_track(repo, intent.track)
    hypothesis = intent.body or intent.title
    if not intent.trusted:  # an outsider's words: data for the agents, never instructions
        hypothesis = quote_as_data(
            hypothesis,
            number=intent.issue_number,
            author=intent.author,
            labeller=intent.actor,
        )
    exp_id = engine.open_experiment(
        repo,
        title=intent.title or f"Issue #{intent.issue_number}",
        hypothesis=hypothesis,
        student=intent.student,
        source="human",
        issue_number=intent.issue_number,
        knobs=knobs_from_text(intent.body, repo.problem),
    )
    return f"experiment {exp_id} opened from issue #{intent.issue_number} in {repo.key}"


@handles(i.Assign)
def _on_Assign(engine: Engine, intent: i.Assign, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    engine.reassign(repo, exp, intent.student)
    return f"assigned to {intent.student or 'any'}"


@handles(i.SetHold)
def _on_SetHold(engine: Engine, intent: i.SetHold, event: Event, repo: Repo | None) -> str:
    if repo is None:
        return "no repo"
    exp = engine.experiment_for(repo, intent.number)
    if exp is None:
        if intent.label_change:
            if intent.on:
                engine.write(repo, w.AddLabels(number=intent.number, labels=["hold"]))
            else:
                engine.write(repo, w.RemoveLabel(number=intent.number, label="hold"))
        return "hold on an issue"
    engine.store.update("experiments", exp.id, {"hold": int(intent.on), "updated_at": now()})
    if intent.label_change and exp.pr_number:
        if intent.on:
            engine.write(repo, w.AddLabels(number=exp.pr_number, labels=["hold"]))
        else:
            engine.write(repo, w.RemoveLabel(number=exp.pr_number, label="hold"))
    if not intent.on:
        engine.notify_job_queued(exp.student)
    engine.refresh_status(repo, exp.id)
    return f"hold {'on' if intent.on else 'off'}"


@handles(i.RecordOutcome)
def _on_RecordOutcome(
    engine: Engine, intent: i.RecordOutcome, event: Event, repo: Repo | None
) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    state = "merged" if intent.merged else "closed"
    engine.finish(
        repo,
        exp,
        state,
        actor=f"human:{intent.actor}",
        rationale=f"{state} by @{intent.actor} on GitHub",
    )
    if intent.merged:
        engine.mark_base_stale(repo)
    return state


@handles(i.Reopen)
def _on_Reopen(engine: Engine, intent: i.Reopen, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    if not engine.move(repo, exp, "reopen", f"human:{intent.actor}"):
        return f"reopen refused in state {exp.state}"
    engine.decide(exp.id, "reopen", f"human:{intent.actor}", f"reopened by @{intent.actor}")
    engine.store.update("experiments", exp.id, {"review_requested": 1, "updated_at": now()})
    engine.refresh_status(repo, exp.id, phase_note="reopened; the gate looks again")
    return "reopened"


@handles(i.HeadMoved)
def _on_HeadMoved(engine: Engine, intent: i.HeadMoved, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None:
        return "no experiment"
    engine.store.update("experiments", exp.id, {"head_sha": intent.sha, "updated_at": now()})
    return f"head {intent.sha[:10]}"


@handles(i.BaseMoved)
def _on_BaseMoved(engine: Engine, intent: i.BaseMoved, event: Event, repo: Repo | None) -> str:
    if repo is None:
        return "base unchanged"
    repo = engine.on_track(repo, intent.track)
    if repo.base_sha == intent.sha:
        return "base unchanged"
    engine.mark_base_stale(repo)
    return f"base of {repo.key} moved to {intent.sha[:10]}"


@handles(i.RepairLabels)
def _on_RepairLabels(
    engine: Engine, intent: i.RepairLabels, event: Event, repo: Repo | None
) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None or exp.pr_number is None:
        return "no experiment"
    wanted = lab.desired_labels(exp.state, exp.student, exp.hold)
    for label in sorted(set(lab.STATUS_LABELS.values()) - wanted):
        if label in event.labels:
            engine.write(repo, w.RemoveLabel(number=exp.pr_number, label=label))
    missing = sorted(name for name in wanted if name not in event.labels)
    if missing:
        engine.write(repo, w.AddLabels(number=exp.pr_number, labels=missing))
    return "labels repaired"


@handles(i.RevertLabel)
def _on_RevertLabel(engine: Engine, intent: i.RevertLabel, event: Event, repo: Repo | None) -> str:
    if repo is None:
        return "no repo"
    if intent.added:
        engine.write(repo, w.RemoveLabel(number=intent.number, label=intent.label))
    else:
        engine.write(repo, w.AddLabels(number=intent.number, labels=[intent.label]))
    return f"label {intent.label!r} change undone (no write permission)"


@handles(i.Acknowledge)
def _on_Acknowledge(engine: Engine, intent: i.Acknowledge, event: Event, repo: Repo | None) -> str:
    if repo is not None:
        engine.write(repo, w.React(comment_id=intent.comment_id, content="eyes"))
    return "acknowledged"


@handles(i.Reply)
def _on_Reply(engine: Engine, intent: i.Reply, event: Event, repo: Repo | None) -> str:
    if repo is not None:
        key = re.sub(r"[^\w.:/-]+", "-", f"{event.delivery_id}:{intent.key}")[:120]
        engine.write(repo, w.Comment(number=intent.number, kind="reply", key=key, body=intent.body))
    return "replied"


@handles(i.Rerun)
def _on_Rerun(engine: Engine, intent: i.Rerun, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    if exp.final:
        engine.reply(repo, exp, event, "done", f"This experiment is already {exp.state}.")
        return "already finished"
    if engine.store.one(
        "SELECT id FROM jobs WHERE experiment_id = ? AND state = 'queued'", (exp.id,)
    ):
        engine.reply(repo, exp, event, "busy", "A job for this experiment is already queued.")
        return "already queued"
    seeds = intent.seeds or repo.problem.seeds
    engine.decide(
        exp.id,
        "rerun",
        f"human:{intent.actor}",
        f"/rerun with {seeds} seed(s) by @{intent.actor}",
    )
    job_id = engine.queue_experiment_job(
        repo,
        exp,
        seeds=engine.next_seeds(exp, seeds),
        priority=HUMAN_PRIORITY,
        actor=f"human:{intent.actor}",
        requested_by=intent.actor,
    )
    if job_id is None:
        engine.reply(repo, exp, event, "refused", f"This experiment is {exp.state}.")
        return "rerun refused"
    return f"rerun with {seeds} seeds"


@handles(i.Stop)
def _on_Stop(engine: Engine, intent: i.Stop, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    engine.store.execute(
        "UPDATE jobs SET cancel = 1 WHERE experiment_id = ? AND state = 'leased'", (exp.id,)
    )
    engine.store.execute(
        "UPDATE jobs SET state = 'cancelled', updated_at = ? WHERE experiment_id = ? AND state = 'queued'",
        (now(), exp.id),
    )
    if not exp.hold:
        engine.store.update("experiments", exp.id, {"hold": 1})
        if exp.pr_number:
            engine.write(repo, w.AddLabels(number=exp.pr_number, labels=["hold"]))
    engine.decide(exp.id, "stop", f"human:{intent.actor}", f"stopped by @{intent.actor}")
    running = engine.store.one(
        "SELECT id FROM jobs WHERE experiment_id = ? AND state = 'leased'", (exp.id,)
    )
    if not running and exp.state == "queued":
        # Nothing was running: the held PR waits in review (a running job gets there
        # when its host reports it cancelled).
        engine.move(repo, exp, "stop", f"human:{intent.actor}")
    engine.refresh_status(repo, exp.id)
    return "stopped"


@handles(i.Review)
def _on_Review(engine: Engine, intent: i.Review, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None:
        return "no experiment"
    engine.store.update("experiments", exp.id, {"review_requested": 1})
    engine.publish("review", experiment_id=exp.id)
    return "review requested"


@handles(i.Merge)
def _on_Merge(engine: Engine, intent: i.Merge, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    engine.decide(
        exp.id,
        "merge",
        f"human:{intent.actor}",
        f"/merge by @{intent.actor}: human override of the gate",
    )
    engine.merge(repo, exp, title=f"{exp.title} (merged by @{intent.actor})")
    return "merge requested"


@handles(i.Close)
def _on_Close(engine: Engine, intent: i.Close, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    if not engine.finish(
        repo,
        exp,
        "closed",
        actor=f"human:{intent.actor}",
        rationale=f"/close by @{intent.actor}",
    ):
        engine.reply(repo, exp, event, "close-refused", f"This experiment is {exp.state}.")
        return "close refused"
    if exp.pr_number:
        engine.write(repo, w.Close(number=exp.pr_number))
    return "closed"


@handles(i.PostStatus)
def _on_PostStatus(engine: Engine, intent: i.PostStatus, event: Event, repo: Repo | None) -> str:
    exp = engine.experiment_for(repo, intent.number)
    if exp is None or repo is None:
        return "no experiment"
    engine.refresh_status(repo, exp.id)
    return "status refreshed"
