"""The Claude advisor as an agent: the real Claude Code CLI, scripted through a loopback API.

The scripted server plays the model; the CLI runs its real Read tool in an
exported checkout of the lab's base and calls kohai's in-process notebook
tools, whose answers (diffs from a real git mirror, seeds, curves) travel back
to the model in the next request.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.scripted_anthropic import (
    RecordedRequest,
    ScriptedAnthropic,
    text,
    tool_use,
    uses_tools,
)

from agents.advisor import AdvisorError
from agents.claude.agent_advisor import ClaudeAgentAdvisor
from agents.claude.checkouts import GitCheckouts
from agents.context import AdvisorContext, ExperimentRecord
from bot.core.gate import GateDecision
from bot.problem import loads_problem

pytestmark = pytest.mark.timeout(180)

TOML = '[metric]\nname = "val_bpb"\n[files]\neditable = ["train.py"]\n[search]\nLEARNING_RATE = { min = 1e-4, max = 1e-2, log = true }\n'


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, str | Path]:
    repo = tmp_path / "origin"
    repo.mkdir()
    (repo / "train.py").write_text("LEARNING_RATE = 3e-3\nWARMUP_STEPS = 20\n")
    (repo / "kohai.toml").write_text(TOML)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "kohai/1-warmup")
    (repo / "train.py").write_text("LEARNING_RATE = 3e-3\nWARMUP_STEPS = 50\n")
    git(repo, "commit", "-qam", "longer warmup")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return {"repo": repo, "base": base, "head": head}


def context(lab: dict[str, str | Path]) -> AdvisorContext:
    warmup = ExperimentRecord(
        number=7,
        title="Longer warmup",
        hypothesis="Warm up for 50 steps instead of 20.",
        knobs={},
        student="fern",
        state="review",
        metric_mean=2.91,
        metric_std=0.01,
        n_seeds=3,
        verdict=None,
        diff_summary="",
        id=1,
        head_sha=str(lab["head"]),
        base_sha=str(lab["base"]),
        seeds=[
            {"seed": s, "status": "ok", "metric": 2.9 + s / 100, "reason": ""} for s in range(3)
        ],
        curve=[[10, 4.0], [20, 3.5], [30, 3.1]],
    )
    return AdvisorContext(
        program_md="# charlm\nMinimise val_bpb.",
        config_toml=TOML,
        problem=loads_problem(TOML),
        baseline_mean=3.0,
        baseline_std=0.01,
        best=3.0,
        history=[warmup],
        open_issues=[],
        plateau=False,
        experiments_since_improvement=1,
        baseline_n=3,
        repo="lab/charlm",
        base_sha=str(lab["base"]),
        baseline_curve=[[10, 4.1], [20, 3.6], [30, 3.2]],
    )


def advisor(
    api: ScriptedAnthropic, lab: dict[str, str | Path], tmp_path: Path
) -> ClaudeAgentAdvisor:
    async def remote(repo: str) -> tuple[str, str | None]:
        return str(lab["repo"]), None

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return ClaudeAgentAdvisor(
        api_key="test",
        base_url=api.url,
        model="claude-sonnet-5-5",
        max_turns=12,
        checkouts=GitCheckouts(tmp_path / "mirror", remote),
        home=home,
    )


def agent_turns(*replies):
    for reply in replies:
        reply.when = uses_tools
    return list(replies)


def tool_result_texts(request: RecordedRequest) -> list[str]:
    out = []
    for message in request.body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if block.get("type") == "tool_result":
                    inner = block.get("content")
                    if isinstance(inner, list):
                        out.append(" ".join(part.get("text", "") for part in inner))
                    else:
                        out.append(str(inner))
    return out


async def test_a_proposal_after_reading_the_code_and_the_notebook(lab, tmp_path: Path) -> None:
    script = agent_turns(
        tool_use("Read", {"file_path": "train.py"}, say="Let me read the training script."),
        tool_use("mcp__notebook__list_experiments", {"query": "warmup"}),
        tool_use("mcp__notebook__baseline", {}),
        tool_use(
            "mcp__notebook__propose_experiment",
            {
                "title": "Lower the learning rate to 1e-3",
                "hypothesis": "LEARNING_RATE is 3e-3 in train.py; 1e-3 should be steadier.",
                "knobs": {"LEARNING_RATE": 0.001},
                "rationale": "Warmup was tried (#7); the learning rate was not.",
            },
        ),
        text("Proposed."),
    )
    with ScriptedAnthropic(script) as api:
        agent = advisor(api, lab, tmp_path)
        proposal = await agent.propose(context(lab), "fern")
        requests = [r for r in api.requests if uses_tools(r.body)]

    assert api.remaining == [], "the CLI did not play the whole script"
    assert proposal.title == "Lower the learning rate to 1e-3"
    assert proposal.knobs == {"LEARNING_RATE": 0.001} and proposal.mode == "claude"
    assert agent.sessions[-1].sandboxed  # the CLI ran in the job sandbox, through its relay
    results = tool_result_texts(requests[-1])
    assert any("LEARNING_RATE = 3e-3" in t for t in results)  # the real Read, in the checkout
    assert any("#7 [review] Longer warmup" in t for t in results)  # the notebook
    assert any("Baseline on" in t and "3 ± 0.01 (n=3)" in t for t in results)
    system = requests[0].body.get("system")
    system_text = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
    assert "Minimise val_bpb" in system_text and "read-only checkout" in system_text
    tool_names = {t["name"] for t in requests[0].body["tools"]}
    assert {"Read", "Grep", "Glob", "mcp__notebook__show_experiment"} <= tool_names
    assert not {"Bash", "Edit", "Write"} & tool_names


async def test_a_review_reads_the_real_diff_and_its_audit_can_send_it_back(
    lab, tmp_path: Path
) -> None:
    script = agent_turns(
        tool_use("mcp__notebook__show_experiment", {"experiment": "#7"}),
        tool_use(
            "mcp__notebook__review_experiment",
            {
                "verdict": "merge",
                "rationale": "2.91 against 3.00 on three seeds.",
                "feedback": "",
                "audit": {"passed": False, "finding": "it also changes the seed"},
            },
        ),
        text("Reviewed."),
    )
    gate = GateDecision(
        verdict="merge",
        rationale="significant",
        p_value=0.01,
        delta=-0.09,
        delta_se=0.01,
        n_candidate=3,
        n_baseline=3,
    )
    ctx = context(lab)
    with ScriptedAnthropic(script) as api:
        review = await advisor(api, lab, tmp_path).review(ctx, ctx.history[0], gate)
        requests = [r for r in api.requests if uses_tools(r.body)]

    shown = tool_result_texts(requests[-1])
    assert any("-WARMUP_STEPS = 20" in t and "+WARMUP_STEPS = 50" in t for t in shown)
    assert any("| 30 | 3.1 | 3.2 |" in t for t in shown)  # the curve beside the baseline's
    assert review.verdict == "changes"  # the audit failed: back to the student, not merged
    assert "it also changes the seed" in review.rationale and "seed" in review.feedback


async def test_no_answer_is_an_error_that_still_says_what_it_cost(lab, tmp_path: Path) -> None:
    script = agent_turns(text("I would rather not decide.", output_tokens=50))
    with ScriptedAnthropic(script) as api:
        agent = advisor(api, lab, tmp_path)
        with pytest.raises(AdvisorError, match="gave no answer") as caught:
            await agent.propose(context(lab), "fern")
    assert getattr(caught.value, "cost_usd", None) is not None
    assert caught.value.cost_usd > 0  # type: ignore[attr-defined]
