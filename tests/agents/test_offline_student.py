"""The offline student: knob values written into module-level constants, on real files."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from agents.offline.student import KnobNotFound, implement, python_literal, set_constant
from bot.problem import load_problem, loads_problem
from bot.protocol import Implement

FIXTURE = '''"""A training script in the reference style — knobs are module-level constants."""

import math

# --- knobs ---
LEARNING_RATE = 3e-3  # peak learning rate
N_LAYER: int = 2
WARMUP_STEPS = 20
ACTIVATION = "gelu"  # or "relu" — π is not a knob
BETAS = (
    0.9,
    0.95,
)


def schedule(step):
    LEARNING_RATE = 1.0  # a local of the same name: not a knob
    return LEARNING_RATE * math.cos(step)
'''


def _constants(source: str) -> dict[str, object]:
    """The module-level UPPER_CASE constants (the knobs) and their literal values."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
        else:
            continue
        if name.isupper():
            values[name] = ast.literal_eval(node.value)
    return values


def test_set_constant_rewrites_only_the_value() -> None:
    text = set_constant(FIXTURE, "LEARNING_RATE", 0.0012)
    assert "LEARNING_RATE = 0.0012  # peak learning rate\n" in text
    assert "    LEARNING_RATE = 1.0  # a local" in text  # the function's local is untouched
    text = set_constant(text, "N_LAYER", 4)
    assert "N_LAYER: int = 4\n" in text
    text = set_constant(text, "ACTIVATION", "relu")
    assert "ACTIVATION = 'relu'  # or \"relu\" — π is not a knob\n" in text
    text = set_constant(text, "BETAS", [0.8, 0.99])
    assert "BETAS = [0.8, 0.99]\n" in text
    values = _constants(text)
    assert values == {
        "LEARNING_RATE": 0.0012,
        "N_LAYER": 4,
        "WARMUP_STEPS": 20,
        "ACTIVATION": "relu",
        "BETAS": [0.8, 0.99],
    }
    assert text.count("\n") == FIXTURE.count("\n") - 3  # only the multi-line value shrank


def test_set_constant_unknown_name() -> None:
    with pytest.raises(KnobNotFound):
        set_constant(FIXTURE, "DROPOUT", 0.1)
    with pytest.raises(KnobNotFound):
        set_constant(FIXTURE, "schedule", 0.1)


@pytest.mark.parametrize("value", [0.1, 3e-9, 1e21, -2, True, None, "a'b\"c", [1, 2]])
def test_python_literal_round_trips(value: object) -> None:
    assert ast.literal_eval(python_literal(value)) == value


def test_python_literal_rejects_non_literals() -> None:
    with pytest.raises(ValueError):
        python_literal(float("nan"))
    with pytest.raises(ValueError):
        python_literal(object())


def test_implement_edits_the_editable_file(tmp_path: Path, problem) -> None:
    (tmp_path / "train.py").write_text(FIXTURE, encoding="utf-8")
    spec = Implement(
        hypothesis="lower lr, deeper", knobs={"LEARNING_RATE": 0.0005, "N_LAYER": 3}, mode="offline"
    )
    outcome = implement(tmp_path, spec, problem)
    assert outcome.error is None
    assert outcome.changed_files == ["train.py"]
    values = _constants((tmp_path / "train.py").read_text(encoding="utf-8"))
    assert values["LEARNING_RATE"] == 0.0005 and values["N_LAYER"] == 3
    assert "LEARNING_RATE=0.0005" in outcome.notes


def test_implement_unknown_knob_is_an_error_naming_the_files(tmp_path: Path, problem) -> None:
    (tmp_path / "train.py").write_text(FIXTURE, encoding="utf-8")
    spec = Implement(hypothesis="h", knobs={"LEARNING_RATE": 0.001, "MOMENTUM": 0.9})
    outcome = implement(tmp_path, spec, problem)
    assert outcome.error is not None
    assert "MOMENTUM" in outcome.error and "train.py" in outcome.error
    assert (tmp_path / "train.py").read_text(encoding="utf-8") == FIXTURE  # nothing half-done


def test_implement_searches_every_editable_file(tmp_path: Path) -> None:
    problem = loads_problem(
        '[metric]\nname = "loss"\n[files]\neditable = ["train.py", "model.py"]\n'
    )
    (tmp_path / "train.py").write_text("LR = 0.1\n", encoding="utf-8")
    (tmp_path / "model.py").write_text("DEPTH = 2\n", encoding="utf-8")
    outcome = implement(tmp_path, Implement(hypothesis="h", knobs={"DEPTH": 5}), problem)
    assert outcome.error is None
    assert outcome.changed_files == ["model.py"]
    assert (tmp_path / "model.py").read_text() == "DEPTH = 5\n"
    assert (tmp_path / "train.py").read_text() == "LR = 0.1\n"


def test_implement_without_knobs_leaves_the_branch_alone(tmp_path: Path, problem) -> None:
    (tmp_path / "train.py").write_text(FIXTURE, encoding="utf-8")
    outcome = implement(tmp_path, Implement(hypothesis="use rotary embeddings"), problem)
    assert outcome.error is None and outcome.changed_files == []
    assert "as it is" in outcome.notes


def test_reference_problem_train_py(tmp_path: Path, charlm_dir: Path) -> None:
    """Every knob the reference problem declares can be set in its real train.py."""
    work = tmp_path / "charlm"
    shutil.copytree(charlm_dir, work)
    problem = load_problem(work)
    assert problem.knobs, "the reference problem declares knobs for the offline search"
    knobs = {}
    for knob in problem.knobs:
        if knob.choices is not None:
            knobs[knob.name] = knob.choices[-1]
        elif knob.integer:
            knobs[knob.name] = int(knob.high)
        else:
            knobs[knob.name] = round(knob.low * 1.5, 6)
    outcome = implement(work, Implement(hypothesis="h", knobs=knobs), problem)
    assert outcome.error is None, outcome.error
    source = (work / "train.py").read_text(encoding="utf-8")
    ast.parse(source)
    values = _constants(source)
    for name, value in knobs.items():
        assert values[name] == value
    original = (charlm_dir / "train.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) == len(original.splitlines())
