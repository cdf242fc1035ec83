"""The bot's comments, rendered from stored state. Pure functions returning markdown.

Text that comes from a run (log tails, failure reasons, W&B URLs) or from
another person is untrusted: it must not end a code fence early, open an HTML
comment (which would hide the rest of the comment, or pose as a bot marker),
embed an image or ping anyone. `bot.render.escape` makes it inert; every
untrusted string here goes through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bot.records import Run
from bot.render import numbers
from bot.render.escape import ZWJ, code_block, defang, https_url, plain

__all__ = ["ZWJ", "code_block", "defang", "plain", "results_comment", "status_comment"]


def _short_sha(sha: str | None) -> str:
    """The first ten hex digits of a commit sha ("?" for none or anything else)."""
    short = (sha or "")[:10]
    return short if short and all(c in "0123456789abcdef" for c in short) else "?"


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _pm(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "—"
    if std is None:
        return f"{numbers.number(mean)} (n={n})"
    return f"{numbers.number(mean)} ± {numbers.number(std)} (n={n})"


def mermaid_curve(curves: dict[int, list[list[float]]], metric: str = "train_loss") -> str:
    """A training curve GitHub renders (mermaid xychart-beta); one line per seed."""
    series = [(seed, points) for seed, points in sorted(curves.items()) if len(points) >= 2]
    if not series:
        return ""
    longest = max((points for _, points in series), key=len)
    stride = max(1, len(longest) // 20)
    steps = [int(p[0]) for p in longest[::stride]]
    lines = []
    lo, hi = math.inf, -math.inf
    for _, points in series:
        by_step = {int(p[0]): p[1] for p in points}
        ys = []
        last = points[0][1]
        for step in steps:
            last = by_step.get(step, last)
            ys.append(last)
        lo, hi = min(lo, *ys), max(hi, *ys)
        lines.append("    line [" + ", ".join(f"{y:.4f}" for y in ys) + "]")
    pad = (hi - lo) * 0.05 or 0.1
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "{metric} by step"',
            "    x-axis [" + ", ".join(str(s) for s in steps) + "]",
            f'    y-axis "{metric}" {lo - pad:.4f} --> {hi + pad:.4f}',
            *lines,
            "```",
        ]
    )


def results_comment(
    *,
    title: str,
    metric: str,
    minimize: bool,
    runs: Sequence[Run],
    baseline: Sequence[float],
    head_sha: str | None,
    base_sha: str | None,
    student: str | None,
    job_status: str,
    reason: str = "",
    cost_usd: float = 0.0,
    attempt_note: str = "",
    smoke_s: float = 0.0,
    unsandboxed: bool = False,
    notes: str = "",
) -> str:
    """One finished job: per-seed table, mean ± std, delta vs baseline, resources, curve.

    `notes` are the student's own words about the job (and what the bot dropped
    from its report): shown, escaped, as the student's.
    """
    ok = [r.metric for r in runs if r.ok and r.metric is not None]
    mean, std = mean_std(ok)
    b_mean, b_std = mean_std(list(baseline))
    lines = [f"### Results: {plain(title, 200)}", ""]
    if job_status in ("refused", "implement_failed"):
        label = "Run refused" if job_status == "refused" else "Implementation failed"
        lines += [f"**{label}:** {plain(reason, 2000)}", ""]
    lines += [
        f"Commit `{_short_sha(head_sha)}` on base `{_short_sha(base_sha)}`"
        + (f", student **{plain(student, 60)}**" if student else "")
        + (f". {attempt_note}" if attempt_note else ""),
        "",
    ]
    if notes.strip():
        lines += [f"**Student's notes:** {plain(notes, 1000)}", ""]
    if unsandboxed or any(not r.sandboxed for r in runs if r.status != "cancelled"):
        lines += [
            "**unsandboxed**: the host ran this code without the job sandbox "
            "(`kohai host run --unsandboxed`); it had the host's files and network.",
            "",
        ]
    if any(not r.sealed for r in runs if r.status != "cancelled"):
        lines += [
            "**unsealed**: this problem has no `[eval]` in `kohai.toml`, so the metric is the "
            "training script's own claim, not a frozen evaluator's.",
            "",
        ]
    if runs:
        lines += [
            f"| seed | status | {metric} | runtime | peak memory | GPU-hours | W&B |",
            "|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in sorted(runs, key=lambda r: r.seed):
            url = https_url(r.wandb_url)
            link = f"[run]({url})" if url else "dropped (not https)" if r.wandb_url else "—"
            lines.append(
                f"| {r.seed} | {plain(r.status, 40)} | {numbers.number(r.metric)} | "
                f"{(r.duration_s or 0):.1f} s | {(r.peak_mem_mb or 0):.0f} MB | "
                f"{(r.gpu_hours or 0):.4f} | {link} |"
            )
        lines.append("")
    lines.append(f"**{metric}**: {_pm(mean, std, len(ok))}")
    if b_mean is not None:
        lines.append(f"**baseline**: {_pm(b_mean, b_std, len(baseline))}")
    if mean is not None and b_mean is not None:
        delta = mean - b_mean
        se = math.sqrt(
            ((std or 0.0) ** 2) / max(len(ok), 1) + ((b_std or 0.0) ** 2) / max(len(baseline), 1)
        )
        better = delta < 0 if minimize else delta > 0
        word = "better" if better else "worse" if delta != 0 else "no change"
        lines.append(
            f"**delta**: {delta:+.4f} ± {se:.4f} (SE) — {word} ({'lower' if minimize else 'higher'} is better)"
        )
    total_time = sum(r.duration_s or 0 for r in runs)
    total_gpu = sum(r.gpu_hours or 0 for r in runs)
    lines += [
        "",
        f"Runtime {total_time:.1f} s · GPU-hours {total_gpu:.4f} · LLM cost ${cost_usd:.4f}"
        + (f" · smoke runs {smoke_s:.1f} s" if smoke_s else ""),
    ]
    curves = {r.seed: r.curve for r in runs}
    chart = mermaid_curve(curves)
    if chart:
        lines += ["", chart]
    failed = [r for r in runs if r.status != "ok"]
    for r in failed[:2]:
        tail = r.log_tail.strip()
        lines += [
            "",
            f"<details><summary>seed {r.seed}: {plain(r.status, 40)} — "
            f"{plain(r.reason or 'see log')}</summary>",
            "",
            code_block(tail[-6000:] or "(no output)"),
            "",
            "</details>",
        ]
    return "\n".join(lines)


def status_comment(
    *,
    state: str,
    student: str | None,
    hypothesis: str,
    metric: str,
    baseline: Sequence[float],
    candidate: Sequence[float],
    hold: bool,
    decision: str | None = None,
    phase_note: str = "",
    track: str | None = None,
    base_branch: str | None = None,
) -> str:
    """The sticky status comment, edited in place as the experiment moves.

    `track` names a research track other than the default: the comment says
    so, and which base branch the PR is measured against and merges into.
    """
    b_mean, b_std = mean_std(list(baseline))
    c_mean, c_std = mean_std(list(candidate))
    rows = [
        "| | |",
        "|---|---|",
        f"| state | **{state}**{' (on hold)' if hold else ''} |",
        f"| student | {student or 'any free student'} |",
        *(
            [f"| track | **{plain(track, 60)}** (base `{plain(base_branch or '?', 120)}`) |"]
            if track
            else []
        ),
        f"| baseline {metric} | {_pm(b_mean, b_std, len(baseline)) if baseline else 'being measured'} |",
        f"| this PR | {_pm(c_mean, c_std, len(candidate)) if candidate else '—'} |",
    ]
    if decision:
        rows.append(f"| decision | {plain(decision, 400)} |")
    if phase_note:
        rows.append(f"| now | {plain(phase_note, 300)} |")
    short = defang(hypothesis.strip().splitlines()[0][:200]) if hypothesis.strip() else ""
    return "\n".join(
        [
            "### kohai status",
            "",
            *rows,
            "",
            f"> {short}" if short else "",
            "",
            "<sub>Commands: `/rerun [seeds=N]` `/stop` `/assign <student>` `/review` `/merge` "
            "`/close` `/hold` `/unhold` `/status` `/help`</sub>",
        ]
    )
