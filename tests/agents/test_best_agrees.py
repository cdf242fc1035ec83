"""One "best so far": the advisor's notebook, the dashboard, the lab list and `history --best`.

A seeded repository with two tracks, each with a first baseline, a merged
winner, the baseline re-measured on the merge (better than the winner's own
figure), a closed experiment and an open one that are better still but were
not kept, and a crashed baseline seed on a base never measured. The other
track's figures are better again, so a reader that leaks across tracks shows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agents.context import build_context
from bot import queries
from bot.core.stats import mean_std
from bot.engine.labs import lab_key, lab_rows
from bot.problem import Problem, loads_problem
from bot.render import numbers
from bot.store import Store, dumps
from tests.support.dashboard_seed import serve_dashboard

PROBLEM_TOML = (
    '[metric]\nname = "val_bpb"\ndirection = "minimize"\n[tracks.long]\nbase = "track/long"\n'
)
TRACKS = ("default", "long")


@dataclass(frozen=True)
class Figures:
    """What one track measured, in the order it landed."""

    first: list[float]  # the baseline on base 0
    winner: list[float]  # merged, measured on base 0
    remeasured: list[float]  # the baseline on base 1 (the merge commit)
    closed: list[float]  # better still, but closed
    review: list[float]  # better still, but not decided


FIGURES = {
    "default": Figures(
        [1.50, 1.52, 1.49], [1.40, 1.41, 1.42], [1.38, 1.39, 1.37], [1.20, 1.21], [1.10]
    ),
    "long": Figures([1.30, 1.31, 1.29], [1.25, 1.26, 1.24], [1.22, 1.23, 1.21], [1.0, 1.01], [0.9]),
}


@dataclass
class SeededLab:
    path: Path
    repo_id: int


def _runs(
    store: Store,
    repo_id: int,
    track: str,
    kind: str,
    values: list[float | None],
    base: str,
    at: float,
    experiment_id: int | None = None,
) -> None:
    job = store.insert(
        "jobs",
        {
            "kind": "baseline" if kind == "baseline" else "experiment",
            "repo_id": repo_id,
            "experiment_id": experiment_id,
            "state": "done",
            "seeds": dumps(list(range(len(values)))),
            "track": track,
            "created_at": at,
            "updated_at": at,
        },
    )
    for seed, value in enumerate(values):
        store.insert(
            "runs",
            {
                "repo_id": repo_id,
                "experiment_id": experiment_id,
                "job_id": job,
                "kind": kind,
                "student": "fern",
                "seed": seed,
                "commit_sha": base if kind == "baseline" else f"{experiment_id:040d}",
                "base_sha": base,
                "status": "ok" if value is not None else "crash",
                "metric": value,
                "curve": "[[0, 2.0], not json" if seed == 0 else "[[0, 2.0], [50, 1.5]]",
                "track": track,
                "created_at": at + seed,
            },
        )


def _experiment(
    store: Store, repo_id: int, track: str, title: str, state: str, base: str, at: float
) -> int:
    return store.insert(
        "experiments",
        {
            "repo_id": repo_id,
            "state": state,
            "source": "advisor",
            "title": title,
            "hypothesis": f"We expect that {title} helps.",
            "student": "fern",
            "knobs": "{not json",  # a broken column reads as no knobs
            "base_sha": base,
            "track": track,
            "created_at": at,
            "updated_at": at,
        },
    )


def seed_tracks(store: Store, t0: float) -> int:
    repo_id = store.insert(
        "repos",
        {
            "full_name": "lab/charlm",
            "installation_id": 1,
            "base_sha": "d1" * 20,
            "problem_toml": PROBLEM_TOML,
            "created_at": t0,
        },
    )
    store.insert(
        "tracks",
        {
            "repo_id": repo_id,
            "name": "long",
            "base_branch": "track/long",
            "base_sha": "l1" * 20,
            "created_at": t0,
        },
    )
    for track in TRACKS:
        f, (b0, b1, b2) = FIGURES[track], [f"{track[0]}{i}" * 20 for i in range(3)]
        _runs(store, repo_id, track, "baseline", f.first, b0, t0)
        winner = _experiment(store, repo_id, track, f"{track} winner", "merged", b0, t0 + 50)
        _runs(store, repo_id, track, "candidate", f.winner, b0, t0 + 100, winner)
        store.insert(
            "decisions",
            {
                "experiment_id": winner,
                "verdict": "merge",
                "actor": "gate",
                "rationale": "better",
                "stats": "{broken",
                "created_at": t0 + 150,
            },
        )
        _runs(store, repo_id, track, "baseline", f.remeasured, b1, t0 + 200)
        closed = _experiment(store, repo_id, track, f"{track} closed", "closed", b1, t0 + 250)
        _runs(store, repo_id, track, "candidate", f.closed, b1, t0 + 300, closed)
        review = _experiment(store, repo_id, track, f"{track} review", "review", b1, t0 + 350)
        _runs(store, repo_id, track, "candidate", f.review, b1, t0 + 400, review)
        _runs(store, repo_id, track, "baseline", [None], b2, t0 + 500)  # crashed: no baseline
    return repo_id


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[SeededLab]:
    path = tmp_path / "kohai.db"
    store = Store(path)
    repo_id = seed_tracks(store, time.time() - 3600)
    store.close()
    yield SeededLab(path, repo_id)


def _expected(track: str) -> float:
    """The re-measured baseline: it beats the winner's own figure; the closed and open never count."""
    f = FIGURES[track]
    kept = [mean_std(f.first)[0], mean_std(f.winner)[0], mean_std(f.remeasured)[0]]
    assert min(kept) == mean_std(f.remeasured)[0] > max(min(f.closed), min(f.review))
    return mean_std(f.remeasured)[0]


@pytest.mark.parametrize("track", TRACKS)
def test_the_advisor_and_every_reader_agree_on_the_best(lab: SeededLab, track: str) -> None:
    problem = loads_problem(PROBLEM_TOML)
    store = Store(lab.path)
    try:
        ctx = build_context(store, lab.repo_id, problem, "", PROBLEM_TOML, track=track)
        progress = queries.best_over_experiments(store, problem, lab.repo_id, track)
        listed = {row.lab: row.best for row in lab_rows(store)}
        history = queries.history_rows(
            store, problem, best_only=True, repo_id=lab.repo_id, track=track
        )
        steps = queries.best_steps(store, problem, lab.repo_id, track)
    finally:
        store.close()
    expected = _expected(track)
    assert ctx.best == pytest.approx(expected)
    assert progress.best == ctx.best
    assert listed[lab_key("lab/charlm", track)] == ctx.best
    # the chart's staircase reaches it once the re-measured baseline landed
    assert [round(p.best, 6) for p in progress.points][-1] == round(expected, 6)
    # `history --best` lists the jobs that set it: first baseline, winner, re-measured baseline
    assert [r.status for r in history] == ["baseline", "keep", "baseline"]
    assert [s.improved for s in steps] == [True, True, True]
    assert {s.experiment_id for s in steps} - {None} == {
        r.id for r in ctx.history if r.state == "merged"
    }
    # the hostile rows read as empty rather than failing the notebook
    assert all(r.knobs == {} for r in ctx.history)


def test_the_dashboard_pages_show_that_best(lab: SeededLab) -> None:
    served, stop = serve_dashboard(lab.path)
    try:
        for track, path in (("default", "/labs/lab/charlm"), ("long", "/labs/lab/charlm/long")):
            html = httpx.get(served.url + path, timeout=10).text
            card = re.search(
                r'<div class="label">best val_bpb</div><div class="value">([^<]*)</div>', html
            )
            assert card is not None, path
            assert card.group(1) == numbers.metric(_expected(track))
    finally:
        stop()


def test_best_follows_the_direction_and_waits_for_a_kept_result(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    try:
        repo_id = seed_tracks(store, time.time() - 3600)
        accuracy = Problem(metric="val_bpb", direction="maximize")
        # maximizing, the first baseline is the highest kept figure of each track
        for track in TRACKS:
            best = queries.best_so_far(store, accuracy, repo_id, track)
            assert best == pytest.approx(mean_std(FIGURES[track].first)[0])
        assert queries.best_so_far(store, accuracy, repo_id, "nope") is None
        assert queries.best_so_far(store, accuracy, repo_id + 1, "default") is None
    finally:
        store.close()


def test_nothing_kept_is_no_best_however_good_the_closed_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    try:
        repo_id = store.insert(
            "repos", {"full_name": "lab/charlm", "problem_toml": PROBLEM_TOML, "created_at": 0.0}
        )
        closed = _experiment(store, repo_id, "default", "lucky", "closed", "b0" * 20, 10.0)
        _runs(store, repo_id, "default", "candidate", [0.5], "b0" * 20, 20.0, closed)
        problem = loads_problem(PROBLEM_TOML)
        ctx = build_context(store, repo_id, problem, "", "")
        progress = queries.best_over_experiments(store, problem, repo_id, "default")
        assert ctx.best is None and progress.best is None
        assert [p.value for p in progress.points] == [0.5]  # still charted as tried
    finally:
        store.close()
