"""The advisor's contract: propose a hypothesis for an idle student, review a finished one.

Implementations import this module, never the package's factory, so that the
factory may import them without a cycle.

Two implementations stand behind it: an offline Bayesian search over the
problem's declared knobs (`agents.offline.advisor`), and a Claude advisor
(`agents.claude.advisor`) used when an Anthropic key is configured. The bot
only ever talks to the `Advisor` protocol, and the merge gate has the last word
over either: a review can close what the gate would merge, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from agents.context import AdvisorContext, ExperimentRecord
from bot.core.gate import GateDecision

AdvisorMode = Literal["offline", "claude"]
ReviewVerdict = Literal["merge", "close", "changes"]


class AdvisorError(RuntimeError):
    """The advisor cannot produce an answer (nothing to search, the model failed, ...)."""


@dataclass
class Proposal:
    """A hypothesis for one student: the PR title and body, and knob values to set (offline).

    `mode` tells the student how to implement it: "offline" sets `knobs` in the
    editable files; "claude" hands the hypothesis to the coding agent.
    """

    title: str
    hypothesis: str
    knobs: dict[str, Any]
    rationale: str
    mode: AdvisorMode
    difference: str = ""  # for a repeat it still wants: what is different (bot.core.novelty)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    model: str = ""


@dataclass
class Review:
    """The advisor's verdict on a finished experiment, and feedback for "changes"."""

    verdict: ReviewVerdict
    rationale: str
    feedback: str = ""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    model: str = ""
    mode: AdvisorMode = "offline"


@runtime_checkable
class Advisor(Protocol):
    """What the bot's advisor worker calls; both methods may raise `AdvisorError`."""

    async def propose(self, ctx: AdvisorContext, student: str) -> Proposal: ...

    async def review(
        self, ctx: AdvisorContext, experiment: ExperimentRecord, gate: GateDecision
    ) -> Review: ...
