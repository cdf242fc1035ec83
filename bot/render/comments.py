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
from dataclasses import dataclass, field

from bot.records import Run
from bot.render import numbers
from bot.render.charts import BASELINE_COLOR, CANDIDATE_COLOR, Curve, mean_curve, mermaid_lines
from bot.render.escape import ZWJ, code_block, defang, https_url, plain

__all__ = [
    "ZWJ",
    "RunningSeeds",
    "code_block",
    "defang",
    "plain",
    "results_comment",
    "status_comment",
]


@dataclass
class RunningSeeds:
    """A running job's seeds: those its host reported finished (seed, metric or None) and
    those still to run. Shown as the host's report until the completion replaces them."""

    finished: list[tuple[int, float | None]] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)


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
    baseline_runs: Sequence[Run] = (),
    running: RunningSeeds | None = None,
) -> str:
    """The experiment's results: per-seed table, mean ± std, delta vs baseline, resources,
    and its training curve over the baseline's (`compare_chart`).

    `running`: a job still training; the seeds its host has finished are listed
    as they come (`_running_lines`), apart from the table of accepted runs.

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
    if running is not None:
        lines += _running_lines(metric, running)
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
    chart = compare_chart(runs, baseline_runs)
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


def _running_lines(metric: str, running: RunningSeeds) -> list[str]:
    """The finished seeds of a job still training, as its host reported them."""
    done = ", ".join(
        f"seed {seed}: {numbers.number(value) if value is not None else 'no metric'}"
        for seed, value in running.finished
    )
    waiting = ", ".join(str(seed) for seed in running.waiting)
    total = len(running.finished) + len(running.waiting)
    line = f"**Training: {len(running.finished)} of {total} seeds finished**"
    if done:
        line += f" ({metric}, as the host reported: {done})"
    if waiting:
        line += f"; still to run: {waiting}"
    return [line + ". The table takes them when the job completes.", ""]


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


def config_error_check(error: str, line: int | None) -> str:
    """The summary of the failing check run on a commit whose kohai.toml is invalid."""
    where = f"line {line}" if line else "the file (no line could be named)"
    return (
        f"The lab does not run while `kohai.toml` is invalid. The error, at {where}:\n\n"
        f"{code_block(error)}\n\n"
        "Fix the file on the base branch; the next commit is checked again."
    )


def config_error_issue(repo: str, branch: str, sha: str, error: str, line: int | None) -> str:
    """The body of the issue "kohai: configuration error": what is wrong, where, what to do.

    The branch and repository names are `plain` text (a ref may hold markup); the
    error, which quotes the file, sits in a fence nothing in it can close."""
    where = f"line {line} of `kohai.toml`" if line else "`kohai.toml`"
    return "\n".join(
        [
            f"`kohai.toml` on **{plain(branch, 100)}** of {plain(repo, 100)} is invalid at "
            f"commit {sha[:10]}, so the lab has stopped: nothing is trained or proposed "
            "until it is fixed.",
            "",
            f"The error, at {where}:",
            "",
            code_block(error),
            "",
            "`kohai check` validates the file locally. This issue closes itself when a "
            "valid `kohai.toml` lands on the branch.",
        ]
    )


def config_fixed_note(branch: str, sha: str) -> str:
    """The comment that closes the configuration-error issue."""
    return (
        f"`kohai.toml` on **{plain(branch, 100)}** is valid again at commit {sha[:10]}: "
        "the lab runs. Closing."
    )


def _seed_list(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in sorted(set(seeds)))


def compare_chart(runs: Sequence[Run], baseline_runs: Sequence[Run]) -> str:
    """The candidate's training curve over the baseline's, as GitHub renders it (mermaid).

    Each side is the mean of its seeds' curves; the baseline uses the seeds the
    candidate ran (the paired test's matched seeds) when it has them, all of its
    seeds otherwise, and the legend says which. Empty when no curve was logged.
    Mermaid needs a value at every step: past its last logged step a line holds
    its last value.
    """
    mine = [r for r in runs if r.curve]
    if not mine:
        return ""
    seeds = {r.seed for r in mine}
    theirs = [r for r in baseline_runs if r.curve]
    matched = [r for r in theirs if r.seed in seeds]
    chosen = matched or theirs

    def points(group: Sequence[Run]) -> list[list[tuple[float, float]]]:
        return [[(float(p[0]), float(p[1])) for p in r.curve if len(p) >= 2] for r in group]

    curves = [
        Curve(
            f"this PR (mean of seeds {_seed_list([r.seed for r in mine])})",
            CANDIDATE_COLOR,
            mean_curve(points(mine)),
        )
    ]
    if chosen:
        which = "matched seeds" if matched else "its seeds, none matched"
        curves.append(
            Curve(
                f"baseline on the same base ({which}: {_seed_list([r.seed for r in chosen])})",
                BASELINE_COLOR,
                mean_curve(points(chosen)),
            )
        )
        title = "train loss by step: blue = this PR, orange = baseline"
    else:
        title = "train loss by step: blue = this PR (no baseline curve on this base yet)"
    return mermaid_lines(title, curves, "train loss")
