"""The Claude advisor, through the real anthropic SDK, against a scripted Messages API."""

from __future__ import annotations

import pytest
from support.research import CONFIG_TOML, PROGRAM_MD, gate_decision, make_context, record
from support.scripted_anthropic import Reply, ScriptedAnthropic, error, text, tool_use

from agents.advisor import AdvisorError, Proposal, Review, make_advisor
from agents.claude.advisor import DEFAULT_MODEL, ClaudeAdvisor
from agents.claude.pricing import PRICES
from agents.claude.tools import MalformedAnswer

PROPOSAL = {
    "title": "Tie input and output embeddings",
    "hypothesis": "In train.py, share the token embedding with the output head.",
    "knobs": {"N_LAYER": 3},
    "rationale": "Depth helped (#2); tying frees parameters for it.",
}


def advisor(api: ScriptedAnthropic, *, stream: bool, model: str = DEFAULT_MODEL) -> ClaudeAdvisor:
    built = make_advisor(
        "test-key", engine="messages", base_url=api.url, stream=stream, model=model, max_retries=2
    )
    assert isinstance(built, ClaudeAdvisor)
    return built


def expected_cost(model: str, inp: int, out: int, read: int = 0, write: int = 0) -> float:
    p = PRICES[model]
    return (inp * p.input + out * p.output + read * p.cache_read + write * p.cache_write) / 1e6


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_propose_parses_the_forced_tool_call_and_records_cost(stream: bool) -> None:
    reply = tool_use(
        "propose_experiment",
        PROPOSAL,
        say="Looking at the history...",
        input_tokens=1200,
        output_tokens=180,
        cache_read_input_tokens=900,
        cache_creation_input_tokens=0,
    )
    with ScriptedAnthropic([reply]) as api:
        proposal = await advisor(api, stream=stream).propose(make_context(), "fern")

    assert isinstance(proposal, Proposal)
    assert proposal.mode == "claude"
    assert proposal.title == PROPOSAL["title"]
    assert proposal.hypothesis == PROPOSAL["hypothesis"]
    assert proposal.knobs == {"N_LAYER": 3}
    assert proposal.rationale == PROPOSAL["rationale"]
    assert (proposal.input_tokens, proposal.output_tokens) == (1200, 180)
    assert proposal.cache_read_tokens == 900
    assert proposal.model == DEFAULT_MODEL
    assert proposal.cost_usd == pytest.approx(expected_cost(DEFAULT_MODEL, 1200, 180, read=900))

    [request] = api.requests
    body = request.body
    assert request.path.startswith("/v1/messages")
    credentials = {request.headers.get("x-api-key"), request.headers.get("authorization")}
    assert credentials & {"test-key", "Bearer test-key"}
    assert bool(body.get("stream")) is stream
    assert body["model"] == DEFAULT_MODEL
    assert body["tool_choice"] == {"type": "tool", "name": "propose_experiment"}
    assert [t["name"] for t in body["tools"]] == ["propose_experiment", "review_experiment"]
    assert body["tools"][0]["input_schema"]["required"] == [
        "title",
        "hypothesis",
        "knobs",
        "rationale",
    ]
    # The stable prefix: the rules, then program.md + kohai.toml carrying the cache breakpoint.
    rules, brief = body["system"]
    assert "not negotiable" in rules["text"] and "cache_control" not in rules
    assert brief["cache_control"] == {"type": "ephemeral"}
    assert PROGRAM_MD.strip() in brief["text"] and CONFIG_TOML.strip() in brief["text"]
    # The volatile part: the history and the task, in the user message, without the brief.
    [message] = body["messages"]
    question = message["content"]
    assert message["role"] == "user"
    assert "Use three layers" in question and "student `fern`" in question
    assert PROGRAM_MD.strip() not in question
    assert "plateau" not in question.lower().replace("(plateau", "")


async def test_stable_prefix_is_byte_identical_across_propose_and_review() -> None:
    script = [
        tool_use("propose_experiment", PROPOSAL),
        tool_use(
            "review_experiment", {"verdict": "merge", "rationale": "Clear win.", "feedback": ""}
        ),
    ]
    ctx = make_context()
    with ScriptedAnthropic(script) as api:
        claude = advisor(api, stream=False)
        await claude.propose(ctx, "fern")
        winner = record(4, "Tie embeddings", "review", 2.15)
        await claude.review(ctx, winner, gate_decision("merge"))

    first, second = (r.body for r in api.requests)
    assert first["system"] == second["system"]
    assert first["tools"] == second["tools"]
    assert second["tool_choice"] == {"type": "tool", "name": "review_experiment"}
    assert len(claude.calls) == 2 and [c.action for c in claude.calls] == ["propose", "review"]
    assert claude.total_cost_usd == pytest.approx(sum(c.cost_usd for c in claude.calls))


async def test_the_model_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOHAI_ADVISOR_MODEL", "claude-opus-4-6")
    reply = tool_use("propose_experiment", PROPOSAL, input_tokens=1000, output_tokens=100)
    with ScriptedAnthropic([reply]) as api:
        claude = make_advisor("test-key", engine="messages", base_url=api.url)
        proposal = await claude.propose(make_context(), "fern")
    assert api.requests[0].body["model"] == "claude-opus-4-6"
    assert proposal.model == "claude-opus-4-6"
    assert proposal.cost_usd == pytest.approx(expected_cost("claude-opus-4-6", 1000, 100))


async def test_plateau_asks_for_a_different_kind_of_change() -> None:
    ctx = make_context(plateau=True, experiments_since_improvement=7)
    with ScriptedAnthropic([tool_use("propose_experiment", PROPOSAL)]) as api:
        await advisor(api, stream=True).propose(ctx, "frieren")
    question = api.requests[0].body["messages"][0]["content"]
    assert "plateau" in question and "7 experiments" in question
    assert "different kind" in question


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_review_agrees_with_a_gate_merge(stream: bool) -> None:
    answer = {"verdict": "merge", "rationale": "2.15 vs 2.20, p=0.01.", "feedback": ""}
    reply = tool_use(
        "review_experiment",
        answer,
        input_tokens=800,
        output_tokens=60,
        cache_creation_input_tokens=1500,
    )
    experiment = record(4, "Tie embeddings", "review", 2.15)
    with ScriptedAnthropic([reply]) as api:
        review = await advisor(api, stream=stream).review(
            make_context(), experiment, gate_decision("merge")
        )
    assert isinstance(review, Review)
    assert (review.verdict, review.mode) == ("merge", "claude")
    assert review.rationale == "2.15 vs 2.20, p=0.01."
    assert review.input_tokens == 800 + 1500  # cache writes are billed input
    assert review.cost_usd == pytest.approx(expected_cost(DEFAULT_MODEL, 800, 60, write=1500))
    question = api.requests[0].body["messages"][0]["content"]
    assert "#4" in question and "Tie embeddings" in question
    assert "p-value (one-sided Welch): 0.01" in question


async def test_gate_vetoes_a_claude_merge() -> None:
    """Claude says merge, the gate says close: the review is not a merge."""
    answer = {"verdict": "merge", "rationale": "Looks slightly better.", "feedback": ""}
    experiment = record(5, "Warmup 50 steps", "review", 2.198)
    with ScriptedAnthropic([tool_use("review_experiment", answer)]) as api:
        review = await advisor(api, stream=False).review(
            make_context(), experiment, gate_decision("close")
        )
    assert review.verdict == "close"
    assert "Looks slightly better." in review.rationale
    assert "only the gate can merge" in review.rationale
    question = api.requests[0].body["messages"][0]["content"]
    assert "Only the gate can merge" in question


async def test_gate_veto_on_a_crash_becomes_a_change_request_carrying_the_log() -> None:
    answer = {"verdict": "merge", "rationale": "Promising idea.", "feedback": ""}
    crashed = record(
        6,
        "Wider MLP",
        "review",
        None,
        n_failed=1,
        failure="crash: exit code 1\nRuntimeError: shape mismatch (64 vs 96)",
    )
    gate = gate_decision("close", candidate_mean=None, n_candidate=0, n_failed=1)
    with ScriptedAnthropic([tool_use("review_experiment", answer)]) as api:
        review = await advisor(api, stream=True).review(make_context(), crashed, gate)
    assert review.verdict == "changes"
    assert "RuntimeError: shape mismatch" in review.feedback
    assert "shape mismatch" in api.requests[0].body["messages"][0]["content"]


async def test_claude_may_close_what_the_gate_would_merge() -> None:
    answer = {"verdict": "close", "rationale": "The win comes from a broken eval.", "feedback": ""}
    with ScriptedAnthropic([tool_use("review_experiment", answer)]) as api:
        review = await advisor(api, stream=False).review(
            make_context(), record(7, "X", "review", 2.1), gate_decision("merge")
        )
    assert review.verdict == "close"


@pytest.mark.parametrize(
    "reply, message",
    [
        (text("I think you should tune the learning rate."), "expected a propose_experiment"),
        (tool_use("propose_experiment", {**PROPOSAL, "title": ""}), "propose_experiment.title"),
        (tool_use("propose_experiment", {**PROPOSAL, "knobs": [1, 2]}), "knobs"),
        (tool_use("propose_experiment", PROPOSAL, stop_reason="max_tokens"), "max_tokens"),
    ],
    ids=["prose", "empty-title", "knobs-list", "cut-off"],
)
async def test_a_malformed_answer_is_a_clear_error(reply: Reply, message: str) -> None:
    with ScriptedAnthropic([reply]) as api:
        claude = advisor(api, stream=False)
        with pytest.raises(MalformedAnswer, match=message) as raised:
            await claude.propose(make_context(), "fern")
    assert isinstance(raised.value, AdvisorError)  # the bot's loop survives it
    assert len(claude.calls) == 1 and claude.calls[0].cost_usd > 0  # still accounted
    assert raised.value.call is claude.calls[0]


async def test_a_bad_review_verdict_is_rejected() -> None:
    bad = {"verdict": "ship it", "rationale": "yes", "feedback": ""}
    with ScriptedAnthropic([tool_use("review_experiment", bad)]) as api:
        with pytest.raises(MalformedAnswer, match="verdict"):
            await advisor(api, stream=True).review(
                make_context(), record(8, "Y", "review", 2.1), gate_decision("merge")
            )


async def test_overload_is_retried_by_the_sdk() -> None:
    script = [
        error(529, "overloaded_error", "Overloaded"),
        tool_use("propose_experiment", PROPOSAL),
    ]
    with ScriptedAnthropic(script) as api:
        proposal = await advisor(api, stream=False).propose(make_context(), "fern")
    assert proposal.title == PROPOSAL["title"]
    assert len(api.requests) == 2


async def test_a_refused_call_becomes_an_advisor_error() -> None:
    script = [error(401, "authentication_error", "invalid x-api-key")]
    with ScriptedAnthropic(script) as api:
        with pytest.raises(AdvisorError, match=r"refused the propose call \(401\)"):
            await advisor(api, stream=False).propose(make_context(), "fern")


def test_the_prompt_stays_bounded_for_a_long_notebook() -> None:
    from agents.claude import messages

    history = [
        record(n, f"Experiment number {n} " + "x" * 80, "closed", 2.3) for n in range(1, 501)
    ]
    ctx = make_context(history=history, program_md="Background. " * 5000)
    question = messages.propose_question(ctx, "fern")
    brief = messages.system_blocks(ctx)[1]["text"]
    assert len(question) < messages.CONTEXT_CHARS + 2000
    assert "older experiment(s) not shown" in question
    assert "Experiment number 500" in question  # newest first
    assert "## program.md" not in question and "Background." not in question
    assert "program.md truncated" in brief and len(brief) < messages.PROGRAM_CHARS + 2000
