"""`[gate]` in kohai.toml: the merge gate's levers, parsed and validated."""

from __future__ import annotations

import pytest

from bot.problem import GateConfig, ProblemError, loads_problem

METRIC = '\n[metric]\nname = "loss"\n'  # after the tables: root keys stay root keys


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("", GateConfig(screen=0.5, sequential=True, pooled=True)),  # the defaults
        ("[gate]\n", GateConfig()),
        ("[gate]\nscreen = 0.5\n", GateConfig(screen=0.5)),
        ("[gate]\nscreen = 1\n", GateConfig(screen=1.0)),
        ("[gate]\nscreen = 0\n", GateConfig(screen=0.0)),
        (
            "[gate]\nscreen = 0\nsequential = false\npooled = false\n",
            GateConfig(screen=0.0, sequential=False, pooled=False),
        ),
        ("[gate]\nsequential = false\n", GateConfig(sequential=False)),
        ("[gate]\npooled = false\n", GateConfig(pooled=False)),
        (
            "[gate]\nscreen = 0.25\nsequential = true\npooled = true\n",
            GateConfig(screen=0.25, sequential=True, pooled=True),
        ),
        ("gate = { screen = 0.5, pooled = false }\n", GateConfig(screen=0.5, pooled=False)),
    ],
)
def test_gate_table_is_read(toml: str, expected: GateConfig) -> None:
    assert loads_problem(toml + METRIC).gate == expected


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('gate = "on"\n', "[gate] must be a table"),
        ("gate = true\n", "[gate] must be a table"),
        ("[gate]\nscreen = -0.5\n", "gate.screen"),
        ("[gate]\nscreen = 6\n", "gate.screen"),
        ("[gate]\nscreen = nan\n", "gate.screen"),
        ("[gate]\nscreen = inf\n", "gate.screen"),
        ("[gate]\nscreen = true\n", "gate.screen"),
        ('[gate]\nscreen = "0.5"\n', "gate.screen"),
        ('[gate]\nsequential = "yes"\n', "gate.sequential"),
        ("[gate]\nsequential = 1\n", "gate.sequential"),
        ("[gate]\npooled = 0\n", "gate.pooled"),
        ("[gate]\nscreening = 0.5\n", "gate.screening: unknown key; did you mean `screen`?"),
        ("[gate]\nalpha = 0.2\n", "gate.alpha: unknown key"),
    ],
)
def test_a_bad_gate_table_is_refused_naming_the_field(toml: str, names: str) -> None:
    with pytest.raises(ProblemError, match=names.replace("[", r"\[").replace("]", r"\]")):
        loads_problem(toml + METRIC)
