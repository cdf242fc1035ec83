"""The bot's screen between the advisor's proposals and the lab.

(The other screen, the hypothesis-vs-diff audit before a merge, is in
`bot.engine.review.Reviewer.conclude`, through `bot.core.audit`.)

- `propose_novel` is what the advisor loop calls instead of `advisor.propose`:
  it asks, screens the answer against the notebook (`bot.core.novelty`), sends a
  repeat back once with the earlier PR named, and returns the proposal to open
  (with the repeat and what is different in its hypothesis, for the PR) or None
  when the advisor insisted on a repeat without saying what is different.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from agents.advisor.contract import Advisor, Proposal
from agents.context import AdvisorContext, ExperimentRecord
from bot.core.novelty import Prior, Screen, screen

log = logging.getLogger("kohai.advisor")


def priors(history: list[ExperimentRecord]) -> list[Prior]:
    """The notebook's experiments as novelty sees them."""
    return [
        Prior(
            label=r.label,
            title=r.title,
            hypothesis=r.hypothesis,
            knobs=dict(r.knobs),
            base_sha=r.base_sha,
        )
        for r in history
    ]


def check(proposal: Proposal, ctx: AdvisorContext, *, sent_back: bool) -> Screen:
    return screen(
        proposal.title,
        proposal.hypothesis,
        proposal.knobs,
        priors(ctx.history),
        base_sha=ctx.base_sha,
        sent_back=sent_back,
        difference=proposal.difference,
    )


async def propose_novel(
    advisor: Advisor,
    ctx: AdvisorContext,
    student: str,
    on_call: Callable[[Proposal], None] = lambda _p: None,
) -> Proposal | None:
    """A proposal that is new, or a repeat that says what is different; None if refused.

    `on_call` sees every answer (each is a model call whose cost is recorded).
    """
    proposal = await advisor.propose(ctx, student)
    on_call(proposal)
    first = check(proposal, ctx, sent_back=False)
    if first.verdict == "accept":
        return proposal
    log.info("proposal for %s sent back: %s", student, first.feedback)
    proposal = await advisor.propose(replace(ctx, sent_back=first.feedback), student)
    on_call(proposal)
    second = check(proposal, ctx, sent_back=True)
    if second.verdict == "refuse":
        log.warning("proposal for %s refused: %s", student, second.feedback)
        return None
    if second.note:
        return replace(proposal, hypothesis=f"{proposal.hypothesis.rstrip()}\n\n{second.note}")
    return proposal
