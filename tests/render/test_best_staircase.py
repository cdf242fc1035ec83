"""The best-so-far line ends at the best now, even when a baseline moved it after the last experiment."""

from __future__ import annotations

from bot.queries import BestSoFar, BestStep, ProgressPoint
from bot.render.report import best_staircase, progress_svg


def _point(x: float, value: float, best: float, kept: bool) -> ProgressPoint:
    return ProgressPoint(x, value, best, kept, int(x), None, f"e{x:g}")


def _progress(steps: list[BestStep]) -> BestSoFar:
    points = [_point(1, 1.5, 1.5, True), _point(2, 1.6, 1.5, False)]
    return BestSoFar("val_bpb", True, "experiment", 2.0, points, steps)


def test_the_line_follows_the_experiments_and_ends_at_the_best_now() -> None:
    winner = BestStep(at=10.0, value=1.5, best=1.5, improved=True, experiment_id=1)
    first = BestStep(at=1.0, value=2.0, best=2.0, improved=True, base_sha="a")
    assert best_staircase(_progress([first, winner])) == [(0.0, 2.0), (1, 1.5), (2, 1.5)]
    # The base re-measured after the last experiment came out better still.
    again = BestStep(at=20.0, value=1.4, best=1.4, improved=True, base_sha="b")
    line = best_staircase(_progress([first, winner, again]))
    assert line[-1] == (2, 1.4) and line[:-1] == [(0.0, 2.0), (1, 1.5), (2, 1.5)]
    assert "best so far" in progress_svg(_progress([first, winner, again]), "best")


def test_an_empty_lab_draws_no_line() -> None:
    assert best_staircase(BestSoFar("val_bpb", True, "experiment", None, [], [])) == []
