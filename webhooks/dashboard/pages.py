"""The dashboard's pages: the labs' state rendered as plain HTML with SVG charts.

`/` lists the labs (one per repository with a `kohai.toml`); `/labs/{owner}/{repo}`
is one lab's page, with that lab's own metric and direction as stored at its
last sync. With a single lab, `/` is that lab's page too.

Pages are rendered on the server as plain HTML with inline CSS and SVG charts,
so they work with no internet and no JavaScript. One small shipped script
(`static/live.js`) subscribes to `/events` and swaps in the sections that
changed, so an open page follows the lab as it works.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from bot import queries
from bot.engine import labs
from bot.problem import Problem
from bot.render import numbers
from bot.render.escape import https_url
from bot.render.markup import diff_html, markdown_html
from bot.render.report import overlay_svg, progress_svg
from bot.store import Store

DEFAULT_HTML_BASE = "https://github.com"
EXPERIMENTS_SHOWN = 200  # rows on the overview page; the JSON API and the CLI have them all


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _trust_badge(trust: str) -> str:
    """A result that is not sealed or not sandboxed says so wherever it is shown."""
    return "".join(f' <span class="badge s-invalid">{_e(t)}</span>' for t in trust.split(", ") if t)


def _badge(state: str | None) -> str:
    if not state:
        return '<span class="muted">—</span>'
    return f'<span class="badge s-{_e(state)}">{_e(state)}</span>'


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "—"
    seconds = max(0, int(now - ts))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _short(sha: str | None) -> str:
    return f"<code>{_e(sha[:7])}</code>" if sha else "—"


def _measured_html(gain: float | None, seeds: int, problem: Problem) -> str:
    """The gain the lab measured after the merge (the re-measured baseline), or why not."""
    if gain is None:
        return '<span class="muted" title="the baseline after the merge is not measured yet">'
        "not yet</span>"
    return f"{_delta_html(gain, problem)} <span class=muted>(n={seeds})</span>"


def _delta_html(delta: float | None, problem: Problem) -> str:
    if delta is None:
        return "—"
    better = delta < 0 if problem.minimize else delta > 0
    cls = "good" if better and delta != 0 else ("bad" if delta != 0 else "muted")
    return f'<span class="{cls}">{_e(numbers.delta(delta))}</span>'


def experiment_path(exp: queries.ExperimentRow, scoped: bool = False) -> str:
    """The dashboard page of an experiment: by PR number when it has one (like GitHub).

    PR numbers are per repository, so with several labs (`scoped`) the page
    lives under its lab.
    """
    prefix = f"/labs/{exp.repo}" if scoped else ""
    if exp.pr_number is not None:
        return f"{prefix}/experiments/{exp.pr_number}"
    return f"{prefix}/experiments/{exp.id}?by=id"


def lab_path(lab: str) -> str:
    """A lab's page: `/labs/owner/repo` for a default line, `/labs/owner/repo/track` for a track."""
    full_name, track = labs.split_lab_key(lab)
    return f"/labs/{full_name}" if track == "default" else f"/labs/{full_name}/{track}"


def _pr_links(exp: queries.ExperimentRow, html_base: str, scoped: bool = False) -> str:
    label = f"#{exp.pr_number}" if exp.pr_number is not None else f"exp {exp.id}"
    page = f'<a href="{_e(experiment_path(exp, scoped))}">{_e(label)}</a>'
    url = queries.pr_url(exp.repo, exp.pr_number, html_base)
    if url:
        page += f' <a class="muted" href="{_e(url)}" title="on GitHub">↗</a>'
    return page


def _table(headers: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _page(title: str, subtitle: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{_e(title)}</title><link rel="stylesheet" href="/static/dashboard.css"></head>'
        '<body><header><h1><a href="/">kohai</a></h1>'
        f'<span class="repo">{_e(subtitle)}</span><span class="spacer"></span>'
        '<span id="updated"></span><span id="live" class="live">connecting</span></header>'
        f'<main>{body}</main><script src="/static/live.js" defer></script></body></html>'
    )


VIEWER_MARK = '<span class="spacer"></span>'


def with_viewer(page: str, login: str | None) -> str:
    """The page with who is signed in and a way out, in the header (public: unchanged)."""
    if not login:
        return page
    who = (
        f'<span class="viewer">signed in as <strong id="viewer">{_e(login)}</strong> · '
        '<a href="/logout">sign out</a></span>'
    )
    return page.replace(VIEWER_MARK, VIEWER_MARK + who, 1)


def readable_names(store: Store, visible: frozenset[int]) -> frozenset[str]:
    """The full names (lower case) of the repositories with these ids."""
    if not visible:
        return frozenset()
    marks = ",".join("?" * len(visible))
    rows = store.query(f"SELECT full_name FROM repos WHERE id IN ({marks})", tuple(visible))
    return frozenset(str(r["full_name"]).lower() for r in rows)


def _section(section_id: str, title: str, content: str) -> str:
    return f'<section id="{section_id}" data-live><h2>{_e(title)}</h2>{content}</section>'


def _summary_cards(
    store: Store, problem: Problem, repo_id: int | None = None, track: str | None = None
) -> str:
    base = queries.baseline(store, repo_id, track or "default")
    progress = queries.best_over_experiments(store, problem, repo_id, track)
    exps = queries.experiments(store, repo_id, track)
    running = sum(1 for e in exps if e.state in queries.ACTIVE_STATES)
    waiting = len(queries.queue(store, repo_id, track))
    totals = (
        store.one(
            "SELECT SUM(gpu_hours) AS g, SUM(cost_usd) AS c FROM runs "
            "WHERE (? IS NULL OR repo_id = ?) AND (? IS NULL OR track = ?)",
            (repo_id, repo_id, track, track),
        )
        or {}
    )
    advisor = (
        store.one(
            "SELECT SUM(a.cost_usd) AS c FROM advisor_calls a WHERE ? IS NULL OR "
            "a.experiment_id IN (SELECT id FROM experiments WHERE repo_id = ? "
            "AND (? IS NULL OR track = ?))",
            (repo_id, repo_id, track, track),
        )
        or {}
    ).get("c") or 0.0
    best, start = progress.best, progress.baseline
    improvement = (
        f'<div class="label">{_e(numbers.delta(best - start))} vs start</div>'
        if best is not None and start is not None
        else ""
    )
    unmeasurable = store.query(
        "SELECT baseline_problem FROM repos WHERE baseline_problem IS NOT NULL AND active = 1 "
        "AND (? IS NULL OR id = ?) AND ? IN ('default', '-')",
        (repo_id, repo_id, track or "-"),
    ) + store.query(
        "SELECT baseline_problem FROM tracks WHERE baseline_problem IS NOT NULL "
        "AND repo_id = ? AND name = ?",
        (repo_id, track),
    )
    cards = [
        (
            "baseline",
            numbers.metric(base.mean) if base else "—",
            unmeasurable[0]["baseline_problem"]
            if unmeasurable
            else f"± {base.std:.4f}, {base.seeds} seeds on {(base.base_sha or '?')[:7]}"
            if base
            else "",
        ),
        (f"best {problem.metric}", numbers.metric(best), ""),
        ("experiments", str(len(exps)), f"{running} running"),
        ("merged", str(sum(1 for e in exps if e.state == "merged")), ""),
        ("queue", str(waiting), "open jobs"),
        (
            "GPU-hours",
            f"{totals.get('g') or 0:.2f}",
            f"${(totals.get('c') or 0) + advisor:.2f} spent",
        ),
    ]
    html = []
    for label, value, note in cards:
        extra = (
            improvement
            if label.startswith("best")
            else (f'<div class="label">{_e(note)}</div>' if note else "")
        )
        html.append(
            f'<div class="card"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(value)}</div>{extra}</div>'
        )
    return f'<div class="cards">{"".join(html)}</div>'


def _leaderboard(
    store: Store,
    problem: Problem,
    html_base: str,
    repo_id: int | None = None,
    scoped: bool = False,
    track: str | None = None,
) -> str:
    by_id = {e.id: e for e in queries.experiments(store, repo_id, track)}
    rows = []
    for row in queries.leaderboard(store, repo_id, problem=problem, track=track):
        exp = by_id[row.experiment_id]
        rows.append(
            f"<tr><td class=num>{row.rank}</td>"
            f"<td class=pr>{_pr_links(exp, html_base, scoped)}</td>"
            f"<td>{_e(row.title)}{_trust_badge(exp.trust)}</td><td>{_e(row.student or '—')}</td>"
            f"<td class=num>{_e(numbers.metric(row.mean, row.std))}</td><td class=num>{row.seeds}</td>"
            f"<td class=num>{_delta_html(row.claimed_gain, problem)}</td>"
            f"<td class=num>{_measured_html(row.measured_gain, row.measured_seeds, problem)}</td>"
            f"<td>{_e(row.merged_by or '—')}</td></tr>"
        )
    return _table(
        [
            "#",
            "PR",
            "title",
            "student",
            problem.metric,
            "seeds",
            "claimed Δ",
            "measured Δ",
            "merged by",
        ],
        rows,
        "No winner merged yet.",
    )


def _experiments_table(
    store: Store,
    problem: Problem,
    html_base: str,
    repo_id: int | None = None,
    scoped: bool = False,
    track: str | None = None,
) -> str:
    rows = []
    everything = queries.experiments(store, repo_id, track)
    bases = queries.current_bases(store)
    for exp in everything[:EXPERIMENTS_SHOWN]:
        seeds = f"{exp.seeds}" + (f' <span class="bad">+{exp.failed}✗</span>' if exp.failed else "")
        decision = (
            f"{_badge(exp.verdict)} <span class=muted>{_e(exp.actor)}</span>"
            if exp.verdict
            else "—"
        )
        hold = ' <span class="badge">hold</span>' if exp.hold else ""
        hold += _trust_badge(exp.trust)
        rows.append(
            f'<tr data-experiment="{exp.id}"><td class=pr>{_pr_links(exp, html_base, scoped)}</td>'
            f"<td>{_track_tag(exp.track)}{_e(exp.title)}</td><td>{_badge(exp.state)}{hold}</td>"
            f"<td>{_e(exp.student or '—')}</td><td class=num>{seeds}</td>"
            f"<td class=num>{_e(numbers.metric(exp.mean, exp.std))}</td>"
            f"<td class=num>{_delta_html(exp.delta, problem)}</td>"
            f"<td>{_measured_on_html(exp, bases.get((exp.repo_id, exp.track)))}</td>"
            f"<td>{decision}</td><td class=why>{_e(exp.rationale or '—')}</td></tr>"
        )
    table = _table(
        [
            "PR",
            "title",
            "state",
            "student",
            "seeds",
            problem.metric,
            "Δ",
            "base",
            "decision",
            "rationale",
        ],
        rows,
        "No experiments yet.",
    )
    if len(everything) > EXPERIMENTS_SHOWN:
        table += (
            f'<p class="muted">The latest {EXPERIMENTS_SHOWN} of {len(everything)}; '
            'all of them: <a href="/api/experiments">/api/experiments</a>, '
            "<code>kohai history</code>.</p>"
        )
    return table


OLDER_BASE = (
    ' <span class="badge older" title="measured on an older base than the lab\'s current one: '
    "not comparable with results on today's base\">older base</span>"
)


def _measured_on_html(exp: queries.ExperimentRow, current: str | None) -> str:
    """The base an experiment's result was measured on, flagged when the lab has moved on."""
    if not exp.measured_on:
        return '<span class="muted">—</span>'
    flag = OLDER_BASE if queries.older_base(exp.measured_on, current, exp.state) else ""
    return _short(exp.measured_on) + flag


def _students_table(store: Store, now: float, visible: frozenset[int] | None = None) -> str:
    """Every student; a job of a lab the viewer cannot read shows as "another lab"."""
    readable = None if visible is None else readable_names(store, visible)
    rows = []
    for student in queries.students(store):
        hidden = readable is not None and (student.repo or "").lower() not in readable
        if student.job_id is None:
            job = "—"
        elif hidden:
            job = '<span class="muted">working for another lab</span>'
        elif student.experiment_id is not None:
            target = (
                f"/experiments/{student.pr_number}"
                if student.pr_number is not None
                else f"/experiments/{student.experiment_id}?by=id"
            )
            job = (
                f'job {student.job_id}: <a href="{_e(target)}">{_e(student.title or "experiment")}'
                f"</a> <span class=muted>{_e(student.job_phase or '')}</span>"
            )
        else:
            job = f"job {student.job_id}: {_e(student.job_kind)} {_e(student.job_phase or '')}"
        rows.append(
            f"<tr><td><strong>{_e(student.name)}</strong></td><td>{_badge(student.state)}</td>"
            f"<td class=num>{student.gpus}</td><td>{job}</td><td class=num>{student.runs}</td>"
            f"<td class=num>{student.wins}</td><td>{_e(_ago(student.last_seen, now))}</td></tr>"
        )
    return _table(
        ["student", "state", "GPUs", "current job", "runs", "wins", "last seen"],
        rows,
        "No students registered yet (kohai hosts add NAME).",
    )


def _track_tag(track: str) -> str:
    """`[wide] ` before the title of an experiment of a track (nothing for the default)."""
    return "" if track == "default" else f'<span class="muted">[{_e(track)}]</span> '


def _queue_table(
    store: Store,
    now: float,
    repo_id: int | None = None,
    track: str | None = None,
    visible: frozenset[int] | None = None,
) -> str:
    """Open jobs (of one lab); a viewer who may read only some labs sees only theirs."""
    allowed: set[int] | None = None
    if visible is not None and repo_id is None:
        marks = ",".join("?" * len(visible)) or "NULL"
        allowed = {
            int(r["id"])
            for r in store.query(
                f"SELECT id FROM jobs WHERE state IN ('queued', 'leased') AND repo_id IN ({marks})",
                tuple(visible),
            )
        }
    rows = []
    for job in queries.queue(store, repo_id, track):
        if allowed is not None and job.job_id not in allowed:
            continue
        what = _e(job.title) if job.title else _e(job.kind)
        if job.pr_number is not None:
            what = f'<a href="/experiments/{job.pr_number}">#{job.pr_number}</a> {what}'
        rows.append(
            f"<tr><td class=num>{job.job_id}</td><td>{_e(job.kind)}</td><td>{what}</td>"
            f"<td>{_badge(job.state)}</td><td>{_e(job.student or 'any')}</td>"
            f"<td>{_e(job.leased_by or '—')}</td><td>{_e(job.phase or '—')}</td>"
            f"<td class=num>{_e(','.join(str(s) for s in job.seeds))}</td>"
            f"<td>{_e(_ago(job.created_at, now))}</td></tr>"
        )
    return _table(
        ["job", "kind", "for", "state", "student", "leased by", "phase", "seeds", "queued"],
        rows,
        "The queue is empty.",
    )


def _share_html(row: labs.LabRow) -> str:
    if not row.active:
        return '<span class="muted">stopped</span>'
    return (
        f"{100 * row.measured_share:.0f}% "
        f'<span class="muted">of {100 * row.target_share:.0f}% (weight {row.weight:g})</span>'
    )


def _labs_table(
    rows: list[labs.LabRow],
    empty: str = "No labs yet: install the App on a repository with a kohai.toml.",
) -> str:
    """The lab list: each lab's metric and direction, baseline, best, experiments and share."""
    body = []
    for row in rows:
        arrow = "higher is better" if row.direction == "maximize" else "lower is better"
        body.append(
            f'<tr data-lab="{_e(row.lab)}"><td><a href="{_e(lab_path(row.lab))}">'
            f"{_e(row.lab)}</a></td><td>{_e(row.metric)} <span class=muted>({arrow})</span></td>"
            f"<td class=num>{_e(numbers.metric(row.baseline))}</td>"
            f"<td class=num>{_e(numbers.metric(row.best))}</td>"
            f"<td class=num>{row.experiments} <span class=muted>({row.running} running)</span></td>"
            f"<td class=num>{_share_html(row)}</td></tr>"
        )
    return _table(
        ["lab", "metric", "baseline", "best", "experiments", "GPU share (last hours)"],
        body,
        empty,
    )


def render_index(
    store: Store,
    problem: Problem,
    html_base: str = DEFAULT_HTML_BASE,
    repo_id: int | None = None,
    *,
    scoped: bool = False,
    lab_list: list[labs.LabRow] | None = None,
    track: str | None = None,
    visible: frozenset[int] | None = None,
    budgets: list[dict[str, Any]] | None = None,
) -> str:
    """One lab's page (`repo_id`; None: everything in the store), optionally under the lab list.

    With `track` the page is that research track's: its base, its experiments,
    its leaderboard and queue (`default` is the repository's own line).
    `visible` (None: everything) is what the viewer may read: the shared
    students table hides the jobs of other labs.
    """
    now = time.time()
    if repo_id is None:
        repos = ", ".join(r["full_name"] for r in store.query("SELECT full_name FROM repos"))
    else:
        row = store.one("SELECT full_name FROM repos WHERE id = ?", (repo_id,)) or {}
        repos = labs.lab_key(str(row.get("full_name") or ""), track)
    charts = (
        '<div class="charts">'
        + progress_svg(
            queries.best_over_experiments(store, problem, repo_id, track),
            f"best {problem.metric} over experiments",
        )
        + progress_svg(
            queries.best_over_time(store, problem, repo_id, track),
            f"best {problem.metric} over time",
        )
        + "</div>"
    )
    sections = [_section("labs", "Labs", _labs_table(lab_list))] if lab_list is not None else []
    if repo_id is not None and track is not None:
        sections.append(_section("tracks", "Tracks", _tracks_nav(store, repo_id, track)))
    body = "".join(
        [
            *sections,
            _section("summary", "Overview", _summary_cards(store, problem, repo_id, track)),
            _section("charts", "Best so far", charts),
            _section(
                "leaderboard",
                "Leaderboard: merged winners",
                _leaderboard(store, problem, html_base, repo_id, scoped, track),
            ),
            _section(
                "experiments",
                "Experiments",
                _experiments_table(store, problem, html_base, repo_id, scoped, track),
            ),
            _section("students", "Students", _students_table(store, now, visible)),
            _section("queue", "Queue", _queue_table(store, now, repo_id, track, visible)),
            *(
                [_section("github", "GitHub API budget", budget_table(budgets, now))]
                if budgets is not None
                else []
            ),
        ]
    )
    title = f"{repos} · kohai" if repo_id is not None else "kohai dashboard"
    return _page(title, repos, body)


def _tracks_nav(store: Store, repo_id: int, current: str) -> str:
    """Links between a repository's research tracks, the one shown in bold."""
    row = store.one("SELECT full_name, problem_toml FROM repos WHERE id = ?", (repo_id,)) or {}
    full_name = str(row.get("full_name") or "")
    problem = labs.stored_problem_of(row.get("problem_toml"))
    if len(problem.track_names) < 2:
        return '<p class="muted">One research line: the default track.</p>'
    links = []
    for name in problem.track_names:
        declared = problem.track(name)
        base = declared.base if declared else "the default branch"
        text = f"<strong>{_e(name)}</strong>" if name == current else _e(name)
        links.append(
            f'<a href="{_e(lab_path(labs.lab_key(full_name, name)))}">{text}</a> '
            f'<span class="muted">({_e(base)})</span>'
        )
    return "<p>" + " · ".join(links) + "</p>"


def budget_table(budgets: list[dict[str, Any]] | None, now: float) -> str:
    """Each installation's GitHub API budget (`bot.outbox.worker.budget_status`) and the
    progress writes waiting for it; nothing when no answer from GitHub was seen yet."""
    rows = []
    for b in budgets or []:
        if b.get("installation_id") is None:
            continue
        waiting = ", ".join(f"{op} ×{n}" for op, n in sorted(b["deferred_by_op"].items()))
        pace = "on pace" if b["on_pace"] else '<span class="bad">ahead of pace</span>'
        rows.append(
            "<tr>"
            f"<td>{_e(b['installation_id'])}</td><td>{_e(b['resource'])}</td>"
            f"<td>{_e(b['remaining'])} / {_e(b['limit'])}</td>"
            f"<td>{_e(max(0, round(b['reset'] - now)))} s</td><td>{pace}</td>"
            f"<td>{_e(b['deferred'])}{' (' + _e(waiting) + ')' if waiting else ''}</td>"
            "</tr>"
        )
    headers = ["installation", "resource", "left", "resets in", "spending", "writes deferred"]
    return _table(headers, rows, "No answer from GitHub yet.")


def render_labs(
    store: Store,
    rows: list[labs.LabRow],
    visible: frozenset[int] | None = None,
    budgets: list[dict[str, Any]] | None = None,
) -> str:
    """`/` with several labs: the lab list, the shared students and the whole queue.

    `visible` (None: everything) limits the students' jobs and the queue to the
    labs the viewer may read; `rows` are already those labs.
    """
    now = time.time()
    empty = (
        "No labs yet: install the App on a repository with a kohai.toml."
        if visible is None
        else "None of the labs is in a repository you can read."
    )
    body = "".join(
        [
            _section("labs", "Labs", _labs_table(rows, empty)),
            _section("students", "Students", _students_table(store, now, visible)),
            _section("queue", "Queue", _queue_table(store, now, visible=visible)),
            _section("github", "GitHub API budget", budget_table(budgets, now)),
        ]
    )
    return _page("kohai dashboard", f"{len(rows)} labs", body)


def _runs_table(
    detail: queries.ExperimentDetail, problem: Problem, current: str | None = None
) -> str:
    rows = []
    for run in detail.runs:
        url = https_url(run.wandb_url)  # hosts report it: https only, nothing to break out
        base = _short(run.base_sha)
        if queries.older_base(run.base_sha, current, detail.experiment.state):
            base += OLDER_BASE
        wandb = (
            f'<a href="{_e(url)}" rel="noopener noreferrer nofollow">W&amp;B</a>'
            if url
            else (
                "<span class=muted>W&amp;B link dropped (not https)</span>" if run.wandb_url else ""
            )
        )
        rows.append(
            f"<tr><td class=num>{run.seed}</td><td>{_badge(run.status)}</td>"
            f"<td class=num>{_e(numbers.metric(run.metric))}</td><td>{_short(run.commit_sha)}</td>"
            f"<td>{base}</td><td>{_e(run.student or '—')}</td>"
            f"<td class=num>{_e(f'{run.duration_s:.0f}s' if run.duration_s else '—')}</td>"
            f"<td class=num>{_e(f'{run.peak_mem_mb:.0f} MB' if run.peak_mem_mb else '—')}</td>"
            f"<td class=num>{_e(f'{run.gpu_hours:.3f}' if run.gpu_hours else '—')}</td>"
            f"<td class=num>${run.cost_usd:.2f}</td><td>{_e(run.reason)} {wandb}</td></tr>"
        )
    return _table(
        [
            "seed",
            "status",
            problem.metric,
            "commit",
            "base",
            "student",
            "time",
            "peak mem",
            "GPU-h",
            "cost",
            "notes",
        ],
        rows,
        "No runs yet.",
    )


def _change_html(detail: queries.ExperimentDetail) -> str:
    """What the experiment changed: the files, and the bot's own diff of its head, highlighted."""
    parts = []
    if detail.changed_files or detail.reverted_files:
        changed = ", ".join(f"<code>{_e(f)}</code>" for f in detail.changed_files) or "—"
        reverted = ", ".join(f"<code>{_e(f)}</code>" for f in detail.reverted_files) or "—"
        parts.append(f"<p>changed: {changed}</p><p>reverted (not editable): {reverted}</p>")
    if detail.notes:
        parts.append(f"<p>{_e(detail.notes)}</p>")
    if detail.diff:
        parts.append(diff_html(detail.diff))
    else:
        parts.append(
            '<p class="empty">No diff: no host has pushed this head through the bot yet '
            "(the bot shows only the diff it computed itself).</p>"
        )
    return "".join(parts)


def render_experiment(
    detail: queries.ExperimentDetail, problem: Problem, html_base: str = DEFAULT_HTML_BASE
) -> str:
    exp = detail.experiment
    url = queries.pr_url(exp.repo, exp.pr_number, html_base)
    link = f'<a href="{_e(url)}">{_e(exp.repo)}#{exp.pr_number}</a>' if url else "no PR yet"
    facts = [
        ("state", _badge(exp.state)),
        ("student", _e(exp.student or "—")),
        ("pull request", link),
        ("branch", f"<code>{_e(exp.branch)}</code>" if exp.branch else "—"),
        (
            problem.metric,
            _e(numbers.metric(exp.mean, exp.std))
            + f" <span class=muted>({exp.seeds} seeds)</span>",
        ),
        ("baseline", _e(numbers.metric(exp.baseline_mean))),
        ("Δ vs baseline", _delta_html(exp.delta, problem)),
        ("GPU-hours / cost", f"{exp.gpu_hours:.3f} / ${exp.cost_usd:.2f}"),
    ]
    summary = (
        f'<p><strong>{_e(exp.title)}</strong></p><div class="md">{markdown_html(exp.hypothesis)}</div>'
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{_e(k)}</div><div>{v}</div></div>'
            for k, v in facts
        )
        + "</div>"
    )
    diff = _section("exp-diff", "Change", _change_html(detail))
    decisions = "".join(
        f"<tr><td>{_e(time.strftime('%Y-%m-%d %H:%M', time.gmtime(d.created_at)))}</td>"
        f"<td>{_badge(d.verdict)}</td><td>{_e(d.actor)}</td>"
        f'<td class="why md">{markdown_html(d.rationale)}</td></tr>'
        for d in detail.decisions
    )
    logs = "".join(
        f"<details><summary>seed {run.seed}: {_e(run.status)} {_e(run.reason)}</summary>"
        f"<pre>{_e(run.log_tail)}</pre></details>"
        for run in detail.runs
        if run.status != "ok" and run.log_tail
    )
    heading = f"Experiment {exp.id}" + (f" · PR #{exp.pr_number}" if exp.pr_number else "")
    body = "".join(
        [
            _section("exp-summary", heading, summary),
            _section(
                "exp-curves",
                "Training curves: each seed over the baseline's",
                f'<div class="chart">{overlay_svg(detail.runs, detail.baseline_runs, width=1100)}'
                '</div><p class="muted">Solid: this experiment\'s seed. Dashed, in the same '
                "colour: the baseline's seed of the same number, on the same base (the pair "
                "the gate compares).</p>",
            ),
            _section("exp-runs", "Runs", _runs_table(detail, problem, detail.current_base) + logs),
            diff,
            _section(
                "exp-decisions",
                "Decisions",
                _table(
                    ["when (UTC)", "verdict", "by", "rationale"],
                    [decisions] if decisions else [],
                    "No decisions yet.",
                ),
            ),
        ]
    )
    return _page(f"{exp.title} · kohai", exp.repo, body)
