"""The novelty screen between the advisor and a new experiment, over a real store."""

from __future__ import annotations

from dataclasses import dataclass, field

from support.scripted_anthropic import ScriptedAnthropic, tool_use

from agents.advisor import Proposal, make_advisor
from agents.context import AdvisorContext, build_context
from agents.offline.advisor import OfflineAdvisor
from agents.screens import propose_novel
from bot.problem import Problem
from bot.store import Store

REPEAT = Proposal(
    title="Try LEARNING_RATE=0.01",
    hypothesis="Set LEARNING_RATE = 0.01.",
    knobs={"LEARNING_RATE": 0.01},
    rationale="r",
    mode="claude",
)


@dataclass
class ScriptedAdvisor:
    """Answers from a list and keeps the contexts it was asked with."""

    answers: list[Proposal]
    asked: list[AdvisorContext] = field(default_factory=list)

    async def propose(self, ctx: AdvisorContext, student: str) -> Proposal:
        self.asked.append(ctx)
        return self.answers.pop(0)

    async def review(self, ctx, experiment, gate):
        raise AssertionError("these tests only ask for proposals; a review here is a bug")


def _notebook(store: Store, repo_id: int, problem: Problem, add_experiment) -> AdvisorContext:
    add_experiment({"LEARNING_RATE": 0.01}, [1.2], pr_number=12, title="Try LEARNING_RATE=0.01")
    return build_context(store, repo_id, problem, "", "")


async def test_a_new_proposal_passes_untouched(
    store: Store, repo_id: int, problem: Problem, add_experiment
) -> None:
    ctx = _notebook(store, repo_id, problem, add_experiment)
    fresh = Proposal("Try N_LAYER=3", "Set N_LAYER = 3.", {"N_LAYER": 3}, "r", "claude")
    advisor = ScriptedAdvisor([fresh])
    calls: list[Proposal] = []
    assert await propose_novel(advisor, ctx, "fern", on_call=calls.append) == fresh
    assert calls == [fresh] and advisor.asked[0].sent_back == ""


async def test_a_repeat_is_sent_back_once_naming_the_earlier_pr(
    store: Store, repo_id: int, problem: Problem, add_experiment
) -> None:
    ctx = _notebook(store, repo_id, problem, add_experiment)
    other = Proposal("Try N_LAYER=1", "Set N_LAYER = 1.", {"N_LAYER": 1}, "r", "claude")
    advisor = ScriptedAdvisor([REPEAT, other])
    calls: list[Proposal] = []
    assert await propose_novel(advisor, ctx, "fern", on_call=calls.append) == other
    assert len(calls) == 2  # both model calls are recorded
    assert "#12" in advisor.asked[1].sent_back


async def test_a_repeat_still_wanted_must_say_what_differs(
    store: Store, repo_id: int, problem: Problem, add_experiment
) -> None:
    ctx = _notebook(store, repo_id, problem, add_experiment)
    silent = ScriptedAdvisor([REPEAT, REPEAT])
    assert await propose_novel(silent, ctx, "fern") is None
    explained = Proposal(**{**REPEAT.__dict__, "difference": "#12 ran with a broken warmup."})
    insisting = ScriptedAdvisor([REPEAT, explained])
    accepted = await propose_novel(insisting, ctx, "fern")
    assert accepted is not None
    assert accepted.hypothesis.startswith("Set LEARNING_RATE = 0.01.")
    assert "**Repeats #12** (the same knob values). What is different: #12 ran with a broken" in (
        accepted.hypothesis
    )


async def test_the_offline_advisor_never_repeats(
    store: Store, repo_id: int, problem: Problem, add_experiment
) -> None:
    """Its plan skips what was tried, so its first answer always passes the screen."""
    for _ in range(4):
        ctx = build_context(store, repo_id, problem, "", "")
        calls: list[Proposal] = []
        proposal = await propose_novel(OfflineAdvisor(), ctx, "fern", on_call=calls.append)
        assert proposal is not None and len(calls) == 1
        add_experiment(proposal.knobs, [1.0])


async def test_the_claude_advisor_is_told_and_answers_with_the_difference(
    store: Store, repo_id: int, problem: Problem, add_experiment
) -> None:
    """Through the real SDK on loopback: the sent-back note is in the question, and the
    `difference` field of propose_experiment reaches the PR text."""
    ctx = _notebook(store, repo_id, problem, add_experiment)
    repeat = {
        "title": "Try LEARNING_RATE=0.01",
        "hypothesis": "Set LEARNING_RATE = 0.01.",
        "knobs": {"LEARNING_RATE": 0.01},
        "rationale": "It is the obvious next step.",
    }
    again = {**repeat, "difference": "This time with 3 seeds on the new data split."}
    replies = [tool_use("propose_experiment", repeat), tool_use("propose_experiment", again)]
    with ScriptedAnthropic(replies) as api:
        advisor = make_advisor(
            "test-key", engine="messages", base_url=api.url, stream=False, max_retries=0
        )
        proposal = await propose_novel(advisor, ctx, "fern")
        second = api.requests[1].body["messages"][0]["content"]
    assert "**Sent back**: This proposal repeats #12" in str(second)
    assert proposal is not None and proposal.difference.startswith("This time with 3 seeds")
    assert "What is different: This time with 3 seeds" in proposal.hypothesis
