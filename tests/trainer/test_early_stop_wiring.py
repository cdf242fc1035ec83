"""Early stopping on a host: the bot's baseline curves, the problem's rule, the harness's stop."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.problem import loads_problem
from bot.protocol import Job
from trainer.harness import run_once
from trainer.jobrunner import early_stop_rule

BASELINES = [[[s, 4.0 - s / 100] for s in range(10, 210, 10)] for _ in range(3)]
for seed, curve in enumerate(BASELINES):  # three seeds, a little apart
    for point in curve:
        point[1] += 0.01 * seed

TOML = '[metric]\nname = "loss"\n[train]\ncommand = "python train.py"\nbudget = "20s"\nearly_stop = { after = 0.05, band = 3 }\n'


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
    assert (
        early_stop_rule(job(), loads_problem('[metric]\nname = "loss"\n[train]\nbudget = "20s"\n'))
        is None
    )
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


# Paired early stopping: three baseline seeds whose luck differs a lot (0.3 apart),
# and a candidate that shares its seed's luck.
STEPS = range(10, 210, 10)
LUCK = {0: 0.0, 1: 0.3, 2: -0.3}
SEEDED = [[[s, 4.0 - s / 100 + LUCK[seed]] for s in STEPS] for seed in LUCK]
# Band 1: the seeds' std is 0.3, so 0.3 unpaired; paired 0.3 x sqrt(2 (1 - rho)):
# 0.13 at rho 0.9, 0.42 with rho unknown (counted as 0).
PAIRED_TOML = (
    '[metric]\nname = "loss"\n[train]\nbudget = "20s"\nearly_stop = { after = 0.05, band = 1 }\n'
)


def seeded_job(seeds: list, rho: object = 0.9, curves: list | None = None) -> Job:
    return Job(
        id=1, kind="experiment", student="fern", repo="lab/x", clone_url="", token="",
        token_expires_at="", base_ref="main", base_sha="b" * 40, seeds=[0, 1, 2],
        baseline_curves=SEEDED if curves is None else curves, baseline_curve_seeds=seeds,
        seed_correlation=rho,  # type: ignore[arg-type]
    )  # fmt: skip


def run_of(seed: int, behind: float) -> list[list[float]]:
    """Seed `seed`'s run: its own luck, `behind` worse than its baseline twin."""
    return [[s, 4.0 - s / 100 + LUCK[seed] + behind] for s in STEPS[:10]]


# (name, curve seeds sent, correlation sent, the run's seed, how far behind its twin, stops)
PAIRED = [
    ("lucky seed, level with its twin: runs on", [0, 1, 2], 0.9, 2, 0.0, False),
    ("lucky seed, 0.2 behind its twin: stopped", [0, 1, 2], 0.9, 2, 0.2, True),
    # Unpaired, the same run is 0.1 ahead of the seeds' mean: it runs on.
    ("old bot, no seeds: unmatched, runs on", [], 0.9, 2, 0.2, False),
    ("no twin for this seed: unmatched", [0, 1, 7], 0.9, 2, 0.2, False),
    ("unknown correlation: the widest paired band", [0, 1, 2], None, 2, 0.2, False),
    ("unlucky seed, behind its twin but inside the widest band", [0, 1, 2], None, 1, 0.2, False),
    # ... which the unpaired rule stops: 0.5 behind the seeds' mean, more than 0.3.
    ("unlucky seed, unmatched: stopped for its seed's luck", [], 0.9, 1, 0.2, True),
    ("unlucky seed, far behind its twin", [0, 1, 2], 0.9, 1, 0.4, True),
    # Hostile payloads never stop a run for a reason they made up.
    ("a seed that is not an integer matches nothing", ["2", 1.0, True], 0.9, 2, 0.2, False),
    ("a NaN correlation counts as unknown", [0, 1, 2], float("nan"), 2, 0.2, False),
    ("a correlation of 7 counts as unknown", [0, 1, 2], 7.0, 2, 0.2, False),
    ("a string correlation counts as unknown", [0, 1, 2], "0.99", 2, 0.2, False),
    ("more seeds than curves: the extra ones match nothing", [5, 6, 7, 2], 0.9, 2, 0.2, False),
]


@pytest.mark.parametrize(
    ("seeds", "rho", "seed", "behind", "stops"),
    [case[1:] for case in PAIRED],
    ids=[case[0] for case in PAIRED],
)
def test_each_seed_is_compared_with_its_own_baseline_curve(
    seeds: list, rho: object, seed: int, behind: float, stops: bool
) -> None:
    problem = loads_problem(PAIRED_TOML)
    rule = early_stop_rule(seeded_job(seeds, rho), problem, seed)
    assert rule is not None
    reason = rule(run_of(seed, behind), 0.5)
    assert bool(reason) == stops, reason
    if stops:
        paired = seed in [s for s in seeds if type(s) is int]
        assert ("its seed's baseline" in (reason or "")) == paired, reason


def test_the_paired_rule_is_still_off_for_baselines_and_without_curves() -> None:
    problem = loads_problem(TOML)
    baseline = seeded_job([0, 1, 2])
    baseline.kind = "baseline"
    assert early_stop_rule(baseline, problem, 0) is None
    assert early_stop_rule(seeded_job([0, 1, 2], curves=[]), problem, 0) is None
    assert (
        early_stop_rule(
            seeded_job([0, 1, 2]), loads_problem("[metric]\nname = 'loss'\n[train]\n"), 0
        )
        is None
    )


def test_a_job_from_an_older_bot_and_for_an_older_host_round_trips() -> None:
    """The seeds travel beside the curves: each side ignores what it does not know."""
    new = seeded_job([0, 1, 2]).to_dict()
    assert new["baseline_curves"] == SEEDED  # an older host reads these as before
    old = {k: v for k, v in new.items() if k not in ("baseline_curve_seeds", "seed_correlation")}
    job = Job.from_dict(old)
    assert job.baseline_curve_seeds == [] and job.seed_correlation is None
    assert job.matched_curve(0) is None and job.lab_seed_correlation() is None
    again = Job.from_dict(new)
    assert again.matched_curve(1) == SEEDED[1] and again.lab_seed_correlation() == 0.9
