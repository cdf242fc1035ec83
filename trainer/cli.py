"""`kohai train` and `kohai init`: the trainer on a laptop, without a bot (`trainer.adopt`
is how `init` adopts an existing repository)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from bot.problem import Problem, ProblemError, load_problem, parse_duration
from bot.protocol import RunResult
from trainer import adopt, sandbox, workspace
from trainer.harness import run_once
from trainer.progress import TrainProgress

REFERENCE_PROBLEM = Path(__file__).parent / "examples" / "charlm"
_SCAFFOLD_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "wandb", ".git")


def format_result(result: RunResult, metric_name: str) -> str:
    """A small table of a run: status, primary metric first, then the rest."""
    rows: list[tuple[str, str]] = [("status", result.status)]
    if result.reason:
        rows.append(("reason", result.reason))
    rows.append((metric_name, "-" if result.metric is None else f"{result.metric:.6g}"))
    rows.append(("sealed", "yes" if result.sealed else "no: the script's own claim (unsealed)"))
    rows.append(("sandboxed", "yes" if result.sandboxed else "no (unsandboxed)"))
    for key, value in sorted(result.metrics.items()):
        if key != metric_name:
            rows.append((key, f"{value:.6g}"))
    rows += [
        ("seed", str(result.seed)),
        ("train_s", f"{result.train_s:.1f}"),
        ("eval_s", f"{result.eval_s:.1f}"),
        ("peak_mem_mb", f"{result.peak_mem_mb:.0f}"),
    ]
    if result.curve:
        rows.append(("curve_points", str(len(result.curve))))
    return "\n".join(f"{k}: {v}" for k, v in rows)


def local_checkouts(root: Path, problem: Problem, work: Path) -> tuple[Path, Path]:
    """(base, candidate) for a local run: HEAD's files, and HEAD plus the editable files as they are.

    What a host would run: the evaluator and the frozen files come from the
    commit, the training code from the working tree. A changed file that is
    not editable is refused rather than silently left out.
    """
    head = workspace.git(root, "rev-parse", "HEAD").strip()
    changed = workspace.git(root, "diff", "--name-only", "--no-renames", "HEAD").splitlines()
    untracked = workspace.git(root, "ls-files", "--others", "--exclude-standard").splitlines()
    outside = sorted(p for p in changed if p and not workspace.matches(p, problem.editable))
    if outside:
        raise TrainRefused(
            f"{', '.join(outside)} differ from HEAD but are not in files.editable "
            f"{list(problem.editable)}: commit or revert them"
        )
    base = workspace.export(root, head, work / "base")
    candidate = workspace.export(root, head, work / "candidate")
    for path in [*changed, *untracked]:
        if path and workspace.matches(path, problem.editable):
            source, target = root / path, candidate / path
            if source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
            else:
                target.unlink(missing_ok=True)
    return base, candidate


class TrainRefused(Exception):
    """The working tree cannot be trained as a host would train it."""


def train_main(args: argparse.Namespace) -> int:
    root = Path(args.path).resolve()
    try:
        problem = load_problem(root)
        budget = parse_duration(args.budget, field_name="--budget") if args.budget else None
    except ProblemError as exc:
        print(f"kohai train: {exc}", file=sys.stderr)
        return 2
    unsandboxed = bool(getattr(args, "unsandboxed", False))
    why_not = None if unsandboxed else sandbox.probe()
    if why_not is not None:
        # A researcher sees locally what a host does: the same sandbox, or a clear refusal.
        print(
            f"kohai train: the job sandbox cannot start: {why_not}\n"
            "  Install bubblewrap, or run with --unsandboxed (the result then says so).",
            file=sys.stderr,
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="kohai-train-"))
    run_dir = work / f"seed-{args.seed}"
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
        print(f"kohai train: refused: {exc}", file=sys.stderr)
        print("status: refused")
        return 1
    shown = budget if budget is not None else problem.budget_s
    print(
        f"kohai train: {problem.command!r} from {root}, seed {args.seed}, budget {shown:g}s"
        + ("" if problem.sealed else " (unsealed: no [eval] in kohai.toml)"),
        flush=True,
    )

    with TrainProgress(
        Console(highlight=False, soft_wrap=True),
        seed=args.seed,
        budget_s=shown,
        metric=problem.metric,
    ) as progress:
        result = run_once(
            candidate,
            problem,
            args.seed,
            run_dir=run_dir,
            base_dir=base,
            budget_s=budget,
            on_line=progress.line,
            on_progress=progress.record,
            on_phase=progress.phase,
            host="local",
            sandboxed=not unsandboxed,
        )
    print()
    print(format_result(result, problem.metric))
    print(f"log: {run_dir / 'log.txt'}")
    return 0 if result.status == "ok" else 1


def init_main(args: argparse.Namespace) -> int:
    """Adopt the repository at PATH, or scaffold the reference problem (`--example charlm`).

    An absent or empty directory has nothing to adopt: it gets the reference
    problem, as `--example charlm` would.
    """
    target = Path(args.path).resolve()
    empty = not target.exists() or (target.is_dir() and not any(target.iterdir()))
    if getattr(args, "example", None) or (empty and not getattr(args, "train", None)):
        return _scaffold(target, args.path)
    try:
        adoption = adopt.plan_adoption(target, getattr(args, "train", None))
        written = adopt.write_adoption(adoption)
    except adopt.AdoptError as exc:
        print(f"kohai init: {exc}", file=sys.stderr)
        return 2
    print(f"kohai init: adopting {target} (training script: {adoption.script})")
    for path in written:
        print(f"  wrote {path.name}")
    for name in adoption.kept:
        print(f"  kept {name} (it exists; kohai init never overwrites)")
    todo = adopt.to_fill_in(adoption)
    if todo:
        print("fill in before the first experiment:")
    for item in todo:
        print(f"  - {item}")
    print(f"then try one run:  kohai train {args.path} --budget 30s")
    if written:
        names = " ".join(p.name for p in written)
        print(f"and commit:        git -C {args.path} add {names} && git -C {args.path} commit")
    return 0


def _scaffold(target: Path, shown: str) -> int:
    """The reference problem in an empty or new directory, as a git repository."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        print(
            f"kohai init: {target} is not empty: --example charlm scaffolds into an empty or "
            "new directory (without --example, kohai init adopts the repository there)",
            file=sys.stderr,
        )
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
    print(f"kohai init: the reference problem (charlm) in {target}")
    print(f"  try it:  kohai train {shown} --budget 10s")
    return 0


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)
