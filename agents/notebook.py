"""The lab notebook as text: what the advisor's notebook tools answer.

Pure functions of an `AdvisorContext` (and a diff, fetched by the caller), so
the same views serve the agent's tools and their tests. Each view is bounded:
the agent asks for more detail by calling another tool, never by receiving
the whole store at once.
"""

from __future__ import annotations

import math

from agents.context import AdvisorContext, ExperimentRecord
from bot.render import numbers

LIST_LIMIT = 40
DIFF_CHARS = 8000
CURVE_POINTS = 12


def find(ctx: AdvisorContext, ref: str | int) -> ExperimentRecord | None:
    """An experiment by PR number (`#12`, `12`) or id (`exp-3`)."""
    text = str(ref).strip().lstrip("#")
    for record in ctx.history:
        if text.startswith("exp-") and str(record.id) == text[4:]:
            return record
        if record.number is not None and str(record.number) == text:
            return record
    return None


def list_experiments(ctx: AdvisorContext, query: str = "") -> str:
    """Newest first, one line each; `query` filters on title, hypothesis and knobs."""
    words = [w.lower() for w in query.split()]
    rows = []
    for r in sorted(ctx.history, key=lambda r: r.id or 0, reverse=True):
        haystack = f"{r.title} {r.hypothesis} {r.knobs}".lower()
        if all(w in haystack for w in words):
            rows.append(
                f"- {r.label} [{r.state}{', ' + r.verdict if r.verdict else ''}] {r.title}: "
                f"{_mean(r.metric_mean, r.metric_std, r.n_seeds)}"
                + (f", {r.n_failed} failed" if r.n_failed else "")
            )
    if not rows:
        return f"No experiment matches {query!r}." if query else "No experiments yet."
    more = f"\n- ... {len(rows) - LIST_LIMIT} more" if len(rows) > LIST_LIMIT else ""
    return "\n".join(rows[:LIST_LIMIT]) + more


def show_experiment(ctx: AdvisorContext, record: ExperimentRecord, diff: str) -> str:
    """Hypothesis, diff, per-seed results, the curve against the baseline's, failure, verdicts."""
    lines = [
        f"# {record.label}: {record.title}",
        f"State: {record.state}; student: {record.student or 'unassigned'}; "
        f"source: {record.source}; latest verdict: {record.verdict or 'none'}.",
        f"Commit {(record.head_sha or '?')[:12]} measured on base {(record.base_sha or '?')[:12]}.",
        "",
        "## Hypothesis",
        record.hypothesis or record.title,
    ]
    if record.knobs:
        lines += ["", "Knobs: " + ", ".join(f"{k} = {v}" for k, v in record.knobs.items())]
    lines += [
        "",
        "## Diff against its base",
        "```diff",
        _clip(diff or "(no diff)", DIFF_CHARS),
        "```",
    ]
    lines += ["", "## Seeds"]
    if record.seeds:
        lines += ["| seed | status | metric | reason |", "|---|---|---|---|"]
        for s in record.seeds:
            lines.append(
                f"| {s['seed']} | {s['status']} | {numbers.number(s.get('metric'), '.4g')} | {s.get('reason') or ''} |"
            )
    else:
        lines.append("(not measured yet)")
    lines.append(
        f"Mean {_mean(record.metric_mean, record.metric_std, record.n_seeds)}; baseline "
        f"{_mean(ctx.baseline_mean, ctx.baseline_std, ctx.baseline_n)}."
    )
    lines += ["", "## Training curve (train_loss) against the baseline's"]
    lines.append(curve_table(record.curve, ctx.baseline_curve))
    if record.failure:
        lines += ["", "## Last failure", "```", _clip(record.failure, 2000), "```"]
    if record.feedback:
        lines += ["", "## Review feedback so far", record.feedback]
    return "\n".join(lines)


def curve_table(curve: list[list[float]], baseline: list[list[float]]) -> str:
    """A few points of both curves at the same steps, so a reader sees where they part."""
    if not curve:
        return "(no curve)"
    base = dict((int(p[0]), p[1]) for p in baseline)
    step = max(1, math.ceil(len(curve) / CURVE_POINTS))
    rows = ["| step | this run | baseline |", "|---:|---:|---:|"]
    for point in curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else []):
        rows.append(
            f"| {int(point[0])} | {point[1]:.4g} | {numbers.number(base.get(int(point[0])), '.4g')} |"
        )
    return "\n".join(rows)


def leaderboard(ctx: AdvisorContext) -> str:
    """Merged and measured experiments, best first in the problem's direction."""
    measured = [r for r in ctx.history if r.metric_mean is not None]
    if not measured:
        return "Nothing measured yet. " + baseline(ctx)
    sign = 1 if ctx.problem.minimize else -1
    measured.sort(key=lambda r: sign * (r.metric_mean or 0.0))
    rows = [
        f"{i}. {r.label} {r.title} [{r.state}]: {_mean(r.metric_mean, r.metric_std, r.n_seeds)}"
        for i, r in enumerate(measured[:LIST_LIMIT], 1)
    ]
    return "\n".join([baseline(ctx), "", *rows])


def baseline(ctx: AdvisorContext) -> str:
    """The baseline and best so far, and what the merge gate has learned of the lab."""
    p = ctx.problem
    text = (
        f"Baseline on {(ctx.base_sha or '?')[:12]}: "
        f"{_mean(ctx.baseline_mean, ctx.baseline_std, ctx.baseline_n)} "
        f"({p.metric}, {'lower' if p.minimize else 'higher'} is better); best so far {numbers.number(ctx.best, '.4g')}."
    )
    state = gate_state(ctx)
    return f"{text}\n\n{state}" if state else text


def gate_state(ctx: AdvisorContext) -> str:
    """The Bayesian gate's learned prior, noise and spent budget, so proposals can be sized to
    be seen ("" when the lab uses the significance test)."""
    return f"## The merge gate\n{ctx.gate_state}" if ctx.gate_state else ""


def _mean(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return f"not measured (n={n})"
    return f"{mean:.4g} ± {(std or 0.0):.2g} (n={n})"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[... clipped ...]"
