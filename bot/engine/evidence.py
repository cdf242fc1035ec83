"""What the gate is shown: the runs of a candidate and of its baseline, read from the store.

`bot.core.gate.decide` is pure; this is its edge. It reads every counted run of the
candidate (failed ones included: they count against it), the baseline runs of
the base it was measured on with their seeds and hardware class, how many
confirmation rounds the candidate has had, the lab's own estimate of how
strongly matched seeds correlate and, with `[gate] pooled`, how widely a paired
difference spreads, then asks the gate with the problem's `[gate]` levers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from bot import queries
from bot.core import bayes
from bot.core.gate import (
    BudgetSpent,
    ClosedOnBase,
    GateDecision,
    SeedRun,
    decide,
    decide_bayes,
)
from bot.core.stats import mean_std, pooled_paired_spread, pooled_seed_correlation
from bot.problem import Problem
from bot.records import Experiment
from bot.store import Store

RUN_COLUMNS = "id, seed, status, metric, gpu_kind, host, student, created_at"


def candidate_runs(store: Store, exp: Experiment, base_sha: str | None = None) -> list[SeedRun]:
    """Every run of the experiment's current head on the base it was measured on."""
    base = exp.base_sha if base_sha is None else base_sha
    rows = store.query(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE experiment_id = ? AND kind = 'candidate' "
        "AND commit_sha IS ? AND base_sha IS ? ORDER BY id",
        (exp.id, exp.head_sha, base),
    )
    return [SeedRun.coerce(row) for row in rows]


def baseline_runs(
    store: Store, repo_id: int, base_sha: str | None, track: str = "default"
) -> list[SeedRun]:
    """The baseline runs of one base of one track, every hardware class (the gate picks)."""
    rows = store.query(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE repo_id = ? AND track = ? AND kind = 'baseline' "
        "AND base_sha IS ? ORDER BY id",
        (repo_id, track, base_sha),
    )
    return [SeedRun.coerce(row) for row in rows]


def confirm_rounds(store: Store, exp: Experiment) -> int:
    """Confirmation rounds the gate has asked for on the current head and base."""
    first = store.one(
        "SELECT MIN(created_at) AS t FROM runs WHERE experiment_id = ? AND kind = 'candidate' "
        "AND commit_sha IS ? AND base_sha IS ?",
        (exp.id, exp.head_sha, exp.base_sha),
    )
    if not first or first["t"] is None:
        return 0
    row = store.one(
        "SELECT COUNT(*) AS n FROM decisions WHERE experiment_id = ? AND verdict = 'confirm' "
        "AND actor = 'gate' AND created_at >= ?",
        (exp.id, first["t"]),
    )
    return int(row["n"]) if row else 0


Comparison = tuple[str, list[tuple[float, float]]]


def lab_comparisons(store: Store, repo_id: int, *, exclude: int | None = None) -> list[Comparison]:
    """The lab's earlier paired comparisons: each one's track and (candidate, baseline) per seed.

    Each earlier candidate (one commit on one base) is paired, seed by seed,
    with the first ok baseline run of the same base, track, seed and hardware
    class; `exclude` leaves out the experiment being decided, so its own data
    do not choose its test. One query serves both estimates below.
    """
    rows = store.query(
        "SELECT c.experiment_id AS exp, c.commit_sha AS commit_sha, c.base_sha AS base, "
        "c.track AS track, c.seed AS seed, c.metric AS cm, b.metric AS bm "
        "FROM runs c JOIN runs b "
        "ON b.repo_id = c.repo_id AND b.track = c.track AND b.kind = 'baseline' "
        "AND b.base_sha IS c.base_sha "
        "AND b.seed = c.seed AND b.gpu_kind = c.gpu_kind AND b.status = 'ok' "
        "AND b.metric IS NOT NULL "
        "WHERE c.repo_id = ? AND c.kind = 'candidate' AND c.status = 'ok' "
        "AND c.metric IS NOT NULL AND c.experiment_id IS NOT ? "
        "AND b.id = (SELECT MIN(b2.id) FROM runs b2 WHERE b2.repo_id = b.repo_id "
        "AND b2.track = b.track "
        "AND b2.kind = 'baseline' AND b2.base_sha IS b.base_sha AND b2.seed = b.seed "
        "AND b2.gpu_kind = b.gpu_kind AND b2.status = 'ok' AND b2.metric IS NOT NULL) "
        "ORDER BY c.id",
        (repo_id, exclude),
    )
    groups: dict[tuple[Any, ...], tuple[str, dict[int, tuple[float, float]]]] = {}
    for row in rows:
        _, pairs = groups.setdefault(
            (row["exp"], row["commit_sha"], row["base"]), (row["track"], {})
        )
        pairs.setdefault(row["seed"], (float(row["cm"]), float(row["bm"])))
    return [(track, list(pairs.values())) for track, pairs in groups.values()]


def seed_correlation_of(comparisons: list[Comparison]) -> float | None:
    """Pooled over every track of the repository: seed luck belongs to its training code."""
    return pooled_seed_correlation([pairs for _, pairs in comparisons])


def paired_spread_of(comparisons: list[Comparison], track: str) -> tuple[float, float] | None:
    """One track only: its program, and so the size of its seed noise, may differ."""
    return pooled_paired_spread([pairs for line, pairs in comparisons if line == track])


def lab_seed_correlation(store: Store, repo_id: int, *, exclude: int | None = None) -> float | None:
    """How strongly matched seeds correlate in this lab; None while there are too few pairs."""
    return seed_correlation_of(lab_comparisons(store, repo_id, exclude=exclude))


def lab_paired_spread(
    store: Store, repo_id: int, track: str, *, exclude: int | None = None
) -> tuple[float, float] | None:
    """The pooled std of a paired difference and its df in one track; None with too few df."""
    return paired_spread_of(lab_comparisons(store, repo_id, exclude=exclude), track)


def gate_decision(
    store: Store,
    *,
    repo_id: int,
    base_sha: str | None,
    problem: Problem,
    exp: Experiment,
    alpha: float,
    track: str = "default",
) -> GateDecision:
    """The gate's verdict on `exp` against the baseline of `base_sha`, from the store.

    The problem's `[gate]` levers are passed on as they are; with `pooled`, the
    paired test leans on this track's earlier paired comparisons.
    """
    levers = problem.gate
    comparisons = lab_comparisons(store, repo_id, exclude=exp.id)
    if levers.method == "bayes":
        state = lab_gate_state(store, repo_id, track, comparisons=comparisons, exclude=exp.id)
        return decide_bayes(
            candidate_runs(store, exp),
            baseline_runs(store, repo_id, base_sha, track),
            minimize=problem.minimize,
            baseline_seeds=problem.baseline_seeds,
            prior=state.prior,
            false_merges=levers.false_merges,
            spent=state.spent,
            closed=closed_on_base(store, repo_id, base_sha, track, exclude=exp.id),
        )
    return decide(
        candidate_runs(store, exp),
        baseline_runs(store, repo_id, base_sha, track),
        minimize=problem.minimize,
        confirm_seeds=problem.confirm_seeds,
        baseline_seeds=problem.baseline_seeds,
        alpha=alpha,
        confirm_rounds=confirm_rounds(store, exp),
        seed_correlation=seed_correlation_of(comparisons),
        screen_margin=levers.screen,
        sequential=levers.sequential,
        paired_spread=paired_spread_of(comparisons, track) if levers.pooled else None,
    )


def closed_on_base(
    store: Store,
    repo_id: int,
    base_sha: str | None,
    track: str = "default",
    *,
    exclude: int | None = None,
) -> list[ClosedOnBase]:
    """The closed ideas of a track measured on `base_sha`, oldest decision first: each one's
    runs of its last head there, with its effect's posterior from its last decision.

    Whoever closed it, the posterior is what the runs said about the idea, so the runs measure
    the base less that effect (`decide_bayes(closed=)`). Ideas decided before the posterior's
    variance was recorded, or without the Bayesian gate's numbers, are left out.
    """
    rows = store.query(
        "SELECT e.id AS exp, e.head_sha AS head, d.stats AS stats FROM experiments e "
        "JOIN decisions d ON d.id = (SELECT MAX(d2.id) FROM decisions d2 "
        "WHERE d2.experiment_id = e.id) "
        "WHERE e.repo_id = ? AND e.track = ? AND e.state = 'closed' AND d.verdict = 'close' "
        "AND e.id IS NOT ? ORDER BY d.id",
        (repo_id, track, exclude),
    )
    out: list[ClosedOnBase] = []
    for row in rows:
        stats = json.loads(row["stats"] or "{}")
        numbers = stats.get("bayes") if isinstance(stats, dict) else None
        if not isinstance(numbers, dict):
            continue
        effect, var = numbers.get("expected_gain"), numbers.get("effect_var")
        if not (isinstance(effect, int | float) and isinstance(var, int | float)):
            continue
        if not _finite(effect, var):
            continue
        runs = store.query(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE experiment_id = ? AND kind = 'candidate' "
            "AND commit_sha IS ? AND base_sha IS ? AND status = 'ok' ORDER BY id",
            (row["exp"], row["head"], base_sha),
        )
        if runs:
            out.append(ClosedOnBase([SeedRun.coerce(r) for r in runs], float(effect), float(var)))
    return out


@dataclass(frozen=True)
class GateState:
    """What the Bayesian gate has learned about a lab (one track): its prior over effects and
    noise (None while fewer than 40 ideas are decided: the vague start), the false-merge
    budget spent by its merges, and how many ideas are decided."""

    prior: bayes.EffectPrior | None
    spent: BudgetSpent
    decided: int


def lab_gate_state(
    store: Store,
    repo_id: int,
    track: str = "default",
    *,
    comparisons: list[Comparison] | None = None,
    exclude: int | None = None,
) -> GateState:
    """The Bayesian gate's state of a track, from its decisions and runs (pure but for reads).

    Every decided idea's evidence is in its final gate decision's stats (`bayes`): its mean
    improvement, precision and the noise it was computed with. The prior is refitted at 40
    decided ideas and every 20 after (`bot.core.bayes.due_for_learning`), so it is learned
    from the ideas up to the last refit point: the same numbers whenever it is read. From
    10 decided ideas the noise is learned from the lab's paired comparisons
    (`bot.core.bayes.learn_noise`, a cautious estimate), the seed spread from its bases'
    runs; before 40 the prior is still the vague one (and so is the budget).
    """
    rows = store.query(
        "SELECT d.experiment_id AS exp, d.verdict AS verdict, d.stats AS stats "
        "FROM decisions d JOIN experiments e ON e.id = d.experiment_id "
        "WHERE e.repo_id = ? AND e.track = ? AND d.verdict IN ('merge', 'close') "
        "AND d.experiment_id IS NOT ? ORDER BY d.id",
        (repo_id, track, exclude),
    )
    final: dict[int, tuple[str, dict[str, Any]]] = {}
    for row in rows:
        stats = json.loads(row["stats"] or "{}")
        numbers = stats.get("bayes") if isinstance(stats, dict) else None
        if isinstance(numbers, dict) and stats.get("reason") != "human override":
            final[row["exp"]] = (row["verdict"], numbers)
    decided = [
        (float(n["mean_improvement"]), float(n["precision"]), float(n["noise"]))
        for _, n in final.values()
        if _finite(n.get("mean_improvement"), n.get("precision"), n.get("noise"))
    ]
    merged = [n for verdict, n in final.values() if verdict == "merge"]
    spent = BudgetSpent(
        sum(float(n.get("chance_null_or_worse") or 0.0) for n in merged), len(merged)
    )
    usable = len(decided)
    while usable >= bayes.LEARN_FROM and not bayes.due_for_learning(usable):
        usable -= 1
    if len(decided) < bayes.NOISE_EVERY:
        return GateState(None, spent, len(decided))
    comparisons = (
        comparisons if comparisons is not None else lab_comparisons(store, repo_id, exclude=exclude)
    )
    noise = bayes.learn_noise([pairs for line, pairs in comparisons if line == track])
    bases = store.query(
        "SELECT base_sha, metric FROM runs WHERE repo_id = ? AND track = ? AND kind = 'baseline' "
        "AND status = 'ok' AND metric IS NOT NULL ORDER BY id",
        (repo_id, track),
    )
    groups: dict[Any, list[float]] = {}
    for row in bases:
        groups.setdefault(row["base_sha"], []).append(float(row["metric"]))
    first = next(iter(groups.values()), [])
    start = bayes.EffectPrior.vague(mean_std(first)[1] if first else 1.0, len(first))
    spread = bayes.learn_seed_spread(list(groups.values()), noise or start.noise)
    if usable < bayes.LEARN_FROM:  # the noise alone (at its cautious bound), the prior vague
        if noise is None:
            return GateState(None, spent, len(decided))
        prior = replace(start, noise=noise, seed_spread=spread or start.seed_spread)
        return GateState(prior, spent, len(decided))
    prior = bayes.learn_prior(decided[:usable], start, noise=noise, seed_spread=spread)
    return GateState(prior, spent, len(decided))


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and v == v and abs(v) != float("inf") for v in values)


def student_on_hardware(store: Store, exp: Experiment, gpu_kind: str) -> str | None:
    """A student that ran this experiment on `gpu_kind`: where its baseline should run."""
    row = store.one(
        "SELECT student FROM runs WHERE experiment_id = ? AND gpu_kind = ? AND student IS NOT NULL "
        "ORDER BY id DESC LIMIT 1",
        (exp.id, gpu_kind),
    )
    return row["student"] if row else exp.student


def verified_diff(store: Store, exp: Experiment) -> str | None:
    """The diff the bot computed when it accepted the experiment's current head from a host.

    None when no host pushed this head through the bot (the bot's own start
    commit, a writer's push): the audit then has nothing to read, and the merge
    still re-reads the pull request's files from GitHub (`bot.outbox.worker.merge`).
    """
    return queries.verified_diff(store, exp.id, exp.head_sha)
