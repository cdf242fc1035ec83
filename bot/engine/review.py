"""What happens to an experiment whose results are in: the bot's decisions, in one place.

Agents propose, code decides. The advisor (in `agents/`) only gives an
opinion: merge, close or changes, with a rationale. Everything that follows
from results lives here, next to the lifecycle table: re-running a PR that
was measured on an old base, asking for confirmation seeds, waiting for the
baseline or for a merge in flight, closing with the real reason, and what a
review outcome does. `begin` runs before the advisor is asked and settles
what needs no opinion; `conclude` applies the gate's verdict with the
advisor's opinion (or without it, when the advisor keeps failing), clearing
`review_requested` in the same transaction that records the decision, so an
outage in between leaves the review to be done again, never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bot.core.audit import failed_audit
from bot.core.gate import GateDecision
from bot.engine.engine import Engine, Repo
from bot.engine.evidence import gate_decision, student_on_hardware, verified_diff
from bot.outbox import writes as w
from bot.records import Experiment, Job
from bot.store import now

MAX_CHANGE_ROUNDS = 2
Outcome = Literal["merge", "changes", "close"]


@dataclass(frozen=True)
class Ask:
    """The gate has spoken and the advisor's opinion is wanted before `conclude`."""

    repo: Repo
    experiment: Experiment
    gate: GateDecision


@dataclass(frozen=True)
class Opinion:
    """What an advisor said about a result: a verdict, why, and feedback for changes."""

    verdict: str
    rationale: str = ""
    feedback: str = ""
    by: str = "advisor"  # "advisor" (a model), "gate" (offline: the gate's verdict), or "audit"


def review_outcome(
    gate_verdict: str, opinion: str | None, change_rounds: int, max_rounds: int = MAX_CHANGE_ROUNDS
) -> Outcome:
    """The outcome of a review from the gate's verdict and the advisor's opinion (None: none).

    The gate has the last word on merging: the advisor can close or send back
    what the gate would merge, never merge what it refused. Change requests
    are capped at `max_rounds`; after that the gate's verdict stands.
    """
    if opinion == "changes" and change_rounds < max_rounds:
        return "changes"
    if gate_verdict == "merge" and opinion != "close":
        return "merge"
    return "close"


def gate_reason(rationale: str) -> str:
    """The gate's rationale without its verdict word, to quote under another heading."""
    for prefix in ("Closed: ", "Merge: ", "Promising: "):
        if rationale.startswith(prefix):
            rest = rationale[len(prefix) :]
            return rest[:1].upper() + rest[1:]
    return rationale


class Reviewer:
    """Applies review decisions to the store (every public method is one transaction)."""

    def __init__(self, engine: Engine, *, alpha: float = 0.05) -> None:
        self.engine = engine
        self.store = engine.store
        self.alpha = alpha

    def due(self) -> list[Experiment]:
        """Experiments whose review is requested and whose advisor backoff has passed.

        An experiment whose draft PR is still opening waits: a decision is
        written on its PR.
        """
        return self.store.rows(
            Experiment,
            "state = 'review' AND review_requested = 1 AND pr_number IS NOT NULL "
            "AND advisor_retry_at <= ?",
            (now(),),
            order_by="id",
        )

    # ------------------------------------------------------------- gate

    def candidate(self, exp: Experiment, base_sha: str | None) -> list[float | None]:
        rows = self.store.query(
            "SELECT metric, status FROM runs WHERE experiment_id = ? AND kind = 'candidate' "
            "AND commit_sha IS ? AND base_sha IS ? AND status NOT IN ('cancelled', 'refused') "
            "ORDER BY id",
            (exp.id, exp.head_sha, base_sha),
        )
        return [r["metric"] if r["status"] == "ok" else None for r in rows]

    def gate(self, repo: Repo, exp: Experiment) -> GateDecision:
        return gate_decision(
            self.store,
            repo_id=repo.id,
            base_sha=repo.base_sha,
            track=repo.track,
            problem=repo.problem,
            exp=exp,
            alpha=self.alpha,
        )

    # ------------------------------------------------------------ before

    def begin(self, exp: Experiment) -> Ask | str:
        """Settle what needs no advisor; an `Ask` when the advisor's opinion is wanted."""
        repo = self.engine.repo_by_id(exp.repo_id, exp.track)
        with self.store.transaction():
            fresh = self.store.get(Experiment, exp.id)
            if fresh is None or fresh.state != "review" or not fresh.review_requested:
                return "gone"
            exp = fresh
            if exp.hold:
                self._done(exp)
                return "held"
            if self.engine.merge_in_flight(repo):
                return "wait-merge"  # stays requested: decided once the new base is synced
            if exp.implemented and exp.base_sha and repo.base_sha and exp.base_sha != repo.base_sha:
                self.engine.decide(
                    exp.id,
                    "rerun",
                    "gate",
                    f"Measured on base `{exp.base_sha[:10]}`; the base is now "
                    f"`{repo.base_sha[:10]}`. Re-running on the new base before any decision.",
                )
                self.engine.queue_experiment_job(repo, exp, seeds=list(range(repo.problem.seeds)))
                return "rerun"
            no_runs = self._no_runs_reason(exp)
            if no_runs is not None:
                self._close(repo, exp, "gate", no_runs, heading="Closing")
                return "close"
            gate = self.gate(repo, exp)
            if gate.verdict == "wait":
                self._done(exp)
                problem = self.engine.baseline_problem(repo)
                note = "waiting for the baseline"
                if gate.reason == "baseline hardware" and gate.baseline_hardware:
                    student = student_on_hardware(self.store, exp, gate.baseline_hardware)
                    self.engine.queue_baseline(repo, student=student)
                    note = f"waiting for a baseline on {gate.baseline_hardware}"
                elif problem:
                    note = "the baseline cannot be measured"
                self.engine.refresh_status(repo, exp.id, phase_note=note)
                return "wait"
            if gate.verdict == "confirm":
                self.engine.decide(exp.id, "confirm", "gate", gate.rationale, gate.stats())
                self.engine.queue_experiment_job(
                    repo, exp, seeds=self.engine.next_seeds(exp, gate.seeds_needed)
                )
                return "confirm"
        return Ask(repo, exp, gate)

    def _no_runs_reason(self, exp: Experiment) -> str | None:
        """When the experiment has no measured run at all, the real reason (from its last job)."""
        if self.candidate(exp, exp.base_sha):
            return None
        job = self.store.first(
            Job,
            "experiment_id = ? AND kind = 'experiment' AND state IN ('done', 'failed')",
            (exp.id,),
            order_by="id DESC",
        )
        if job is None:
            return None
        result = job.result or {}
        reason = result.get("reason") or "no reason given"
        status = result.get("status")
        if job.state == "failed":
            return f"Closed: job {job.id} failed for good: {reason}."
        if status == "refused":
            return f"Closed: the run was refused before training: {reason}."
        if status == "implement_failed":
            return f"Closed: the student could not implement the hypothesis: {reason}."
        if status in ("crash", "timeout"):
            return f"Closed: the job ended with {status} before any seed ran: {reason}."
        return None

    # ------------------------------------------------------------- after

    def conclude(self, ask: Ask, opinion: Opinion | None) -> Outcome | str:
        """Apply the review: the gate's verdict with the advisor's opinion (None: the gate alone)."""
        repo, gate = ask.repo, ask.gate
        with self.store.transaction():
            exp = self.store.get(Experiment, ask.experiment.id)
            if exp is None or exp.state != "review":
                return "gone"
            rounds = self.store.count(
                "SELECT COUNT(*) AS n FROM decisions WHERE experiment_id = ? AND verdict = 'changes'",
                (exp.id,),
            )
            # The hypothesis-vs-diff audit (bot/core/audit.py): a merge whose diff also touches what
            # can move the metric goes back with the finding (closes once rounds run out).
            audit = failed_audit(
                verified_diff(self.store, exp),
                exp.hypothesis,
                repo.problem.editable,
                gate.verdict,
                opinion.verdict if opinion else None,
            )
            if audit is not None:
                verdict = "changes" if rounds < MAX_CHANGE_ROUNDS else "close"
                opinion = Opinion(verdict, audit.summary(), audit.summary(), by="audit")
            outcome = review_outcome(gate.verdict, opinion.verdict if opinion else None, rounds)
            actor = "gate" if opinion is None or opinion.by in ("gate", "audit") else "advisor"
            asker = (
                "The hypothesis-vs-diff audit"
                if opinion and opinion.by == "audit"
                else "The advisor"
            )
            advice = (
                f"\n\nAdvisor: {opinion.rationale}"
                if opinion and opinion.by != "gate" and opinion.rationale
                else ""
            )
            if opinion is None and exp.advisor_failures:
                advice = f"\n\nThe advisor failed {exp.advisor_failures} time(s); the gate alone decided."
            if outcome == "merge":
                if self.engine.merge_in_flight(repo):
                    return "wait-merge"
                rationale = gate.rationale + advice
                decision_id = self.engine.decide(exp.id, "merge", actor, rationale, gate.stats())
                self.engine.decision_comment(repo, exp, "Merging", rationale, key=str(decision_id))
                self.engine.merge(repo, exp, title=exp.title)
                self._done(exp)
                return "merge"
            if outcome == "changes":
                assert opinion is not None
                rationale = (
                    f"{asker} asks for changes: {opinion.rationale or 'see the feedback'}"
                    f"\n\nThe numbers so far: {gate_reason(gate.rationale)}"
                )
                decision_id = self.engine.decide(exp.id, "changes", actor, rationale, gate.stats())
                body = rationale + (
                    f"\n\n**Feedback**\n\n{opinion.feedback}" if opinion.feedback else ""
                )
                self.engine.decision_comment(
                    repo, exp, "Changes requested", body, key=str(decision_id)
                )
                self.store.update(
                    "experiments",
                    exp.id,
                    {"feedback": opinion.feedback or opinion.rationale, "advisor_failures": 0},
                )
                fresh = self.store.get(Experiment, exp.id)
                assert fresh is not None
                self.engine.queue_experiment_job(
                    repo, fresh, seeds=list(range(repo.problem.seeds)), actor=actor
                )
                return "changes"
            if gate.verdict == "merge":
                rationale = (
                    f"Closed by {asker[0].lower()}{asker[1:]} although the gate would merge: "
                    f"{(opinion.rationale if opinion else '') or 'no reason given'}"
                    f"\n\nThe numbers: {gate_reason(gate.rationale)}"
                )
            else:
                rationale = gate.rationale + advice
            self._close(repo, exp, actor, rationale, heading="Closing", stats=gate.stats())
            return "close"

    def _close(
        self,
        repo: Repo,
        exp: Experiment,
        actor: str,
        rationale: str,
        *,
        heading: str,
        stats: dict[str, Any] | None = None,
    ) -> None:
        if self.engine.finish(repo, exp, "closed", actor=actor, rationale=rationale, stats=stats):
            self.engine.decision_comment(repo, exp, heading, rationale, key=f"close-{exp.id}")
            if exp.pr_number:
                self.engine.write(repo, w.Close(number=exp.pr_number))
        self._done(exp)

    def _done(self, exp: Experiment) -> None:
        self.store.update(
            "experiments",
            exp.id,
            {"review_requested": 0, "advisor_retry_at": 0, "updated_at": now()},
        )

    # ---------------------------------------------------------- failures

    def advisor_failed(self, exp: Experiment, error: str, backoff_s: float) -> int:
        """Count an advisor failure on this experiment and when to try again; returns the count."""
        with self.store.transaction():
            row = self.store.one("SELECT advisor_failures FROM experiments WHERE id = ?", (exp.id,))
            failures = (row or {}).get("advisor_failures", 0) + 1
            self.store.update(
                "experiments",
                exp.id,
                {"advisor_failures": failures, "advisor_retry_at": now() + backoff_s},
            )
            repo = self.engine.repo_by_id(exp.repo_id, exp.track)
            self.engine.refresh_status(repo, exp.id, phase_note=f"advisor error: {error[:200]}")
        return failures
