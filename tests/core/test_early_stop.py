"""Early stopping on synthetic curves, table-driven; the config as TOML gives it."""

from __future__ import annotations

import math

import pytest

from bot.core.early_stop import EarlyStopConfig, decide, stop_rule

XS = [i / 20 for i in range(1, 21)]  # progress points at 5 %, 10 %, ... of the budget
ON = EarlyStopConfig(enabled=True, after_fraction=0.3, band=2.0, patience=2)


def curve(offset: float = 0.0, until: float = 1.0, scale: float = 1.0, wobble: float = 0.0):
    """A falling loss curve: 1.5 + 3 e^(-4x) (times `scale`), shifted by `offset`."""
    return [
        [x, 1.5 + scale * 3.0 * math.exp(-4 * x) + offset + wobble * math.sin(37 * x)]
        for x in XS
        if x <= until + 1e-9
    ]


BASELINES = [curve(-0.02), curve(0.0), curve(0.02)]  # std 0.02 at every point: band 0.04


@pytest.mark.parametrize(
    ("name", "run", "baselines", "used", "config", "stop"),
    [
        ("off by default", curve(0.5, 0.5), BASELINES, 0.5, EarlyStopConfig(), False),
        ("before the configured fraction", curve(0.5, 0.25), BASELINES, 0.25, ON, False),
        ("clearly losing past it", curve(0.5, 0.5), BASELINES, 0.5, ON, True),
        ("trailing inside the band", curve(0.03, 0.5), BASELINES, 0.5, ON, False),
        ("just outside the band", curve(0.05, 0.5), BASELINES, 0.5, ON, True),
        ("ahead of the baseline", curve(-0.3, 0.5), BASELINES, 0.5, ON, False),
        (
            "slower start, same end: stopped (the price in power)",
            curve(0, 0.5, 1.3),
            BASELINES,
            0.5,
            ON,
            True,
        ),
        (
            "one bad point then back: patience",
            curve(0.0, 0.5)[:-1] + [[0.5, 9.9]],
            BASELINES,
            0.5,
            ON,
            False,
        ),
        ("one baseline seed: no noise band", curve(0.5, 0.5), BASELINES[:1], 0.5, ON, False),
        (
            "baseline curves end before the point",
            curve(0.5, 0.5),
            [curve(-0.02, 0.4), curve(0.02, 0.4)],
            0.5,
            ON,
            False,
        ),
        ("a single progress point", curve(0.5, 0.05), BASELINES, 0.5, ON, False),
        (
            "NaN points are dropped",
            curve(0.5, 0.5) + [[0.55, float("nan")]],
            BASELINES,
            0.55,
            ON,
            True,
        ),
        (
            "identical baseline seeds: the relative floor",
            curve(0.001, 0.5),
            [curve(), curve()],
            0.5,
            ON,
            False,
        ),
        (
            "identical baseline seeds, a real gap",
            curve(0.1, 0.5),
            [curve(), curve()],
            0.5,
            ON,
            True,
        ),
        (
            "after = 0 checks from the start",
            curve(0.5, 0.1),
            BASELINES,
            0.1,
            EarlyStopConfig(True, 0.0, 2.0, 2),
            True,
        ),
        (
            "a wide band keeps it",
            curve(0.1, 0.5),
            BASELINES,
            0.5,
            EarlyStopConfig(True, 0.3, 6.0, 2),
            False,
        ),
    ],
)
def test_decide(name, run, baselines, used, config, stop) -> None:
    decision = decide(run, baselines, used, config, minimize=True, metric="val_bpb")
    assert decision.stop is stop, (name, decision.reason)
    if stop:
        assert decision.reason.startswith("stopped early at")
        assert "trails the baseline's" in decision.reason and "val_bpb" in decision.reason
        assert decision.n_baseline >= 2 and decision.baseline_mean is not None


def test_maximize_mirrors_minimize() -> None:
    flip = lambda c: [[x, -v] for x, v in c]  # noqa: E731
    losing = decide(flip(curve(0.5, 0.5)), [flip(b) for b in BASELINES], 0.5, ON, minimize=False)
    winning = decide(flip(curve(-0.5, 0.5)), [flip(b) for b in BASELINES], 0.5, ON, minimize=False)
    assert losing.stop and not winning.stop


def test_steps_work_as_well_as_fractions() -> None:
    steps = lambda c: [[x * 1000, v] for x, v in c]  # noqa: E731
    d = decide(steps(curve(0.5, 0.5)), [steps(b) for b in BASELINES], 0.5, ON)
    assert d.stop and d.at == 500


def test_malformed_points_do_not_crash() -> None:
    run = [[0.4, "x"], [None, 1], [0.45, 5.0], [0.5, 5.0], "junk", [0.5]]
    assert decide(run, BASELINES, 0.5, ON).stop


def test_the_problem_config_and_the_harness_rule() -> None:
    """`bot.problem.EarlyStop` as the harness gets it, through `stop_rule`'s StopRule shape."""
    from bot.problem import loads_problem

    problem = loads_problem(
        "[metric]\nname = 'loss'\n[train]\nearly_stop = { after = 0.3, band = 2 }\n"
    )
    assert problem.early_stop is not None
    rule = stop_rule(BASELINES, problem.early_stop)
    reason = rule(curve(0.5, 0.5), 0.5)
    assert reason is not None and reason.startswith("stopped early at 50% of the budget")
    assert "train_loss" in reason
    assert rule(curve(0.0, 0.5), 0.5) is None
    assert rule(curve(0.5, 0.2), 0.2) is None  # before `after`
