"""A small lab notebook for the advisor's tests: a problem, a history, gate decisions."""

from __future__ import annotations

from agents.context import AdvisorContext, ExperimentRecord
from bot.core.gate import GateDecision
from bot.problem import loads_problem

CONFIG_TOML = """\
[metric]
name = "val_bpb"
direction = "minimize"

[train]
budget = "30s"

[files]
editable = ["train.py"]
frozen = ["prepare.py"]

[search]
LEARNING_RATE = { min = 3e-4, max = 3e-2, log = true }
N_LAYER = { choices = [1, 2, 3] }
"""

PROGRAM_MD = """\
# charlm

Make a tiny byte-level transformer reach the lowest validation bits per byte in 30 seconds.
Ideas worth trying: learning-rate schedules, width versus depth, weight tying.
"""


def record(
    number: int, title: str, state: str, mean: float | None, **extra: object
) -> ExperimentRecord:
    fields: dict[str, object] = {
        "number": number,
        "title": title,
        "hypothesis": f"Hypothesis: {title.lower()}",
        "knobs": {},
        "student": "fern",
        "state": state,
        "metric_mean": mean,
        "metric_std": 0.01 if mean is not None else None,
        "n_seeds": 3 if mean is not None else 0,
        "verdict": None,
        "diff_summary": "",
        "id": number,
    }
    fields.update(extra)
    return ExperimentRecord(**fields)  # type: ignore[arg-type]


def make_context(**changes: object) -> AdvisorContext:
    history = [
        record(1, "Lower the learning rate to 1e-3", "closed", 2.31, verdict="close"),
        record(2, "Use three layers", "merged", 2.20, verdict="merge"),
        record(3, "Add dropout 0.1", "closed", 2.25, verdict="close"),
    ]
    fields: dict[str, object] = dict(
        program_md=PROGRAM_MD,
        config_toml=CONFIG_TOML,
        problem=loads_problem(CONFIG_TOML),
        baseline_mean=2.20,
        baseline_std=0.01,
        best=2.20,
        history=history,
        open_issues=[],
        plateau=False,
        experiments_since_improvement=1,
        baseline_n=3,
        repo="lab/charlm",
    )
    fields.update(changes)
    return AdvisorContext(**fields)  # type: ignore[arg-type]


def gate_decision(verdict: str, **extra: object) -> GateDecision:
    fields: dict[str, object] = {
        "verdict": verdict,
        "rationale": f"Gate: {verdict}.",
        "p_value": 0.01 if verdict == "merge" else 0.4,
        "delta": -0.05 if verdict == "merge" else -0.002,
        "delta_se": 0.01,
        "n_candidate": 3,
        "n_baseline": 3,
        "candidate_mean": 2.15 if verdict == "merge" else 2.198,
        "candidate_std": 0.01,
        "baseline_mean": 2.20,
        "baseline_std": 0.01,
    }
    fields.update(extra)
    return GateDecision(**fields)  # type: ignore[arg-type]
