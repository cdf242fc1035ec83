"""How much does the sealed path cost, against a bare `python train.py` plus a bare evaluation?

Both sides train the reference problem (trainer/examples/charlm) for the same
fixed number of steps (KOHAI_MAX_STEPS) and then score the saved weights with
its evaluator, alternating bare and harness runs so that drift in the
machine's load hits both alike. The harness side is the real sealed path:
the evaluator from an exported base commit, the checkout hashed before and
after, the training split prepared once (as a host caches it per base).
Prints the median wall time of each and their ratio; the goal is a ratio of
at most 1.05. On a shared, busy machine wall time is noisy, so it also prints
the CPU time (user + system) of the child processes and the harness's own,
which load does not inflate. The harness side runs in the job sandbox, as on
a host; a third side runs the same harness unsandboxed, to show what the
sandbox alone costs, and a host's fresh clone per job is timed apart.

    python bench/harness_overhead.py [--rounds 5] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bot.problem import load_problem
from trainer import workspace
from trainer.cli import REFERENCE_PROBLEM
from trainer.harness import run_once


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_run(repo: Path, steps: int, run_dir: Path, data_dir: Path) -> float:
    env = dict(os.environ, KOHAI_MAX_STEPS=str(steps), KOHAI_SEED="0", KOHAI_BUDGET_S="3600")
    env.update(
        KOHAI_METRICS_FILE=str(run_dir / "bare.jsonl"),
        KOHAI_RUN_DIR=str(run_dir),
        KOHAI_DATA_DIR=str(data_dir),
        KOHAI_ARTIFACT_DIR=str(run_dir),
        KOHAI_CANDIDATE_DIR=str(repo),
        KOHAI_EVAL_FILE=str(run_dir / "eval.json"),
    )
    started = time.perf_counter()
    for command in (["train.py"], ["prepare.py", "evaluate"]):
        subprocess.run(
            [sys.executable, *command], cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL
        )
    return time.perf_counter() - started


def harness_run(
    repo: Path, steps: int, run_dir: Path, data_dir: Path, base: Path, sandboxed: bool = True
) -> float:
    os.environ["KOHAI_MAX_STEPS"] = str(steps)
    problem = load_problem(repo)
    started = time.perf_counter()
    result = run_once(
        repo,
        problem,
        0,
        run_dir=run_dir,
        base_dir=base,
        data_dir=data_dir,
        budget_s=3600,
        sandboxed=sandboxed,
    )
    elapsed = time.perf_counter() - started
    if result.status != "ok":
        raise SystemExit(f"harness run failed: {result.reason}\n{result.log_tail}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    bare: list[float] = []
    harness: list[float] = []
    unsandboxed: list[float] = []
    checkout: list[float] = []
    cpu: dict[str, list[float]] = {"bare": [], "harness": [], "unsandboxed": []}
    harness_self_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kohai-bench-") as tmp:
        repo = Path(tmp) / "charlm"
        shutil.copytree(REFERENCE_PROBLEM, repo, ignore=shutil.ignore_patterns("__pycache__"))
        for git_args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "charlm"]):
            workspace.git(repo, "-c", "user.name=b", "-c", "user.email=b@b", *git_args)
        base = workspace.export(repo, "HEAD", Path(tmp) / "base")
        data_dir = Path(tmp) / "data"
        data_env = dict(os.environ, KOHAI_DATA_DIR=str(data_dir), PYTHONDONTWRITEBYTECODE="1")
        subprocess.run([sys.executable, "prepare.py", "data"], cwd=base, env=data_env, check=True)
        (data_dir / ".kohai-ready").touch()  # prepared once per base, as on a host
        warm = Path(tmp) / "warm"
        warm.mkdir()
        bare_run(repo, 5, warm, data_dir)  # warm the file cache for both sides
        sides = {
            "bare": lambda run_dir: bare_run(repo, args.steps, run_dir, data_dir),
            "harness": lambda run_dir: harness_run(repo, args.steps, run_dir, data_dir, base),
            "unsandboxed": lambda run_dir: harness_run(
                repo, args.steps, run_dir, data_dir, base, sandboxed=False
            ),
        }
        # A host's fresh checkout per job: a clone of its own from the repository cache.
        host = workspace.Workspace(Path(tmp) / "host")
        head = workspace.git(repo, "rev-parse", "HEAD").strip()
        fetch_started = time.perf_counter()
        cache = host.fetch("lab/charlm", str(repo), None, [head])
        fetch_s = time.perf_counter() - fetch_started
        for i in range(args.rounds):
            order = [("bare", bare), ("harness", harness), ("unsandboxed", unsandboxed)]
            if i % 2:
                order.reverse()
            started = time.perf_counter()
            tree = host.worktree(cache, head, f"job{i}")
            checkout.append(time.perf_counter() - started)
            host.remove(cache, tree)
            for name, sink in order:
                run_dir = Path(tmp) / f"{name}-{i}"
                run_dir.mkdir()
                child_before, self_before = children_cpu_s(), self_cpu_s()
                sink.append(sides[name](run_dir))
                cpu[name].append(children_cpu_s() - child_before)
                if name == "harness":
                    harness_self_cpu.append(self_cpu_s() - self_before)
            print(
                f"round {i + 1}/{args.rounds}: bare {bare[-1]:.2f}s (cpu {cpu['bare'][-1]:.2f}s)  "
                f"sandboxed harness {harness[-1]:.2f}s (cpu {cpu['harness'][-1]:.2f}s "
                f"+ {harness_self_cpu[-1]:.3f}s in the harness)  "
                f"unsandboxed {unsandboxed[-1]:.2f}s  checkout {checkout[-1]:.3f}s",
                flush=True,
            )
    bare_median, harness_median = statistics.median(bare), statistics.median(harness)
    ratio = harness_median / bare_median
    print(f"steps per run      {args.steps}")
    print(f"bare median        {bare_median:.3f}s")
    print(f"harness median     {harness_median:.3f}s  (in the job sandbox)")
    print(f"ratio              {ratio:.3f}  (goal <= 1.05)")
    unsandboxed_median = statistics.median(unsandboxed)
    print(
        f"unsandboxed median {unsandboxed_median:.3f}s  (ratio {unsandboxed_median / bare_median:.3f})"
    )
    print(f"sandbox alone      {harness_median / unsandboxed_median:.3f}x the unsandboxed harness")
    checkout_median = statistics.median(checkout)
    print(f"fresh checkout     {checkout_median:.3f}s per job (first fetch {fetch_s:.3f}s)")
    print(f"ratio + checkout   {(harness_median + checkout_median) / bare_median:.3f}")
    cpu_bare = statistics.median(cpu["bare"])
    cpu_harness = statistics.median(cpu["harness"]) + statistics.median(harness_self_cpu)
    # (the unsandboxed side's CPU is in cpu["unsandboxed"]; the sandboxed one is the goal)
    print(f"cpu bare median    {cpu_bare:.3f}s")
    print(f"cpu harness median {cpu_harness:.3f}s  (training process + harness itself)")
    print(f"cpu ratio          {cpu_harness / cpu_bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
