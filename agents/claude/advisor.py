"""The Claude advisor: proposes hypotheses and reviews results through the Messages API.

Every call forces a tool (`propose_experiment` or `review_experiment`), so the
answer is structured; its cost is computed from the usage the API reports and
recorded on the Proposal or Review (and in `calls`). The SDK retries
overloaded and rate-limited requests itself; what still fails becomes an
`AdvisorError`, which the bot logs and survives. The merge gate keeps the last
word: a review never merges what the gate did not (`verdicts.reconcile`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic

from agents.advisor.contract import AdvisorError, Proposal, Review
from agents.claude import messages, tools
from agents.claude.pricing import Usage, cost_usd, usage_from
from agents.claude.verdicts import feedback_with_failure, reconcile
from agents.context import AdvisorContext, ExperimentRecord
from bot.core.gate import GateDecision

DEFAULT_MODEL = "claude-sonnet-5-5"
MODEL_ENV = "KOHAI_ADVISOR_MODEL"


@dataclass(frozen=True)
class CallRecord:
    """One Messages API call: what it was for, what it used, what it cost."""

    action: str  # propose | review
    model: str
    usage: Usage
    cost_usd: float
    request_id: str | None


class ClaudeAdvisor:
    """`make_advisor(api_key, model=..., stream=...)` builds one; see `agents.advisor.Advisor`.

    `model` defaults to `KOHAI_ADVISOR_MODEL`, else a current Sonnet; `base_url`
    to the SDK's own default (`ANTHROPIC_BASE_URL`, else the public API).
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str | None = None,
        base_url: str | None = None,
        max_tokens: int = 2048,
        stream: bool = False,
        max_retries: int = 4,
        timeout_s: float = 120.0,
        **_: Any,
    ) -> None:
        self.model = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
        self.max_tokens = max_tokens
        self.stream = stream
        self.calls: list[CallRecord] = []
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_s
        )

    @property
    def total_cost_usd(self) -> float:
        return sum(call.cost_usd for call in self.calls)

    async def propose(self, ctx: AdvisorContext, student: str) -> Proposal:
        question = messages.propose_question(ctx, student)
        fields, call = await self._ask(ctx, question, tools.PROPOSE, tools.parse_proposal)
        return Proposal(**fields, mode="claude", **_accounting(call))

    async def review(
        self, ctx: AdvisorContext, experiment: ExperimentRecord, gate: GateDecision
    ) -> Review:
        question = messages.review_question(ctx, experiment, gate)
        fields, call = await self._ask(ctx, question, tools.REVIEW, tools.parse_review)
        decided = reconcile(fields["verdict"], gate, experiment)
        rationale = fields["rationale"]
        if decided.overruled:
            rationale = f"{rationale}\n\n{decided.note}"
        feedback = fields["feedback"]
        if decided.verdict == "changes":
            feedback = feedback_with_failure(feedback or fields["rationale"], experiment)
        return Review(
            verdict=decided.verdict,
            rationale=rationale,
            feedback=feedback,
            mode="claude",
            **_accounting(call),
        )

    async def close(self) -> None:
        await self.client.close()

    async def _ask(
        self,
        ctx: AdvisorContext,
        question: str,
        tool: str,
        parse: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> tuple[dict[str, Any], CallRecord]:
        """Call the API forcing `tool`; its parsed input, and what the call cost.

        A malformed answer raises `MalformedAnswer` with `.call` set, so a
        caller can still account for the tokens it spent.
        """
        action = "propose" if tool == tools.PROPOSE else "review"
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": messages.system_blocks(ctx),
            "tools": tools.TOOLS,
            "tool_choice": {"type": "tool", "name": tool},
            "messages": [{"role": "user", "content": question}],
        }
        try:
            if self.stream:
                async with self.client.messages.stream(**params) as stream:
                    response = await stream.get_final_message()
            else:
                response = await self.client.messages.create(**params)
        except anthropic.APIStatusError as exc:
            raise AdvisorError(
                f"Anthropic API refused the {action} call ({exc.status_code}): {exc.message}"
            ) from exc
        except anthropic.APIError as exc:
            raise AdvisorError(f"Anthropic API {action} call failed: {exc}") from exc
        usage = usage_from(response.usage)
        model = response.model or self.model
        call = CallRecord(
            action=action,
            model=model,
            usage=usage,
            cost_usd=cost_usd(model, usage),
            request_id=getattr(response, "_request_id", None),
        )
        self.calls.append(call)  # recorded before parsing: a malformed answer still cost money
        try:
            if response.stop_reason == "max_tokens":
                raise tools.MalformedAnswer(
                    f"the {tool} answer was cut off at max_tokens={self.max_tokens}"
                )
            return parse(tools.tool_input(response.content, tool)), call
        except tools.MalformedAnswer as exc:
            exc.call = call
            raise


def _accounting(call: CallRecord) -> dict[str, Any]:
    return {
        "cost_usd": call.cost_usd,
        "input_tokens": call.usage.input_tokens + call.usage.cache_write_tokens,
        "output_tokens": call.usage.output_tokens,
        "cache_read_tokens": call.usage.cache_read_tokens,
        "model": call.model,
    }
