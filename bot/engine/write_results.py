"""What the engine does when the outbox reports a GitHub write made or given up.

A new PR's number, a branch's head, a merge's commit come back here, and the
state they complete is recorded in one transaction; a write that failed for
good is shown where a human looks (the PR, `/healthz`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.core import labels as lab
from bot.engine.engine import BASE_MOVED, Engine, Repo
from bot.outbox import writes as w
from bot.records import Experiment, OutboxEntry
from bot.store import now


def pr_caught_up(engine: Engine, repo: Repo, exp: Experiment, labels: Sequence[str]) -> None:
    """The draft PR opened after its job was queued: bring its labels and comments up to date.

    The PR was opened with the labels of a queued experiment; the work may
    have moved on meanwhile (leased, trained, even reported), so the status
    label is corrected, the status comment written, and results that came
    back before the PR existed are posted now.
    """
    number = exp.pr_number
    if number is None:
        return
    opened = [name for name in labels if name.startswith("status:")]
    current = lab.status_label(exp.state)
    for name in opened:
        if name != current:
            engine.write(repo, w.RemoveLabel(number=number, label=name))
    if current and current not in opened:
        engine.write(repo, w.AddLabels(number=number, labels=[current]))
    if engine.on_pr_opened is not None:
        engine.on_pr_opened(repo, exp)
    if exp.state == "closed":
        engine.write(repo, w.Close(number=number))
    engine.refresh_status(repo, exp.id)


def write_done(engine: Engine, entry: OutboxEntry, result: dict[str, Any]) -> None:
    """Results of GitHub writes that feed back into state (called inside the outbox's transaction)."""
    write = w.decode(entry.op, entry.args)
    repo = engine.repo(entry.repo)
    if repo is None:
        return
    if isinstance(write, w.CreateBranch):
        # A track's base branch now exists: the sync reads it and measures its baseline.
        engine.mark_base_stale(engine.on_track(repo, write.track))
        return
    experiment_id = getattr(write, "experiment_id", None)
    if experiment_id:
        repo = engine.lab_of(repo, engine.store.get(Experiment, experiment_id))
    if isinstance(write, w.StartBranch):
        exp = engine.store.get(Experiment, experiment_id)
        if exp is None or exp.state != "proposed":
            return
        if not exp.head_sha and result.get("head_sha"):
            engine.store.update("experiments", exp.id, {"head_sha": result["head_sha"]})
            exp.head_sha = result["head_sha"]
        engine.queue_experiment_job(repo, exp, seeds=list(range(repo.problem.seeds)))
    elif isinstance(write, w.OpenPullRequest):
        exp = engine.store.get(Experiment, experiment_id)
        if exp is None or exp.pr_number:
            return
        values: dict[str, Any] = {"pr_number": result["number"], "updated_at": now()}
        if not exp.head_sha:
            values["head_sha"] = result.get("head_sha")
        engine.store.update("experiments", exp.id, values)
        exp = engine.store.get(Experiment, exp.id)
        assert exp is not None
        if exp.state == "proposed":
            engine.queue_experiment_job(repo, exp, seeds=list(range(repo.problem.seeds)))
        else:
            pr_caught_up(engine, repo, exp, write.labels)
    elif isinstance(write, w.Merge) and result.get("merged"):
        exp = engine.store.get(Experiment, experiment_id) if experiment_id else None
        if exp is not None and exp.state != "merged":
            last = engine.store.one(
                "SELECT actor, rationale FROM decisions WHERE experiment_id = ? AND verdict = 'merge' "
                "ORDER BY id DESC LIMIT 1",
                (exp.id,),
            )
            actor = (last or {}).get("actor") or "bot"
            # The merge happened on GitHub: the store follows, whatever state it was in.
            if not engine.move(repo, exp, "merged", actor if actor.startswith("human") else "bot"):
                engine.move(repo, exp, "merged", "human")
            engine.cancel_queued_jobs(repo, exp, "the experiment was merged")
            engine.refresh_status(repo, exp.id)
        engine.mark_base_stale(repo)


def write_failed(engine: Engine, entry: OutboxEntry, message: str) -> None:
    """A GitHub write failed for good; a refused merge must not leave its PR in limbo."""
    if entry.op != w.Merge.op:
        return
    try:
        write = w.decode(entry.op, entry.args)
    except (KeyError, TypeError, ValueError):
        return  # a malformed row: it failed as such, and names no experiment
    assert isinstance(write, w.Merge)
    repo = engine.repo(entry.repo)
    exp_id = write.experiment_id
    exp = engine.store.get(Experiment, exp_id) if exp_id else None
    if repo is None or exp is None or exp.final:
        return
    repo = engine.lab_of(repo, exp)
    if BASE_MOVED in message:
        # Measured on a base that is gone: back to be re-measured on the new one.
        rationale = f"Not merged: {message}. Re-measuring on the new base before deciding."
        engine.decide(exp.id, "rerun", "gate", rationale)
        engine.decision_comment(
            repo, exp, "Not merged: the base moved", rationale, key=f"base-moved-{entry.id}"
        )
        engine.mark_base_stale(repo)
        engine.store.update("experiments", exp.id, {"review_requested": 1, "updated_at": now()})
        engine.refresh_status(repo, exp.id, phase_note="base moved; re-measuring")
        return
    if w.MERGE_CHECK in message:
        # The bot's own last check (head and files read from GitHub) stopped the merge.
        engine.decide(exp.id, "wait", "gate", f"Not merged: {message}")
        if exp.pr_number is not None:
            engine.write(
                repo,
                w.Comment(
                    number=exp.pr_number,
                    kind="merge-failed",
                    key=str(entry.id),
                    body=f"### Not merged\n\n{message}.\n\nOnly the head the bot measured, "
                    "changing only the lab's editable files, is merged. `/rerun` measures the "
                    "branch as it is now; `/close` ends it.",
                ),
            )
        engine.store.update("experiments", exp.id, {"review_requested": 0, "updated_at": now()})
        engine.refresh_status(repo, exp.id, phase_note="merge stopped by the bot's check")
        return
    engine.decide(exp.id, "wait", "gate", f"GitHub refused the merge: {message}")
    if exp.pr_number is not None:
        engine.write(
            repo,
            w.Comment(
                number=exp.pr_number,
                kind="merge-failed",
                key=str(entry.id),
                body=f"### Merge refused by GitHub\n\n{message}\n\n`/rerun` merges the base into the "
                "branch and trains it again (a conflict goes to the student); `/close` ends it.",
            ),
        )
    engine.store.update("experiments", exp.id, {"review_requested": 0, "updated_at": now()})
    engine.refresh_status(repo, exp.id, phase_note="merge refused by GitHub; waiting for a human")
