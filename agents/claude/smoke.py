"""`smoke_run`: the coding agent runs the training command for a few seconds, sandboxed.

The agent's only way to execute anything: a shell rule, even one as narrow
as `python -m py_compile FILE`, puts the worktree first on `sys.path`, so a
`py_compile.py` the agent wrote would run with the host's rights. Here the
training command runs as the harness runs it, in the job sandbox (no
network, an allowlisted environment, only the checkout and a scratch run
directory writable, every process ended with it), with a short budget and a
hard kill, under the job's own limits; the agent gets the output tail, and
the seconds count in the job's record (`JobResult.smoke_s`).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.problem import Problem
from trainer import sandbox

SMOKE_BUDGET_S = 5.0  # what the script sees as KOHAI_BUDGET_S
SMOKE_KILL_S = 20.0  # then SIGTERM; SIGKILL shortly after
TERM_GRACE_S = 2.0
TAIL_LINES = 60
TAIL_CHARS = 6000


@dataclass
class SmokeResult:
    seconds: float
    exit_code: int | None  # None: killed at the hard limit
    tail: str
    sandboxed: bool

    def report(self) -> str:
        """What the agent reads back."""
        if self.exit_code is None:
            how = f"still running after {SMOKE_KILL_S:g}s: stopped (the budget was {SMOKE_BUDGET_S:g}s)"
        elif self.exit_code == 0:
            how = "exited 0"
        else:
            how = f"FAILED with exit status {self.exit_code}"
        where = "" if self.sandboxed else " (unsandboxed host)"
        return (
            f"smoke run{where}: {how} after {self.seconds:.1f}s\n--- output tail ---\n{self.tail}"
        )


def smoke_env(run_dir: Path, budget_s: float) -> dict[str, str]:
    """The metrics protocol's variables on the allowlisted environment; CPU unless GPUs are set."""
    env = sandbox.allowlisted_env(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        KOHAI_SEED="0",
        KOHAI_BUDGET_S=f"{budget_s:g}",
        KOHAI_RUN_DIR=str(run_dir),
        KOHAI_METRICS_FILE=str(run_dir / "metrics.jsonl"),
        KOHAI_SMOKE="1",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ left in the checkout
        PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
    )
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def _tail(text: str) -> str:
    lines = text.splitlines()[-TAIL_LINES:]
    out = "\n".join(lines)
    return out[-TAIL_CHARS:] if len(out) > TAIL_CHARS else out


def smoke_run(
    worktree: Path,
    problem: Problem,
    *,
    sandboxed: bool,
    budget_s: float = SMOKE_BUDGET_S,
    kill_s: float = SMOKE_KILL_S,
) -> SmokeResult:
    """Run `problem.command` in `worktree` for a few seconds; never raises for the run's failure.

    It runs as training does (`trainer.process.run_bounded`): the job's limits
    (`[train] memory/processes/disk`), the log read line by line with a cap
    (a flood of output fills nothing), SIGTERM at `kill_s` and SIGKILL after.
    """
    from trainer.harness import job_limits
    from trainer.process import run_bounded, signal_group

    worktree = Path(worktree).resolve()
    with tempfile.TemporaryDirectory(prefix="kohai-smoke-") as scratch:
        run_dir = Path(scratch) / "run"
        run_dir.mkdir()
        env = smoke_env(run_dir, budget_s)
        command = ["/bin/sh", "-c", problem.command]
        terminate: Callable[[int, signal.Signals], None] = signal_group
        gpus: tuple[int, ...] = ()
        if sandboxed:
            gpus = (0,) if env.get("CUDA_VISIBLE_DEVICES") and Path("/dev/nvidia0").exists() else ()
            box = sandbox.Sandbox(
                work=worktree,
                writable=(run_dir,),
                env=env,
                gpus=gpus,
                init=True,  # the SIGTERM at `kill_s` reaches the command
                tmp_bytes=problem.resources.disk_bytes,
            )
            argv = box.argv(command, cwd=worktree)
            terminate = sandbox.signal_init
        else:
            argv = command
        done = run_bounded(
            argv,
            cwd=worktree,
            env=env,
            log_path=Path(scratch) / "smoke.log",
            budget_s=kill_s,
            grace_s=TERM_GRACE_S,
            terminate=terminate,
            limits=job_limits(problem, kill_s + TERM_GRACE_S, list(gpus), (worktree, run_dir)),
        )
    exit_code = sandbox.unwrap_exit(done.exit_code) if sandboxed else done.exit_code
    tail = list(done.tail)
    if done.limit:
        tail.append(f"kohai: {done.limit}")
    return SmokeResult(
        seconds=done.duration_s,
        exit_code=None if done.terminated or done.killed else exit_code,
        tail=_tail("\n".join(tail)),
        sandboxed=sandboxed,
    )
