"""The offline advisor: one knob per PR from the incumbent, planned from the stored history."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from agents.advisor import Advisor, AdvisorError, make_advisor
from agents.context import AdvisorContext, build_context
from agents.offline.advisor import OfflineAdvisor
from agents.offline.moves import incumbent_values, plan, to_unit
from bot.core.gate import decide
from bot.problem import Problem, loads_problem
from bot.store import Store

REPO_ROOT = Path(__file__).resolve().parents[2]
CHARLM = REPO_ROOT / "trainer" / "examples" / "charlm"


def charlm_problem() -> Problem:
    return loads_problem((CHARLM / "kohai.toml").read_text())


def train_py(**values: object) -> str:
    """charlm's train.py with some constants replaced, as a base would hold it."""
    from agents.offline.student import set_constant

    text = (CHARLM / "train.py").read_text()
    for name, value in values.items():
        text = set_constant(text, name, value)
    return text


def set_base(store: Store, repo_id: int, base_sha: str = "base1", **values: object) -> None:
    store.update(
        "repos",
        repo_id,
        {"base_sha": base_sha, "base_files": json.dumps({"train.py": train_py(**values)})},
    )


def suggest(store: Store, repo_id: int, problem: Problem, student: str = "fern", **kw: object):
    ctx = build_context(store, repo_id, problem, "", "", **kw)  # type: ignore[arg-type]
    return OfflineAdvisor().suggest(ctx, student)


def test_incumbent_is_read_from_the_base_files() -> None:
    problem = charlm_problem()
    values = incumbent_values(problem, {"train.py": train_py(LEARNING_RATE=1e-3)})
    assert values == {
        "LEARNING_RATE": 1e-3,
        "N_LAYER": 2,
        "N_EMBD": 64,
        "BATCH_SIZE": 32,
        "SEQ_LEN": 64,
    }
    # Hostile or broken files: no crash, no invented values.
    assert incumbent_values(problem, {"train.py": "LEARNING_RATE = (\n"}) == {}
    assert incumbent_values(problem, {"train.py": "LEARNING_RATE = float('nan') * 2\n"}) == {}
    assert incumbent_values(problem, {"other.py": "LEARNING_RATE = 1\n"}) == {}


def test_first_move_is_one_knob_towards_the_middle(
    store: Store, repo_id: int, add_baseline
) -> None:
    """The demo's lab: a timid learning rate; the first proposal raises it, alone."""
    problem = charlm_problem()
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([2.00, 2.01, 1.99])
    proposal = suggest(store, repo_id, problem)
    assert list(proposal.knobs) == ["LEARNING_RATE"]
    assert math.isclose(proposal.knobs["LEARNING_RATE"], 3.162e-3, rel_tol=1e-3)
    assert proposal.mode == "offline"
    assert (
        "Set LEARNING_RATE = 0.003162 (the base has LEARNING_RATE = 0.001)" in proposal.hypothesis
    )
    assert "change nothing else" in proposal.hypothesis
    assert "towards the middle" in proposal.rationale
    assert proposal.title == "LEARNING_RATE = 0.003162 (from 0.001)"


def test_every_proposal_changes_exactly_one_knob(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """A closed loop: twelve proposals in a row, each one knob, none repeated at its incumbent."""
    problem = charlm_problem()
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([2.00, 2.01, 1.99])
    seen = []
    for i in range(12):
        proposal = suggest(store, repo_id, problem)
        assert len(proposal.knobs) == 1, proposal.knobs
        assert proposal.knobs not in seen
        seen.append(proposal.knobs)
        add_experiment(proposal.knobs, [2.02 + 0.001 * i], pr_number=i + 1)
    assert len({name for k in seen for name in k}) == len(problem.knobs)


def test_a_second_student_gets_another_knob(store: Store, repo_id: int, add_experiment) -> None:
    problem = charlm_problem()
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_experiment({"LEARNING_RATE": 0.003162}, [], state="training")
    proposal = suggest(store, repo_id, problem, student="frieren")
    assert proposal.knobs == {"N_EMBD": 96}  # next by the bandit, towards its middle


def test_a_knob_that_lost_badly_sinks(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    problem = charlm_problem()
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([2.00, 2.01, 1.99])
    add_experiment({"LEARNING_RATE": 0.003162}, [2.3])
    proposal = suggest(store, repo_id, problem)
    assert "LEARNING_RATE" not in proposal.knobs


def test_a_side_measured_worse_sends_the_next_move_to_the_other(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """One knob only: after 'up' lost (within noise), 'down' comes before any half step."""
    problem = loads_problem(
        "[metric]\nname = 'loss'\n[search]\nLEARNING_RATE = { min = 3e-4, max = 3e-2, log = true }\n"
    )
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([2.00, 2.01, 1.99])
    add_experiment({"LEARNING_RATE": 0.003162}, [2.005])
    down = suggest(store, repo_id, problem).knobs["LEARNING_RATE"]
    assert math.isclose(down, 3.162e-4, rel_tol=1e-3)
    add_experiment({"LEARNING_RATE": down}, [2.02])
    # both sides of the full step lost: refine with the half step, towards the middle first
    half = suggest(store, repo_id, problem).knobs["LEARNING_RATE"]
    assert math.isclose(half, 1.778e-3, rel_tol=1e-3)


def test_while_a_move_is_winning_the_next_goes_to_another_knob(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """LR up measured far better and still confirming: not LR down, but the next knob."""
    problem = charlm_problem()
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([3.275, 3.287, 3.281])
    add_experiment({"LEARNING_RATE": 0.003162}, [2.825], state="queued")
    proposal = suggest(store, repo_id, problem)
    assert "LEARNING_RATE" not in proposal.knobs
    assert proposal.knobs == {"N_EMBD": 96}


def test_a_merge_moves_the_incumbent(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """After a merge, moves start from the new base's values; the old neighbourhood is no
    longer "tried"."""
    problem = loads_problem(
        "[metric]\nname = 'loss'\n[search]\nLEARNING_RATE = { min = 3e-4, max = 3e-2, log = true }\n"
    )
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([2.00, 2.01, 1.99])
    won = add_experiment({"LEARNING_RATE": 0.003162}, [1.80, 1.81, 1.79], state="merged")
    store.update("experiments", won, {"hypothesis": "Set ... (the base has LEARNING_RATE = 0.001)"})
    set_base(store, repo_id, "base2", LEARNING_RATE=0.003162)
    add_baseline([1.80, 1.81, 1.79], base_sha="base2")
    proposal = suggest(store, repo_id, problem)
    # the knob paid (+20 sigma), it stays on top; the value it left is known worse: up
    assert math.isclose(proposal.knobs["LEARNING_RATE"], 0.01, rel_tol=1e-3)
    assert "the base has LEARNING_RATE = 0.003162" in proposal.hypothesis


def test_a_plateau_widens_the_moves(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    problem = loads_problem(
        "[metric]\nname = 'loss'\n[search]\nLEARNING_RATE = { min = 3e-4, max = 3e-2, log = true }\n"
    )
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([2.00, 2.01, 1.99])
    for value in (0.0005, 0.0006, 0.0007):  # three closed experiments, no merge
        add_experiment({"LEARNING_RATE": value}, [2.01])
    narrow = suggest(store, repo_id, problem, plateau_after=5)
    wide = suggest(store, repo_id, problem, plateau_after=3)
    knob = problem.knobs[0]
    u0 = to_unit(knob, 1e-3)
    assert math.isclose(to_unit(knob, narrow.knobs["LEARNING_RATE"]) - u0, 0.25, abs_tol=1e-3)
    assert math.isclose(to_unit(knob, wide.knobs["LEARNING_RATE"]) - u0, 0.5, abs_tol=1e-3)
    assert "plateau" in wide.rationale and "plateau" not in narrow.rationale


def test_a_spent_neighbourhood_widens_then_ends(store: Store, repo_id: int, add_experiment) -> None:
    """Choices: the neighbours tried, the next move jumps two; all tried is an advisor error."""
    problem = loads_problem(
        "[metric]\nname = 'loss'\n[search]\nN_EMBD = { choices = [32, 64, 96, 128] }\n"
    )
    set_base(store, repo_id, N_EMBD=32)
    tried = []
    for _ in range(3):
        knobs = suggest(store, repo_id, problem).knobs
        tried.append(knobs["N_EMBD"])
        add_experiment(knobs, [1.0])
    assert tried == [64, 96, 128]
    with pytest.raises(AdvisorError, match="every one-knob move"):
        suggest(store, repo_id, problem)


def test_a_knob_missing_from_the_base_starts_from_the_middle(store: Store, repo_id: int) -> None:
    problem = loads_problem(
        "[metric]\nname = 'loss'\n[search]\nMOMENTUM = { min = 0.0, max = 1.0 }\n"
    )
    set_base(store, repo_id)
    proposal = suggest(store, repo_id, problem)
    assert proposal.knobs == {"MOMENTUM": 0.75}
    assert "no literal value in the base's editable files" in proposal.hypothesis


def test_plan_is_a_pure_function_of_its_inputs() -> None:
    problem = loads_problem("[metric]\nname = 'loss'\n[search]\nX = { min = 0, max = 100 }\n")
    moves = plan(problem, {"X": 10}, [], noise=1.0)
    # towards the middle first; the full step down is clipped at 0; then the half step up
    assert [(m.knob, m.value) for m in moves] == [("X", 35), ("X", 0), ("X", 22)]


def test_proposal_survives_a_restart(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """A second process, with nothing but the database file, proposes the same thing."""
    problem_toml = (CHARLM / "kohai.toml").read_text()
    set_base(store, repo_id, LEARNING_RATE=1e-3)
    add_baseline([2.00, 2.01, 1.99])
    add_experiment({"LEARNING_RATE": 0.003162}, [2.3], pr_number=1)
    add_experiment({"N_EMBD": 96}, [], state="training", pr_number=2)
    in_process = suggest(store, repo_id, loads_problem(problem_toml))
    script = f"""
import json
from agents.context import build_context
from agents.offline.advisor import OfflineAdvisor
from bot.problem import loads_problem
from bot.store import Store
problem = loads_problem({problem_toml!r})
store = Store({str(store.path)!r})
ctx = build_context(store, {repo_id}, problem, "", "")
proposal = OfflineAdvisor().suggest(ctx, "fern")
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
    assert len(in_process.knobs) == 1 and "LEARNING_RATE" not in in_process.knobs


def test_no_knobs_is_an_advisor_error(store: Store, repo_id: int) -> None:
    problem = loads_problem("[metric]\nname = 'loss'\n")
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
