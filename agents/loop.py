"""The advisor's two duties in the bot process: propose for idle students, review results.

Agents propose, code decides: the gate (`bot.gate.decide`) owns the merge.
The advisor writes hypotheses and rationales and may send a promising-but-
unproven PR back with changes or close a gate-approved one it distrusts, but
it can never merge what the gate refused.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.advisor import Advisor, AdvisorError
from agents.context import AdvisorContext, build_context
from agents.screens import audited, propose_novel
from bot.engine import ACTIVE_STATES, Engine, Repo
from bot.gate import GateDecision, decide
from bot.store import now

log = logging.getLogger("kohai.advisor")

STUDENT_SEEN_S = 120.0
MAX_CHANGE_ROUNDS = 2


class AdvisorLoop:
    def __init__(
        self,
        engine: Engine,
        advisor: Advisor,
        *,
        alpha: float = 0.05,
        plateau_after: int = 5,
        max_experiments: int = 0,
        propose: bool = True,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.advisor = advisor
        self.alpha = alpha
        self.plateau_after = plateau_after
        self.max_experiments = max_experiments
        self.propose_enabled = propose

    async def step(self) -> None:
        await self.review_pending()
        if self.propose_enabled:
            await self.propose_for_idle()

    # ------------------------------------------------------------ context

    def context(self, repo: Repo) -> AdvisorContext:
        row = self.store.one("SELECT problem_toml, program_md FROM repos WHERE id = ?", (repo.id,))
        return build_context(
            self.store,
            repo.id,
            repo.problem,
            (row or {}).get("program_md") or "",
            (row or {}).get("problem_toml") or "",
            self.plateau_after,
        )

    def _record_call(self, action: str, exp_id: int | None, answer: Any) -> None:
        with self.store.transaction():
            self.store.insert(
                "advisor_calls",
                {
                    "action": action,
                    "experiment_id": exp_id,
                    "model": getattr(answer, "model", "") or getattr(answer, "mode", ""),
                    "input_tokens": getattr(answer, "input_tokens", 0),
                    "output_tokens": getattr(answer, "output_tokens", 0),
                    "cache_read_tokens": getattr(answer, "cache_read_tokens", 0),
                    "cost_usd": getattr(answer, "cost_usd", 0.0),
                    "created_at": now(),
                },
            )

    # ------------------------------------------------------------ propose

    def idle_students(self) -> list[str]:
        """Students whose host is connected, with no active experiment and nothing queued for them."""
        rows = self.store.query(
            "SELECT name FROM students s WHERE last_seen > ? AND NOT EXISTS ("
            f" SELECT 1 FROM experiments e WHERE e.student = s.name AND e.state IN ({','.join('?' * len(ACTIVE_STATES))})"
            ") AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.state IN ('queued', 'leased') "
            " AND (j.student = s.name OR j.leased_by = s.name)) ORDER BY name",
            (now() - STUDENT_SEEN_S, *ACTIVE_STATES),
        )
        return [r["name"] for r in rows]

    def _target_repo(self) -> Repo | None:
        row = self.store.one(
            "SELECT id FROM repos WHERE active = 1 AND problem_toml IS NOT NULL AND base_sha IS NOT NULL "
            "ORDER BY id LIMIT 1"
        )
        return self.engine.repo_by_id(row["id"]) if row else None

    async def propose_for_idle(self) -> int:
        repo = self._target_repo()
        if repo is None:
            return 0
        # Waiting experiments of "any" student will be taken by the next free one.
        if self.store.one(
            "SELECT id FROM jobs WHERE state = 'queued' AND student IS NULL AND repo_id = ?",
            (repo.id,),
        ):
            return 0
        opened = 0
        for student in self.idle_students():
            if self.max_experiments:
                total = self.store.one(
                    "SELECT COUNT(*) AS n FROM experiments WHERE repo_id = ? AND source = 'advisor'",
                    (repo.id,),
                )["n"]
                if total >= self.max_experiments:
                    return opened
            try:
                # Novelty (agents.screens.py, bot/novelty.py): a repeat goes back once.
                proposal = await propose_novel(
                    self.advisor,
                    self.context(repo),
                    student,
                    on_call=lambda answer: self._record_call("propose", None, answer),
                )
            except AdvisorError as exc:
                log.warning("advisor could not propose for %s: %s", student, exc)
                return opened
            if proposal is None:  # a repeat that did not say what is different
                continue
            hypothesis = proposal.hypothesis.strip()
            if proposal.rationale.strip():
                hypothesis += f"\n\n**Why**: {proposal.rationale.strip()}"
            with self.store.transaction():
                self.engine.open_experiment(
                    repo,
                    title=proposal.title,
                    hypothesis=hypothesis,
                    student=student,
                    source="advisor",
                    knobs=proposal.knobs,
                )
            opened += 1
        return opened

    # ------------------------------------------------------------- review

    async def review_pending(self) -> int:
        rows = self.store.query(
            "SELECT * FROM experiments WHERE state = 'review' AND review_requested = 1 ORDER BY id"
        )
        for exp in rows:
            try:
                await self.review_one(exp)
            except AdvisorError as exc:
                log.warning("advisor review of experiment %s failed: %s", exp["id"], exc)
        return len(rows)

    def _candidate(self, exp: dict[str, Any], base_sha: str | None) -> list[float | None]:
        rows = self.store.query(
            "SELECT metric, status FROM runs WHERE experiment_id = ? AND kind = 'candidate' "
            "AND commit_sha IS ? AND base_sha IS ? ORDER BY id",
            (exp["id"], exp["head_sha"], base_sha),
        )
        return [r["metric"] if r["status"] == "ok" else None for r in rows]

    async def review_one(self, exp: dict[str, Any]) -> str:
        repo = self.engine.repo_by_id(exp["repo_id"])
        problem = repo.problem
        with self.store.transaction():
            self.store.update("experiments", exp["id"], {"review_requested": 0})
        if exp["hold"]:
            return "held"
        if (
            exp["implemented"]
            and exp["base_sha"]
            and repo.base_sha
            and exp["base_sha"] != repo.base_sha
        ):
            with self.store.transaction():
                self.engine.decide(
                    exp["id"],
                    "rerun",
                    "gate",
                    f"Measured on base `{exp['base_sha'][:10]}`; the base is now `{repo.base_sha[:10]}`. "
                    "Re-running on the new base before any decision.",
                )
                self.engine.queue_experiment_job(repo, exp, seeds=list(range(problem.seeds)))
            return "rerun"
        candidate = self._candidate(exp, exp["base_sha"])
        gate = decide(
            candidate,
            self.engine.baseline_values(repo),
            minimize=problem.minimize,
            confirm_seeds=problem.confirm_seeds,
            baseline_seeds=problem.baseline_seeds,
            alpha=self.alpha,
        )
        if gate.verdict == "wait":
            with self.store.transaction():
                self.engine.refresh_status(repo, exp["id"], phase_note="waiting for the baseline")
            return "wait"
        if gate.verdict == "confirm":
            with self.store.transaction():
                self.engine.decide(exp["id"], "confirm", "gate", gate.rationale, gate.stats())
                self.engine.queue_experiment_job(
                    repo, exp, seeds=self.engine.next_seeds(exp, gate.seeds_needed)
                )
            return "confirm"
        ctx = self.context(repo)
        record = next((r for r in ctx.history if r.id == exp["id"]), None)
        if record is None:
            return "missing"
        review = await self.advisor.review(ctx, record, gate)
        self._record_call("review", exp["id"], review)
        return self._act(repo, exp, gate, review)

    def _act(self, repo: Repo, exp: dict[str, Any], gate: GateDecision, review: Any) -> str:
        # Hypothesis-vs-diff audit (agents/screens.py, bot/audit.py): a diff that also
        # touches what can move the metric goes back with the finding instead of merging.
        review = audited(self.store, exp, gate, review)
        actor = "gate" if review.mode == "offline" else "advisor"
        with self.store.transaction():
            if gate.verdict == "merge" and review.verdict == "merge":
                rationale = gate.rationale
                if actor == "advisor" and review.rationale:
                    rationale += f"\n\nAdvisor: {review.rationale}"
                decision_id = self.engine.decide(exp["id"], "merge", actor, rationale, gate.stats())
                self._comment(repo, exp, decision_id, "Merging", rationale)
                self.engine.merge(repo, exp, title=exp["title"])
                return "merge"
            rounds = self.store.one(
                "SELECT COUNT(*) AS n FROM decisions WHERE experiment_id = ? AND verdict = 'changes'",
                (exp["id"],),
            )["n"]
            if review.verdict == "changes" and rounds < MAX_CHANGE_ROUNDS:
                rationale = f"{gate.rationale}\n\nAdvisor: {review.rationale}"
                decision_id = self.engine.decide(
                    exp["id"], "changes", actor, rationale, gate.stats()
                )
                self._comment(
                    repo, exp, decision_id, "Changes requested", f"{rationale}\n\n{review.feedback}"
                )
                self.store.update(
                    "experiments", exp["id"], {"feedback": review.feedback or review.rationale}
                )
                fresh = self.store.one("SELECT * FROM experiments WHERE id = ?", (exp["id"],))
                self.engine.queue_experiment_job(repo, fresh, seeds=list(range(repo.problem.seeds)))
                return "changes"
            rationale = gate.rationale
            if actor == "advisor" and review.rationale:
                rationale += f"\n\nAdvisor: {review.rationale}"
            self._comment(repo, exp, None, "Closing", rationale)
            self.engine.finish(repo, exp, "closed", actor=actor, rationale=rationale)
            self.engine._write(repo, "close", number=exp["pr_number"])
            return "close"

    def _comment(
        self, repo: Repo, exp: dict[str, Any], decision_id: int | None, heading: str, text: str
    ) -> None:
        key = decision_id or f"close-{exp['id']}"
        self.engine._write(
            repo,
            "comment",
            number=exp["pr_number"],
            kind="decision",
            key=str(key),
            body=f"### {heading}\n\n{text}",
        )
