"""The session report: a markdown summary with its charts, written at the end of a session.

It is the lab notebook's last page: what the baseline was, what won, what was
tried and why each experiment was kept or closed. It holds only what the store
holds, so it can be written again at any time from the SQLite file alone.
The chart builders here are shared with the dashboard, so both draw the same.

Every lab (a repository, or one research track of it) has its own metric,
baseline and results, so the report has a section per lab and each section's
numbers and charts are that lab's alone; `repo` narrows it to one.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bot import queries
from bot.engine import labs
from bot.problem import Problem
from bot.records import Run
from bot.render import numbers
from bot.render.charts import PALETTE, Series, line_chart
from bot.render.escape import plain
from bot.store import Store

BEST_OVER_EXPERIMENTS_SVG = "best_over_experiments.svg"
BEST_OVER_TIME_SVG = "best_over_time.svg"


def best_staircase(progress: queries.BestSoFar) -> list[tuple[float, float]]:
    """The best so far as a step line: from the first baseline, through each experiment,
    to the best now (a baseline re-measured after the last experiment may have moved it)."""
    line: list[tuple[float, float]] = []
    if progress.baseline is not None:
        line.append((0.0, progress.baseline))
    line += [(p.x, p.best) for p in progress.points]
    if line and progress.best is not None and line[-1][1] != progress.best:
        line.append((line[-1][0], progress.best))
    return line


def progress_svg(progress: queries.BestSoFar, title: str, *, width: int = 720) -> str:
    """Every finished experiment as a dot, merged winners highlighted, the best as a staircase."""
    tried = [(p.x, p.value) for p in progress.points if not p.kept]
    kept = [(p.x, p.value) for p in progress.points if p.kept]
    series = [
        Series("best so far", best_staircase(progress), step=True, color="#16a34a"),
        Series("tried", tried, line=False, markers=True, color="#9ca3af"),
        Series("merged", kept, line=False, markers=True, color="#2563eb"),
    ]
    direction = "lower is better" if progress.minimize else "higher is better"
    return line_chart(
        series,
        title=title,
        x_label=progress.x_label,
        y_label=f"{progress.metric} ({direction})",
        width=width,
        integer_x=progress.counted,
    )


def overlay_svg(
    runs: list[Run],
    baseline_runs: list[Run],
    title: str = "train loss vs the baseline",
    *,
    width: int = 720,
) -> str:
    """Each candidate seed's curve (solid) over the baseline's seed of the same number on
    the same base (dashed, the same colour): the paired comparison the gate makes, drawn.

    A candidate seed whose baseline twin has no curve is drawn alone; the legend
    names each line.
    """
    twins = {(r.seed, r.base_sha): r for r in baseline_runs if r.curve}
    series: list[Series] = []
    for index, run in enumerate(r for r in runs if r.curve):
        color = PALETTE[index % len(PALETTE)]
        where = f" @{run.commit_sha[:7]}" if run.commit_sha else ""
        series.append(Series(f"seed {run.seed}{where}", _points(run), color=color))
        twin = twins.get((run.seed, run.base_sha))
        if twin is not None:
            series.append(
                Series(
                    f"baseline {twin.seed}",
                    _points(twin),
                    dashed=True,
                    color=color,
                )
            )
    return line_chart(series, title=title, x_label="step", y_label="train loss", width=width)


def _points(run: Run) -> list[tuple[float, float]]:
    return [(float(p[0]), float(p[1])) for p in run.curve if len(p) >= 2]


class _Markdown(str):
    """A cell the report rendered itself (a link): shown as it is."""


def _cell(value: object) -> str:
    """A markdown table cell: the report's own markdown as it is, anything else made inert
    (titles, rationales and names come from people and agents)."""
    return value if isinstance(value, _Markdown) else plain(value, 500)


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _pr(repo: str, number: int | None, html_base: str) -> str:
    url = queries.pr_url(repo, number, html_base)
    return _Markdown(f"[#{number}]({url})") if url else "—"


@dataclass(frozen=True)
class ReportLab:
    """One section of the report: a lab (repository and track) with its own problem."""

    key: str | None  # `owner/repo[:track]`; None: the store knows no lab (one unscoped section)
    repo_id: int | None
    track: str | None
    problem: Problem

    def chart(self, name: str, sections: int) -> str:
        """The file name of one of its charts: prefixed by the lab when there are several."""
        if sections == 1 or self.key is None:
            return name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.key) + "-" + name


def report_labs(store: Store, problem: Problem | None, repo: str | None = None) -> list[ReportLab]:
    """The labs the report covers, each with the problem stored at its last sync.

    `repo` (`owner/name[:track]`) narrows it to one repository or one track. A
    store with no lab (a database whose repository never synced) is one section
    under `problem`.
    """
    found = [
        ReportLab(lab.key, lab.repo_id, lab.track, lab.problem)
        for lab in labs.all_labs(store)
        if repo is None or _names(lab.key, repo)
    ]
    if found:
        return found
    if repo is not None:
        raise ValueError(f"no lab {repo} in this database")
    return [ReportLab(None, None, None, problem or Problem())]


def _names(key: str, wanted: str) -> bool:
    full_name, track = labs.split_lab_key(key)
    name, _, want_track = wanted.partition(":")
    return full_name.lower() == name.lower() and (not want_track or want_track.lower() == track)


def _lab_section(
    store: Store, lab: ReportLab, sections: int, html_base: str, level: str
) -> list[str]:
    """One lab's summary, charts, leaderboard and experiments: its own numbers only."""
    problem, repo_id, track = lab.problem, lab.repo_id, lab.track
    exps = queries.experiments(store, repo_id, track)
    board = queries.leaderboard(store, repo_id, problem=problem, track=track)
    base = queries.baseline(store, repo_id, track or "default")
    progress = queries.best_over_experiments(store, problem, repo_id, track)
    states = Counter(e.state for e in exps)
    direction = "lower is better" if problem.minimize else "higher is better"
    current = queries.current_bases(store).get((repo_id, track or "default")) if repo_id else None
    first = progress.baseline
    best = progress.best
    lines = [
        f"Metric: `{problem.metric}` ({direction}).",
        "",
        f"{level} Summary",
        "",
        f"- Experiments: {len(exps)}"
        + (" (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")" if exps else ""),
        f"- Starting baseline: {numbers.metric(first)}",
        "- Current baseline: "
        + (
            f"{numbers.metric(base.mean, base.std)} over {base.seeds} seeds on "
            f"`{(base.base_sha or '?')[:7]}`"
            if base
            else "not measured yet"
        ),
        f"- Best so far: {numbers.metric(best)}"
        + (
            f" ({numbers.delta(best - first)} against the start)"
            if best is not None and first
            else ""
        ),
        "",
        f"![best {problem.metric} over experiments]"
        f"({lab.chart(BEST_OVER_EXPERIMENTS_SVG, sections)})",
        "",
        f"![best {problem.metric} over time]({lab.chart(BEST_OVER_TIME_SVG, sections)})",
        "",
        f"{level} Leaderboard",
        "",
    ]
    if board:
        lines += _table(
            [
                "rank",
                "PR",
                "title",
                "student",
                problem.metric,
                "seeds",
                "claimed Δ",
                "measured Δ",
                "merged by",
            ],
            [
                [
                    r.rank,
                    _pr(r.repo, r.pr_number, html_base),
                    r.title,
                    r.student or "—",
                    numbers.metric(r.mean, r.std),
                    r.seeds,
                    numbers.delta(r.claimed_gain),
                    numbers.measured(r.measured_gain, r.measured_seeds),
                    r.merged_by or "—",
                ]
                for r in board
            ],
        )
    else:
        lines.append("No winner merged yet.")
    lines += ["", f"{level} Experiments", ""]
    if exps:
        lines += _table(
            [
                "PR",
                "title",
                "state",
                "student",
                problem.metric,
                "seeds",
                "Δ",
                "base",
                "decision",
                "rationale",
            ],
            [
                [
                    _pr(e.repo, e.pr_number, html_base),
                    e.title,
                    e.state,
                    e.student or "—",
                    numbers.metric(e.mean, e.std),
                    e.seeds,
                    numbers.delta(e.delta),
                    _base_cell(e, current),
                    f"{e.verdict} ({e.actor})" if e.verdict else "—",
                    e.rationale or "—",
                ]
                for e in sorted(exps, key=lambda e: e.id)
            ],
        )
    else:
        lines.append("No experiments yet.")
    return lines


def _base_cell(exp: queries.ExperimentRow, current: str | None) -> str:
    """The base a result was measured on, marked when the lab has moved past it."""
    if not exp.measured_on:
        return "—"
    older = queries.older_base(exp.measured_on, current, exp.state)
    short = plain(exp.measured_on[:7], 7)  # a sha the bot stored, shown as code
    return _Markdown(f"`{short}`" + (" (older base)" if older else ""))


def render_report(
    store: Store,
    problem: Problem | None = None,
    *,
    title: str = "kohai session",
    html_base: str = "https://github.com",
    repo: str | None = None,
) -> str:
    """The report's markdown, a section per lab; charts are referenced by their file names."""
    sections = report_labs(store, problem, repo)
    advisor_cost = (store.one("SELECT SUM(cost_usd) AS c FROM advisor_calls") or {}).get("c") or 0
    run_totals = store.one("SELECT SUM(gpu_hours) AS g, SUM(cost_usd) AS c FROM runs") or {}
    lines = [
        f"# {title}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    if len(sections) == 1:
        only = sections[0]
        if only.key is not None:
            lines += [f"Lab: `{only.key}`.", ""]
        lines += _lab_section(store, only, 1, html_base, "##")
    else:
        lines += [
            f"{len(sections)} labs: " + ", ".join(f"`{lab.key}`" for lab in sections) + ".",
            "Each has its own metric, baseline and results; none is compared with another's.",
        ]
        for lab in sections:
            lines += [
                "",
                f"## {lab.key}",
                "",
                *_lab_section(store, lab, len(sections), html_base, "###"),
            ]
    lines += [
        "",
        f"GPU-hours (all labs): {run_totals.get('g') or 0:.3f}; compute cost "
        f"${run_totals.get('c') or 0:.2f}; advisor cost ${advisor_cost:.2f}.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    store: Store,
    problem: Problem | None,
    out_dir: Path,
    *,
    title: str = "kohai session",
    html_base: str = "https://github.com",
    repo: str | None = None,
) -> Path:
    """Write `report.md` and each lab's two SVG charts into `out_dir`; return the markdown's path.

    With one lab (or `repo` naming one) the charts are `best_over_experiments.svg`
    and `best_over_time.svg`; with several, each is prefixed by its lab.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = report_labs(store, problem, repo)
    for lab in sections:
        p, repo_id, track = lab.problem, lab.repo_id, lab.track
        where = f" ({lab.key})" if lab.key and len(sections) > 1 else ""
        charts = {
            BEST_OVER_EXPERIMENTS_SVG: progress_svg(
                queries.best_over_experiments(store, p, repo_id, track),
                f"best {p.metric} over experiments{where}",
            ),
            BEST_OVER_TIME_SVG: progress_svg(
                queries.best_over_time(store, p, repo_id, track),
                f"best {p.metric} over time{where}",
            ),
        }
        for name, svg in charts.items():
            (out_dir / lab.chart(name, len(sections))).write_text(svg, encoding="utf-8")
    path = out_dir / "report.md"
    text = render_report(store, problem, title=title, html_base=html_base, repo=repo)
    path.write_text(text, "utf-8")
    return path
