"""What an advisor knows when it proposes or reviews: the lab notebook, read from the store.

Both advisors (offline and Claude) see the same `AdvisorContext`, built from
the bot's SQLite state, so the offline search resumes after a restart with no
state of its own and the Claude prompt is a bounded rendering of the same facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.student.rules import knob_summary
from bot import queries
from bot.core import bayes
from bot.core.stats import mean_std
from bot.core.untrusted import CLOSE_TAG, OPEN_TAG, clip_quoted, is_quoted, neutralize
from bot.engine.evidence import GateState, lab_gate_state, verified_diff
from bot.problem import Problem
from bot.records import Decision, Experiment, Repository, Run, Track
from bot.render import numbers

if TYPE_CHECKING:
    from bot.store import Store

FINISHED_STATES = ("merged", "closed")
TRUNCATED = "\n[... truncated ...]\n"
DETAILED_RECENT = 10  # the newest experiments shown with hypothesis and failure


@dataclass
class ExperimentRecord:
    """One experiment as the advisor sees it: the hypothesis, what changed, what it measured.

    `number` is the pull request number (None before the PR exists); the metric
    figures are over the candidate's finished seeds on the base it was last
    measured on; `verdict` is the latest decision recorded for it.
    """

    number: int | None
    title: str
    hypothesis: str
    knobs: dict[str, Any]
    student: str | None
    state: str
    metric_mean: float | None
    metric_std: float | None
    n_seeds: int
    verdict: str | None
    diff_summary: str
    id: int | None = None
    source: str = "advisor"
    n_failed: int = 0
    failure: str = ""  # reason and log tail of the last failed seed
    feedback: str = ""
    head_sha: str | None = None  # the commit last measured, and the base it was measured on
    base_sha: str | None = None
    seeds: list[dict[str, Any]] = field(default_factory=list)  # seed, status, metric, reason
    curve: list[list[float]] = field(default_factory=list)  # the last ok seed's training curve
    # Its mean minus the baseline mean of the base it was measured on (negative is
    # better when minimizing): what a move of its knobs did.
    delta: float | None = None
    diff: str = ""  # the PR's diff as its host reported it (clipped), for the review

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def label(self) -> str:
        return f"#{self.number}" if self.number is not None else f"exp-{self.id}"


@dataclass
class AdvisorContext:
    """The problem, the baseline, the best so far and the history, for one repository."""

    program_md: str
    config_toml: str
    problem: Problem
    baseline_mean: float | None
    baseline_std: float | None
    best: float | None
    history: list[ExperimentRecord]
    open_issues: list[str]
    plateau: bool
    experiments_since_improvement: int
    baseline_n: int = 0
    repo: str = ""
    base_sha: str | None = None
    baseline_curve: list[list[float]] = field(default_factory=list)
    base_files: dict[str, str] = field(default_factory=dict)  # editable files at base_sha
    sent_back: str = ""  # why the advisor's last proposal came back (bot.core.novelty), if it did
    track: str = "default"  # the research track this notebook is of
    gate_state: str = ""  # what the Bayesian gate has learned of this lab (agents.notebook)

    def render(self, max_chars: int = 12000) -> str:
        """Markdown for a prompt, never longer than `max_chars`.

        Fixed-size facts come first; program.md gets at most a third of the
        room; the history, newest first (the latest few in detail), fills what
        is left and says how many older experiments it had to leave out.
        """
        p = self.problem
        head = [
            f"# Research state{f' of {self.repo}' if self.repo else ''}"
            f"{f', track {self.track}' if self.track != 'default' else ''}",
            "",
            f"Metric: `{p.metric}` ({p.direction}). Budget {p.budget_s:g}s per run. "
            f"Editable files: {', '.join(p.editable) or '(none)'}. "
            f"Frozen: {', '.join(p.frozen) or '(none)'}.",
            f"Baseline: {numbers.mean_spread(self.baseline_mean, self.baseline_std, self.baseline_n, 'not measured')}"
            f"{f' on {self.base_sha[:12]}' if self.base_sha else ''}. "
            f"Best so far: {numbers.number(self.best, '.4g', missing='not measured')}.",
            f"Experiments since the last improvement: {self.experiments_since_improvement}"
            f"{' (plateau: try something bolder)' if self.plateau else ''}.",
        ]
        if p.knobs:
            head.append("Search knobs: " + "; ".join(_knob_text(k) for k in p.knobs) + ".")
        if self.open_issues:
            requests = [f"- {_clip_line(i, 200)}" for i in self.open_issues[:20]]
            head += ["", "## Open human requests", *requests]
        text = "\n".join(head) + "\n"
        program_room = max(0, max_chars // 3)
        text += "\n## program.md\n" + _clip(self.program_md.strip(), program_room) + "\n"
        text += "\n## kohai.toml\n```toml\n" + _clip(self.config_toml.strip(), 1500) + "\n```\n"
        text += f"\n## History ({len(self.history)} experiments, newest first)\n"
        newest_first = sorted(self.history, key=lambda r: r.id or 0, reverse=True)
        for shown, record in enumerate(newest_first):
            line = _record_text(record, detailed=shown < DETAILED_RECENT)
            left = len(newest_first) - shown
            note = f"- ... {left} older experiment(s) not shown\n"
            if len(text) + len(line) + len(note) > max_chars:
                text += note
                break
            text += line
        if len(text) > max_chars:
            text = text[: max_chars - len(TRUNCATED)] + TRUNCATED
        return text


def build_context(
    store: Store,
    repo_id: int,
    problem: Problem,
    program_md: str,
    config_toml: str,
    plateau_after: int = 5,
    *,
    open_issues: Sequence[str] = (),
    track: str = "default",
) -> AdvisorContext:
    """Read one repository's notebook from the store.

    The baseline is the ok baseline runs on the repository's current base; an
    experiment's figures are its latest measurement (the runs of the commit and
    base of its newest run), so results from an old head or an old base are not
    mixed in. "Best" is the one the dashboard shows (`queries.best_steps`): the
    best of every baseline measured and every merged winner, the bar the lab
    has actually cleared. `track` reads one research track of the repository:
    its base, its baseline, its experiments only.
    """
    repo = store.get(Repository, repo_id)
    if repo is None:
        raise KeyError(f"no repository with id {repo_id}")
    base_sha, base_files = repo.base_sha, repo.base_files
    if track != "default":
        line = store.get(Track, repo_id, track)
        base_sha, base_files = (line.base_sha, line.base_files) if line else (None, {})
    baseline = _baseline_values(store, repo_id, base_sha, track)
    b_mean, b_std = mean_std(baseline) if baseline else (None, None)

    experiments = store.rows(
        Experiment, "repo_id = ? AND track = ?", (repo_id, track), order_by="id"
    )
    history = [_record(store, exp) for exp in experiments]
    since = _since_improvement(history)
    pending_issues = [
        f"{r.label} {OPEN_TAG}>{neutralize(r.title)}{CLOSE_TAG}"
        if is_quoted(r.hypothesis)
        else f"{r.label} {r.title}"
        for r in history
        if r.source == "human" and not r.finished
    ]
    baseline_runs = store.rows(
        Run,
        "repo_id = ? AND track = ? AND kind = 'baseline' AND status = 'ok' AND base_sha IS ?",
        (repo_id, track, base_sha),
        order_by="id",
    )
    return AdvisorContext(
        program_md=program_md,
        config_toml=config_toml,
        problem=problem,
        baseline_mean=b_mean,
        baseline_std=b_std,
        best=queries.best_so_far(store, problem, repo_id, track),
        history=history,
        open_issues=[*open_issues, *pending_issues],
        plateau=since >= plateau_after,
        experiments_since_improvement=since,
        baseline_n=len(baseline),
        repo=repo.full_name,
        base_sha=base_sha,
        base_files={str(k): v for k, v in base_files.items() if isinstance(v, str)},
        baseline_curve=_last_curve(baseline_runs),
        track=track,
        gate_state=notebook_gate_state(store, repo_id, problem, track),
    )


def notebook_gate_state(store: Store, repo_id: int, problem: Problem, track: str) -> str:
    """The Bayesian gate's view of the lab, in words, when the lab uses it ("" otherwise)."""
    if problem.gate.method != "bayes":
        return ""
    return describe_gate_state(lab_gate_state(store, repo_id, track), problem.gate.false_merges)


def describe_gate_state(state: GateState, false_merges: float) -> str:
    """The learned prior (how often ideas help, by how much), the noise, and the budget spent."""
    spent = state.spent
    if state.prior is None or not state.prior.learned_from:
        noise = f" Per-run noise so far: {state.prior.noise:.3g}." if state.prior else ""
        learned = (
            f"The gate still uses its vague starting prior: {state.decided} of "
            f"{bayes.LEARN_FROM} decided ideas it needs to learn this lab's, and a stricter "
            f"budget ({bayes.budget_for(_VAGUE, false_merges):.1%} of merges) "
            f"until then.{noise}"
        )
    else:
        learned = (
            f"Learned from this lab's {state.prior.learned_from} decided ideas: "
            f"{state.prior.describe()}. An idea well below the noise needs many seeds to be "
            "seen; one several times the noise is decided in one or two."
        )
    return (
        f"{learned} False-merge budget: {spent.chance_false:.2f} expected false merges spent "
        f"over {spent.merges} merge(s), {false_merges:.0%} of merges allowed."
    )


_VAGUE = bayes.EffectPrior.vague(1.0)


def _record(store: Store, exp: Experiment) -> ExperimentRecord:
    runs = store.rows(Run, "experiment_id = ? AND kind = 'candidate'", (exp.id,), order_by="id")
    if runs:  # the latest measurement: one commit on one base (confirmation seeds join it)
        latest = (runs[-1].commit_sha, runs[-1].base_sha)
        runs = [r for r in runs if (r.commit_sha, r.base_sha) == latest]
    values = [r.metric for r in runs if r.ok and r.metric is not None]
    failed = [r for r in runs if not r.ok]
    mean, std = mean_std(values) if values else (None, None)
    measured_on = runs[-1].base_sha if runs else exp.base_sha
    delta = None
    if mean is not None and measured_on is not None:
        baseline = _baseline_values(store, exp.repo_id, measured_on, exp.track)
        if baseline:
            delta = mean - mean_std(baseline)[0]
    decision = store.first(Decision, "experiment_id = ?", (exp.id,), order_by="id DESC")
    failure = ""
    if failed:
        last = failed[-1]
        failure = f"{last.status}: {last.reason}".strip()
        if last.log_tail:
            failure += "\n" + last.log_tail[-600:]
    return ExperimentRecord(
        diff=_latest_diff(store, exp),
        number=exp.pr_number,
        title=exp.title,
        hypothesis=exp.hypothesis,
        knobs=exp.knobs,
        student=exp.student,
        state=exp.state,
        metric_mean=mean,
        metric_std=std,
        n_seeds=len(values),
        verdict=decision.verdict if decision else None,
        diff_summary=f"set {knob_summary(exp.knobs)}" if exp.knobs else "",
        id=exp.id,
        source=exp.source,
        n_failed=len(failed),
        failure=failure,
        feedback=exp.feedback,
        head_sha=runs[-1].commit_sha if runs else exp.head_sha,
        base_sha=runs[-1].base_sha if runs else None,
        seeds=[
            {"seed": r.seed, "status": r.status, "metric": r.metric, "reason": r.reason}
            for r in runs
        ],
        curve=_last_curve(runs),
        delta=delta,
    )


def _last_curve(runs: list[Run]) -> list[list[float]]:
    """The newest non-empty training curve among `runs`."""
    return next((run.curve for run in reversed(runs) if run.curve), [])


MAX_REVIEW_DIFF = 6000


def _latest_diff(store: Store, exp: Experiment) -> str:
    """The diff the audit reads (`evidence.verified_diff`: the newest for the current head), clipped."""
    return _clip(verified_diff(store, exp) or "", MAX_REVIEW_DIFF)


def _baseline_values(
    store: Store, repo_id: int, base_sha: str | None, track: str = "default"
) -> list[float]:
    """The baseline on `base_sha`, or on the latest measured base before the first sync."""
    if base_sha is None:
        base_sha = queries.latest_baseline_base(store, repo_id, track)
        if base_sha is None:
            return []
    return queries.baseline_values(store, repo_id, track, base_sha)


def _since_improvement(history: list[ExperimentRecord]) -> int:
    """Finished experiments after the last merged one, in order of id."""
    count = 0
    for record in history:
        if record.state == "merged":
            count = 0
        elif record.state == "closed":
            count += 1
    return count


def _record_text(r: ExperimentRecord, *, detailed: bool) -> str:
    result = numbers.mean_spread(r.metric_mean, r.metric_std, r.n_seeds, "not measured")
    if r.n_failed:
        result += f", {r.n_failed} failed"
    line = f"- {r.label} [{r.state}"
    line += f", {r.verdict}]" if r.verdict else "]"
    untrusted = is_quoted(r.hypothesis)
    title = (
        f"{OPEN_TAG}>{_clip_line(neutralize(r.title), 120)}{CLOSE_TAG}"
        if untrusted
        else (_clip_line(r.title, 120))
    )
    line += f" {title} ({r.student or 'unassigned'}): {result}"
    if r.diff_summary:
        line += f"; {_clip_line(r.diff_summary, 200)}"
    line += "\n"
    if detailed and untrusted:
        line += f"  hypothesis: {clip_quoted(r.hypothesis, 240)}\n"
    elif detailed and r.hypothesis and r.hypothesis != r.title:
        line += f"  hypothesis: {_clip_line(r.hypothesis, 240)}\n"
    if detailed and r.failure:
        line += f"  failure: {_clip_line(r.failure, 300)}\n"
    return line


def _knob_text(knob: Any) -> str:
    if knob.choices is not None:
        return f"{knob.name} in {list(knob.choices)}"
    kind = "int" if knob.integer else "float"
    scale = ", log" if knob.log else ""
    return f"{knob.name} in [{knob.low:g}, {knob.high:g}] ({kind}{scale})"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATED))] + TRUNCATED


def _clip_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
