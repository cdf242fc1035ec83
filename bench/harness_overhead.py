"""How much does running under the kohai harness cost, against a bare `python train.py`?

Both sides train the reference problem (trainer/examples/charlm) for the same
fixed number of steps (KOHAI_MAX_STEPS), alternating bare and harness runs so
that drift in the machine's load hits both alike. Prints the median wall time
of each and their ratio; the goal is a ratio of at most 1.03. On a shared,
busy machine wall time is noisy, so it also prints the CPU time (user + system)
of the training process and the harness's own, which load does not inflate.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.problem import load_problem  # noqa: E402
from trainer.cli import REFERENCE_PROBLEM  # noqa: E402
from trainer.harness import run_once  # noqa: E402


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_run(repo: Path, steps: int, run_dir: Path) -> float:
    env = dict(os.environ, KOHAI_MAX_STEPS=str(steps), KOHAI_SEED="0", KOHAI_BUDGET_S="3600")
    env["KOHAI_METRICS_FILE"] = str(run_dir / "bare.jsonl")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "train.py"], cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def harness_run(repo: Path, steps: int, run_dir: Path) -> float:
    os.environ["KOHAI_MAX_STEPS"] = str(steps)
    problem = load_problem(repo)
    started = time.perf_counter()
    result = run_once(repo, problem, 0, run_dir=run_dir, budget_s=3600)
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
    cpu: dict[str, list[float]] = {"bare": [], "harness": []}
    harness_self_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kohai-bench-") as tmp:
        repo = Path(tmp) / "charlm"
        shutil.copytree(REFERENCE_PROBLEM, repo, ignore=shutil.ignore_patterns("__pycache__"))
        bare_run(repo, 5, Path(tmp))  # warm the file cache for both sides
        for i in range(args.rounds):
            order = [("bare", bare_run, bare), ("harness", harness_run, harness)]
            if i % 2:
                order.reverse()
            for name, fn, sink in order:
                run_dir = Path(tmp) / f"{name}-{i}"
                run_dir.mkdir()
                child_before, self_before = children_cpu_s(), self_cpu_s()
                sink.append(fn(repo, args.steps, run_dir))
                cpu[name].append(children_cpu_s() - child_before)
                if name == "harness":
                    harness_self_cpu.append(self_cpu_s() - self_before)
            print(
                f"round {i + 1}/{args.rounds}: bare {bare[-1]:.2f}s (cpu {cpu['bare'][-1]:.2f}s)  "
                f"harness {harness[-1]:.2f}s (cpu {cpu['harness'][-1]:.2f}s "
                f"+ {harness_self_cpu[-1]:.3f}s in the harness)",
                flush=True,
            )
    bare_median, harness_median = statistics.median(bare), statistics.median(harness)
    ratio = harness_median / bare_median
    print(f"steps per run      {args.steps}")
    print(f"bare median        {bare_median:.3f}s")
    print(f"harness median     {harness_median:.3f}s")
    print(f"ratio              {ratio:.3f}  (goal <= 1.03)")
    cpu_bare = statistics.median(cpu["bare"])
    cpu_harness = statistics.median(cpu["harness"]) + statistics.median(harness_self_cpu)
    print(f"cpu bare median    {cpu_bare:.3f}s")
    print(f"cpu harness median {cpu_harness:.3f}s  (training process + harness itself)")
    print(f"cpu ratio          {cpu_harness / cpu_bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
