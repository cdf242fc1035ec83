"""`kohai train` and `kohai init`: the trainer on a laptop, without a bot."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bot.problem import ProblemError, load_problem, parse_duration
from bot.protocol import RunResult
from trainer.harness import run_once

REFERENCE_PROBLEM = Path(__file__).parent / "examples" / "charlm"
_SCAFFOLD_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "wandb", ".git")


def format_result(result: RunResult, metric_name: str) -> str:
    """A small table of a run: status, primary metric first, then the rest."""
    rows: list[tuple[str, str]] = [("status", result.status)]
    if result.reason:
        rows.append(("reason", result.reason))
    rows.append((metric_name, "-" if result.metric is None else f"{result.metric:.6g}"))
    for key, value in sorted(result.metrics.items()):
        if key != metric_name:
            rows.append((key, f"{value:.6g}"))
    rows += [
        ("seed", str(result.seed)),
        ("duration_s", f"{result.duration_s:.1f}"),
        ("peak_mem_mb", f"{result.peak_mem_mb:.0f}"),
    ]
    if result.curve:
        rows.append(("curve_points", str(len(result.curve))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def train_main(args: argparse.Namespace) -> int:
    root = Path(args.path).resolve()
    try:
        problem = load_problem(root)
        budget = parse_duration(args.budget, field_name="--budget") if args.budget else None
    except ProblemError as exc:
        print(f"kohai train: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix=f"seed-{args.seed}-", dir=_runs_dir(root)))
    shown = budget if budget is not None else problem.budget_s
    print(
        f"kohai train: {problem.command!r} in {root}, seed {args.seed}, budget {shown:g}s",
        flush=True,
    )

    def echo(line: str) -> None:
        print(f"  | {line}", flush=True)

    result = run_once(root, problem, args.seed, run_dir=run_dir, budget_s=budget, on_line=echo)
    print()
    print(format_result(result, problem.metric))
    print(f"log: {run_dir / 'log.txt'}")
    return 0 if result.status == "ok" else 1


def _runs_dir(root: Path) -> Path:
    runs = root / "runs"
    runs.mkdir(exist_ok=True)
    return runs


def init_main(args: argparse.Namespace) -> int:
    target = Path(args.path).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        print(f"kohai init: {target} exists and is not empty", file=sys.stderr)
        return 2
    shutil.copytree(REFERENCE_PROBLEM, target, ignore=_SCAFFOLD_IGNORE, dirs_exist_ok=True)
    try:
        _git(target, "init", "--quiet", "--initial-branch=main")
        _git(target, "add", "--all")
        _git(
            target,
            "-c",
            "user.name=kohai",
            "-c",
            "user.email=kohai@localhost",
            "commit",
            "--quiet",
            "-m",
            "Reference problem: charlm",
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"kohai init: git failed: {exc}", file=sys.stderr)
        return 1
    print(f"kohai init: a problem repository in {target}")
    print(f"  try it:  kohai train {args.path} --budget 10s")
    return 0


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)
