"""Labs: every installed repository with a `kohai.toml` on its default branch.

Each lab has its own baseline, advisor, experiments and leaderboard; the
students are shared between the labs by weight. The decisions here are pure
functions (which lab a student serves next, which queued job it takes, which
labs a student may serve) so they can be tested over tables; reading the store
happens in the small functions at the end.

Fair sharing is stride scheduling over GPU time: each lab is charged the
seconds its runs took in the last hours (and, for work in flight, what it is
expected to take), and the next choice goes to the lab whose charge divided by
its weight is smallest. A lab with work therefore always gets its turn: no lab
starves, however small its weight.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.problem import DEFAULT_TRACK, Problem, parsed_problem
from bot.records import Job
from bot.store import Store, now

SHARE_WINDOW_S = 6 * 3600.0  # how far back GPU time counts against a lab's share
DEFAULT_WEIGHT = 1.0  # a lab the weights do not name
LAB_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)?")


class LabListError(ValueError):
    """A `--labs` list that names something other than owner/repo[:track]."""


def lab_key(full_name: str, track: str | None = None) -> str:
    """A lab's name: `owner/repo` for a repository's default line, `owner/repo:track` otherwise."""
    if not track or track == DEFAULT_TRACK:
        return full_name
    return f"{full_name}:{track}"


def split_lab_key(key: str) -> tuple[str, str]:
    """`owner/repo[:track]` as (owner/repo, track); the track is `default` when absent."""
    name, _, track = key.partition(":")
    return name, (track or DEFAULT_TRACK).lower()


@dataclass(frozen=True)
class Lab:
    """One research line: a repository's default line, or one of its declared tracks."""

    repo_id: int
    full_name: str
    weight: float
    problem: Problem
    track: str = DEFAULT_TRACK

    @property
    def key(self) -> str:
        return lab_key(self.full_name, self.track)


def parse_lab_list(text: str | None) -> tuple[str, ...] | None:
    """`owner/repo[:track],...` as given to `kohai hosts add --labs`; None means every lab."""
    if text is None or not text.strip() or text.strip() in ("all", "*"):
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if not LAB_RE.fullmatch(name):
            raise LabListError(f"--labs: {name!r} is not owner/repo or owner/repo:track")
    return tuple(dict.fromkeys(names))


def may_serve(allowed: Sequence[str] | None, full_name: str, track: str | None = None) -> bool:
    """Whether a student limited to `allowed` (None: every lab) may serve this lab.

    `owner/repo` allows every track of the repository; `owner/repo:track` only
    that track (the default track is named `default`). Names compare without
    case, as GitHub's do.
    """
    if allowed is None:
        return True
    name = full_name.lower()
    wanted = {a.lower() for a in allowed}
    return name in wanted or f"{name}:{(track or 'default').lower()}" in wanted


def pick_lab(
    candidates: Iterable[str], usage: Mapping[str, float], weights: Mapping[str, float]
) -> str | None:
    """The lab that is furthest behind its share: the smallest GPU time per unit of weight.

    Ties go to the first candidate in order, so a caller that rotates the
    order gets round-robin among equals.
    """
    best: tuple[float, int] | None = None
    chosen = None
    for index, key in enumerate(candidates):
        weight = weights.get(key, DEFAULT_WEIGHT) or DEFAULT_WEIGHT
        score = (usage.get(key, 0.0) / weight, index)
        if best is None or score < best:
            best, chosen = score, key
    return chosen


def choose_job(
    jobs: Sequence[tuple[str, Job]],
    usage: Mapping[str, float],
    weights: Mapping[str, float],
) -> tuple[str, Job] | None:
    """Which of the queued jobs a student takes next, with its lab's key.

    `jobs` are the ones this student may run, each with its lab's key, in the
    queue's order (priority first, then the student's own before anyone's,
    then age). Priority comes first: baselines, then human-requested work,
    then the advisor's. Within the first tier the lab furthest behind its
    weight wins, and within a lab the oldest job.
    """
    if not jobs:
        return None

    def tier(job: Job) -> tuple[int, bool]:
        return (-job.priority, job.student is None)

    top = min(tier(job) for _, job in jobs)
    first = [(key, job) for key, job in jobs if tier(job) == top]
    labs = list(dict.fromkeys(key for key, _ in first))
    lab = pick_lab(labs, usage, weights)
    return next((key, job) for key, job in first if key == lab)


def shares(usage: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Each lab's measured share of the GPU time against the share its weight asks for."""
    total_use = sum(usage.get(k, 0.0) for k in weights)
    total_weight = sum(weights.values()) or 1.0
    return {
        key: {
            "weight": weight,
            "target": weight / total_weight,
            "measured": (usage.get(key, 0.0) / total_use) if total_use else 0.0,
            "gpu_s": usage.get(key, 0.0),
        }
        for key, weight in weights.items()
    }


# ------------------------------------------------------------------ the store


def stored_problem_of(text: str | None) -> Problem:
    """The problem in a stored kohai.toml; the default when it is missing or unusable."""
    return parsed_problem(text) or Problem()


def repo_labs(
    repo_id: int, full_name: str, problem_toml: str | None, synced_tracks: Iterable[str] | None
) -> list[Lab]:
    """The research lines of one repository: its default line, then each declared track.

    `synced_tracks` limits the tracks to those whose base branch has been read
    (None: every declared track, for listings). A track's weight is its own
    `[tracks.<name>] weight`; the default line keeps the `[lab] weight`.
    """
    problem = stored_problem_of(problem_toml)
    lines = [Lab(repo_id, full_name, problem.weight, problem)]
    ready = None if synced_tracks is None else set(synced_tracks)
    for track in problem.tracks:
        if ready is None or track.name in ready:
            lines.append(Lab(repo_id, full_name, track.weight, problem, track.name))
    return lines


def _synced_tracks(store: Store) -> dict[int, set[str]]:
    synced: dict[int, set[str]] = {}
    for row in store.query("SELECT repo_id, name FROM tracks WHERE base_sha IS NOT NULL"):
        synced.setdefault(row["repo_id"], set()).add(row["name"])
    return synced


def valid_problem(text: str | None) -> bool:
    """Whether a kohai.toml parses: one that does not runs nothing (sync says why)."""
    return parsed_problem(text) is not None


def active_labs(store: Store) -> list[Lab]:
    """The labs that run now: installed, active, with a valid kohai.toml and a synced base.

    A track runs once its base branch has been read (created when missing).
    """
    synced = _synced_tracks(store)
    return [
        lab
        for row in store.query(
            "SELECT id, full_name, problem_toml FROM repos WHERE active = 1 "
            "AND problem_toml IS NOT NULL AND base_sha IS NOT NULL ORDER BY id"
        )
        if valid_problem(row["problem_toml"])
        for lab in repo_labs(
            row["id"], row["full_name"], row["problem_toml"], synced.get(row["id"], set())
        )
    ]


def all_labs(store: Store) -> list[Lab]:
    """Every repository that has held a kohai.toml, and its tracks, running or stopped."""
    return [
        lab
        for row in store.query(
            "SELECT id, full_name, problem_toml FROM repos WHERE problem_toml IS NOT NULL "
            "ORDER BY active DESC, id"
        )
        for lab in repo_labs(row["id"], row["full_name"], row["problem_toml"], None)
    ]


def per_seed_s(problem_toml: str | None) -> float:
    """What one seed of a lab's job is expected to take: its training budget and grace."""
    problem = stored_problem_of(problem_toml)
    return problem.budget_s + problem.grace_s


def gpu_usage(
    store: Store,
    *,
    window_s: float = SHARE_WINDOW_S,
    at: float | None = None,
    include_queued: bool = False,
) -> dict[str, float]:
    """GPU seconds per lab: runs finished in the window, plus work in flight at its estimate.

    Work in flight counts at the larger of its elapsed time and its expected
    duration, so several students choosing at once do not all pick the lab
    that was behind a moment ago. `include_queued` also charges queued jobs
    already bound to a student (what the advisor has promised a lab).
    """
    t = now() if at is None else at
    usage: dict[str, float] = {}
    for row in store.query(
        "SELECT r.full_name AS lab, u.track, COALESCE(SUM(u.duration_s), 0) AS s FROM runs u "
        "JOIN repos r ON r.id = u.repo_id WHERE u.created_at > ? GROUP BY r.full_name, u.track",
        (t - window_s,),
    ):
        key = lab_key(row["lab"], row["track"])
        usage[key] = usage.get(key, 0.0) + float(row["s"])
    # Work in flight: each job at the larger of its estimate (seeds x its lab's budget and
    # grace) and its elapsed time. A lease asks this with every host's job in flight, so a
    # job's row is a few numbers; each lab's stored kohai.toml is read once, not per job.
    repos = {
        row["id"]: (row["full_name"], per_seed_s(row["problem_toml"]))
        for row in store.query("SELECT id, full_name, problem_toml FROM repos")
    }
    states = ("leased", "queued") if include_queued else ("leased",)
    for repo_id, track, seeds, state, updated_at in store.conn.execute(
        "SELECT repo_id, track, CASE WHEN json_valid(seeds) THEN json_array_length(seeds) END,"
        " state, updated_at FROM jobs"
        f" WHERE state IN ({','.join('?' * len(states))})"
        " AND NOT (state = 'queued' AND student IS NULL)",
        states,
    ):
        lab, per_seed = repos.get(repo_id, ("", 0.0))
        estimate = (seeds or 1) * per_seed
        elapsed = max(0.0, t - (updated_at or t)) if state == "leased" else 0.0
        key = lab_key(lab, track)
        usage[key] = usage.get(key, 0.0) + max(estimate, elapsed)
    return usage


def student_labs(store: Store, student: str) -> tuple[str, ...] | None:
    """The labs a student may serve (None: every lab)."""
    row = store.one("SELECT labs FROM students WHERE name = ?", (student,))
    if not row or not row.get("labs"):
        return None
    return tuple(name for name in str(row["labs"]).split(",") if name)


def lab_shares(store: Store, *, window_s: float = SHARE_WINDOW_S) -> dict[str, dict[str, float]]:
    """Each running lab's measured share of the last hours against its weight."""
    weights = {lab.key: lab.weight for lab in active_labs(store)}
    return shares(gpu_usage(store, window_s=window_s), weights)


def stop_lab(store: Store, repo_id: int, reason: str) -> int:
    """Stop a lab: cancel its queued jobs with the reason; ask its hosts to stop the leased ones.

    Returns how many jobs it cancelled. Leased jobs get the cancel flag the
    host reads on its next event, and finish as `cancelled`.
    """
    t = now()
    result = '{"reason":' + json.dumps(reason) + ',"status":"cancelled"}'
    cursor = store.execute(
        "UPDATE jobs SET state = 'cancelled', result = ?, updated_at = ? "
        "WHERE repo_id = ? AND state = 'queued'",
        (result, t, repo_id),
    )
    store.execute(
        "UPDATE jobs SET cancel = 1, updated_at = ? WHERE repo_id = ? AND state = 'leased'",
        (t, repo_id),
    )
    return int(cursor.rowcount or 0)


def stop_track(store: Store, repo_id: int, track: str, reason: str) -> int:
    """Stop one track of a repository (its `[tracks.<name>]` left kohai.toml): as `stop_lab`."""
    t = now()
    result = '{"reason":' + json.dumps(reason) + ',"status":"cancelled"}'
    cursor = store.execute(
        "UPDATE jobs SET state = 'cancelled', result = ?, updated_at = ? "
        "WHERE repo_id = ? AND track = ? AND state = 'queued'",
        (result, t, repo_id, track),
    )
    store.execute(
        "UPDATE jobs SET cancel = 1, updated_at = ? WHERE repo_id = ? AND track = ? "
        "AND state = 'leased'",
        (t, repo_id, track),
    )
    return int(cursor.rowcount or 0)


@dataclass(frozen=True)
class LabRow:
    """One line of the lab list (dashboard `/`, `kohai status`)."""

    repo_id: int
    lab: str
    active: bool
    metric: str
    direction: str
    baseline: float | None
    best: float | None
    experiments: int
    running: int
    weight: float
    target_share: float
    measured_share: float
    track: str = DEFAULT_TRACK
    full_name: str = ""


def lab_rows(store: Store, *, window_s: float = SHARE_WINDOW_S) -> list[LabRow]:
    """Every lab with its metric, baseline, best merged result, experiments and share."""
    from bot import queries  # the read side; imported here so the engine does not load it

    every = all_labs(store)
    running = {lab.key for lab in active_labs(store)}
    weights = {lab.key: lab.weight for lab in every if lab.key in running}
    share = shares(gpu_usage(store, window_s=window_s), weights)
    rows = []
    for lab in every:
        base = queries.baseline(store, lab.repo_id, lab.track)
        exps = queries.experiments(store, lab.repo_id, lab.track)
        progress = queries.best_over_experiments(store, lab.problem, lab.repo_id, lab.track)
        mine = share.get(lab.key, {})
        rows.append(
            LabRow(
                repo_id=lab.repo_id,
                lab=lab.key,
                track=lab.track,
                full_name=lab.full_name,
                active=lab.key in running,
                metric=lab.problem.metric,
                direction=lab.problem.direction,
                baseline=base.mean if base else None,
                best=progress.best,
                experiments=len(exps),
                running=sum(1 for e in exps if e.state in queries.ACTIVE_STATES),
                weight=lab.weight,
                target_share=mine.get("target", 0.0),
                measured_share=mine.get("measured", 0.0),
            )
        )
    return rows


def stored_problem(store: Store, full_name: str) -> tuple[int, Problem] | None:
    """A lab's id and the problem stored for it at its last sync (None: no such repository)."""
    row = store.one(
        "SELECT id, problem_toml FROM repos WHERE full_name = ? COLLATE NOCASE", (full_name,)
    )
    if row is None:
        return None
    return row["id"], stored_problem_of(row["problem_toml"])
