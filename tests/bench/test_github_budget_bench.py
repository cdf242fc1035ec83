"""bench/github_budget.py's own decisions: the problem it simulates and how it counts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agents.offline.moves import incumbent_values
from bot.problem import load_problem

PATH = Path(__file__).resolve().parents[2] / "bench" / "github_budget.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_github_budget", PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_github_budget"] = module
    spec.loader.exec_module(module)
    return module


def test_the_simulated_problem_gives_the_offline_advisor_room(
    bench: ModuleType, tmp_path: Path
) -> None:
    """The reference problem's five knobs run dry after about 15 one-knob moves; the
    bench's copy declares more, each a literal in train.py where the advisor finds it."""
    root = bench.simulated_problem(tmp_path)
    problem = load_problem(root)
    names = {knob.name for knob in problem.knobs}
    added = {f"SIM_KNOB_{i:02d}" for i in range(bench.SIM_KNOBS)}
    assert added <= names and len(names) == len(added) + 5
    values = incumbent_values(problem, {"train.py": (root / "train.py").read_text()})
    assert all(values[name] == 0.5 for name in added)
    assert (root / "prepare.py").read_bytes() == (bench.CHARLM / "prepare.py").read_bytes()


def test_experiments_per_hour_count_every_window_used_whole(bench: ModuleType) -> None:
    # 30 experiments, 7 windows of 30 s used until every write was made: 7 x 30 s.
    assert bench.sustained_per_hour(30, 7, 30.0, 200.0) == pytest.approx(30 / 210 * 3600)
    # Windows with gaps between them: the wall-clock time, when longer, is the span.
    assert bench.sustained_per_hour(30, 5, 30.0, 240.0) == pytest.approx(30 / 240 * 3600)
    assert bench.sustained_per_hour(0, 0, 30.0, 0.0) == 0.0
