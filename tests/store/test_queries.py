"""The shared read models over a seeded SQLite file, in both metric directions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot import queries
from bot.problem import Problem
from bot.store import Store
from tests.support.dashboard_seed import BASES, Lab, Seeded


@pytest.fixture
def store(seeded: Seeded):
    store = Store(seeded.path)
    yield store
    store.close()


def test_leaderboard_ranks_merged_winners_best_first(store: Store, seeded: Seeded) -> None:
    board = queries.leaderboard(store)
    assert [r.experiment_id for r in board] == [seeded.ids["cos"], seeded.ids["lr"]]
    top = board[0]
    assert top.rank == 1 and top.pr_number == 4 and top.seeds == 3
    assert top.mean == pytest.approx((1.428 + 1.431 + 1.426) / 3)
    # measured against the baseline of its own base (b1), not the current one
    assert top.delta == pytest.approx(top.mean - (1.461 + 1.463 + 1.460) / 3)
    assert top.merged_by == "human:alice"
    assert board[1].merged_by == "gate"


def test_baseline_is_the_current_base_mean(store: Store) -> None:
    base = queries.baseline(store)
    assert base is not None
    assert base.base_sha == BASES[2] and base.seeds == 3
    assert base.mean == pytest.approx((1.429 + 1.427 + 1.430) / 3)


def test_baseline_falls_back_to_the_last_measured_base_while_a_new_one_runs(
    store: Store,
) -> None:
    store.update("repos", 1, {"base_sha": "f" * 40})
    base = queries.baseline(store)
    assert base is not None and base.base_sha == BASES[2]


def test_best_so_far_moves_on_kept_results_only(store: Store) -> None:
    progress = queries.best_over_experiments(store, Problem())
    assert progress.baseline == pytest.approx((1.500 + 1.505 + 1.498) / 3)
    assert [p.x for p in progress.points] == [1.0, 2.0, 3.0, 4.0]
    assert [p.kept for p in progress.points] == [True, False, True, False]
    bests = [round(p.best, 4) for p in progress.points]
    # the baseline re-measured after the first merge (1.4613) beats the winner's own 1.462;
    # the review candidate (1.421, one seed) is better but not merged: the best holds
    assert bests == [1.462, 1.4613, 1.4283, 1.4283]
    assert progress.best == pytest.approx((1.428 + 1.431 + 1.426) / 3)
    over_time = queries.best_over_time(store, Problem())
    assert over_time.x_label == "hours since start"
    xs = [p.x for p in over_time.points]
    assert xs == sorted(xs) and 2.0 < xs[-1] < 2.5  # the review run landed at t0 + 8000 s


def test_experiments_carry_result_decision_and_failures(store: Store, seeded: Seeded) -> None:
    rows = {e.id: e for e in queries.experiments(store)}
    assert list(rows) == sorted(rows, reverse=True)  # newest first
    deep = rows[seeded.ids["deep"]]
    assert (deep.state, deep.student, deep.seeds, deep.verdict, deep.actor) == (
        "closed",
        "frieren",
        3,
        "close",
        "advisor",
    )
    assert deep.delta is not None and deep.delta > 0
    assert "under-trained" in deep.rationale
    tied = rows[seeded.ids["tied"]]
    assert (tied.seeds, tied.failed, tied.mean) == (0, 1, None)
    queued = rows[seeded.ids["batch"]]
    assert (queued.mean, queued.verdict, queued.seeds) == (None, None, 0)


def test_current_group_keeps_seeds_of_one_commit_and_base(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    lab = Lab(store, time.time() - 1000)
    exp = lab.experiment("Try", "review", "fern", 3, 10, BASES[0])
    lab.runs("candidate", [2.0, 2.1], base=BASES[0], at=20, experiment_id=exp, commit="a" * 40)
    lab.runs("candidate", [1.0], base=BASES[0], at=40, experiment_id=exp, commit="b" * 40)
    lab.runs("candidate", [1.2], base=BASES[0], at=60, experiment_id=exp, commit="b" * 40)
    row = queries.experiments(store)[0]
    assert row.seeds == 2 and row.mean == pytest.approx(1.1)
    store.close()


def test_maximize_direction_flips_the_ranking_and_the_best(tmp_path: Path) -> None:
    store = Store(tmp_path / "acc.db")
    lab = Lab(store, time.time() - 5000)
    lab.runs("baseline", [0.70, 0.71], base=BASES[0], at=0)
    low = lab.experiment("Smaller", "merged", "fern", 2, 10, BASES[0])
    lab.runs("candidate", [0.72, 0.73], base=BASES[0], at=100, experiment_id=low, commit="1" * 40)
    high = lab.experiment("Bigger", "merged", "fern", 3, 20, BASES[0])
    lab.runs("candidate", [0.80, 0.81], base=BASES[0], at=200, experiment_id=high, commit="2" * 40)
    worse = lab.experiment("Worse", "merged", "fern", 4, 30, BASES[0])
    lab.runs("candidate", [0.75], base=BASES[0], at=300, experiment_id=worse, commit="3" * 40)
    acc = Problem(metric="accuracy", direction="maximize")
    board = queries.leaderboard(store, problem=acc)
    assert [r.experiment_id for r in board] == [high, worse, low]
    progress = queries.best_over_experiments(store, acc)
    assert [round(p.best, 3) for p in progress.points] == [0.725, 0.805, 0.805]
    minimizing = queries.best_over_experiments(store, Problem())
    assert [round(p.best, 3) for p in minimizing.points] == [0.705, 0.705, 0.705]
    assert [r.status for r in queries.history_rows(store, acc, best_only=True)] == [
        "baseline",
        "keep",
        "keep",
    ]
    store.close()


def test_history_rows_cover_every_job_kept_or_not(store: Store) -> None:
    rows = queries.history_rows(store)
    assert [r.status for r in rows] == [
        "baseline",
        "keep",
        "baseline",
        "discard",
        "crash",
        "keep",
        "baseline",
        "pending",
    ]
    keep = rows[1]
    assert keep.commit == "c1" * 20 and keep.parent == BASES[0]
    assert keep.seeds == 3 and keep.memory_gb == round(2248 / 1024, 1)
    assert keep.cost_usd == pytest.approx(0.6) and keep.pr_number == 2
    assert keep.duration_s == pytest.approx(301.0)
    crash = rows[4]
    assert crash.metric is None and crash.description == "Tie input and output embeddings"
    best = queries.history_rows(store, best_only=True)
    assert [(r.status, round(r.metric, 4)) for r in best] == [
        ("baseline", 1.501),
        ("keep", 1.462),
        ("baseline", 1.4613),  # the re-measured base beat the winner's own figure
        ("keep", 1.4283),
    ]


def test_experiment_detail_by_pr_number_or_id(store: Store, seeded: Seeded) -> None:
    detail = queries.experiment_detail(store, 2)
    assert detail is not None and detail.experiment.id == seeded.ids["lr"]
    assert [r.seed for r in detail.runs] == [0, 1, 2]
    assert all(len(r.curve) == 21 for r in detail.runs)
    assert [d.verdict for d in detail.decisions] == ["confirm", "merge"]
    assert detail.changed_files == ["train.py"] and "3e-3" in detail.notes
    by_id = queries.experiment_detail(store, seeded.ids["deep"], by="id")
    assert by_id is not None and by_id.experiment.pr_number == 3
    assert queries.experiment_detail(store, 999) is None


def test_students_and_queue(store: Store, seeded: Seeded) -> None:
    students = {s.name: s for s in queries.students(store)}
    assert students["fern"].experiment_id == seeded.ids["drop"]
    assert students["fern"].job_phase == "training" and students["fern"].wins == 1
    assert students["himmel"].job_id is None and students["himmel"].wins == 1
    assert students["stark"].state == "offline"
    jobs = queries.queue(store)
    assert [(j.state, j.experiment_id) for j in jobs] == [
        ("leased", seeded.ids["drop"]),
        ("leased", seeded.ids["smooth"]),
        ("queued", seeded.ids["batch"]),
    ]
    assert jobs[2].student is None and jobs[2].seeds == [0]


def test_cached_experiments_follow_writes_from_any_connection(store: Store, seeded: Seeded) -> None:
    first = {e.id: e for e in queries.experiments(store)}
    assert first[seeded.ids["wide"]].verdict == "confirm"
    store.insert(
        "decisions",
        {"experiment_id": seeded.ids["wide"], "verdict": "wait", "actor": "gate",
         "rationale": "two seeds running", "created_at": time.time()},
    )  # fmt: skip
    assert {e.id: e for e in queries.experiments(store)}[seeded.ids["wide"]].verdict == "wait"
    other = Store(seeded.path)
    other.update("experiments", seeded.ids["wide"], {"state": "merged"})
    other.close()
    assert {e.id: e for e in queries.experiments(store)}[seeded.ids["wide"]].state == "merged"


def test_leaderboard_shows_claimed_beside_measured_gain(store: Store) -> None:
    board = {r.title: r for r in queries.leaderboard(store)}
    lr, cos = board["Raise learning rate to 3e-3"], board["Cosine schedule with warmup"]
    first, second, third = (
        (1.500 + 1.505 + 1.498) / 3,
        (1.461 + 1.463 + 1.460) / 3,
        (1.429 + 1.427 + 1.430) / 3,
    )
    # claimed: what the gate saw (no stats recorded here: the experiment's own delta)
    assert lr.claimed_gain == pytest.approx((1.462 + 1.458 + 1.466) / 3 - first)
    # measured: the baseline re-measured after the merge, minus the one it beat
    assert (lr.measured_gain, lr.measured_seeds) == (pytest.approx(second - first), 3)
    assert cos.measured_gain == pytest.approx(third - second)


def test_measured_gain_prefers_the_merge_commit_and_the_gates_own_numbers(
    store: Store, seeded: Seeded
) -> None:
    exp_id = seeded.ids["lr"]
    store.execute(
        "UPDATE decisions SET stats = ? WHERE experiment_id = ? AND verdict = 'merge'",
        ('{"delta": -0.05}', exp_id),
    )
    # A baseline on the merge commit, measured later than another base's: it is the one.
    merge_sha = "9" * 40
    store.insert(
        "runs",
        {
            "repo_id": 1,
            "kind": "baseline",
            "seed": 0,
            "base_sha": merge_sha,
            "status": "ok",
            "metric": 1.40,
            "created_at": time.time() + 10**6,
        },
    )
    store.insert(
        "outbox",
        {
            "repo": "lab/charlm",
            "op": "merge",
            "args": f'{{"experiment_id": {exp_id}, "number": 2}}',
            "state": "done",
            "result": f'{{"sha": "{merge_sha}", "merged": true}}',
            "created_at": 0,
        },
    )
    row = next(r for r in queries.leaderboard(store) if r.experiment_id == exp_id)
    assert row.claimed_gain == -0.05
    assert row.measured_gain == pytest.approx(1.40 - (1.500 + 1.505 + 1.498) / 3)
    assert row.measured_seeds == 1


def test_a_winner_without_a_new_baseline_is_not_yet_measured(store: Store, seeded: Seeded) -> None:
    store.execute("DELETE FROM runs WHERE kind = 'baseline' AND base_sha = ?", (BASES[2],))
    row = next(r for r in queries.leaderboard(store) if r.experiment_id == seeded.ids["cos"])
    assert row.claimed_gain is not None and row.measured_gain is None


def test_light_reads_keep_the_stored_trust_flags(tmp_path: Path) -> None:
    # Light reads skip curves and log tails; `sealed`/`sandboxed` default to True in the
    # record, so they must still come from the row or an unsealed run would read as sealed.
    store = Store(tmp_path / "k.db")
    lab = Lab(store, time.time() - 1000)
    exp = lab.experiment("Loose", "review", "fern", 7, 10, BASES[0])
    lab.runs("candidate", [1.0, 1.1], base=BASES[0], at=20, experiment_id=exp, sealed=False)
    store.execute("UPDATE runs SET sandboxed = 0 WHERE experiment_id = ?", (exp,))
    assert queries.experiments(store)[0].trust == "unsealed, unsandboxed"
    assert [r.trust for r in queries.history_rows(store)] == ["unsealed, unsandboxed"]
    detail = queries.experiment_detail(store, 7)
    assert detail is not None
    assert [(r.sealed, r.sandboxed) for r in detail.runs] == [(False, False)] * 2
    assert detail.runs[0].metrics == {"val_bpb": 1.0} and len(detail.runs[0].curve) == 21
    store.close()


def test_find_experiment_is_a_record_scoped_by_repository(store: Store, seeded: Seeded) -> None:
    found = queries.find_experiment(store, 2)
    assert found is not None and found.id == seeded.ids["lr"] and found.pr_number == 2
    assert isinstance(found.knobs, dict) and found.hold is False
    assert queries.find_experiment(store, seeded.ids["lr"], by="id") == found
    assert queries.find_experiment(store, 2, by="pr") == found
    assert queries.find_experiment(store, 999, by="pr") is None
    assert queries.find_experiment(store, 2, repo_id=999) is None


def test_a_broken_decision_stats_column_reads_as_no_stats(store: Store, seeded: Seeded) -> None:
    exp_id = seeded.ids["lr"]
    store.execute(
        "UPDATE decisions SET stats = ? WHERE experiment_id = ? AND verdict = 'merge'",
        ("{not json", exp_id),
    )
    row = next(r for r in queries.leaderboard(store) if r.experiment_id == exp_id)
    exp = next(e for e in queries.experiments(store) if e.id == exp_id)
    assert row.claimed_gain == exp.delta  # no gate figures: the experiment's own delta
    detail = queries.experiment_detail(store, 2)
    assert detail is not None and [d.stats for d in detail.decisions] == [{}, {}]
