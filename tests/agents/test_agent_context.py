"""The advisor's context, read from a real SQLite store, and its bounded rendering."""

from __future__ import annotations

import pytest

from agents.context import AdvisorContext, ExperimentRecord, build_context
from bot.problem import Problem
from bot.store import Store


def test_build_context_reads_the_notebook(
    store: Store, repo_id: int, problem: Problem, add_experiment, add_baseline
) -> None:
    add_baseline([1.10, 1.12, 1.08], base_sha="base0")  # an older base
    add_baseline([1.00, 1.02, 0.98])  # the current base (repos.base_sha = base1)
    merged = add_experiment(
        {"LEARNING_RATE": 0.003}, [0.95, 0.96, 0.94], state="merged", verdict="merge", pr_number=3
    )
    add_experiment({"LEARNING_RATE": 0.01}, [1.05], state="closed", verdict="close", pr_number=4)
    crashed = add_experiment({"N_LAYER": 3}, [None], state="closed", pr_number=5)
    add_experiment({}, [], state="queued", source="human", title="use rotary embeddings")

    ctx = build_context(store, repo_id, problem, "# program", "[metric]\n", plateau_after=2)

    assert ctx.repo == "lab/charlm"
    assert ctx.baseline_mean == pytest.approx(1.0)
    assert ctx.baseline_std == pytest.approx(0.02)
    assert ctx.baseline_n == 3
    assert ctx.best == pytest.approx(0.95)  # the merged experiment beats every baseline
    assert [r.id for r in ctx.history][:3] == [merged, merged + 1, crashed]
    first = ctx.history[0]
    assert (first.number, first.state, first.verdict, first.n_seeds) == (3, "merged", "merge", 3)
    assert first.metric_mean == pytest.approx(0.95)
    assert first.knobs == {"LEARNING_RATE": 0.003}
    assert "LEARNING_RATE=0.003" in first.diff_summary
    failed = ctx.history[2]
    assert failed.metric_mean is None and failed.n_failed == 1
    assert "CUDA out of memory" in failed.failure
    assert ctx.experiments_since_improvement == 2  # two closed after the merge
    assert ctx.plateau is True
    assert ctx.open_issues == [f"exp-{crashed + 1} use rotary embeddings"]


def test_runs_from_an_old_base_or_head_are_not_mixed_in(
    store: Store, repo_id: int, problem: Problem, add_experiment
) -> None:
    experiment = add_experiment({"N_LAYER": 2}, [0.5, 0.5], base_sha="old", state="review")
    store.update("experiments", experiment, {"base_sha": "base1"})

    def run(seed: int, commit: str, base: str, metric: float) -> None:
        store.insert(
            "runs",
            {
                "repo_id": repo_id,
                "experiment_id": experiment,
                "kind": "candidate",
                "seed": seed,
                "commit_sha": commit,
                "base_sha": base,
                "status": "ok",
                "metric": metric,
                "created_at": 0.0,
            },
        )

    run(5, "head1", "base1", 0.7)  # the first head, measured on the new base
    run(6, "head2", "base1", 0.9)  # changes requested: a new head
    run(7, "head2", "base1", 0.8)
    ctx = build_context(store, repo_id, problem, "", "")
    assert ctx.history[0].metric_mean == pytest.approx(0.85)
    assert ctx.history[0].n_seeds == 2
    assert ctx.baseline_mean is None and ctx.best is None
    assert ctx.plateau is False


def test_unknown_repo_is_an_error(store: Store, problem: Problem) -> None:
    with pytest.raises(KeyError):
        build_context(store, 999, problem, "", "")


def _record(i: int) -> ExperimentRecord:
    return ExperimentRecord(
        number=i,
        title=f"experiment number {i} " + "x" * 200,
        hypothesis="because " + "y" * 500,
        knobs={"LEARNING_RATE": 0.001 * i},
        student="fern",
        state="closed",
        metric_mean=1.0 + i / 1000,
        metric_std=0.01,
        n_seeds=3,
        verdict="close",
        diff_summary="set LEARNING_RATE",
        id=i,
    )


@pytest.mark.parametrize("max_chars", [3000, 6000, 12000])
def test_render_is_bounded_and_newest_first(problem: Problem, max_chars: int) -> None:
    ctx = AdvisorContext(
        program_md="# Program\n" + "context " * 5000,
        config_toml="[metric]\nname = 'val_bpb'\n",
        problem=problem,
        baseline_mean=1.0,
        baseline_std=0.01,
        best=0.95,
        history=[_record(i) for i in range(1, 300)],
        open_issues=["#7 try rotary embeddings"],
        plateau=True,
        experiments_since_improvement=6,
        baseline_n=3,
    )
    text = ctx.render(max_chars=max_chars)
    assert len(text) <= max_chars
    assert "plateau" in text
    assert "val_bpb" in text
    assert "older experiment(s) not shown" in text
    assert text.index("#299") < text.index("#298")  # newest first
    assert "#1 " not in text  # the oldest did not fit


def test_render_small_history_shows_everything(problem: Problem) -> None:
    ctx = AdvisorContext(
        "p", "t", problem, None, None, None, [_record(1), _record(2)], [], False, 0
    )
    text = ctx.render()
    assert "#1 " in text and "#2 " in text
    assert "not shown" not in text
    assert "Baseline: not measured" in text
