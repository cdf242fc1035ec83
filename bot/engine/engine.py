"""The engine: applies the router's intents to the store, with the GitHub writes they cause.

Every public method runs in one transaction: the state change and the outbox
rows commit together or not at all. Nothing here talks to GitHub or a host;
I/O happens in the workers around it (`webhooks.workers`, `bot.outbox.worker`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import queries
from bot.core import diffcheck, lifecycle
from bot.core import labels as lab
from bot.core.events import Event
from bot.core.router import ExperimentView, RouteState
from bot.engine import labs
from bot.engine.bus import Bus
from bot.outbox import writes as w
from bot.problem import DEFAULT_TRACK, Problem
from bot.records import Decision, Experiment, Job, Repository, Track
from bot.render.comments import status_comment
from bot.render.escape import defang
from bot.store import Store, dumps, now

log = logging.getLogger("kohai.engine")

HUMAN_PRIORITY = 10
ADVISOR_PRIORITY = 0
BASELINE_PRIORITY = 20
BASE_MOVED = "the base moved since the candidate was measured"
ACTIVE_STATES = ("proposed", "queued", "implementing", "training")
OPEN_STATES = (*ACTIVE_STATES, "review")


def slugify(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "experiment"


def knobs_from_text(text: str, problem: Problem) -> dict[str, Any]:
    """Knob settings a human wrote in an issue (`NAME = value` lines), for the offline student."""
    found: dict[str, Any] = {}
    names = {k.name.lower(): k for k in problem.knobs}
    for match in re.finditer(r"^\W*`?([A-Za-z_]\w*)`?\s*[=:]\s*`?([-+\w.]+)`?", text, re.M):
        knob = names.get(match.group(1).lower())
        if knob is None:
            continue
        raw = match.group(2)
        try:
            value: Any = int(raw) if re.fullmatch(r"[-+]?\d+", raw) else float(raw)
        except ValueError:
            value = raw
        found[knob.name] = value
    return found


@dataclass
class Repo:
    """One lab: a repository's research line (its default track, or one of its tracks).

    `base_branch` and `base_sha` are the line's own: the default branch for the
    default track, the track's base branch otherwise. PRs open against it and
    merges land on it.
    """

    id: int
    full_name: str
    installation_id: int | None
    default_branch: str
    base_sha: str | None
    problem: Problem
    track: str = DEFAULT_TRACK
    base_branch: str = ""

    def __post_init__(self) -> None:
        if not self.base_branch:
            self.base_branch = self.default_branch

    @property
    def key(self) -> str:
        """The lab's name: `owner/repo`, or `owner/repo:track` for a declared track."""
        return labs.lab_key(self.full_name, self.track)

    @property
    def tracked(self) -> bool:
        """True for a declared track (not the repository's default line)."""
        return self.track != DEFAULT_TRACK

    @property
    def title_prefix(self) -> str:
        """What a PR title starts with: `[wide] ` for track `wide`, nothing for the default."""
        return f"[{self.track}] " if self.tracked else ""

    @classmethod
    def of(cls, repository: Repository) -> Repo:
        """The repository's default line, with its problem (the default one if unreadable)."""
        return cls(
            id=repository.id,
            full_name=repository.full_name,
            installation_id=repository.installation_id,
            default_branch=repository.default_branch or "main",
            base_sha=repository.base_sha,
            problem=labs.stored_problem_of(repository.problem_toml),
        )


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        bot_login: str = "kohai[bot]",
        bus: Bus | None = None,
        implement_mode: str = "offline",
        max_experiments: int = 0,
        on_job_queued: Callable[[str | None], None] | None = None,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.bot_login = bot_login
        self.bus = bus or Bus()
        self.implement_mode = implement_mode
        self.max_experiments = max_experiments
        self.notify_job_queued = on_job_queued or (lambda student: None)
        self._on_outbox = on_outbox or (lambda: None)
        # Set by the job book: posts results that came back before the PR existed.
        self.on_pr_opened: Callable[[Repo, Experiment], None] | None = None
        self._students: tuple[tuple[int, int], frozenset[str]] | None = None

    # ---------------------------------------------------------------- lookups

    def repo(self, full_name: str | None, track: str | None = None) -> Repo | None:
        if not full_name:
            return None
        found = self.store.first(Repository, "full_name = ?", (full_name,))
        return self.on_track(Repo.of(found), track) if found else None

    def repo_by_id(self, repo_id: int, track: str | None = None) -> Repo:
        found = self.store.get(Repository, repo_id)
        if found is None:
            raise KeyError(f"no repo {repo_id}")
        return self.on_track(Repo.of(found), track)

    def on_track(self, repo: Repo, track: str | None) -> Repo:
        """The repository seen as one of its tracks: that track's base branch and base."""
        name = (track or DEFAULT_TRACK).lower()
        if name == DEFAULT_TRACK:
            return repo
        declared = repo.problem.track(name)
        row = self.store.get(Track, repo.id, name)
        base_branch = (row.base_branch if row else "") or (
            declared.base if declared else f"track/{name}"
        )
        return Repo(
            id=repo.id,
            full_name=repo.full_name,
            installation_id=repo.installation_id,
            default_branch=repo.default_branch,
            base_sha=row.base_sha if row else None,
            problem=repo.problem,
            track=name,
            base_branch=base_branch,
        )

    def lab_of(self, repo: Repo, exp: Experiment | None) -> Repo:
        """The lab an experiment belongs to: its repository on the experiment's track."""
        track = exp.track if exp else DEFAULT_TRACK
        return repo if track == repo.track else self.on_track(self.repo_by_id(repo.id), track)

    def experiment_by_number(self, repo_id: int, number: int) -> Experiment | None:
        """The experiment of PR `number`, or the one opened from issue `number`."""
        return self.store.first(
            Experiment,
            "repo_id = ? AND (pr_number = ? OR (issue_number = ? AND pr_number IS NOT ?))",
            (repo_id, number, number, number),
            order_by=f"pr_number = {int(number)} DESC, id DESC",
        )

    def stop_lab(self, repo_id: int, reason: str) -> int:
        """A lab stops: its queued jobs are cancelled with `reason`, leased ones told to stop."""
        cancelled = labs.stop_lab(self.store, repo_id, reason)
        log.info("lab %s stopped (%s): %d queued jobs cancelled", repo_id, reason, cancelled)
        self.publish("lab", id=repo_id, state="stopped", reason=reason)
        return cancelled

    def students(self) -> frozenset[str]:
        """Every student's name. Each delivery's routing asks; with a thousand hosts
        listing them all was most of a delivery's cost, so the names are read again only
        when a student was added or removed (their count or newest rowid moved)."""
        row = self.store.one("SELECT COUNT(*) AS n, COALESCE(MAX(rowid), 0) AS last FROM students")
        key = (int(row["n"]), int(row["last"])) if row else (0, 0)
        if self._students is None or self._students[0] != key:
            names = frozenset(r["name"] for r in self.store.query("SELECT name FROM students"))
            self._students = (key, names)
        return self._students[1]

    def snapshot(
        self, event: Event, permission: str | None = None, author_permission: str | None = None
    ) -> RouteState:
        repo = self.repo(event.repo)
        view = None
        if repo is not None and event.number is not None:
            exp = self.experiment_by_number(repo.id, event.number)
            if exp is not None:
                view = ExperimentView(
                    id=exp.id,
                    state=exp.state,
                    student=exp.student,
                    hold=exp.hold,
                    pr_number=exp.pr_number,
                    issue_number=exp.issue_number,
                )
        return RouteState(
            bot_login=self.bot_login,
            students=self.students(),
            experiment=view,
            sender_permission=permission,
            author_permission=author_permission,
            known_repo=repo is not None or event.repo is None,
            default_branch=(repo.default_branch if repo else None)
            or event.default_branch
            or "main",
            tracks={t.name: t.base for t in repo.problem.tracks} if repo else {},
        )

    # ----------------------------------------------------------------- writes

    def write(self, repo: Repo, write: w.Write) -> None:
        """Record one GitHub write for the outbox, in the caller's transaction."""
        if getattr(write, "number", 0) is None:
            # The PR is not open yet (its job runs while it opens): what matters
            # then is written when it opens (`write_results.pr_caught_up`).
            log.debug("%s on %s: no PR yet", write.op, repo.full_name)
            return
        w.enqueue(self.store, repo.full_name, repo.installation_id, write)
        self._on_outbox()

    def publish(self, topic: str, **data: Any) -> None:
        self.bus.publish(topic, **data)

    # ------------------------------------------------------------- applying

    def experiment_for(self, repo: Repo | None, number: int) -> Experiment | None:
        if repo is None:
            return None
        return self.experiment_by_number(repo.id, number)

    def reply(self, repo: Repo, exp: Experiment, event: Event, key: str, body: str) -> None:
        if exp.pr_number is None:  # its PR is not open yet: nowhere to answer
            return
        self.write(
            repo,
            w.Comment(
                number=exp.pr_number, kind="reply", key=f"{event.delivery_id}:{key}", body=body
            ),
        )

    def next_seeds(self, exp: Experiment, count: int) -> list[int]:
        """Seeds not yet run (nor queued) on this experiment's head: a rerun adds evidence."""
        used = {
            r["seed"]
            for r in self.store.query(
                "SELECT seed FROM runs WHERE experiment_id = ? AND commit_sha IS ?",
                (exp.id, exp.head_sha),
            )
        }
        for job in self.store.rows(
            Job, "experiment_id = ? AND state IN ('queued', 'leased')", (exp.id,)
        ):
            used.update(job.seeds)
        seeds: list[int] = []
        seed = 0
        while len(seeds) < count:
            if seed not in used:
                seeds.append(seed)
            seed += 1
        return seeds

    # ------------------------------------------------------- experiment moves

    def open_experiment(
        self,
        repo: Repo,
        *,
        title: str,
        hypothesis: str,
        student: str | None,
        source: str,
        issue_number: int | None = None,
        knobs: dict[str, Any] | None = None,
    ) -> int:
        t = now()
        exp_id = self.store.insert(
            "experiments",
            {
                "repo_id": repo.id,
                "track": repo.track,
                "state": "proposed",
                "source": source,
                "title": title[:200],
                "hypothesis": hypothesis,
                "student": student,
                "issue_number": issue_number,
                "knobs": dumps(knobs or {}),
                "seeds_wanted": repo.problem.seeds,
                "created_at": t,
                "updated_at": t,
            },
        )
        branch = f"kohai/{exp_id}-{slugify(title)}"
        self.store.update("experiments", exp_id, {"branch": branch})
        where = f" (track {repo.track})" if repo.tracked else ""
        commit_message = f"kohai: start experiment {exp_id}{where}\n\n{hypothesis.strip()}"[:4000]
        # The branch first: the job is queued as soon as it exists, the PR follows.
        self.write(
            repo,
            w.StartBranch(
                experiment_id=exp_id,
                base=repo.base_branch,
                base_sha=repo.base_sha,
                branch=branch,
                commit_message=commit_message,
            ),
        )
        specs = list(lab.LABEL_SPECS)
        if student:
            specs.append(lab.student_label_spec(student))
        if repo.tracked:
            specs.append(lab.track_label_spec(repo.track))
        self.write(repo, w.EnsureLabels(labels=specs))
        body = hypothesis.strip()
        if knobs:
            body += "\n\n**Knobs**\n\n" + "\n".join(f"- `{k} = {v!r}`" for k, v in knobs.items())
        if issue_number:
            body += f"\n\nRequested in #{issue_number}."
        if repo.tracked:
            body += (
                f"\n\nTrack **{repo.track}**: measured against, and merged into, "
                f"`{repo.base_branch}`."
            )
        self.write(
            repo,
            w.OpenPullRequest(
                experiment_id=exp_id,
                base=repo.base_branch,
                branch=branch,
                title=(repo.title_prefix + title)[:200],
                body=body,
                commit_message=commit_message,
                labels=[lab.student_label(student), "status:queued"]
                + ([lab.track_label(repo.track)] if repo.tracked else []),
                issue_number=issue_number,
            ),
        )
        self.publish("experiment", id=exp_id)
        return exp_id

    def move(self, repo: Repo, exp: Experiment, event: str, actor: str) -> bool:
        """Change the experiment's state through the lifecycle table; False when refused.

        A refused move is logged (with the table's reason) and the state stays
        as it is: the caller goes on without the change.
        """
        current = self.store.one("SELECT state FROM experiments WHERE id = ?", (exp.id,))
        if current is not None:  # the caller's record may be older than the row
            exp.state = current["state"]
        move = lifecycle.transition(exp.state, event, lifecycle.actor_kind(actor))
        if not move.allowed:
            log.warning(
                "experiment %s: refused %s by %s in state %s: %s",
                exp.id,
                event,
                actor,
                exp.state,
                move.reason,
            )
            return False
        self._set_state(repo, exp, move.to)
        return True

    def _set_state(self, repo: Repo, exp: Experiment, state: str) -> None:
        old = exp.state
        if old == state:
            return
        values: dict[str, Any] = {"state": state, "updated_at": now()}
        if state in lifecycle.FINAL_STATES:
            values |= {"outcome": state, "review_requested": 0}
        elif old in lifecycle.FINAL_STATES:
            values["outcome"] = None
        self.store.update("experiments", exp.id, values)
        old_label, new_label = lab.status_label(old), lab.status_label(state)
        if exp.pr_number and old_label != new_label:
            if old_label:
                self.write(repo, w.RemoveLabel(number=exp.pr_number, label=old_label))
            if new_label:
                self.write(repo, w.AddLabels(number=exp.pr_number, labels=[new_label]))
        exp.state = state
        self.publish("experiment", id=exp.id, state=state)

    def reassign(self, repo: Repo, exp: Experiment, student: str | None) -> None:
        old = exp.student
        if old == student:
            return
        self.store.update("experiments", exp.id, {"student": student, "updated_at": now()})
        self.store.execute(
            "UPDATE jobs SET student = ? WHERE experiment_id = ? AND state = 'queued'",
            (student, exp.id),
        )
        if exp.pr_number:
            if student:
                self.write(repo, w.EnsureLabels(labels=[lab.student_label_spec(student)]))
            self.write(repo, w.RemoveLabel(number=exp.pr_number, label=lab.student_label(old)))
            self.write(repo, w.AddLabels(number=exp.pr_number, labels=[lab.student_label(student)]))
        exp.student = student
        self.notify_job_queued(student)
        self.refresh_status(repo, exp.id)

    def finish(
        self,
        repo: Repo,
        exp: Experiment,
        state: str,
        *,
        actor: str,
        rationale: str,
        stats: dict[str, Any] | None = None,
    ) -> bool:
        """An experiment reaches merged or closed: record why, cancel its work.

        `stats` are the gate's numbers behind the verdict (its reason among
        them: "screened out", "not better", ...), recorded with the decision.
        False (and nothing changed) when the lifecycle refuses it: a late
        verdict on an experiment that is already final.
        """
        event = "merged" if state == "merged" else "close"
        if not self.move(repo, exp, event, actor):
            return False
        self.cancel_queued_jobs(repo, exp, f"the experiment was {state}: {rationale}")
        self.store.execute(
            "UPDATE jobs SET cancel = 1 WHERE experiment_id = ? AND state = 'leased'", (exp.id,)
        )
        self.decide(exp.id, "merge" if state == "merged" else "close", actor, rationale, stats)
        self.refresh_status(repo, exp.id)
        return True

    def cancel_queued_jobs(self, repo: Repo, exp: Experiment, why: str) -> int:
        """Cancel the experiment's queued jobs; a command that queued one hears why.

        A command accepted on a PR is carried out or answered, never dropped.
        """
        jobs = self.store.rows(Job, "experiment_id = ? AND state = 'queued'", (exp.id,))
        for job in jobs:
            self.store.update("jobs", job.id, {"state": "cancelled", "updated_at": now()})
            requested = job.payload.get("requested_by")
            if requested and exp.pr_number:
                self.write(
                    repo,
                    w.Comment(
                        number=exp.pr_number,
                        kind="reply",
                        key=f"job-cancelled:{job.id}",
                        body=f"@{requested}: the job your command queued (job {job.id}) will not "
                        f"run: {why}",
                    ),
                )
        return len(jobs)

    def merge(self, repo: Repo, exp: Experiment, *, title: str, check_base: bool = True) -> None:
        """Queue the merge; with `check_base` it lands only if the base is still the measured one.

        It lands at the head the bot measured (`sha=`: a head the bot accepted
        or GitHub reported, never a host's word) and only if the PR's files, as
        GitHub lists them then, keep to the lab's rules — a human `/merge` too.
        """
        if exp.pr_number is None:
            log.warning("experiment %s: no PR to merge", exp.id)
            return
        self.write(repo, w.MarkReady(number=exp.pr_number))
        self.write(
            repo,
            w.Merge(
                number=exp.pr_number,
                sha=exp.head_sha,
                method="squash",
                title=title,
                experiment_id=exp.id,
                base=repo.base_branch,
                base_sha=exp.base_sha if check_base else None,
                editable=list(repo.problem.editable),
                frozen=list(repo.problem.frozen),
                trusted=sorted(diffcheck.trusted_paths(repo.problem)),
            ),
        )

    def merge_in_flight(self, repo: Repo) -> bool:
        """A merge is queued for this repository, or the base it made is not synced yet.

        Merges are serialized per repository: the next candidate is decided
        only on a base the bot has read back after the previous merge.
        """
        pending = self.store.one(
            "SELECT id FROM outbox WHERE repo = ? AND op = ? AND state = 'pending' "
            "AND json_extract(args, '$.base') = ?",
            (repo.full_name, w.Merge.op, repo.base_branch),
        )
        synced = self.store.one("SELECT synced_at FROM repos WHERE id = ?", (repo.id,))
        if repo.tracked:
            synced = self.store.one(
                "SELECT synced_at FROM tracks WHERE repo_id = ? AND name = ?",
                (repo.id, repo.track),
            )
        return bool(pending) or not (synced and synced["synced_at"])

    def decision_comment(
        self, repo: Repo, exp: Experiment, heading: str, text: str, *, key: str
    ) -> None:
        """A comment that states a decision and its real reason (once per key).

        The reason may quote an agent's rationale or a host's GPU kind: it is
        made inert (no HTML, so no forged marker; no mention, image or link).
        """
        if not exp.pr_number:
            return
        body = f"### {heading}\n\n{defang(text)}"
        self.write(repo, w.Comment(number=exp.pr_number, kind="decision", key=key, body=body))

    def decide(
        self,
        exp_id: int,
        verdict: str,
        actor: str,
        rationale: str,
        stats: dict[str, Any] | None = None,
    ) -> int:
        return self.store.insert(
            "decisions",
            {
                "experiment_id": exp_id,
                "verdict": verdict,
                "actor": actor,
                "rationale": rationale,
                "stats": dumps(stats or {}),
                "created_at": now(),
            },
        )

    def mark_base_stale(self, repo: Repo) -> None:
        """A base branch moved: the sync worker re-reads the repository's lines and re-measures.

        The sync reads the default branch and every track's base together, and
        queues a baseline only for the lines whose base moved.
        """
        self.store.execute("UPDATE repos SET synced_at = NULL WHERE id = ?", (repo.id,))
        if repo.tracked:
            self.store.execute(
                "UPDATE tracks SET synced_at = NULL WHERE repo_id = ? AND name = ?",
                (repo.id, repo.track),
            )
        self.publish("repo", id=repo.id, track=repo.track)

    def baseline_problem(self, repo: Repo) -> str | None:
        """Why this line's baseline cannot be measured, when it cannot (else None)."""
        if repo.tracked:
            track = self.store.get(Track, repo.id, repo.track)
            return (track.baseline_problem if track else None) or None
        row = self.store.one("SELECT baseline_problem FROM repos WHERE id = ?", (repo.id,))
        return (row or {}).get("baseline_problem") or None

    def set_baseline_problem(self, repo: Repo, problem: str | None) -> None:
        if repo.tracked:
            self.store.execute(
                "UPDATE tracks SET baseline_problem = ? WHERE repo_id = ? AND name = ?",
                (problem, repo.id, repo.track),
            )
        else:
            self.store.update("repos", repo.id, {"baseline_problem": problem})

    # ------------------------------------------------------------- the queue

    def queue_experiment_job(
        self,
        repo: Repo,
        exp: Experiment,
        *,
        seeds: list[int],
        priority: int | None = None,
        fresh: bool = False,
        actor: str = "bot",
        requested_by: str | None = None,
        onto_base: bool = False,
    ) -> int | None:
        """Queue training (and implementing, when the branch has no implementation yet).

        None when the lifecycle refuses (the experiment is final). While a host
        works on the experiment the new job waits behind it and the state stays.
        `requested_by` names the human whose command queued it (answered if it
        is cancelled); `onto_base` asks the student to bring the hypothesis onto
        the new base (the branch conflicts with it).
        """
        working = self.store.one(
            "SELECT id FROM jobs WHERE experiment_id = ? AND state = 'leased'", (exp.id,)
        )
        if not working and not self.move(repo, exp, "queue", actor):
            return None
        if exp.state in lifecycle.FINAL_STATES:
            return None
        if priority is None:
            priority = HUMAN_PRIORITY if exp.source == "human" else ADVISOR_PRIORITY
        implement = None
        if not exp.implemented or exp.feedback or onto_base:
            implement = {
                "hypothesis": exp.hypothesis,
                "title": exp.title,
                "knobs": exp.knobs,
                "mode": self.implement_mode,
                "feedback": exp.feedback or "",
                "onto_base": onto_base,
            }
        t = now()
        job_id = self.store.insert(
            "jobs",
            {
                "kind": "experiment",
                "repo_id": repo.id,
                "track": repo.track,
                "experiment_id": exp.id,
                "student": exp.student,
                "state": "queued",
                "priority": priority,
                "seeds": dumps(seeds),
                "base_sha": repo.base_sha,
                "payload": dumps(
                    {"implement": implement, "fresh": fresh, "requested_by": requested_by}
                ),
                "created_at": t,
                "updated_at": t,
            },
        )
        self.store.update("experiments", exp.id, {"review_requested": 0})
        self.refresh_status(repo, exp.id)
        self.notify_job_queued(exp.student)
        self.publish("job", id=job_id)
        return job_id

    def queue_baseline(
        self,
        repo: Repo,
        student: str | None = None,
        *,
        seeds: list[int] | None = None,
        again: bool = False,
    ) -> int | None:
        """Queue the baseline of the current base; `again` re-queues failed `seeds`.

        `student`: measure it on that student's hardware (for the gate's hardware class).
        """
        if not repo.base_sha:
            return None
        # A first baseline is queued once per base; a re-queue only waits for one already queued.
        states = "('queued')" if again else "('queued', 'leased', 'done')"
        existing = self.store.one(
            "SELECT id FROM jobs WHERE kind = 'baseline' AND repo_id = ? AND track = ? "
            f"AND base_sha = ? AND state IN {states} AND (? IS NULL OR student IS ?)",
            (repo.id, repo.track, repo.base_sha, student, student),
        )
        if existing:
            return None
        t = now()
        job_id = self.store.insert(
            "jobs",
            {
                "kind": "baseline",
                "repo_id": repo.id,
                "track": repo.track,
                "student": student,
                "state": "queued",
                "priority": BASELINE_PRIORITY,
                "seeds": dumps(
                    seeds if seeds is not None else list(range(repo.problem.baseline_seeds))
                ),
                "base_sha": repo.base_sha,
                "payload": "{}",
                "created_at": t,
                "updated_at": t,
            },
        )
        self.notify_job_queued(student)
        self.publish("job", id=job_id)
        return job_id

    # ----------------------------------------------------------- status view

    def baseline_values(self, repo: Repo) -> list[float]:
        return queries.baseline_values(self.store, repo.id, repo.track, repo.base_sha)

    def candidate_values(self, exp: Experiment) -> list[float]:
        return queries.group_values(self.store, exp.id, exp.head_sha, exp.base_sha)

    def refresh_status(self, repo: Repo, exp_id: int, phase_note: str = "") -> None:
        exp = self.store.get(Experiment, exp_id)
        if exp is None or not exp.pr_number:
            return
        last = self.store.first(Decision, "experiment_id = ?", (exp_id,), order_by="id DESC")
        decision = f"{last.verdict} ({last.actor}): {last.rationale[:300]}" if last else None
        notes = [phase_note] if phase_note else []
        if exp.state not in lifecycle.FINAL_STATES:
            problem = self.baseline_problem(repo)
            if problem:
                notes.append(f"⚠ {problem}")
            if exp.advisor_failures:
                notes.append(
                    f"⚠ the advisor failed {exp.advisor_failures} time(s) on this PR; "
                    "retrying with backoff"
                )
        phase_note = " · ".join(notes)
        body = status_comment(
            state=exp.state,
            student=exp.student,
            hypothesis=exp.hypothesis,
            metric=repo.problem.metric,
            baseline=self.baseline_values(repo),
            candidate=self.candidate_values(exp),
            hold=exp.hold,
            decision=decision,
            phase_note=phase_note,
            track=repo.track if repo.tracked else None,
            base_branch=repo.base_branch,
        )
        self.write(
            repo,
            w.StatusComment(number=exp.pr_number, kind="status", key=str(exp.pr_number), body=body),
        )
