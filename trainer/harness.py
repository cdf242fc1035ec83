"""Running one seed of a problem's training command and measuring it.

The harness, not the script, owns the budget: the command runs in its own
process group, and at budget + grace the whole group gets SIGTERM, then
SIGKILL. The primary metric is read from what the script reported through the
metrics protocol (see `trainer.metrics`), never from anyone's description of it.
"""

from __future__ import annotations

import collections
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bot.problem import Problem
from bot.protocol import RunResult
from trainer.metrics import (
    MetricsFollower,
    MetricsReading,
    numeric_values,
    parse_summary_lines,
    read_metrics_file,
)

LOG_TAIL_LINES = 50
KILL_AFTER_S = 5.0  # between SIGTERM and SIGKILL
POLL_S = 0.1
CANCELLED_REASON = "cancelled"

_PYTHON_SCRIPT = re.compile(r"^\s*python3?\s+(\S+\.py)(\s.*)?$")


def build_command(command: str, n_gpus: int) -> str:
    """The shell command to run: `python X.py ...` becomes torchrun on more than one GPU."""
    match = _PYTHON_SCRIPT.match(command)
    if n_gpus > 1 and match:
        rest = match.group(2) or ""
        return f"torchrun --standalone --nproc_per_node={n_gpus} {match.group(1)}{rest}"
    return command


def run_env(
    base: dict[str, str], *, seed: int, budget_s: float, run_dir: Path, gpus: list[int]
) -> dict[str, str]:
    """The environment of the metrics protocol, on top of `base`.

    The interpreter running kohai comes first on PATH, so `python train.py`
    means the Python that has kohai's dependencies (torch) unless the command
    names another one.
    """
    env = dict(base)
    env.update(
        KOHAI_SEED=str(seed),
        KOHAI_BUDGET_S=f"{budget_s:g}",
        KOHAI_RUN_DIR=str(run_dir),
        KOHAI_METRICS_FILE=str(run_dir / "metrics.jsonl"),
        CUDA_VISIBLE_DEVICES=",".join(str(g) for g in gpus),
        PYTHONUNBUFFERED="1",
    )
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        [bin_dir, *[p for p in base.get("PATH", "").split(os.pathsep) if p]]
    )
    return env


def describe_exit(exit_code: int) -> str:
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}"


def last_error_line(lines: list[str]) -> str:
    """The line a human looks for first in a traceback: the exception itself."""
    for line in reversed(lines):
        text = line.strip()
        if text and not text.startswith(("File ", "^", "~")):
            return text[:300]
    return ""


def reported_metrics(reading: MetricsReading, output_lines: list[str]) -> dict[str, float]:
    """What the run reported: the final line over the summary lines; else the last step point.

    Non-finite values are kept so that `judge` can say "reported NaN".
    """
    summary = parse_summary_lines(output_lines)
    if reading.final is not None:
        final = {
            k: float(v)
            for k, v in reading.final.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return {**summary, **final}
    if summary:
        return summary
    if reading.last_step is not None:  # partial: a run cut short keeps its last point
        return numeric_values(reading.last_step)
    return {}


def judge(
    *,
    metric_name: str,
    exit_code: int | None,
    timed_out: bool,
    cancelled: bool,
    reported: dict[str, float],
    budget_s: float,
    grace_s: float,
    log_lines: list[str],
) -> tuple[str, float | None, str]:
    """(status, primary metric, reason) from what happened; pure, so it is table-tested."""
    value = reported.get(metric_name)
    metric = value if value is not None and math.isfinite(value) else None
    if cancelled:
        return "crash", metric, CANCELLED_REASON
    if timed_out:
        return "timeout", metric, f"still running at budget {budget_s:g}s + grace {grace_s:g}s"
    if exit_code != 0:
        error = last_error_line(log_lines)
        reason = describe_exit(exit_code if exit_code is not None else -1)
        return "crash", metric, f"{reason}: {error}" if error else reason
    if value is None:
        return (
            "crash",
            None,
            (
                f"exited 0 but reported no {metric_name} (no final line in KOHAI_METRICS_FILE "
                f"and no '{metric_name}: <value>' line in the output)"
            ),
        )
    if metric is None:
        return "crash", None, f"{metric_name} is not finite ({value})"
    return "ok", metric, ""


class CancelFlag(Protocol):
    """Anything with `is_set()`, e.g. a threading.Event."""

    def is_set(self) -> bool: ...


class _LogPump(threading.Thread):
    """Copies the child's output to log.txt, keeps the tail and passes lines on."""

    def __init__(self, stream, log_path: Path, on_line: Callable[[str], None] | None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.log_path = log_path
        self.on_line = on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        # Summary lines come at the end; a bounded window keeps memory flat on long runs.
        self.all_summary_candidates: collections.deque[str] = collections.deque(maxlen=2000)

    def run(self) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            for raw in iter(self.stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                self.tail.append(line)
                if ":" in line and len(line) < 200:
                    self.all_summary_candidates.append(line)
                if self.on_line is not None:
                    try:
                        self.on_line(line)
                    except Exception:  # a reporting hiccup must not stop the log
                        pass
        self.stream.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait4(pid: int, block: bool) -> tuple[int, int, float] | None:
    """(pid, exit code, peak RSS in MB of the child and its descendants) or None if running.

    wait4 gives this child's own resource usage, so the peak is per run even in
    a long-lived daemon (RUSAGE_CHILDREN would be the maximum over every run).
    """
    try:
        got, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return pid, -1, 0.0
    if got == 0:
        return None
    peak_mb = usage.ru_maxrss / 1024.0  # kilobytes on Linux
    return got, os.waitstatus_to_exitcode(status), peak_mb


def run_once(
    repo_dir: Path,
    problem: Problem,
    seed: int,
    *,
    run_dir: Path,
    gpus: list[int] | None = None,
    budget_s: float | None = None,
    on_progress: Callable[[dict], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    cancel: CancelFlag | None = None,
    kill_after_s: float = KILL_AFTER_S,
) -> RunResult:
    """Run `problem.command` once for `seed` and measure it.

    `on_progress` gets each metrics record as it is appended (step points and
    the final line); `on_line` gets each output line; setting `cancel` kills
    the run (status crash, reason "cancelled").
    """
    gpus = list(gpus or [])
    budget = float(budget_s if budget_s is not None else problem.budget_s)
    grace = problem.grace_s
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    log_path = run_dir / "log.txt"
    command = build_command(problem.command, len(gpus))
    env = run_env(dict(os.environ), seed=seed, budget_s=budget, run_dir=run_dir, gpus=gpus)
    with log_path.open("w", encoding="utf-8") as log:
        log.write(
            f"$ {command}  # seed={seed} budget={budget:g}s gpus={shlex.quote(env['CUDA_VISIBLE_DEVICES'])}\n"
        )

    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=repo_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Its own process group, so budget enforcement reaches every process of
        # the run; not its own session, which with scheduler autogroups would
        # also change how the CPU is shared with the rest of the machine.
        process_group=0,
    )
    pump = _LogPump(proc.stdout, log_path, on_line)
    pump.start()
    follower = MetricsFollower(metrics_path)
    deadline = started + budget + grace
    timed_out = cancelled = False
    term_sent_at: float | None = None
    exit_code: int | None = None
    peak_rss_mb = 0.0
    try:
        while True:
            done = _wait4(proc.pid, block=False)
            if done is not None:
                _, exit_code, peak_rss_mb = done
                break
            _report(follower, on_progress)
            now = time.monotonic()
            if term_sent_at is None:
                if cancel is not None and cancel.is_set():
                    cancelled = True
                elif now >= deadline:
                    timed_out = True
                if cancelled or timed_out:
                    _signal_group(proc.pid, signal.SIGTERM)
                    term_sent_at = now
            elif now - term_sent_at >= kill_after_s:
                _signal_group(proc.pid, signal.SIGKILL)
            time.sleep(POLL_S)
    finally:
        proc.returncode = exit_code if exit_code is not None else -9
        # Nothing of the run may outlive it: stray grandchildren included.
        _signal_group(proc.pid, signal.SIGKILL)
        if exit_code is None:
            _wait4(proc.pid, block=True)
    pump.join(timeout=5.0)
    _report(follower, on_progress)
    duration = time.monotonic() - started

    reading = read_metrics_file(metrics_path)
    log_lines = list(pump.tail)
    reported_raw = reported_metrics(reading, list(pump.all_summary_candidates))
    status, metric, reason = judge(
        metric_name=problem.metric,
        exit_code=exit_code,
        timed_out=timed_out,
        cancelled=cancelled,
        reported=reported_raw,
        budget_s=budget,
        grace_s=grace,
        log_lines=log_lines,
    )
    reported = {k: v for k, v in reported_raw.items() if math.isfinite(v)}
    gpu_peak = reported.get("peak_mem_mb")
    return RunResult(
        seed=seed,
        status=status,
        metric=metric,
        metrics=reported,
        curve=reading.curve,
        duration_s=round(duration, 3),
        peak_mem_mb=round(gpu_peak if gpu_peak else peak_rss_mb, 1),
        gpu_hours=round(duration * len(gpus) / 3600.0, 6),
        exit_code=exit_code,
        reason=reason,
        log_tail="\n".join(log_lines),
    )


def _report(follower: MetricsFollower, on_progress: Callable[[dict], None] | None) -> None:
    records = follower.new_records()
    if on_progress is None:
        return
    for record in records:
        try:
            on_progress(record)
        except Exception:  # progress is best effort; the run goes on
            pass
