"""The offline advisor: TPE rebuilt from a real SQLite store, deterministic and resumable."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from agents.advisor import Advisor, AdvisorError, make_advisor
from agents.context import AdvisorContext, build_context
from agents.offline.advisor import OfflineAdvisor
from bot.gate import decide
from bot.problem import Problem, loads_problem
from bot.store import Store

REPO_ROOT = Path(__file__).resolve().parents[2]


def _seed_history(add_experiment, add_baseline) -> None:
    add_baseline([1.00, 1.01, 0.99])
    add_experiment({"LEARNING_RATE": 0.001, "N_LAYER": 2, "WARMUP_STEPS": 10}, [0.98])
    add_experiment({"LEARNING_RATE": 0.01, "N_LAYER": 3, "WARMUP_STEPS": 50}, [1.10])
    add_experiment({"LEARNING_RATE": 0.02, "N_LAYER": 1, "WARMUP_STEPS": 90}, [None])
    add_experiment(
        {"LEARNING_RATE": 0.0008, "N_LAYER": 2, "WARMUP_STEPS": 20},
        [0.95, 0.96, 0.94],
        state="merged",
        pr_number=7,
    )
    add_experiment({"LEARNING_RATE": 0.0005, "N_LAYER": 1, "WARMUP_STEPS": 5}, [1.02])
    add_experiment({"LEARNING_RATE": 0.004, "N_LAYER": 3, "WARMUP_STEPS": 70}, [1.05])
    add_experiment({"LEARNING_RATE": 0.0009, "N_LAYER": 2}, [], state="training")


async def test_same_history_same_proposal_in_fresh_advisors(
    store: Store, repo_id: int, problem: Problem, add_experiment, add_baseline
) -> None:
    _seed_history(add_experiment, add_baseline)
    first = await OfflineAdvisor(seed=3).propose(
        build_context(store, repo_id, problem, "", ""), "fern"
    )
    second = await OfflineAdvisor(seed=3).propose(
        build_context(store, repo_id, problem, "", ""), "fern"
    )
    assert first == second
    assert first.mode == "offline"
    assert set(first.knobs) == {"LEARNING_RATE", "N_LAYER", "WARMUP_STEPS"}
    assert 3e-4 <= first.knobs["LEARNING_RATE"] <= 3e-2
    assert first.knobs["N_LAYER"] in (1, 2, 3)
    assert isinstance(first.knobs["WARMUP_STEPS"], int) and 0 <= first.knobs["WARMUP_STEPS"] <= 100
    # The hypothesis states what it tries, why, and the best so far with its knobs.
    assert f"LEARNING_RATE={first.knobs['LEARNING_RATE']:.4g}" in first.hypothesis
    # five measured, one crashed; the one in training is not told
    assert "after 6 trial(s) (5 measured)" in first.hypothesis
    assert "#7" in first.hypothesis and "0.95" in first.hypothesis
    assert "LEARNING_RATE=0.0008" in first.hypothesis


def test_proposal_survives_a_restart(
    store: Store, repo_id: int, problem_toml: str, add_experiment, add_baseline
) -> None:
    """A second process, with nothing but the database file, proposes the same thing."""
    _seed_history(add_experiment, add_baseline)
    problem = loads_problem(problem_toml)
    in_process = OfflineAdvisor(seed=5).suggest(
        build_context(store, repo_id, problem, "", ""), "frieren"
    )
    script = f"""
import json
import statistics
from agents.context import build_context
from agents.offline.advisor import OfflineAdvisor
from bot.problem import loads_problem
from bot.store import Store
problem = loads_problem({problem_toml!r})
store = Store({store.path!r})
ctx = build_context(store, {repo_id}, problem, "", "")
proposal = OfflineAdvisor(seed=5).suggest(ctx, "frieren")
print(json.dumps({{"knobs": proposal.knobs, "hypothesis": proposal.hypothesis}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    other = json.loads(out.strip().splitlines()[-1])
    assert other == {"knobs": in_process.knobs, "hypothesis": in_process.hypothesis}


def test_proposals_avoid_tried_configurations(store: Store, repo_id: int, add_experiment) -> None:
    problem = loads_problem(
        "[search]\nDEPTH = { choices = [1, 2, 3] }\nWIDTH = { choices = [8, 16] }\n"
    )
    tried = []
    for _ in range(6):
        ctx = build_context(store, repo_id, problem, "", "")
        proposal = OfflineAdvisor().suggest(ctx, "fern")
        assert proposal.knobs not in tried
        tried.append(proposal.knobs)
        add_experiment(proposal.knobs, [1.0 + proposal.knobs["DEPTH"] / 10])
    assert sorted((k["DEPTH"], k["WIDTH"]) for k in tried) == [
        (d, w) for d in (1, 2, 3) for w in (8, 16)
    ]
    # Every configuration tried: it still answers, and says so.
    last = OfflineAdvisor().suggest(build_context(store, repo_id, problem, "", ""), "fern")
    assert "Every configuration of the search space" in last.hypothesis


def test_pending_experiments_count_as_tried(store: Store, repo_id: int, add_experiment) -> None:
    problem = loads_problem("[search]\nDEPTH = { choices = [1, 2] }\n")
    add_experiment({"DEPTH": 1}, [], state="training")
    proposal = OfflineAdvisor().suggest(build_context(store, repo_id, problem, "", ""), "fern")
    assert proposal.knobs == {"DEPTH": 2}


def test_tpe_concentrates_on_the_optimum(store: Store, repo_id: int, add_experiment) -> None:
    """A closed loop on a known function: later proposals sit closer to the optimum."""
    problem = loads_problem(
        '[metric]\ndirection = "maximize"\n[search]\nX = { min = 0.0, max = 1.0 }\n'
    )
    distances = []
    for _ in range(24):
        ctx = build_context(store, repo_id, problem, "", "")
        x = OfflineAdvisor(seed=1).suggest(ctx, "fern").knobs["X"]
        distances.append(abs(x - 0.2))
        add_experiment({"X": x}, [-((x - 0.2) ** 2)])
    assert statistics.median(distances[12:]) < statistics.median(distances[:12]) / 2
    assert min(distances) < 0.03


def test_different_students_get_different_proposals(
    store: Store, repo_id: int, problem: Problem, add_experiment, add_baseline
) -> None:
    _seed_history(add_experiment, add_baseline)
    ctx = build_context(store, repo_id, problem, "", "")
    fern = OfflineAdvisor().suggest(ctx, "fern")
    frieren = OfflineAdvisor().suggest(ctx, "frieren")
    assert fern.knobs != frieren.knobs


def test_no_knobs_is_an_advisor_error(store: Store, repo_id: int) -> None:
    problem = loads_problem("")
    with pytest.raises(AdvisorError, match="declares none"):
        OfflineAdvisor().suggest(build_context(store, repo_id, problem, "", ""), "fern")


@pytest.mark.parametrize(
    ("candidate", "gate_verdict", "review_verdict"),
    [([0.90, 0.91, 0.89], "merge", "merge"), ([0.999, 1.001, 0.998], "close", "close")],
)
async def test_review_follows_the_gate(
    problem: Problem, candidate: list[float], gate_verdict: str, review_verdict: str
) -> None:
    gate = decide(candidate, [1.0, 1.01, 0.99], minimize=True, confirm_seeds=3, baseline_seeds=3)
    assert gate.verdict == gate_verdict
    ctx = AdvisorContext("", "", problem, 1.0, 0.01, 1.0, [], [], False, 0)
    advisor = make_advisor(None)
    assert isinstance(advisor, Advisor) and isinstance(advisor, OfflineAdvisor)
    review = await advisor.review(ctx, None, gate)  # type: ignore[arg-type]
    assert review.verdict == review_verdict
    assert review.rationale == gate.rationale
    assert review.mode == "offline"


def test_offline_bot_never_loads_the_claude_modules() -> None:
    script = (
        "import sys\n"
        "from agents.advisor import make_advisor\n"
        "advisor = make_advisor(None, model='ignored-offline', seed=4)\n"
        "print(type(advisor).__name__, advisor.seed,"
        " sorted(m for m in sys.modules if m.startswith(('agents.claude', 'anthropic'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert out.split() == ["OfflineAdvisor", "4", "[]"]


def test_a_key_selects_the_claude_advisor(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.claude import advisor as claude
    from agents.claude import agent_advisor

    monkeypatch.delenv("KOHAI_ADVISOR_ENGINE", raising=False)
    advisor = make_advisor("sk-ant-test-key")  # claude-agent-sdk is installed: the agent
    assert isinstance(advisor, agent_advisor.ClaudeAgentAdvisor)
    assert isinstance(advisor, Advisor)
    single = make_advisor("sk-ant-test-key", engine="messages")
    assert isinstance(single, claude.ClaudeAdvisor)
    monkeypatch.setenv("KOHAI_ADVISOR_ENGINE", "messages")
    assert isinstance(make_advisor("sk-ant-test-key"), claude.ClaudeAdvisor)
