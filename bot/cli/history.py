"""`kohai status` and `kohai history`: the lab's state and its full record, from the terminal.

Both read the bot's SQLite file (`KOHAI_DB`, default `kohai.db`) without
writing to it. The history export follows autoresearch's `results.tsv` column
order (`commit, <metric>, memory_gb, status, description`) so its analysis
tools read it as is, followed by kohai's own columns.

Each lab (a repository) has its own metric: `--repo OWNER/NAME` names the lab,
and its metric's name and direction come from the `kohai.toml` the bot stored
when it synced the repository. With one lab `--repo` may be left out.
`--repo OWNER/NAME:TRACK` narrows it to one research track (`default` is the
repository's own line); without a track the whole repository is shown.
`KOHAI_PROBLEM` (a repo directory or the file itself) overrides the stored
problem, for a database whose repository never synced.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bot import queries
from bot.cli.common import CliError, open_store
from bot.engine import labs
from bot.problem import CONFIG_FILE, Problem, ProblemError, load_problem
from bot.render import numbers
from bot.store import Store

EXTRA_COLUMNS = ["student", "seeds", "duration_s", "cost_usd", "pr", "parent", "trust"]


def resolve_problem() -> Problem:
    """The problem named by `KOHAI_PROBLEM`, else the default."""
    configured = os.environ.get("KOHAI_PROBLEM")
    if configured:
        root = Path(configured)
        return load_problem(root.parent if root.name == CONFIG_FILE else root)
    return Problem()


def split_repo_arg(repo: str | None) -> tuple[str | None, str | None]:
    """`owner/name[:track]` as (owner/name, track or None)."""
    if not repo:
        return None, None
    name, _, track = repo.partition(":")
    return name, (track.lower() or None)


def resolve_lab(store: Store, repo: str | None) -> tuple[int | None, Problem, int]:
    """The lab the command is about: (its repo id, its problem, how many labs there are).

    `--repo` names it (`owner/name[:track]`); without it, the only lab there is.
    Its problem is the one stored at its last sync; `KOHAI_PROBLEM` overrides that.
    A track the repository does not declare is an error naming the ones it does.
    """
    names = [r["full_name"] for r in store.query("SELECT full_name FROM repos ORDER BY id")]
    override = os.environ.get("KOHAI_PROBLEM")
    repo_id: int | None
    if repo:
        full_name, track = split_repo_arg(repo)
        found = labs.stored_problem(store, full_name or "")
        if found is None:
            known = ", ".join(names) or "none yet"
            raise CliError(f"--repo {repo}: no such lab (labs: {known})")
        repo_id, problem = found
        if track is not None and track not in problem.track_names:
            raise CliError(
                f"--repo {repo}: {full_name} has no track {track!r} "
                f"(tracks: {', '.join(problem.track_names)})"
            )
        return repo_id, resolve_problem() if override else problem, len(names)
    if len(names) == 1:
        stored = labs.stored_problem(store, names[0])
        repo_id, problem = (stored[0], stored[1]) if stored else (None, Problem())
        has_toml = store.one("SELECT problem_toml FROM repos WHERE id = ?", (repo_id,)) or {}
        if override or not has_toml.get("problem_toml"):
            problem = resolve_problem()
        return repo_id, problem, 1
    return None, resolve_problem(), len(names)


def history_columns(problem: Problem) -> list[str]:
    return ["commit", problem.metric, "memory_gb", "status", "description", *EXTRA_COLUMNS]


def history_values(row: queries.HistoryRow) -> list[Any]:
    """One row's values in `history_columns` order; None where nothing was measured."""
    return [
        row.commit[:7] if row.commit else None,
        round(row.metric, 6) if row.metric is not None else None,
        row.memory_gb,
        row.status,
        row.description,
        row.student,
        row.seeds,
        round(row.duration_s, 1) if row.duration_s is not None else None,
        round(row.cost_usd, 4),
        row.pr_number,
        row.parent[:7] if row.parent else None,
        row.trust or "sealed",
    ]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    return " ".join(str(value).split())


def render_history(rows: list[queries.HistoryRow], problem: Problem, fmt: str) -> str:
    columns = history_columns(problem)
    if fmt == "json":
        records = [dict(zip(columns, history_values(r), strict=True)) for r in rows]
        return json.dumps(records, indent=2) + "\n"
    buffer = io.StringIO()
    if fmt == "tsv":
        buffer.write("\t".join(columns) + "\n")
        for row in rows:
            values = [_text(v).replace("\t", " ") for v in history_values(row)]
            buffer.write("\t".join(values) + "\n")
    else:
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_text(v) for v in history_values(row)] for row in rows)
    return buffer.getvalue()


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """An aligned text table drawn by rich: the header, a rule, one line per row (never wrapped).

    Returned as text so that every caller (status, history, the demo's
    leaderboard) prints it where it prints the rest of its output.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, never markup: a title like "[red]x" or "[/]" is shown as written.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(Text(header))
    for row in rows:
        table.add_row(*[Text(_text(c) or "-") for c in row])
    out = io.StringIO()
    Console(file=out, width=100_000, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def export_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("tsv", "csv", "json"):
        raise CliError(f"--export {path}: use a .tsv, .csv or .json file name")
    return suffix


def history_main(args: argparse.Namespace) -> int:
    try:
        store = open_store()
        try:
            repo_id, problem, count = resolve_lab(store, getattr(args, "repo", None))
            if repo_id is None and count > 1:
                raise CliError(f"{count} labs: name one with --repo OWNER/NAME")
            track = split_repo_arg(getattr(args, "repo", None))[1]
            rows = queries.history_rows(
                store, problem, best_only=bool(args.best), repo_id=repo_id, track=track
            )
        finally:
            store.close()
        if args.export:
            target = Path(args.export)
            target.write_text(render_history(rows, problem, export_format(target)), "utf-8")
            print(f"wrote {len(rows)} rows to {target}")
            return 0
        headers = history_columns(problem)
        print(format_table(headers, [history_values(r) for r in rows]))
        return 0
    except (CliError, ProblemError) as exc:
        print(f"kohai history: {exc}", file=sys.stderr)
        return 1


def lab_snapshot(
    store: Store, problem: Problem, repo_id: int | None = None, track: str | None = None
) -> dict[str, Any]:
    """One lab's own state (`repo_id`, one `track` of it): its metric, baseline, best,
    experiments and queue, never mixed with another lab's."""
    base = queries.baseline(store, repo_id, track or "default")
    progress = queries.best_over_experiments(store, problem, repo_id, track)
    repo = store.one("SELECT full_name FROM repos WHERE id = ?", (repo_id,)) if repo_id else None
    return {
        "repo": labs.lab_key(repo["full_name"], track) if repo else None,
        "track": track,
        "metric": problem.metric,
        "direction": problem.direction,
        "baseline": asdict(base) if base else None,
        "best": progress.best,
        "experiments": [asdict(e) for e in queries.experiments(store, repo_id, track)],
        "queue": [asdict(q) for q in queries.queue(store, repo_id, track)],
    }


def status_snapshot(
    store: Store, problem: Problem, repo_id: int | None = None, track: str | None = None
) -> dict[str, Any]:
    """One lab's state (`repo_id`, one `track` of it), with every lab/track's share and
    the students (shared by all labs)."""
    return {
        **lab_snapshot(store, problem, repo_id, track),
        "labs": [asdict(row) for row in labs.lab_rows(store)],
        "students": [asdict(s) for s in queries.students(store)],
    }


def all_labs_snapshot(store: Store) -> dict[str, Any]:
    """Every lab, a section each (its own metric, baseline, best, experiments, queue),
    with the shares and the shared students: what `kohai status` shows without `--repo`
    when there are several labs."""
    return {
        "repo": None,
        "labs": [asdict(row) for row in labs.lab_rows(store)],
        "sections": [
            lab_snapshot(store, lab.problem, lab.repo_id, lab.track) for lab in labs.all_labs(store)
        ],
        "students": [asdict(s) for s in queries.students(store)],
    }


def _labs_table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["lab", "metric", "baseline", "best", "experiments", "weight", "share", "target"],
        [
            [
                row["lab"] + ("" if row["active"] else " (stopped)"),
                f"{row['metric']} ({'max' if row['direction'] == 'maximize' else 'min'})",
                numbers.metric(row["baseline"]),
                numbers.metric(row["best"]),
                row["experiments"],
                f"{row['weight']:g}",
                f"{100 * row['measured_share']:.0f}%",
                f"{100 * row['target_share']:.0f}%",
            ]
            for row in rows
        ],
    )


def render_status(snapshot: dict[str, Any]) -> str:
    """The status as text: the labs' shares, each lab's section, the students."""
    sections = snapshot.get("sections")
    lines = [
        "labs and tracks (share: GPU time of the last hours; target: what the weights ask for)",
        _labs_table(snapshot.get("labs") or []),
    ]
    for section in sections if sections is not None else [snapshot]:
        lines += ["", *_lab_section(section)]
    lines += ["", *_students_section(snapshot["students"])]
    return "\n".join(lines)


def _lab_section(snapshot: dict[str, Any]) -> list[str]:
    metric = snapshot["metric"]
    base = snapshot["baseline"]
    return [
        (f"== lab {snapshot['repo']} ==   " if snapshot.get("repo") else "")
        + f"metric: {metric} ({snapshot['direction']})   baseline: "
        + (numbers.metric(base["mean"], base["std"]) if base else "not measured")
        + f"   best: {numbers.metric(snapshot['best'])}",
        "",
        "experiments",
        format_table(
            [
                "exp",
                "pr",
                "track",
                "state",
                "student",
                "seeds",
                metric,
                "delta",
                "decision",
                "title",
            ],
            [
                [
                    e["id"],
                    e["pr_number"],
                    e.get("track") or "default",
                    e["state"],
                    e["student"],
                    e["seeds"],
                    numbers.metric(e["mean"], e["std"]),
                    numbers.delta(e["delta"]),
                    f"{e['verdict']} by {e['actor']}" if e["verdict"] else None,
                    e["title"],
                ]
                for e in snapshot["experiments"]
            ],
        ),
        "",
        "queue",
        format_table(
            ["job", "kind", "state", "for", "leased_by", "pr", "seeds"],
            [
                [
                    q["job_id"],
                    q["kind"],
                    q["state"],
                    q["student"] or "any",
                    q["leased_by"],
                    q["pr_number"],
                    ",".join(str(s) for s in q["seeds"]),
                ]
                for q in snapshot["queue"]
            ],
        ),
    ]


def _students_section(students: list[dict[str, Any]]) -> list[str]:
    return [
        "students",
        format_table(
            ["student", "state", "gpus", "job", "phase", "pr", "runs", "wins"],
            [
                [
                    s["name"],
                    s["state"],
                    s["gpus"],
                    s["job_id"],
                    s["job_phase"],
                    s["pr_number"],
                    s["runs"],
                    s["wins"],
                ]
                for s in students
            ],
        ),
    ]


def status_main(args: argparse.Namespace) -> int:
    try:
        store = open_store()
        try:
            repo = getattr(args, "repo", None)
            repo_id, problem, count = resolve_lab(store, repo)
            track = split_repo_arg(repo)[1]
            if repo is None and count > 1:  # several labs: a section each, never mixed
                snapshot = all_labs_snapshot(store)
            else:
                snapshot = status_snapshot(store, problem, repo_id, track)
        finally:
            store.close()
    except (CliError, ProblemError) as exc:
        print(f"kohai status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(snapshot, indent=2))
    else:
        print(render_status(snapshot))
    return 0


def report_main(args: argparse.Namespace) -> int:
    """`kohai report`: `report.md` and each lab's two charts, from the bot's database.

    The demo writes the same report at its end; a lab on GitHub gets it here,
    whenever someone wants the picture rather than the tables.
    """
    from bot.render.report import write_report

    out = Path(args.out)
    repo = getattr(args, "repo", None)
    try:
        store = open_store()
        try:
            resolve_lab(store, repo)  # an unknown lab or track is one clear line
            html_base = os.environ.get("KOHAI_GITHUB_HTML_URL", "").strip().rstrip("/")
            path = write_report(
                store,
                None,
                out,
                title=args.title,
                html_base=html_base or "https://github.com",
                repo=repo,
            )
        finally:
            store.close()
    except (CliError, ProblemError) as exc:
        print(f"kohai report: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kohai report: cannot write to {out}: {exc.strerror}", file=sys.stderr)
        return 1
    charts = sorted(p.name for p in path.parent.glob("*.svg"))
    print(f"wrote {path} and {len(charts)} chart(s): {', '.join(charts)}")
    return 0
