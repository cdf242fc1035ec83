"""Declared groups in [search]: knobs of one group move together, in one PR, as one hypothesis."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from agents.context import build_context
from agents.offline.advisor import OfflineAdvisor
from agents.offline.moves import plan, to_unit
from bot.problem import Problem, ProblemError, loads_problem
from bot.store import Store

REPO_ROOT = Path(__file__).resolve().parents[2]

GROUPED = """
[metric]
name = "val_bpb"
[search]
LEARNING_RATE = { min = 3e-4, max = 3e-2, log = true, group = "optim" }
N_LAYER = { choices = [1, 2, 3] }
WARMUP_STEPS = { min = 0, max = 100, group = "optim" }
"""

TRAIN_PY = "LEARNING_RATE = 1e-3\nN_LAYER = 2\nWARMUP_STEPS = 20\n"


def grouped() -> Problem:
    return loads_problem(GROUPED)


def set_base(store: Store, repo_id: int, text: str = TRAIN_PY, base_sha: str = "base1") -> None:
    files = json.dumps({"train.py": text})
    store.update("repos", repo_id, {"base_sha": base_sha, "base_files": files})


def suggest(store: Store, repo_id: int, problem: Problem, **kw: object):
    ctx = build_context(store, repo_id, problem, "", "", **kw)  # type: ignore[arg-type]
    return OfflineAdvisor().suggest(ctx, "fern")


# ------------------------------------------------------------------ parsing


def test_groups_parse_into_units_in_search_order() -> None:
    problem = grouped()
    assert [k.group for k in problem.knobs] == ["optim", None, "optim"]
    units = problem.units
    assert [(u.name, u.names, u.group) for u in units] == [
        ("optim", ("LEARNING_RATE", "WARMUP_STEPS"), True),
        ("N_LAYER", ("N_LAYER",), False),
    ]
    # Without groups every knob is its own unit, as before.
    plain = loads_problem(
        "[metric]\nname = 'loss'\n[search]\nA = { min = 0, max = 1 }\nB = { choices = [1, 2] }\n"
    )
    assert [(u.name, u.group) for u in plain.units] == [("A", False), ("B", False)]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        # a group of one knob: a misspelt name would silently split a group
        (
            'A = { min = 0, max = 1, group = "optim" }\nB = { min = 0, max = 1, group = "optm" }',
            "group 'optim' has only this knob",
        ),
        ('A = { min = 0, max = 1, group = "" }\nB = { min = 0, max = 1, group = "" }', "group"),
        ("A = { min = 0, max = 1, group = 3 }\nB = { min = 0, max = 1, group = 3 }", "group"),
        (
            'A = { min = 0, max = 1, group = ["x"] }\nB = { min = 0, max = 1, group = ["x"] }',
            "group",
        ),
        (
            'A = { min = 0, max = 1, group = "a b" }\nB = { min = 0, max = 1, group = "a b" }',
            "group",
        ),
        # a group named like a knob: "A" in a hypothesis would be ambiguous
        (
            'A = { min = 0, max = 1 }\nB = { min = 0, max = 1, group = "A" }\n'
            'C = { min = 0, max = 1, group = "A" }',
            "has the name of a knob",
        ),
        ('A = { min = 0, max = 1, group = "g\\n[x]" }\nB = { min = 0, max = 1 }', "group"),
    ],
)
def test_bad_groups_are_refused(search: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        loads_problem(f"[metric]\nname = 'loss'\n[search]\n{search}\n")


# ------------------------------------------------------------------ moves


def test_a_group_moves_together_and_nothing_else(store: Store, repo_id: int) -> None:
    """The group is first in [search]: its proposal sets both its knobs, each one step along
    its own range in the same direction, and leaves N_LAYER alone."""
    problem = grouped()
    set_base(store, repo_id)
    proposal = suggest(store, repo_id, problem)
    assert set(proposal.knobs) == {"LEARNING_RATE", "WARMUP_STEPS"}
    lr, warmup = problem.knob("LEARNING_RATE"), problem.knob("WARMUP_STEPS")
    assert lr is not None and warmup is not None
    moved = [
        to_unit(lr, proposal.knobs["LEARNING_RATE"]) - to_unit(lr, 1e-3),
        to_unit(warmup, proposal.knobs["WARMUP_STEPS"]) - to_unit(warmup, 20),
    ]
    assert all(math.isclose(m, 0.25, abs_tol=0.01) for m in moved), moved  # both up, one step
    assert "group optim" in proposal.hypothesis
    for name in ("LEARNING_RATE", "WARMUP_STEPS"):
        assert f"the base has {name} = " in proposal.hypothesis
    assert "N_LAYER" not in proposal.hypothesis
    assert proposal.title.startswith("optim: ")


def test_every_proposal_moves_exactly_one_unit(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """A closed loop of eight losing proposals: each is the whole group or N_LAYER alone."""
    problem = grouped()
    set_base(store, repo_id)
    add_baseline([2.00, 2.01, 1.99])
    seen = []
    for i in range(8):
        knobs = suggest(store, repo_id, problem).knobs
        assert set(knobs) in ({"LEARNING_RATE", "WARMUP_STEPS"}, {"N_LAYER"}), knobs
        assert knobs not in seen
        seen.append(knobs)
        add_experiment(knobs, [2.05 + 0.001 * i], pr_number=i + 1)
    assert {frozenset(k) for k in seen} == {
        frozenset({"LEARNING_RATE", "WARMUP_STEPS"}),
        frozenset({"N_LAYER"}),
    }


def test_a_group_measured_worse_goes_to_the_other_side(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    problem = loads_problem(GROUPED.replace("N_LAYER = { choices = [1, 2, 3] }\n", ""))
    set_base(store, repo_id)
    add_baseline([2.00, 2.01, 1.99])
    first = suggest(store, repo_id, problem).knobs
    history_free = plan(problem, {"LEARNING_RATE": 1e-3, "WARMUP_STEPS": 20}, [], noise=1)
    assert history_free[0].values == first  # the pure plan agrees with the advisor
    add_experiment(first, [2.1])  # both up: worse
    nxt = suggest(store, repo_id, problem).knobs
    assert set(nxt) == set(first)
    assert nxt["LEARNING_RATE"] < 1e-3 and nxt["WARMUP_STEPS"] < 20  # both down together


def test_one_knob_history_of_a_grouped_knob_teaches_the_group(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """Experiments from before the group was declared (LR alone, lost badly) sink the group."""
    problem = grouped()
    set_base(store, repo_id)
    add_baseline([2.00, 2.01, 1.99])
    add_experiment({"LEARNING_RATE": 0.003162}, [2.6])
    assert set(suggest(store, repo_id, problem).knobs) == {"N_LAYER"}


def test_a_merged_group_move_is_not_undone(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """After the group merged, the point it left is known worse: the next group move goes on."""
    problem = loads_problem(
        "[metric]\nname = 'loss'\n[search]\nLEARNING_RATE = { min = 3e-4, max = 3e-2, log = true, group = 'optim' }\n"
        "WARMUP_STEPS = { min = 0, max = 100, group = 'optim' }\n"
    )
    set_base(store, repo_id)
    add_baseline([2.00, 2.01, 1.99])
    move = suggest(store, repo_id, problem)
    won = add_experiment(move.knobs, [1.80, 1.81, 1.79], state="merged")
    store.update("experiments", won, {"hypothesis": move.hypothesis})
    text = f"LEARNING_RATE = {move.knobs['LEARNING_RATE']!r}\nWARMUP_STEPS = {move.knobs['WARMUP_STEPS']!r}\n"
    set_base(store, repo_id, text, "base2")
    add_baseline([1.80, 1.81, 1.79], base_sha="base2")
    nxt = suggest(store, repo_id, problem).knobs
    assert nxt["LEARNING_RATE"] > move.knobs["LEARNING_RATE"]
    assert nxt["WARMUP_STEPS"] > move.knobs["WARMUP_STEPS"]


def test_group_proposal_survives_a_restart(
    store: Store, repo_id: int, add_experiment, add_baseline
) -> None:
    """A second process with nothing but the database file proposes the same group move."""
    set_base(store, repo_id)
    add_baseline([2.00, 2.01, 1.99])
    add_experiment({"N_LAYER": 3}, [2.3], pr_number=1)
    add_experiment({"LEARNING_RATE": 0.003162, "WARMUP_STEPS": 45}, [2.02], pr_number=2)
    in_process = suggest(store, repo_id, grouped())
    script = f"""
import json
from agents.context import build_context
from agents.offline.advisor import OfflineAdvisor
from bot.problem import loads_problem
from bot.store import Store
ctx = build_context(Store({str(store.path)!r}), {repo_id}, loads_problem({GROUPED!r}), "", "")
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
    # The group's up-move was tried (even): the restart proposes it down, not again up.
    assert set(in_process.knobs) == {"LEARNING_RATE", "WARMUP_STEPS"}
    assert in_process.knobs["LEARNING_RATE"] < 1e-3
