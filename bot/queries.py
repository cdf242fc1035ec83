"""Read-only views of the store for the dashboard, `kohai status`/`history` and the report.

Every reader of the lab's results should agree on what "the baseline", "an
experiment's mean" and "the best so far" are, so those definitions live here
once:

- An experiment's result is the mean of its ok seeds in its *current group*:
  the runs sharing the commit and base of its latest run. Seeds of an older
  commit (before changes were requested) or of an older base (before a winner
  merged) do not mix with the current ones.
- The baseline of a base commit is the mean of the ok baseline runs on it; the
  repo's baseline is that of `repos.base_sha`, or of the latest measured base
  while the new one is still being measured.
- The best so far is the best, in the problem's direction, of everything the
  lab kept: every base's baseline and every merged winner's result, of one lab
  and track; closed and open experiments never count (`best_steps`).
"""

from __future__ import annotations

import json
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bot.core.stats import mean_std
from bot.problem import Problem
from bot.records import Decision, Experiment, Job, Repository, Run, Student, Track
from bot.store import Store

ACTIVE_STATES = ("implementing", "training")
OPEN_JOB_STATES = ("queued", "leased")


def trust_note(runs: list[Run]) -> str:
    """ "unsealed" / "unsandboxed" when any measured run was; "" when every one was both."""
    measured = [r for r in runs if r.status != "cancelled"]
    notes = []
    if any(not r.sealed for r in measured):
        notes.append("unsealed")
    if any(not r.sandboxed for r in measured):
        notes.append("unsandboxed")
    return ", ".join(notes)


@dataclass(frozen=True)
class Baseline:
    repo_id: int
    base_sha: str | None
    mean: float
    std: float
    seeds: int
    values: list[float]


@dataclass(frozen=True)
class ExperimentRow:
    id: int
    repo_id: int
    repo: str
    title: str
    hypothesis: str
    state: str
    source: str
    student: str | None
    pr_number: int | None
    issue_number: int | None
    branch: str | None
    base_sha: str | None
    head_sha: str | None
    hold: bool
    seeds: int  # ok seeds in the current group
    failed: int  # crashed, timed-out or refused seeds in the current group
    mean: float | None
    std: float | None
    baseline_mean: float | None  # of the base the current group was measured on
    delta: float | None  # mean - baseline_mean
    verdict: str | None  # the latest decision
    actor: str | None
    rationale: str
    decided_at: float | None
    cost_usd: float  # LLM cost of the experiment plus its runs' cost
    gpu_hours: float
    created_at: float
    updated_at: float
    finished_at: float | None  # when its latest run landed
    trust: str = ""  # "unsealed" and/or "unsandboxed" when its runs were; "" when neither
    track: str = "default"
    measured_on: str | None = None  # the base its current group (its result) was measured on


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int
    experiment_id: int
    pr_number: int | None
    repo: str
    title: str
    student: str | None
    mean: float | None
    std: float | None
    seeds: int
    delta: float | None
    merged_at: float
    merged_by: str | None
    # The gain the gate saw when it merged (candidate minus baseline, on the old
    # base) and the gain the lab then measured: the baseline re-measured on the
    # merge commit minus the old baseline. None while not (yet) measured.
    claimed_gain: float | None = None
    measured_gain: float | None = None
    measured_seeds: int = 0


@dataclass(frozen=True)
class ProgressPoint:
    x: float
    value: float  # this experiment's mean
    best: float  # best so far after it
    kept: bool  # merged
    experiment_id: int
    pr_number: int | None
    title: str


@dataclass(frozen=True)
class BestSoFar:
    metric: str
    minimize: bool
    x_label: str
    baseline: float | None  # the first baseline measured: where the best starts
    points: list[ProgressPoint]
    steps: list[BestStep] = field(default_factory=list)  # what the best is made of
    counted: bool = False  # x counts experiments (whole numbers), not time

    @property
    def best(self) -> float | None:
        """The best so far now, by `best_steps` (a baseline after the last experiment counts)."""
        return self.steps[-1].best if self.steps else None


@dataclass(frozen=True)
class ExperimentDetail:
    experiment: ExperimentRow
    runs: list[Run]
    decisions: list[Decision]
    changed_files: list[str] = field(default_factory=list)
    reverted_files: list[str] = field(default_factory=list)
    notes: str = ""
    # The baseline's runs (with curves) on each base the experiment was measured on:
    # a candidate seed is drawn over the baseline's seed of the same number and base.
    baseline_runs: list[Run] = field(default_factory=list)
    diff: str | None = None  # the bot's own diff of the current head (`verified_diff`)
    current_base: str | None = None  # the lab's base now (results elsewhere are older)


@dataclass(frozen=True)
class StudentRow:
    name: str
    state: str
    gpus: int
    last_seen: float | None
    job_id: int | None
    job_kind: str | None
    job_phase: str | None
    experiment_id: int | None
    pr_number: int | None
    title: str | None
    runs: int
    wins: int
    repo: str | None = None  # the lab of the current job
    labs: str | None = None  # the labs it may serve (owner/repo[:track],...); None: all


@dataclass(frozen=True)
class QueueRow:
    job_id: int
    kind: str
    state: str
    student: str | None  # who it is for; None: whoever is free first
    leased_by: str | None
    phase: str | None
    priority: int
    seeds: list[int]
    attempts: int
    experiment_id: int | None
    pr_number: int | None
    title: str | None
    created_at: float


@dataclass(frozen=True)
class HistoryRow:
    """One training job (all its seeds on one commit), kept or not."""

    job_id: int | None
    experiment_id: int | None
    kind: str
    commit: str | None
    parent: str | None
    metric: float | None
    std: float | None
    memory_gb: float | None
    status: str  # keep | discard | pending | baseline | crash | timeout | refused
    description: str
    student: str | None
    seeds: int
    duration_s: float | None
    cost_usd: float
    pr_number: int | None
    created_at: float
    trust: str = ""  # "unsealed" and/or "unsandboxed"; "" when sealed and sandboxed


def pr_url(repo: str, pr_number: int | None, html_base: str = "https://github.com") -> str | None:
    if pr_number is None:
        return None
    return f"{html_base.rstrip('/')}/{repo}/pull/{pr_number}"


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


# Curves, metrics and log tails are the bulk of a run row and only an experiment's page
# shows them; a light read leaves them out and they take the record's empty defaults.
# `sealed` and `sandboxed` must stay in: their default is True, and a light read of an
# unsealed run would otherwise call it sealed.
_LIGHT_COLUMNS = (
    "id, repo_id, experiment_id, job_id, kind, student, seed, commit_sha, base_sha, status, "
    "metric, duration_s, peak_mem_mb, gpu_hours, cost_usd, reason, wandb_url, created_at, "
    "sealed, sandboxed, track"
)


def _runs(
    store: Store, where: str = "1", params: tuple[Any, ...] = (), *, full: bool = False
) -> list[Run]:
    columns = "*" if full else _LIGHT_COLUMNS
    rows = store.query(f"SELECT {columns} FROM runs WHERE {where} ORDER BY created_at, id", params)
    return [Run.from_row(row) for row in rows]


def _ok_values(runs: list[Run]) -> list[float]:
    return [r.metric for r in runs if r.status == "ok" and r.metric is not None]


def current_group(runs: list[Run]) -> list[Run]:
    """The runs sharing the commit and base of the latest run (seeds that may be pooled)."""
    if not runs:
        return []
    latest = max(runs, key=lambda r: (r.created_at, r.id))
    key = (latest.commit_sha, latest.base_sha)
    return [r for r in runs if (r.commit_sha, r.base_sha) == key]


def baseline_values(store: Store, repo_id: int, track: str, base_sha: str | None) -> list[float]:
    """The baseline's measured values on one base of one lab: the one definition.

    Only `ok` seeds with a metric count; `base_sha` None (a lab not yet synced)
    has no baseline.
    """
    rows = store.query(
        "SELECT metric FROM runs WHERE repo_id = ? AND track = ? AND kind = 'baseline' "
        "AND base_sha IS ? AND status = 'ok' AND metric IS NOT NULL ORDER BY id",
        (repo_id, track, base_sha),
    )
    return [r["metric"] for r in rows]


def latest_baseline_base(store: Store, repo_id: int, track: str) -> str | None:
    """The base of the lab's latest measured baseline seed (None before the first)."""
    row = store.one(
        "SELECT base_sha FROM runs WHERE repo_id = ? AND track = ? AND kind = 'baseline' "
        "AND status = 'ok' AND metric IS NOT NULL ORDER BY id DESC LIMIT 1",
        (repo_id, track),
    )
    return row["base_sha"] if row else None


def group_values(
    store: Store, experiment_id: int, commit_sha: str | None, base_sha: str | None
) -> list[float]:
    """A candidate's measured values for one commit on one base: the seeds that may be pooled."""
    rows = store.query(
        "SELECT metric FROM runs WHERE experiment_id = ? AND kind = 'candidate' "
        "AND commit_sha IS ? AND base_sha IS ? AND status = 'ok' AND metric IS NOT NULL "
        "ORDER BY id",
        (experiment_id, commit_sha, base_sha),
    )
    return [r["metric"] for r in rows]


BaselinesByBase = dict[tuple[int, str, str | None], list[Run]]


def _baselines_by_base(store: Store) -> BaselinesByBase:
    """Baseline runs by lab (repository and track) and the base they measured."""
    groups: BaselinesByBase = defaultdict(list)
    for run in _runs(store, "kind = 'baseline'"):
        groups[(run.repo_id, run.track, run.base_sha)].append(run)
    return groups


def _in_track(track: str | None) -> tuple[str, tuple[Any, ...]]:
    """A SQL condition for one track (every track when None)."""
    return ("1", ()) if track is None else ("track = ?", (track,))


def _summary(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return mean_std(values)


def baseline(store: Store, repo_id: int | None = None, track: str = "default") -> Baseline | None:
    """The baseline of the lab's current base (the latest repo when none is named)."""
    repo = (
        store.get(Repository, repo_id)
        if repo_id is not None
        else store.first(Repository, order_by="active DESC, id DESC")
    )
    if repo is None:
        return None
    base_sha = repo.base_sha
    if track != "default":
        line = store.get(Track, repo.id, track)
        base_sha = line.base_sha if line else None
    values = baseline_values(store, repo.id, track, base_sha)
    if not values:  # not measured on this base yet: the last base that was
        base_sha = latest_baseline_base(store, repo.id, track)
        values = baseline_values(store, repo.id, track, base_sha)
        if not values:
            return None
    mean, std = mean_std(values)
    return Baseline(repo.id, base_sha, mean, std, len(values), values)


def _experiment_rows(
    store: Store,
    *,
    repo_id: int | None = None,
    experiment_id: int | None = None,
    track: str | None = None,
) -> list[ExperimentRow]:
    """Experiment rows, reading only the runs and decisions of the experiments asked for."""
    params: tuple[Any, ...]
    if experiment_id is not None:
        scope, params = "e.id = ?", (experiment_id,)
    elif repo_id is not None and track is not None:
        scope, params = "e.repo_id = ? AND e.track = ?", (repo_id, track)
    elif repo_id is not None:
        scope, params = "e.repo_id = ?", (repo_id,)
    else:
        scope, params = "1", ()
    rows = store.query(
        "SELECT e.*, r.full_name AS repo FROM experiments e JOIN repos r ON r.id = e.repo_id "
        f"WHERE {scope} ORDER BY e.id DESC",
        params,
    )
    if not rows:
        return []
    in_scope = f"experiment_id IN (SELECT e.id FROM experiments e WHERE {scope})"
    runs_by_experiment: dict[int, list[Run]] = defaultdict(list)
    for run in _runs(store, f"kind = 'candidate' AND {in_scope}", params):
        runs_by_experiment[run.experiment_id or 0].append(run)
    latest_decision: dict[int, Decision] = {}
    for found in store.rows(Decision, in_scope, params, order_by="created_at, id"):
        latest_decision[found.experiment_id] = found
    baselines = _baselines_by_base(store)
    result = []
    for row in rows:
        exp = Experiment.from_row(row)  # the join's `repo` column is read from the row
        runs = runs_by_experiment.get(exp.id, [])
        group = current_group(runs)
        mean, std = _summary(_ok_values(group))
        base_mean = None
        if group:
            base_values = _ok_values(baselines.get((exp.repo_id, exp.track, group[0].base_sha), []))
            base_mean = mean_std(base_values)[0] if base_values else None
        decision = latest_decision.get(exp.id)
        result.append(
            ExperimentRow(
                id=exp.id,
                repo_id=exp.repo_id,
                repo=row["repo"],
                title=exp.title,
                hypothesis=exp.hypothesis,
                state=exp.state,
                source=exp.source,
                student=exp.student,
                pr_number=exp.pr_number,
                issue_number=exp.issue_number,
                branch=exp.branch,
                base_sha=exp.base_sha,
                head_sha=exp.head_sha,
                hold=exp.hold,
                seeds=len(_ok_values(group)),
                failed=sum(1 for r in group if r.status != "ok"),
                mean=mean,
                std=std,
                baseline_mean=base_mean,
                delta=None if mean is None or base_mean is None else mean - base_mean,
                verdict=decision.verdict if decision else None,
                actor=decision.actor if decision else None,
                rationale=decision.rationale if decision else "",
                decided_at=decision.created_at if decision else None,
                cost_usd=exp.cost_usd + sum(r.cost_usd for r in runs),
                gpu_hours=sum(r.gpu_hours or 0.0 for r in runs),
                created_at=exp.created_at,
                updated_at=exp.updated_at,
                finished_at=max((r.created_at for r in runs), default=None),
                trust=trust_note(group),
                track=exp.track,
                measured_on=group[0].base_sha if group else None,
            )
        )
    return result


# One page asks for the experiments several times (table, leaderboard, charts); they are
# computed once per state of the database. `PRAGMA data_version` moves when another
# connection commits, `total_changes` when this one writes, so the cache is never stale.
_experiments_cache: weakref.WeakKeyDictionary[Store, tuple[Any, list[ExperimentRow]]] = (
    weakref.WeakKeyDictionary()
)


def _database_version(store: Store) -> tuple[int, int]:
    version = store.conn.execute("PRAGMA data_version").fetchone()[0]
    return int(version), store.conn.total_changes


def experiments(
    store: Store, repo_id: int | None = None, track: str | None = None
) -> list[ExperimentRow]:
    """Every experiment (of one lab, or one track of it), newest first, with its result."""
    key = (_database_version(store), repo_id, track)
    cached = _experiments_cache.get(store)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    rows = _experiment_rows(store, repo_id=repo_id, track=track)
    _experiments_cache[store] = (key, rows)
    return list(rows)


def _sort_key(problem: Problem):
    sign = 1.0 if problem.minimize else -1.0

    def key(value: float | None) -> tuple[int, float]:
        return (1, 0.0) if value is None else (0, sign * value)

    return key


def leaderboard(
    store: Store,
    repo_id: int | None = None,
    *,
    problem: Problem | None = None,
    track: str | None = None,
) -> list[LeaderboardRow]:
    """Merged winners, best first in the problem's direction (unmeasured ones last)."""
    problem = problem or Problem()
    merged = [e for e in experiments(store, repo_id, track) if e.state == "merged"]
    merge_decisions: dict[int, Decision] = {}
    for found in store.rows(Decision, "verdict = 'merge'", order_by="id"):
        merge_decisions[found.experiment_id] = found
    key = _sort_key(problem)
    merged.sort(key=lambda e: (key(e.mean), e.id))
    baselines = _baselines_by_base(store)
    merge_shas = _merge_shas(store)
    rows = []
    for rank, exp in enumerate(merged, start=1):
        decision = merge_decisions.get(exp.id)
        claimed, measured, measured_n = claimed_and_measured(
            exp,
            decision,
            {
                base: runs
                for (repo_id, line, base), runs in baselines.items()
                if repo_id == exp.repo_id and line == exp.track
            },
            merge_shas.get(exp.id),
        )
        rows.append(
            LeaderboardRow(
                rank=rank,
                experiment_id=exp.id,
                pr_number=exp.pr_number,
                repo=exp.repo,
                title=exp.title,
                student=exp.student,
                mean=exp.mean,
                std=exp.std,
                seeds=exp.seeds,
                delta=exp.delta,
                merged_at=decision.created_at if decision else exp.updated_at,
                merged_by=decision.actor if decision else None,
                claimed_gain=claimed,
                measured_gain=measured,
                measured_seeds=measured_n,
            )
        )
    return rows


def _merge_shas(store: Store) -> dict[int, str]:
    """The merge commit of each experiment the outbox merged (what GitHub answered)."""
    found: dict[int, str] = {}
    for row in store.query("SELECT args, result FROM outbox WHERE op = 'merge' AND state = 'done'"):
        args, result = _loads(row["args"], {}), _loads(row["result"], {})
        exp_id, sha = args.get("experiment_id"), result.get("sha")
        if isinstance(exp_id, int) and isinstance(sha, str) and result.get("merged", True):
            found[exp_id] = sha
    return found


def claimed_and_measured(
    exp: ExperimentRow,
    decision: Decision | None,
    baselines: dict[str | None, list[Run]],
    merge_sha: str | None,
) -> tuple[float | None, float | None, int]:
    """A winner's claimed gain, its measured gain, and the seeds behind the measurement.

    Claimed: the delta the gate recorded with the merge decision (else the
    experiment's own delta). Measured: the baseline re-measured after the merge
    minus the baseline the winner was compared with. The re-measured baseline is
    the one on the merge commit when the outbox recorded it, else the first
    baseline on another base measured after the merge. Pure.
    """
    stats = decision.stats if decision else {}
    claimed = stats.get("delta") if isinstance(stats.get("delta"), (int, float)) else exp.delta
    old = _ok_values(baselines.get(exp.base_sha, []))
    if not old:
        return claimed, None, 0
    merged_at = decision.created_at if decision else exp.updated_at
    after = baselines.get(merge_sha) if merge_sha else None
    if not after:
        later = [
            (min(r.created_at for r in runs), runs)
            for base, runs in baselines.items()
            if base != exp.base_sha and runs and min(r.created_at for r in runs) >= merged_at
        ]
        after = min(later, key=lambda t: t[0])[1] if later else None
    new = _ok_values(after or [])
    if not new:
        return claimed, None, 0
    return claimed, mean_std(new)[0] - mean_std(old)[0], len(new)


def _first_baseline(
    groups: BaselinesByBase, repo_id: int | None = None, track: str | None = None
) -> tuple[float | None, float | None]:
    """The mean of the first base ever measured (in one lab, given `repo_id`) and when."""
    measured = [
        runs
        for (repo, line, _), runs in groups.items()
        if _ok_values(runs)
        and (repo_id is None or repo == repo_id)
        and (track is None or line == track)
    ]
    if not measured:
        return None, None
    first = min(measured, key=lambda runs: min(r.created_at for r in runs))
    return mean_std(_ok_values(first))[0], min(r.created_at for r in first)


def _progress(
    store: Store,
    problem: Problem,
    over_time: bool,
    repo_id: int | None = None,
    track: str | None = None,
) -> BestSoFar:
    problem = problem or Problem()
    exps = experiments(store, repo_id, track)
    baselines = _baselines_by_base(store)  # read once for the start, the steps and the chart
    finished = [e for e in exps if e.mean is not None and e.finished_at]
    finished.sort(key=lambda e: (e.finished_at or 0.0, e.id))
    start_value, baseline_at = _first_baseline(baselines, repo_id, track)
    in_track, track_params = _in_track(track)
    first_run = store.one(
        f"SELECT MIN(created_at) AS t FROM runs WHERE (? IS NULL OR repo_id = ?) AND {in_track}",
        (repo_id, repo_id, *track_params),
    )
    t0 = (first_run or {}).get("t") or baseline_at or 0.0
    span = max(((e.finished_at or t0) - t0 for e in finished), default=0.0)
    scale, unit = (60.0, "minutes") if span < 2 * 3600 else (3600.0, "hours")
    steps = _kept_steps(baselines, exps, problem, repo_id, track)
    best: float | None = None
    landed = 0  # the steps that landed before (or with) this experiment's result
    points = []
    for index, exp in enumerate(finished, start=1):
        assert exp.mean is not None
        kept = exp.state == "merged"
        while landed < len(steps) and steps[landed].order <= (exp.finished_at or 0.0, 1, exp.id):
            best = steps[landed].best
            landed += 1
        x = ((exp.finished_at or t0) - t0) / scale if over_time else float(index)
        points.append(
            ProgressPoint(
                x=x,
                value=exp.mean,
                best=exp.mean if best is None else best,
                kept=kept,
                experiment_id=exp.id,
                pr_number=exp.pr_number,
                title=exp.title,
            )
        )
    label = f"{unit} since start" if over_time else "experiment"
    return BestSoFar(
        problem.metric, problem.minimize, label, start_value, points, steps, counted=not over_time
    )


@dataclass(frozen=True)
class BestStep:
    """One result the lab kept, and the best so far once it landed."""

    at: float  # when it landed: a base's first ok baseline seed, a winner's latest run
    value: float  # what it measured: the base's baseline mean, the winner's mean
    best: float  # the best so far from then on
    improved: bool  # it set the best
    experiment_id: int | None = None  # the merged winner; None for a baseline
    base_sha: str | None = None  # the base a baseline measured

    @property
    def order(self) -> tuple[float, int, int]:
        """Oldest first; a baseline before a winner landing at the same moment."""
        return (self.at, 0 if self.experiment_id is None else 1, self.experiment_id or 0)


def best_steps(
    store: Store, problem: Problem, repo_id: int | None = None, track: str | None = None
) -> list[BestStep]:
    """The best so far, the one definition every reader (dashboard, CLI, advisor) uses.

    The best is the best, in the problem's direction, of everything the lab
    kept: the baseline of every base it measured (the mean of its ok seeds)
    and the result of every merged winner (the mean of its current group), in
    one lab (`repo_id`) and track (`None`: all). A closed experiment never
    counts, however good its seeds, nor one still open: the lab did not keep
    it. Each step is one kept result in the order they landed, with the
    running best; the last step's best is the best so far.

    A re-measured baseline counts because it is the lab's code as it now
    stands, measured again on fresh seeds: when merges compound, when a
    human's push improves the base branch, or when a winner merged without a
    measurement of its own, that is where the gain shows and nowhere else. It
    can only raise the bar: a winner whose re-measurement came out worse keeps
    its figure as the best (the leaderboard's measured gain shows the gap).
    """
    exps = experiments(store, repo_id, track)
    return _kept_steps(_baselines_by_base(store), exps, problem, repo_id, track)


def _kept_steps(
    baselines: BaselinesByBase,
    exps: list[ExperimentRow],
    problem: Problem,
    repo_id: int | None,
    track: str | None,
) -> list[BestStep]:
    """`best_steps` from the lab's baselines by base and its experiments, already read."""
    kept: list[tuple[float, float, int | None, str | None]] = []
    for (repo, line, base), runs in baselines.items():
        ok = [r for r in runs if r.status == "ok" and r.metric is not None]
        if ok and repo_id in (None, repo) and track in (None, line):
            at = min(r.created_at for r in ok)
            kept.append((at, mean_std(_ok_values(ok))[0], None, base))
    for exp in exps:
        if exp.state == "merged" and exp.mean is not None and exp.finished_at is not None:
            kept.append((exp.finished_at, exp.mean, exp.id, exp.base_sha))
    kept.sort(key=lambda k: (k[0], 0 if k[2] is None else 1, k[2] or 0))
    steps: list[BestStep] = []
    best: float | None = None
    for at, value, experiment_id, base in kept:
        improved = best is None or problem.better(value, best)
        best = value if improved or best is None else best
        steps.append(BestStep(at, value, best, improved, experiment_id, base))
    return steps


def best_so_far(
    store: Store, problem: Problem, repo_id: int | None = None, track: str | None = None
) -> float | None:
    """The best so far of one lab and track now (`best_steps`); None before anything was kept."""
    steps = best_steps(store, problem, repo_id, track)
    return steps[-1].best if steps else None


def best_over_experiments(
    store: Store,
    problem: Problem | None = None,
    repo_id: int | None = None,
    track: str | None = None,
) -> BestSoFar:
    """Each finished experiment in the order its results landed, with the running best."""
    return _progress(store, problem or Problem(), over_time=False, repo_id=repo_id, track=track)


def best_over_time(
    store: Store,
    problem: Problem | None = None,
    repo_id: int | None = None,
    track: str | None = None,
) -> BestSoFar:
    """The same, against wall-clock time since the first run."""
    return _progress(store, problem or Problem(), over_time=True, repo_id=repo_id, track=track)


def find_experiment(
    store: Store, n: int, *, by: str = "auto", repo_id: int | None = None
) -> Experiment | None:
    """The experiment with PR number `n`, else with id `n` (`by="id"`/`"pr"` to insist).

    PR numbers are per repository: `repo_id` says whose (else the latest with it).
    """
    scope = "(? IS NULL OR repo_id = ?)"
    if by in ("auto", "pr"):
        found = store.first(
            Experiment, f"pr_number = ? AND {scope}", (n, repo_id, repo_id), order_by="id DESC"
        )
        if found or by == "pr":
            return found
    return store.first(Experiment, f"id = ? AND {scope}", (n, repo_id, repo_id))


def older_base(measured_on: str | None, current: str | None, state: str) -> bool:
    """Whether a result was measured on a base the lab has since left (and so is not
    comparable with results on today's base). A merged winner's base is the one it
    changed, so it is not flagged; an unmeasured experiment has nothing to flag."""
    return bool(measured_on and current and measured_on != current and state != "merged")


def current_bases(store: Store) -> dict[tuple[int, str], str | None]:
    """Each lab's base now, by (repository id, track): where results are compared today."""
    bases: dict[tuple[int, str], str | None] = {
        (r["id"], "default"): r["base_sha"] for r in store.query("SELECT id, base_sha FROM repos")
    }
    for row in store.query("SELECT repo_id, name, base_sha FROM tracks"):
        bases[(row["repo_id"], row["name"])] = row["base_sha"]
    return bases


def verified_diff(store: Store, experiment_id: int, head_sha: str | None) -> str | None:
    """The diff the bot computed when it accepted `head_sha` of the experiment from a host.

    A host's own account of its diff is never read. None when no host pushed
    this head through the bot (the bot's own start commit, a writer's push).
    """
    if not head_sha:
        return None
    row = store.one(
        "SELECT tip_diff FROM jobs WHERE experiment_id = ? AND tip_sha = ? "
        "AND tip_diff IS NOT NULL ORDER BY id DESC LIMIT 1",
        (experiment_id, head_sha),
    )
    return row["tip_diff"] if row else None


def experiment_detail(
    store: Store, number_or_id: int, *, by: str = "auto", repo_id: int | None = None
) -> ExperimentDetail | None:
    """One experiment with every run (all seeds, all commits), its decisions and its diff."""
    found = find_experiment(store, number_or_id, by=by, repo_id=repo_id)
    if found is None:
        return None
    rows = _experiment_rows(store, experiment_id=found.id)
    if not rows:
        return None
    job = store.first(
        Job, "experiment_id = ? AND result IS NOT NULL", (found.id,), order_by="id DESC"
    )
    result = (job.result if job else None) or {}
    runs = _runs(store, "experiment_id = ?", (found.id,), full=True)
    bases = sorted({r.base_sha for r in runs if r.base_sha})
    baseline_runs = (
        _runs(
            store,
            f"kind = 'baseline' AND repo_id = ? AND track = ? "
            f"AND base_sha IN ({', '.join('?' for _ in bases)})",
            (found.repo_id, found.track, *bases),
            full=True,
        )
        if bases
        else []
    )
    return ExperimentDetail(
        experiment=rows[0],
        runs=runs,
        baseline_runs=baseline_runs,
        diff=verified_diff(store, found.id, found.head_sha),
        current_base=current_bases(store).get((found.repo_id, found.track)),
        decisions=store.rows(Decision, "experiment_id = ?", (found.id,), order_by="created_at, id"),
        changed_files=list(result.get("changed_files") or []),
        reverted_files=list(result.get("reverted_files") or []),
        notes=str(result.get("notes") or ""),
    )


def students(store: Store) -> list[StudentRow]:
    """Every registered student with what it is doing now and how often it won."""
    # Each host's leased job, with the joined PR, title and lab the row carries besides.
    current: dict[str, tuple[Job, dict[str, Any]]] = {}
    for row in store.query(
        "SELECT j.*, e.pr_number, e.title, r.full_name AS repo FROM jobs j "
        "LEFT JOIN experiments e ON e.id = j.experiment_id "
        "LEFT JOIN repos r ON r.id = j.repo_id WHERE j.state = 'leased' ORDER BY j.id"
    ):
        leased = Job.from_row(row)
        if leased.leased_by:
            current[leased.leased_by] = (leased, row)
    runs = {
        row["student"]: row["n"]
        for row in store.query(
            "SELECT student, COUNT(*) AS n FROM runs WHERE student IS NOT NULL GROUP BY student"
        )
    }
    wins = {
        row["student"]: row["n"]
        for row in store.query(
            "SELECT student, COUNT(*) AS n FROM experiments WHERE state = 'merged' "
            "AND student IS NOT NULL GROUP BY student"
        )
    }
    result = []
    for student in store.rows(Student, order_by="name"):
        job: Job | None = None
        joined: dict[str, Any] = {}
        if student.name in current:
            job, joined = current[student.name]
        result.append(
            StudentRow(
                name=student.name,
                state=student.state,
                gpus=student.gpus,
                last_seen=student.last_seen,
                job_id=job.id if job else None,
                job_kind=job.kind if job else None,
                job_phase=job.phase if job else None,
                experiment_id=job.experiment_id if job else None,
                pr_number=joined.get("pr_number"),
                title=joined.get("title"),
                runs=runs.get(student.name, 0),
                wins=wins.get(student.name, 0),
                repo=joined.get("repo"),
                labs=student.labs,
            )
        )
    return result


def queue(store: Store, repo_id: int | None = None, track: str | None = None) -> list[QueueRow]:
    """Open jobs (of one lab, given `repo_id`): leased first, then waiting ones by priority."""
    rows = store.query(
        "SELECT j.*, e.pr_number, e.title FROM jobs j LEFT JOIN experiments e "
        "ON e.id = j.experiment_id WHERE j.state IN ('queued', 'leased') "
        "AND (? IS NULL OR j.repo_id = ?) AND (? IS NULL OR j.track = ?) "
        "ORDER BY j.state = 'queued', j.priority DESC, j.id",
        (repo_id, repo_id, track, track),
    )
    result = []
    for row in rows:
        job = Job.from_row(row)  # the join's `pr_number` and `title` are read from the row
        result.append(
            QueueRow(
                job_id=job.id,
                kind=job.kind,
                state=job.state,
                student=job.student,
                leased_by=job.leased_by,
                phase=job.phase,
                priority=job.priority,
                seeds=list(job.seeds),
                attempts=job.attempts,
                experiment_id=job.experiment_id,
                pr_number=row["pr_number"],
                title=row["title"],
                created_at=job.created_at,
            )
        )
    return result


def _history_status(group: list[Run], exp: ExperimentRow | None, kept_commit: Any) -> str:
    if not _ok_values(group):
        return next((r.status for r in group if r.status != "ok"), "crash")
    if group[0].kind == "baseline":
        return "baseline"
    if exp is None:
        return "pending"
    if exp.state == "merged":
        return "keep" if group[0].commit_sha == kept_commit else "discard"
    if exp.state == "closed":
        return "discard"
    return "pending"


def history_rows(
    store: Store,
    problem: Problem | None = None,
    *,
    best_only: bool = False,
    repo_id: int | None = None,
    track: str | None = None,
) -> list[HistoryRow]:
    """Every training job ever (of one lab, given `repo_id`, one track given `track`),
    oldest first; `best_only` keeps the jobs behind each kept result that set the
    best so far (`best_steps`): baselines and merged winners."""
    problem = problem or Problem()
    by_id = {e.id: e for e in experiments(store, repo_id, track)}
    in_track, track_params = _in_track(track)
    runs = (
        _runs(store, in_track, track_params)
        if repo_id is None
        else _runs(store, f"repo_id = ? AND {in_track}", (repo_id, *track_params))
    )
    candidate_runs: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        if run.kind == "candidate" and run.experiment_id is not None:
            candidate_runs[run.experiment_id].append(run)
    kept_commit = {
        exp_id: next(iter(current_group(exp_runs)), None)
        for exp_id, exp_runs in candidate_runs.items()
    }
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        key = ("job", run.job_id) if run.job_id is not None else ("run", run.id)
        groups.setdefault(key, []).append(run)
    rows = []
    for group in groups.values():
        first = group[0]
        exp = by_id.get(first.experiment_id or -1)
        kept = kept_commit.get(first.experiment_id or -1)
        values = _ok_values(group)
        mean, std = _summary(values)
        memories = [r.peak_mem_mb for r in group if r.peak_mem_mb]
        durations = [r.duration_s for r in group if r.duration_s is not None]
        rows.append(
            HistoryRow(
                job_id=first.job_id,
                experiment_id=first.experiment_id,
                kind=first.kind,
                commit=first.commit_sha,
                parent=first.base_sha,
                metric=mean,
                std=std,
                memory_gb=round(max(memories) / 1024, 1) if memories else None,
                status=_history_status(group, exp, kept.commit_sha if kept else None),
                description=exp.title if exp else ("baseline" if first.kind == "baseline" else ""),
                student=first.student,
                seeds=len(group),
                duration_s=sum(durations) / len(durations) if durations else None,
                cost_usd=sum(r.cost_usd for r in group),
                pr_number=exp.pr_number if exp else None,
                trust=trust_note(group),
                created_at=first.created_at,
            )
        )
    rows.sort(key=lambda r: r.created_at)
    if best_only:
        rows = _improvements(rows, best_steps(store, problem, repo_id, track))
    return rows


def _improvements(rows: list[HistoryRow], steps: list[BestStep]) -> list[HistoryRow]:
    """The jobs behind each step that set the best: a base's first baseline job, a winner's kept job."""
    chosen: list[HistoryRow] = []
    for step in steps:
        if not step.improved:
            continue
        if step.experiment_id is None:
            behind = [r for r in rows if r.status == "baseline" and r.parent == step.base_sha]
        else:
            behind = [
                r for r in rows if r.status == "keep" and r.experiment_id == step.experiment_id
            ]
        if behind and behind[0] not in chosen:
            chosen.append(behind[0])
    return chosen
