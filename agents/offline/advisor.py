"""The offline advisor: one knob (or declared group) per PR from the incumbent; the gate reviews.

It keeps no state of its own. Every call reads the incumbent's knob values from
the base's editable files (stored by the bot at each sync) and plans a one-knob
move with a model of the stored history (`agents.offline.moves`), so it
resumes after a restart exactly where it was and the same history always yields
the same proposal. Two students asking at once get different moves: the first
proposal is an experiment in flight by the time the second is planned.
"""

from __future__ import annotations

from agents.advisor.contract import AdvisorError, Proposal, Review
from agents.context import AdvisorContext, ExperimentRecord
from agents.offline.moves import Move, incumbent_values, noise_unit, plan
from bot.core.gate import GateDecision


class OfflineAdvisor:
    """Proposes one-knob or one-group moves over `[search]`; reviews by the gate's verdict alone."""

    def __init__(self, seed: int = 0) -> None:
        # The plan is deterministic; the seed is kept for the advisor factory's signature.
        self.seed = seed

    async def propose(self, ctx: AdvisorContext, student: str) -> Proposal:
        return self.suggest(ctx, student)

    async def review(
        self, ctx: AdvisorContext, experiment: ExperimentRecord, gate: GateDecision
    ) -> Review:
        """Offline, the numbers are the whole review: merge what the gate merges, close the rest.

        The bot asks for a review once the gate has a final verdict (merge or
        close); "changes" needs an author of changes, which offline there is not.
        """
        return Review(
            verdict="merge" if gate.verdict == "merge" else "close",
            rationale=gate.rationale,
            mode="offline",
        )

    def suggest(self, ctx: AdvisorContext, student: str) -> Proposal:
        """The synchronous core of `propose`: deterministic for a history."""
        problem = ctx.problem
        if not problem.knobs:
            raise AdvisorError(
                "the offline advisor searches the knobs declared in kohai.toml [search], "
                "and this problem declares none"
            )
        incumbent = incumbent_values(problem, ctx.base_files)
        noise = noise_unit(ctx.baseline_std, ctx.baseline_mean)
        moves = plan(
            problem, incumbent, ctx.history, noise=noise, widen_level=1 if ctx.plateau else 0
        )
        if not moves:
            raise AdvisorError(
                "every one-knob move from the incumbent has been tried, up to the widest step; "
                "a human hypothesis (an issue labelled student:any) can take the lab further"
            )
        return self._proposal(ctx, moves[0], plateau=ctx.plateau)

    def _proposal(self, ctx: AdvisorContext, move: Move, *, plateau: bool) -> Proposal:
        p = ctx.problem

        def was(name: str) -> str:
            value = move.incumbent.get(name)
            return "unset" if value is None else f"{value!r}"

        sets = ", ".join(
            f"{name} = {value!r} (the base has {name} = {was(name)})"
            for name, value in move.values.items()
        )
        if move.group:
            lines = [
                f"Move the group {move.unit} together: set {sets}; change nothing else. "
                f"The knobs of {move.unit} are one hypothesis, tested in one PR."
            ]
        else:
            lines = [f"Set {sets}; change nothing else."]
        if move.note:
            lines.append(f"({move.note}: the move starts from the middle of its range.)")
        if ctx.baseline_mean is not None:
            lines.append(f"Current baseline: {p.metric} = {ctx.baseline_mean:.4g}.")
        size = f"{move.step:.3g} of its declared range"
        what = f"The group {move.unit}" if move.group else move.unit
        why = [
            f"{what} has the best expected gain of the knobs and groups ({move.gain:+.2f} "
            "sigma: the mean improvement of its moves so far, shrunk towards +1 sigma for one "
            "not yet tried)."
        ]
        if move.toward_middle:
            why.append(f"The move ({size}) goes towards the middle of the declared range.")
        else:
            why.append(f"The move is {size}.")
        if plateau:
            why.append(
                f"The lab is on a plateau ({ctx.experiments_since_improvement} experiments "
                "without a merge), so moves are wider."
            )
        changes = ", ".join(
            f"{name} = {value!r} (from {was(name)})" for name, value in move.values.items()
        )
        return Proposal(
            title=(f"{move.unit}: {changes}" if move.group else changes)[:120],
            hypothesis=" ".join(lines),
            knobs=dict(move.values),
            rationale=" ".join(why),
            mode="offline",
        )
