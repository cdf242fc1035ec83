"""Early stopping on a host: the bot's baseline curves, the problem's rule, the harness's stop."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bot.problem import loads_problem
from bot.protocol import Job
from trainer.harness import run_once
from trainer.jobrunner import early_stop_rule

BASELINES = [[[s, 4.0 - s / 100] for s in range(10, 210, 10)] for _ in range(3)]
for seed, curve in enumerate(BASELINES):  # three seeds, a little apart
    for point in curve:
        point[1] += 0.01 * seed

TOML = '[train]\ncommand = "python train.py"\nbudget = "20s"\nearly_stop = { after = 0.05, band = 3 }\n'


def job(kind: str = "experiment", curves: list | None = None) -> Job:
    return Job(
        id=1, kind=kind, student="fern", repo="lab/x", clone_url="", token="",
        token_expires_at="", base_ref="main", base_sha="b" * 40, seeds=[0],
        baseline_curves=BASELINES if curves is None else curves,
    )  # fmt: skip


def test_the_rule_is_on_only_for_candidates_of_a_problem_that_asks() -> None:
    problem = loads_problem(TOML)
    assert early_stop_rule(job("baseline"), problem) is None
    assert early_stop_rule(job(curves=[]), problem) is None
    assert early_stop_rule(job(), loads_problem('[train]\nbudget = "20s"\n')) is None
    rule = early_stop_rule(job(), problem)
    assert rule is not None
    trailing = [[s, 6.0] for s in range(10, 110, 10)]
    level = [[s, 4.0 - s / 100 + 0.01] for s in range(10, 110, 10)]
    assert rule(trailing, 0.5)
    assert rule(level, 0.5) is None


def test_a_clearly_losing_run_is_stopped_early_by_the_harness(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(
        textwrap.dedent(
            """
            import json, os, time
            with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
                for step in range(10, 2000, 10):
                    fh.write(json.dumps({"step": step, "train_loss": 7.0}) + "\\n")
                    fh.flush()
                    time.sleep(0.05)
            print("val_bpb: 1.0")
            """
        )
    )
    problem = loads_problem(TOML)
    result = run_once(
        repo, problem, 0, run_dir=tmp_path / "run", should_stop=early_stop_rule(job(), problem)
    )
    assert result.status == "stopped-early", result.reason
    assert result.reason and result.curve
    assert result.train_s < 15
