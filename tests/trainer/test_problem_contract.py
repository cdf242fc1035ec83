"""`kohai.toml`'s trust tables: [eval], [data] and [train] early_stop, each bad field named."""

from __future__ import annotations

import pytest

from bot.problem import EarlyStop, Evaluation, ProblemError, load_problem, loads_problem
from trainer.cli import REFERENCE_PROBLEM

METRIC = '[metric]\nname = "loss"\n'


def test_the_reference_problem_is_sealed() -> None:
    problem = load_problem(REFERENCE_PROBLEM)
    assert problem.sealed
    assert problem.evaluation == Evaluation(
        command="python prepare.py evaluate", budget_s=120.0, hide=("module:pydoc_data",)
    )
    assert problem.data_command == "python prepare.py data"
    assert problem.grace_s == 10.0
    assert problem.early_stop is None  # off until declared


def test_without_eval_a_problem_is_unsealed_with_a_short_grace() -> None:
    problem = loads_problem('[metric]\nname = "loss"\n[train]\ncommand = "python train.py"\n')
    assert not problem.sealed and problem.evaluation is None and problem.data_command is None
    assert problem.grace_s == 10.0


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[train]\nearly_stop = true\n", EarlyStop()),
        ("[train]\nearly_stop = false\n", None),
        ("[train]\nearly_stop = { after = 0.5, band = 2 }\n", EarlyStop(0.5, 2.0)),
    ],
)
def test_early_stop(toml: str, expected: EarlyStop | None) -> None:
    assert loads_problem(METRIC + toml).early_stop == expected


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[eval]\nbudget = '1m'\n", "eval.command"),
        ("[eval]\ncommand = 'x'\nbudget = 'soon'\n", "eval.budget"),
        ("[eval]\ncommand = 'x'\nhide = 'data'\n", "eval.hide"),
        ("[eval]\ncommand = 'x'\nhide = ['../secrets']\n", "may not contain '..'"),
        ('eval = 3\n[metric]\nname = "loss"\n', "[eval] must be a table"),
        ("[data]\ncommand = ''\n", "data.command"),
        ("[train]\nearly_stop = { after = 1.5 }\n", "train.early_stop.after"),
        ("[train]\nearly_stop = { band = -1 }\n", "train.early_stop.band"),
        ("[train]\nearly_stop = 'yes'\n", "train.early_stop"),
    ],
)
def test_bad_fields_are_named(toml: str, needle: str) -> None:
    with pytest.raises(ProblemError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        loads_problem(toml if toml.startswith("eval =") else METRIC + toml)
