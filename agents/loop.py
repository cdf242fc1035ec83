"""The advisor's two duties in the bot process: propose for idle students, review results.

Agents propose, code decides: the gate (`bot.core.gate.decide`) owns the merge.
The advisor writes hypotheses and rationales and may send a promising-but-
unproven PR back with changes or close a gate-approved one it distrusts, but
it can never merge what the gate refused.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.advisor.contract import Advisor, AdvisorError
from agents.context import AdvisorContext, build_context
from agents.screens import propose_novel
from bot.engine import labs
from bot.engine.engine import ACTIVE_STATES, Engine, Repo
from bot.engine.review import Ask, Opinion, Reviewer
from bot.records import Experiment, Track
from bot.store import now

log = logging.getLogger("kohai.advisor")

STUDENT_SEEN_S = 120.0
MAX_ADVISOR_FAILURES = 3  # then the gate alone decides the review


def advisor_backoff_s(failures: int, start_s: float = 5.0, cap_s: float = 600.0) -> float:
    """How long to wait after the `failures`-th failure in a row: 5 s doubling, capped."""
    return min(cap_s, start_s * 2 ** max(0, failures - 1))


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
        self.reviewer = Reviewer(engine, alpha=alpha)
        self._propose_failures = 0
        self._propose_retry_at = 0.0

    async def step(self) -> None:
        await self.review_pending()
        if self.propose_enabled:
            await self.propose_for_idle()

    # ------------------------------------------------------------ context

    def context(self, repo: Repo) -> AdvisorContext:
        """The advisor's notebook of one lab: a track reads its own program file and history."""
        row = self.store.one("SELECT problem_toml, program_md FROM repos WHERE id = ?", (repo.id,))
        program = (row or {}).get("program_md") or ""
        if repo.tracked:
            line = self.store.get(Track, repo.id, repo.track)
            program = (line.program_md if line else None) or program
        return build_context(
            self.store,
            repo.id,
            repo.problem,
            program,
            (row or {}).get("problem_toml") or "",
            self.plateau_after,
            track=repo.track,
        )

    def _record_failed_call(self, action: str, exp_id: int | None, exc: Exception) -> None:
        """A failed model call is still a call: counted, with whatever it cost.

        A malformed answer carries its paid call (`exc.call`); other errors may
        carry `cost_usd` and token counts themselves.
        """
        call = getattr(exc, "call", None)
        usage = getattr(call, "usage", None)
        with self.store.transaction():
            self.store.insert(
                "advisor_calls",
                {
                    "action": action,
                    "experiment_id": exp_id,
                    "model": getattr(call, "model", "") or getattr(exc, "model", "") or "",
                    "input_tokens": getattr(usage, "input_tokens", 0)
                    or getattr(exc, "input_tokens", 0),
                    "output_tokens": getattr(usage, "output_tokens", 0)
                    or getattr(exc, "output_tokens", 0),
                    "cache_read_tokens": getattr(usage, "cache_read_tokens", 0),
                    "cost_usd": getattr(call, "cost_usd", 0.0) or getattr(exc, "cost_usd", 0.0),
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    "created_at": now(),
                },
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
        """The first running lab (kept for callers that know of one lab only)."""
        running = labs.active_labs(self.store)
        return self.engine.repo_by_id(running[0].repo_id) if running else None

    def _waiting_for_anyone(self, lab: labs.Lab) -> bool:
        """A queued job any student may take: the next free student serves it, no proposal needed."""
        return bool(
            self.store.one(
                "SELECT id FROM jobs WHERE state = 'queued' AND student IS NULL AND repo_id = ? "
                "AND track = ?",
                (lab.repo_id, lab.track),
            )
        )

    def _lab_full(self, lab: labs.Lab) -> bool:
        if not self.max_experiments:
            return False
        total = self.store.count(
            "SELECT COUNT(*) AS n FROM experiments WHERE repo_id = ? AND track = ? "
            "AND source = 'advisor'",
            (lab.repo_id, lab.track),
        )
        return total >= self.max_experiments

    async def propose_for_idle(self) -> int:
        """Propose one experiment for each idle student, in the lab furthest behind its weight.

        Every running lab gets proposals: a student goes to the lab whose GPU
        time (finished, in flight and promised) per unit of weight is smallest
        among the labs it may serve, so no lab is starved. A lab with a job
        waiting for any student gets no new proposal until it is taken.
        """
        running = labs.active_labs(self.store)
        if not running:
            return 0
        weights = {lab.key: lab.weight for lab in running}
        usage = labs.gpu_usage(self.store, include_queued=True)
        opened = 0
        for student in self.idle_students():
            allowed = labs.student_labs(self.store, student)
            candidates = [
                lab
                for lab in running
                if labs.may_serve(allowed, lab.full_name, lab.track) and not self._lab_full(lab)
            ]
            if any(self._waiting_for_anyone(lab) for lab in candidates):
                continue
            key = labs.pick_lab([lab.key for lab in candidates], usage, weights)
            if key is None:
                continue
            lab = next(lab for lab in candidates if lab.key == key)
            repo = self.engine.repo_by_id(lab.repo_id, lab.track)
            if now() < self._propose_retry_at:
                return opened
            try:
                # Novelty (agents/screens.py, bot/core/novelty.py): a repeat goes back once.
                proposal = await propose_novel(
                    self.advisor,
                    self.context(repo),
                    student,
                    on_call=lambda answer: self._record_call("propose", None, answer),
                )
            except AdvisorError as exc:
                self._record_failed_call("propose", None, exc)
                self._propose_failures += 1
                self._propose_retry_at = now() + advisor_backoff_s(self._propose_failures)
                log.warning("advisor could not propose for %s in %s: %s", student, key, exc)
                return opened
            self._propose_failures = 0
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
            # What this lab was just promised counts before the next student chooses.
            usage[key] = usage.get(key, 0.0) + lab.problem.seeds * (
                lab.problem.budget_s + lab.problem.grace_s
            )
            opened += 1
        return opened

    # ------------------------------------------------------------- review

    async def review_pending(self) -> int:
        """Review what is due; the bot (`bot.engine.review`) decides, the advisor gives its opinion."""
        rows = self.reviewer.due()
        for exp in rows:
            await self.review_one(exp)
        return len(rows)

    async def review_one(self, exp: Experiment) -> str:
        ask = self.reviewer.begin(exp)
        if not isinstance(ask, Ask):
            return ask
        opinion: Opinion | None = None
        ctx = self.context(ask.repo)
        record = next((r for r in ctx.history if r.id == exp.id), None)
        if record is not None:
            try:
                review = await self.advisor.review(ctx, record, ask.gate)
            except Exception as exc:  # noqa: BLE001 - any failure is counted and backed off
                self._record_failed_call("review", exp.id, exc)
                failures = self.reviewer.advisor_failed(
                    exp, str(exc), advisor_backoff_s(exp.advisor_failures + 1)
                )
                log.warning(
                    "advisor review of experiment %s failed (%d): %s", exp.id, failures, exc
                )
                if failures < MAX_ADVISOR_FAILURES:
                    return "advisor-failed"
                # After N failures the gate alone decides.
                return self.reviewer.conclude(ask, None)
            self._record_call("review", exp.id, review)
            opinion = Opinion(
                verdict=review.verdict,
                rationale=review.rationale,
                feedback=review.feedback,
                by="gate" if review.mode == "offline" else "advisor",
            )
        return self.reviewer.conclude(ask, opinion)
