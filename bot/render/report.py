"""The session report: a markdown summary with its charts, written at the end of a session.

It is the lab notebook's last page: what the baseline was, what won, what was
tried and why each experiment was kept or closed. It holds only what the store
holds, so it can be written again at any time from the SQLite file alone.
The chart builders here are shared with the dashboard, so both draw the same.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from bot import queries
from bot.problem import Problem
from bot.records import Run
from bot.render import numbers
from bot.render.charts import PALETTE, Series, line_chart
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


def curves_svg(runs: list[Run], title: str = "training curves", *, width: int = 720) -> str:
    """Train loss against step, one line per seed and commit."""
    series = [
        Series(
            f"seed {run.seed}" + (f" @{run.commit_sha[:7]}" if run.commit_sha else ""),
            [(float(p[0]), float(p[1])) for p in run.curve if len(p) >= 2],
        )
        for run in runs
        if run.curve
    ]
    return line_chart(series, title=title, x_label="step", y_label="train loss", width=width)


def overlay_svg(
    runs: list[Run],
    baseline_runs: list[Run],
    title: str = "training curves: this experiment over the baseline",
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


def _cell(text: object) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _pr(repo: str, number: int | None, html_base: str) -> str:
    url = queries.pr_url(repo, number, html_base)
    return f"[#{number}]({url})" if url else "—"


def render_report(
    store: Store,
    problem: Problem,
    *,
    title: str = "kohai session",
    html_base: str = "https://github.com",
) -> str:
    """The report's markdown; charts are referenced by their file names."""
    exps = queries.experiments(store)
    board = queries.leaderboard(store, problem=problem)
    base = queries.baseline(store)
    progress = queries.best_over_experiments(store, problem)
    advisor_cost = (store.one("SELECT SUM(cost_usd) AS c FROM advisor_calls") or {}).get("c") or 0
    run_totals = store.one("SELECT SUM(gpu_hours) AS g, SUM(cost_usd) AS c FROM runs") or {}
    states = Counter(e.state for e in exps)
    direction = "lower is better" if problem.minimize else "higher is better"
    first = progress.baseline
    best = progress.best
    lines = [
        f"# {title}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Metric: `{problem.metric}` ({direction}).",
        "",
        "## Summary",
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
        f"- GPU-hours: {run_totals.get('g') or 0:.3f}; compute cost ${run_totals.get('c') or 0:.2f}; "
        f"advisor cost ${advisor_cost:.2f}",
        "",
        f"![best {problem.metric} over experiments]({BEST_OVER_EXPERIMENTS_SVG})",
        "",
        f"![best {problem.metric} over time]({BEST_OVER_TIME_SVG})",
        "",
        "## Leaderboard",
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
    lines += ["", "## Experiments", ""]
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
                    f"{e.verdict} ({e.actor})" if e.verdict else "—",
                    e.rationale or "—",
                ]
                for e in sorted(exps, key=lambda e: e.id)
            ],
        )
    else:
        lines.append("No experiments yet.")
    lines.append("")
    return "\n".join(lines)


def write_report(
    store: Store,
    problem: Problem | None,
    out_dir: Path,
    *,
    title: str = "kohai session",
    html_base: str = "https://github.com",
) -> Path:
    """Write `report.md` and its two SVG charts into `out_dir`; return the markdown's path."""
    problem = problem or Problem()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {
        BEST_OVER_EXPERIMENTS_SVG: progress_svg(
            queries.best_over_experiments(store, problem), f"best {problem.metric} over experiments"
        ),
        BEST_OVER_TIME_SVG: progress_svg(
            queries.best_over_time(store, problem), f"best {problem.metric} over time"
        ),
    }
    for name, svg in charts.items():
        (out_dir / name).write_text(svg, encoding="utf-8")
    path = out_dir / "report.md"
    path.write_text(render_report(store, problem, title=title, html_base=html_base), "utf-8")
    return path
