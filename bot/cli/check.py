"""`kohai check [PATH]` and `kohai schema`: is this problem repository ready to be a lab?

`check` gives a verdict per step, in the order a host would meet them:
1. schema: `kohai.toml` against the one model in `bot.problem` (every bad key, one line each);
2. files: what kohai.toml names exists (program.md, the editable and frozen entries, the
   scripts of the train, data and eval commands, each track's program);
3. sandbox: whether the job sandbox can start here;
4. smoke run: one short run through the real harness (`trainer.harness.run_once`): the
   data step, training under the budget, the sealed evaluation;
5. metric: a finite number came back, sealed or not.

Any failed step makes the exit status 1; `--no-run` stops after the files. The
decisions are pure functions of what was read (`file_verdicts`, `run_verdicts`);
`check` does the reading and the running. `schema` prints the JSON Schema of
kohai.toml for editors (TOML language servers read it through a `#:schema` line).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bot.problem import (
    CONFIG_FILE,
    PROGRAM_FILE,
    Problem,
    ProblemError,
    json_schema,
    load_problem,
    parse_duration,
    path_matches,
)
from bot.protocol import RunResult

SMOKE_BUDGET = "10s"  # long enough to start, train a few steps and save; short enough to wait for
SCRIPT_SUFFIXES = (".py", ".sh", ".bash")
_MARKS = {
    "pass": "[green]✓[/]",
    "warn": "[yellow]![/]",
    "fail": "[red]✗[/]",
    "skip": "[dim]-[/]",
}


@dataclass(frozen=True)
class Verdict:
    """One step's outcome: `pass`, `warn` (works, but read this), `fail` or `skip`."""

    step: str
    status: str
    detail: str


# ------------------------------------------------------------------ pure decisions


def script_paths(command: str) -> list[str]:
    """The repository files a command runs: `python train.py` -> train.py.

    Only words that look like a script path (`.py`, `.sh`, `.bash`, not an
    option); `python -m pkg` and shell built-ins name no file to look for.
    """
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: the shell will say so at run time
        return []
    return [
        word
        for word in words
        if word.endswith(SCRIPT_SUFFIXES) and not word.startswith("-") and "=" not in word
    ]


def _present(entry: str, files: Sequence[str]) -> bool:
    """An editable or frozen entry names something in the tree (a file, a directory, a glob)."""
    return any(path_matches(path, [entry]) for path in files)


def file_verdicts(
    problem: Problem, files: Sequence[str], committed: Sequence[str] | None
) -> list[Verdict]:
    """What kohai.toml names, against the repository's files.

    `files` are the paths in the working tree; `committed` those in HEAD (None
    outside git). A host runs the commit: a frozen file or a script that is
    not committed is missing there, whatever the working tree holds.
    """
    verdicts: list[Verdict] = []
    if PROGRAM_FILE not in files:
        verdicts.append(
            Verdict(
                "files",
                "warn",
                f"{PROGRAM_FILE} is missing: the agents get no research context "
                "(`kohai init` writes one)",
            )
        )
    for entry in problem.frozen:
        if not _present(entry, files):
            verdicts.append(Verdict("files", "fail", f"files.frozen: {entry!r} is not in the tree"))
    for entry in problem.editable:
        if not _present(entry, files):
            verdicts.append(
                Verdict(
                    "files",
                    "warn",
                    f"files.editable: {entry!r} matches nothing yet (a student may create it)",
                )
            )
    commands = [("train.command", problem.command)]
    if problem.data_command is not None:
        commands.append(("data.command", problem.data_command))
    if problem.evaluation is not None:
        commands.append(("eval.command", problem.evaluation.command))
    for key, command in commands:
        for script in script_paths(command):
            if script not in files:
                verdicts.append(Verdict("files", "fail", f"{key}: {script} is not in the tree"))
    for track in problem.tracks:
        if track.program not in files:
            verdicts.append(
                Verdict("files", "warn", f"tracks.{track.name}.program: {track.program} is missing")
            )
    if committed is not None:
        needed = [CONFIG_FILE, *problem.frozen]
        needed += [s for _, command in commands for s in script_paths(command)]
        uncommitted = sorted(
            {p for p in needed if p in files and not _present(p, committed)} - {""}
        )
        if uncommitted:
            verdicts.append(
                Verdict(
                    "files",
                    "fail",
                    f"not committed: {', '.join(uncommitted)} (a host runs the commit: "
                    "commit them)",
                )
            )
    if not any(v.status == "fail" for v in verdicts):
        named = ", ".join(key for key, _ in commands)
        verdicts.insert(
            0, Verdict("files", "pass", f"files.frozen, files.editable and {named} are in the tree")
        )
    return verdicts


def run_verdicts(result: RunResult, problem: Problem, log: Path | None = None) -> list[Verdict]:
    """The smoke run's verdict and the metric's, from what the harness measured."""
    where = f" (log: {log})" if log is not None else ""
    if result.status != "ok":
        tail = " | ".join(result.log_tail.strip().splitlines()[-3:])
        reason = result.reason or f"exit status {result.exit_code}"
        return [
            Verdict(
                "smoke run",
                "fail",
                f"{result.status}: {reason}" + (f" - {tail}" if tail else "") + where,
            ),
            Verdict("metric", "skip", "no result without a finished run"),
        ]
    ran = f"{result.train_s:.1f}s training" + (
        f", {result.eval_s:.1f}s sealed evaluation" if result.sealed else ""
    )
    verdicts = [Verdict("smoke run", "pass", ran)]
    if result.metric is None or not math.isfinite(result.metric):
        how = (
            "the evaluator must write it to KOHAI_EVAL_FILE"
            if problem.sealed
            else f"the script must print `{problem.metric}: <number>` last"
        )
        verdicts.append(
            Verdict(
                "metric",
                "fail",
                f"no finite {problem.metric} came back (got {result.metric!r}): {how}{where}",
            )
        )
    elif not result.sealed:
        verdicts.append(
            Verdict(
                "metric",
                "warn",
                f"{problem.metric} = {result.metric:.6g}, unsealed: the script's own claim "
                "(declare [eval] to seal it)",
            )
        )
    else:
        verdicts.append(
            Verdict("metric", "pass", f"{problem.metric} = {result.metric:.6g}, sealed by [eval]")
        )
    return verdicts


# ------------------------------------------------------------------ reading and running


def _tree(root: Path) -> tuple[list[str], list[str] | None]:
    """(files in the working tree, files in HEAD or None outside git); ignored files left out."""
    from trainer import workspace

    if (root / ".git").exists():
        listed = workspace.git(root, "ls-files", "--cached", "--others", "--exclude-standard")
        files = [p for p in listed.splitlines() if p and (root / p).exists()]
        try:
            committed = workspace.git(root, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
        except workspace.GitError:  # no commit yet
            committed = []
        return files, committed
    found = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    ]
    return found, None


def _smoke(
    root: Path,
    problem: Problem,
    *,
    budget_s: float,
    seed: int,
    sandboxed: bool,
    on_line: Callable[[str], None],
    on_progress: Callable[[dict], None],
) -> tuple[list[Verdict], Path]:
    """One short run as `kohai train` makes it: HEAD's evaluator, the working tree's code."""
    from trainer import workspace
    from trainer.cli import TrainRefused, local_checkouts
    from trainer.harness import run_once

    work = Path(tempfile.mkdtemp(prefix="kohai-check-"))
    try:
        if (root / ".git").exists():
            base, candidate = local_checkouts(root, problem, work)
        elif problem.sealed:
            raise TrainRefused(
                "a sealed problem's evaluator comes from HEAD: run `git init` and commit"
            )
        else:
            base, candidate = root, root
    except (TrainRefused, workspace.GitError) as exc:
        return [
            Verdict("smoke run", "fail", f"refused: {exc}"),
            Verdict("metric", "skip", "no result without a run"),
        ], work
    run_dir = work / f"seed-{seed}"
    result = run_once(
        candidate,
        problem,
        seed,
        run_dir=run_dir,
        base_dir=base,
        budget_s=budget_s,
        on_line=on_line,
        on_progress=on_progress,
        host="local",
        sandboxed=sandboxed,
    )
    return run_verdicts(result, problem, run_dir / "log.txt"), work


def check(
    root: Path,
    *,
    run: bool = True,
    budget_s: float | None = None,
    seed: int = 0,
    report: Callable[[Verdict], None] = lambda v: None,
    progress: Callable[[str], None] = lambda line: None,
) -> list[Verdict]:
    """Every step's verdicts, each passed to `report` as soon as it is known."""
    verdicts: list[Verdict] = []

    def add(*new: Verdict) -> None:
        for verdict in new:
            verdicts.append(verdict)
            report(verdict)

    try:
        problem = load_problem(root)
    except ProblemError as exc:
        add(*(Verdict("schema", "fail", line) for line in exc.problems))
        return verdicts
    add(Verdict("schema", "pass", _summary(problem)))
    files, committed = _tree(root)
    add(*file_verdicts(problem, files, committed))
    if not run:
        add(Verdict("smoke run", "skip", "--no-run"))
        return verdicts
    if any(v.status == "fail" for v in verdicts):
        add(Verdict("smoke run", "skip", "fix the files first"))
        return verdicts
    from trainer import sandbox

    why_not = sandbox.probe()
    if why_not is None:
        add(Verdict("sandbox", "pass", "training and evaluation run in the job sandbox"))
    else:
        add(
            Verdict(
                "sandbox",
                "warn",
                f"{why_not}; the smoke run goes unsandboxed, and a host would refuse to run "
                "unless started --unsandboxed",
            )
        )
    budget = min(budget_s if budget_s is not None else problem.budget_s, problem.budget_s)
    started = time.monotonic()

    def line(text: str) -> None:
        progress(f"{time.monotonic() - started:.0f}s / {budget:g}s budget · {text[-80:]}")

    def record(point: dict) -> None:  # a progress line of KOHAI_METRICS_FILE: the last metric
        shown = ", ".join(f"{key} {value:.4g}" for key, value in point.items() if _number(value))
        line(shown or "training")

    progress(f"0s / {budget:g}s budget · starting")
    smoke, work = _smoke(
        root,
        problem,
        budget_s=budget,
        seed=seed,
        sandboxed=why_not is None,
        on_line=line,
        on_progress=record,
    )
    add(*smoke)
    if not any(v.status == "fail" for v in smoke):
        shutil.rmtree(work, ignore_errors=True)  # a failed run keeps its log for reading
    return verdicts


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary(problem: Problem) -> str:
    parts = [
        f"{problem.direction} {problem.metric}",
        f"budget {problem.budget_s:g}s",
        "sealed by [eval]" if problem.sealed else "unsealed (no [eval])",
    ]
    if problem.knobs:
        parts.append(f"{len(problem.knobs)} knobs")
    if problem.tracks:
        parts.append(f"{len(problem.tracks)} tracks")
    return f"{CONFIG_FILE} is valid: " + ", ".join(parts)


# ------------------------------------------------------------------ the commands


def check_main(args: argparse.Namespace) -> int:
    """`kohai check [PATH] [--no-run] [--budget D] [--seed S]`: 0 when no step failed."""
    console = Console(highlight=False, soft_wrap=True)
    root = Path(args.path).resolve()
    try:
        budget_s = (
            parse_duration(args.budget, field_name="--budget") if args.budget is not None else None
        )
    except ProblemError as exc:
        print(f"kohai check: {exc}", file=sys.stderr)
        return 2
    if budget_s is None:
        budget_s = parse_duration(SMOKE_BUDGET)
    console.print(f"kohai check: {escape(str(root))}")

    def report(verdict: Verdict) -> None:
        console.print(
            f" {_MARKS[verdict.status]} [bold]{verdict.step:<9}[/] {escape(verdict.detail)}"
        )

    with console.status("checking", spinner="dots") as status:
        verdicts = check(
            root,
            run=not args.no_run,
            budget_s=budget_s,
            seed=args.seed,
            report=report,
            progress=lambda text: status.update(f"smoke run: {escape(text)}"),
        )
    failed = sum(v.status == "fail" for v in verdicts)
    warned = sum(v.status == "warn" for v in verdicts)
    if failed:
        console.print(f"[red]{failed} failed[/], {warned} warning(s): not ready")
        return 1
    console.print("[green]ready[/]" + (f", {warned} warning(s)" if warned else ""))
    return 0


def schema_main(args: argparse.Namespace) -> int:
    """`kohai schema`: kohai.toml's JSON Schema on stdout (`kohai schema > kohai.schema.json`)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
    return 0
