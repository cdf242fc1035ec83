"""Running one seed of a problem under the harness, and measuring it.

The harness, not the script, owns the budget and the result:

- training runs in its own process group (in the job sandbox when there is
  one); a sealed problem's script gets SIGTERM at exactly `budget` to save its
  artefact and SIGKILL `grace` later;
- the checkout is hashed before training, after it and after evaluation: any
  file that appears, vanishes or changes makes the run invalid;
- a sealed problem's primary metric comes only from the `[eval]` command of
  the base commit, run after training in its own process, with its own bound;
  the script's own numbers are progress. A problem without `[eval]` is
  "unsealed": its result is what the script reported, and it says so.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.problem import Problem
from bot.protocol import RunResult
from trainer import model_launch
from trainer import sandbox as job_sandbox
from trainer.limits import Limits, cpu_backstop_s, host_memory_bytes
from trainer.metrics import (
    MetricsFollower,
    MetricsReading,
    MetricsWatch,
    numeric_values,
    parse_summary_lines,
)
from trainer.process import (
    cap_tail,
    command_argv,
    describe_exit,
    last_error_line,
    run_bounded,
    signal_group,
)
from trainer.safeio import read_tail
from trainer.sealed import (
    artefact_files,
    changes,
    hidden_paths,
    read_eval_file,
    snapshot,
    unfit_checkout,
)

LOG_TAIL_LINES = 50
TAIL_READ_BYTES = 256 << 10  # of a log, for its last lines
KILL_AFTER_S = 5.0  # unsealed: between the SIGTERM at budget + grace and SIGKILL
DATA_BUDGET_S = 1800.0  # the [data] step may fetch a data set
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
        return "cancelled", None, CANCELLED_REASON
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


def job_limits(
    problem: Problem, wall_s: float, gpus: list[int], writes: tuple[Path, ...] = ()
) -> Limits:
    """The limits of one bounded process of this problem (`[train] memory/processes/disk`).

    `wall_s` is its time bound (the CPU backstop sits well past it); `writes`
    are the directories it may write, which the disk watcher sums.
    """
    res = problem.resources
    return Limits(
        memory_bytes=res.memory_on(host_memory_bytes()),
        processes=res.processes,
        disk_bytes=res.disk_bytes,
        cpu_s=cpu_backstop_s(wall_s),
        disk_paths=writes,
        gpu=bool(gpus),
    )


@dataclass
class Layout:
    """Where one run's files go. Training may write only `train_dir`; the rest is the harness's."""

    run_dir: Path

    @property
    def train_dir(self) -> Path:  # KOHAI_RUN_DIR: the artefact and the metrics file
        return self.run_dir / "train"

    @property
    def metrics_path(self) -> Path:
        return self.train_dir / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.txt"

    @property
    def eval_path(self) -> Path:  # KOHAI_EVAL_FILE, outside anything training can write
        return self.run_dir / "eval" / "result.json"

    @property
    def eval_log_path(self) -> Path:
        return self.run_dir / "eval" / "log.txt"

    def prepare(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.train_dir.mkdir(parents=True)
        self.eval_path.parent.mkdir(parents=True)


def clean_env(base: dict[str, str]) -> dict[str, str]:
    """The host's environment less its secrets: what the harness hands to problem code.

    The job sandbox narrows this further to an allowlist; without one this
    at least keeps the host token and API keys out of reach of `env`.
    """
    secret = ("TOKEN", "KEY", "SECRET", "PASSWORD", "WANDB_", "KOHAI_HOST", "GITHUB_")
    return {k: v for k, v in base.items() if not any(s in k.upper() for s in secret)}


def prepare_data(
    problem: Problem, base_dir: Path, data_dir: Path, log_path: Path, *, sandboxed: bool = True
) -> str | None:
    """Run `[data] command` from the base commit once per data dir; None, or why it failed.

    Trusted code (frozen, from the base), run before training: it is where a
    problem fetches or cuts what training may read. It still runs in the job
    sandbox (`sandboxed`, False only on a host started --unsandboxed): a base
    that a rogue change reached must not be able to read the host. It sees
    the base checkout read-only, writes only `data_dir`, gets no secrets, and
    reaches the network only when the problem declares `[data] network = true`.
    """
    ready = data_dir / ".kohai-ready"
    if problem.data_command is None or ready.exists():
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    env = clean_env(dict(os.environ))
    env.update(KOHAI_DATA_DIR=str(data_dir), PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = _python_first(env.get("PATH", ""))
    argv = command_argv(problem.data_command)
    terminate: Callable[[int, signal.Signals], None] = signal_group
    if sandboxed:
        box = job_sandbox.Sandbox(
            work=Path(data_dir).resolve(),
            readonly=(Path(base_dir).resolve(),),
            env=job_sandbox.job_env(env),
            network=problem.data_network,
            init=True,
        )
        argv = box.argv(argv, cwd=Path(base_dir).resolve())
        terminate = job_sandbox.signal_init
    where = "job sandbox" + (", with network" if problem.data_network else ", no network")
    with log_path.open("a", encoding="utf-8") as log:
        log.write(
            f"$ {problem.data_command}  # [data], from the base commit"
            f" ({where if sandboxed else 'UNSANDBOXED'})\n"
        )
    done = run_bounded(
        argv,
        cwd=base_dir,
        env=env,
        log_path=log_path,
        budget_s=DATA_BUDGET_S,
        grace_s=5.0,
        terminate=terminate,
        # The data cache may legitimately be large: bounded per file, not summed.
        limits=job_limits(problem, DATA_BUDGET_S, []),
    )
    if sandboxed:
        done.exit_code = job_sandbox.unwrap_exit(done.exit_code)
    if done.limit:
        return f"[data] command failed ({done.limit})"
    if done.terminated or done.exit_code != 0:
        why = "timed out" if done.terminated else describe_exit(done.exit_code or -1)
        return f"[data] command failed ({why}): {last_error_line(done.tail)}"
    ready.touch()
    return None


def _python_first(path: str) -> str:
    """The interpreter running kohai comes first on PATH, so `python` has its packages."""
    bin_dir = str(Path(sys.executable).parent)
    return os.pathsep.join([bin_dir, *[p for p in path.split(os.pathsep) if p and p != bin_dir]])


def run_once(
    repo_dir: Path,
    problem: Problem,
    seed: int,
    *,
    run_dir: Path,
    base_dir: Path | None = None,
    data_dir: Path | None = None,
    gpus: list[int] | None = None,
    budget_s: float | None = None,
    on_progress: Callable[[dict], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    cancel: CancelFlag | None = None,
    kill_after_s: float = KILL_AFTER_S,
    host: str = "",
    should_stop: StopRule | None = None,
    sandboxed: bool = True,
    on_phase: Callable[[str], None] | None = None,
) -> RunResult:
    """Train `repo_dir` once for `seed`, then (sealed) evaluate it with the base's evaluator.

    `base_dir` is a checkout of the base commit: the evaluator and the data step
    run from it, never from `repo_dir`. `on_progress` gets each metrics record
    as it is appended; `on_line` each output line of training; setting
    `cancel` stops the run (status "cancelled"). `should_stop(curve,
    fraction_of_budget)` is asked about once a second; a reason from it stops
    the run as "stopped-early" (not evaluated: the gate counts it as not better).
    `sandboxed` runs training and the evaluator's model side in the job
    sandbox (`trainer.sandbox`); False only for a host started
    `--unsandboxed`, and the result then says so. `on_phase` hears each step as
    it starts: "data", "training", "evaluating" (for progress displays).
    """
    phase = on_phase or (lambda _name: None)
    gpus = list(gpus or [])
    budget = float(budget_s if budget_s is not None else problem.budget_s)
    sealed = problem.evaluation is not None
    layout = Layout(Path(run_dir))
    layout.prepare()
    base_dir = Path(base_dir) if base_dir is not None else None
    if sealed and base_dir is None:
        raise ValueError("a sealed problem needs a checkout of the base commit (base_dir)")
    command = build_command(problem.command, len(gpus))
    env = run_env(
        clean_env(dict(os.environ)),
        seed=seed,
        budget_s=budget,
        run_dir=layout.train_dir,
        gpus=gpus,
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the checkout: it must not change
    result = RunResult(
        seed=seed,
        status="ok",
        sealed=sealed,
        sandboxed=sandboxed,
        host=host,
        gpu_kind=gpu_kind(gpus),
    )
    with layout.log_path.open("w", encoding="utf-8") as log:
        log.write(
            f"$ {command}  # seed={seed} budget={budget:g}s gpus={shlex.quote(env['CUDA_VISIBLE_DEVICES'])}\n"
        )
    if problem.data_command is not None and base_dir is not None:
        data_dir = Path(data_dir) if data_dir is not None else layout.run_dir / "data"
        phase("data")
        failure = prepare_data(problem, base_dir, data_dir, layout.log_path, sandboxed=sandboxed)
        if failure:
            return _finish(result, "crash", failure, layout, [])
        env["KOHAI_DATA_DIR"] = str(data_dir)

    before = snapshot(repo_dir)
    unfit = unfit_checkout(before)
    if unfit:
        return _finish(result, "invalid", unfit, layout, [])
    # The metrics file is the job's: followed in a thread of its own, with byte caps,
    # so the budget's clock never waits on it (trainer.metrics, trainer.safeio).
    watch = MetricsWatch(MetricsFollower(layout.metrics_path, root=layout.run_dir), on_progress)
    early = _EarlyStopWatch(should_stop, watch, budget)
    argv = command_argv(command)
    terminate: Callable[[int, signal.Signals], None] = signal_group
    hide = _hidden(problem, repo_dir)
    if sandboxed:
        # The job sandbox: writable only the checkout and KOHAI_RUN_DIR; the data
        # read-only; the evaluation's data hidden; no network; no secrets.
        data = env.get("KOHAI_DATA_DIR")
        box = job_sandbox.Sandbox(
            work=Path(repo_dir).resolve(),
            writable=(layout.train_dir.resolve(),),
            readonly=(Path(data).resolve(),) if data else (),
            hide=hide,
            env=job_sandbox.job_env(env),
            gpus=tuple(gpus),
            init=True,  # the budget's SIGTERM reaches the command; its usage reaches wait4
            tmp_bytes=problem.resources.disk_bytes,  # /tmp counts against [train] disk too
        )
        argv = box.argv(argv, cwd=Path(repo_dir).resolve())
        terminate = job_sandbox.signal_init
        note = (
            "# job sandbox (bubblewrap): no network; writable only the checkout and "
            "KOHAI_RUN_DIR; allowlisted environment"
            + (f"; hidden: {', '.join(str(p) for p in hide)}" if hide else "")
        )
    else:
        note = "# UNSANDBOXED (host started --unsandboxed): this run sees the host"
    with layout.log_path.open("a", encoding="utf-8") as log:
        log.write(note + "\n")
    phase("training")
    if sealed:  # SIGTERM at the budget to save the artefact, SIGKILL after the grace
        term_at, kill_grace = budget, problem.grace_s
    else:  # the script evaluates itself after its budget: the grace is for that
        term_at, kill_grace = budget + problem.grace_s, kill_after_s
    limits = job_limits(
        problem, term_at + kill_grace, gpus, (Path(repo_dir).resolve(), layout.train_dir.resolve())
    )
    watch.start()
    done = run_bounded(
        argv,
        cwd=repo_dir,
        env=env,
        log_path=layout.log_path,
        budget_s=term_at,
        grace_s=kill_grace,
        cancel=_either(cancel, early),
        on_line=on_line,
        terminate=terminate,
        limits=limits,
    )
    if sandboxed:
        done.exit_code = job_sandbox.unwrap_exit(done.exit_code)
    reading = watch.stop()
    if done.limit_notes:  # e.g. a GPU job without a cgroup runs without a memory limit
        notes = [f"# kohai: {note}" for note in done.limit_notes]
        with layout.log_path.open("a", encoding="utf-8") as log:
            log.write("".join(f"{line}\n" for line in notes))
        done.tail = [*done.tail, *notes]
    result.exit_code = done.exit_code
    result.train_s = round(done.duration_s, 3)
    result.duration_s = round(done.duration_s, 3)
    result.peak_mem_mb = round(done.peak_rss_mb, 1)
    result.gpu_hours = round(done.duration_s * len(gpus) / 3600.0, 6)
    result.curve = reading.curve
    reported_raw = reported_metrics(reading, done.summary_lines)
    reported = {k: v for k, v in reported_raw.items() if math.isfinite(v)}
    gpu_peak = reported.get("peak_mem_mb")
    if gpu_peak:
        result.peak_mem_mb = round(gpu_peak, 1)

    if done.limit:
        result.metrics = reported
        return _finish(result, "crash", done.limit, layout, done.tail)
    if watch.follower.finding:
        return _finish(result, "invalid", watch.follower.finding, layout, done.tail)
    if done.cancelled and early.reason:
        result.metrics = reported
        return _finish(result, "stopped-early", early.reason, layout, done.tail)
    if not sealed:
        status, metric, reason = judge(
            metric_name=problem.metric,
            exit_code=done.exit_code,
            timed_out=done.terminated,
            cancelled=done.cancelled,
            reported=reported_raw,
            budget_s=budget,
            grace_s=problem.grace_s,
            log_lines=done.tail,
        )
        result.metric, result.metrics = metric, reported
        moved = changes(before, snapshot(repo_dir), "during training")
        if status in ("ok", "timeout") and moved:
            status, result.metric, reason = "invalid", None, moved
        return _finish(result, status, reason, layout, done.tail)

    # Sealed: the script's numbers are progress, never the result.
    result.metrics = {
        (f"reported_{k}" if k == problem.metric else k): v for k, v in reported.items()
    }
    if done.cancelled:
        return _finish(result, "cancelled", CANCELLED_REASON, layout, done.tail)
    if done.killed:
        return _finish(
            result,
            "timeout",
            f"still running {problem.grace_s:g}s after SIGTERM at the {budget:g}s budget: SIGKILLed",
            layout,
            done.tail,
        )
    if not done.terminated and done.exit_code != 0:
        error = last_error_line(done.tail)
        why = describe_exit(done.exit_code if done.exit_code is not None else -1)
        return _finish(result, "crash", f"{why}: {error}" if error else why, layout, done.tail)
    moved = changes(before, snapshot(repo_dir), "during training")
    if moved:
        return _finish(result, "invalid", moved, layout, done.tail)
    artefacts = artefact_files(layout.train_dir, layout.metrics_path)
    if artefacts.findings:
        shown = ", ".join(artefacts.findings[:5])
        reason = f"KOHAI_RUN_DIR holds what an artefact may not be (not read): {shown}"
        return _finish(result, "invalid", reason, layout, done.tail)
    if not artefacts.files:
        return _finish(
            result,
            "crash",
            "training left no artefact in KOHAI_RUN_DIR (the evaluator scores saved weights)",
            layout,
            done.tail,
        )
    assert base_dir is not None and problem.evaluation is not None
    phase("evaluating")
    status, metric, values, reason, eval_s = evaluate(
        problem,
        base_dir,
        repo_dir,
        layout,
        seed=seed,
        gpus=gpus,
        cancel=cancel,
        model_sandbox=(
            _model_sandbox(base_dir, repo_dir, layout, hide, gpus, problem.resources.disk_bytes)
            if sandboxed
            else None
        ),
    )
    result.eval_s = round(eval_s, 3)
    result.duration_s = round(result.train_s + eval_s, 3)
    result.metrics.update(values)
    result.metric = metric
    if status == "ok":
        moved = changes(before, snapshot(repo_dir), "during evaluation")
        if moved:
            status, result.metric, reason = "invalid", None, moved
    tail = done.tail if status == "ok" else _eval_tail(layout)
    return _finish(result, status, reason, layout, tail)


StopRule = Callable[[list[list[float]], float], "str | None"]


class _EarlyStopWatch:
    """A cancel flag that asks the early-stop rule about the curve, at most once a second.

    The curve is the one the metrics thread has read so far: asking never reads a file.
    """

    def __init__(self, rule: StopRule | None, watch: MetricsWatch, budget_s: float) -> None:
        self.rule, self.watch, self.budget_s = rule, watch, budget_s
        self.started = time.monotonic()
        self.asked_at = 0.0
        self.reason: str | None = None

    def is_set(self) -> bool:
        if self.rule is None or self.reason is not None:
            return self.reason is not None
        now = time.monotonic()
        if now - self.asked_at < 1.0:
            return False
        self.asked_at = now
        curve = self.watch.curve()
        if curve:
            self.reason = self.rule(curve, (now - self.started) / self.budget_s)
        return self.reason is not None


class _either:
    """Set when either flag is (None counts as never set)."""

    def __init__(self, *flags: CancelFlag | None) -> None:
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


def evaluate(
    problem: Problem,
    base_dir: Path,
    candidate_dir: Path,
    layout: Layout,
    *,
    seed: int,
    gpus: list[int],
    cancel: CancelFlag | None = None,
    model_sandbox: model_launch.Wrap | None = None,
) -> tuple[str, float | None, dict[str, float], str, float]:
    """Run the base's `[eval] command` on the artefact: (status, metric, values, reason, seconds).

    With `model_sandbox` (see `_model_sandbox`), the evaluator runs in the job
    sandbox: the base checkout, the candidate's files and the artefact
    read-only, its own directory writable, no network, no secrets. It starts
    its model-side children through KOHAI_SANDBOX, a client of the harness's
    model launcher, which runs each in a fresh sandbox of `model_sandbox`.
    Without it (a host started --unsandboxed) the evaluator and its child
    run on the host, KOHAI_SANDBOX empty.
    """
    evaluation = problem.evaluation
    assert evaluation is not None
    layout.eval_path.unlink(missing_ok=True)
    env = clean_env(dict(os.environ))
    env.update(
        KOHAI_ARTIFACT_DIR=str(layout.train_dir),
        KOHAI_CANDIDATE_DIR=str(candidate_dir),
        KOHAI_EVAL_FILE=str(layout.eval_path),
        KOHAI_SEED=str(seed),
        CUDA_VISIBLE_DEVICES=",".join(str(g) for g in gpus),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        KOHAI_SANDBOX="[]",
    )
    env["PATH"] = _python_first(env.get("PATH", ""))
    with layout.eval_log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {evaluation.command}  # [eval], from the base commit\n")
    with contextlib.ExitStack() as stack:
        argv = command_argv(evaluation.command)
        terminate: Callable[[int, signal.Signals], None] = signal_group
        launcher: model_launch.ModelLauncher | None = None
        if model_sandbox is not None:
            # Each model child is bounded as the evaluator is, apart from it.
            launcher = stack.enter_context(
                model_launch.launcher(
                    model_sandbox,
                    layout.run_dir / "eval-model",
                    limits=job_limits(problem, evaluation.budget_s, gpus),
                )
            )
            # The argv prefix the evaluator puts before its model-side child (JSON list).
            env["KOHAI_SANDBOX"] = json.dumps(launcher.client_argv())
            box = job_sandbox.Sandbox(
                work=layout.eval_path.parent.resolve(),
                writable=(launcher.directory,),
                readonly=(
                    Path(base_dir).resolve(),
                    Path(candidate_dir).resolve(),
                    layout.train_dir.resolve(),
                    model_launch.CLIENT_FILE,
                ),
                env=job_sandbox.job_env(env),
                gpus=tuple(gpus),
                init=True,
                tmp_bytes=problem.resources.disk_bytes,
            )
            argv = box.argv(argv, cwd=Path(base_dir).resolve())
            terminate = job_sandbox.signal_init
        done = run_bounded(
            argv,
            cwd=base_dir,
            env=env,
            log_path=layout.eval_log_path,
            budget_s=evaluation.budget_s,
            grace_s=5.0,
            cancel=cancel,
            terminate=terminate,
            limits=job_limits(problem, evaluation.budget_s, gpus, (layout.eval_path.parent,)),
        )
        child_limit = launcher.limit if launcher is not None else None
    if model_sandbox is not None:
        done.exit_code = job_sandbox.unwrap_exit(done.exit_code)
    if done.limit:
        return "crash", None, {}, f"evaluation: {done.limit}", done.duration_s
    if child_limit:
        return "crash", None, {}, f"evaluation: the model's process: {child_limit}", done.duration_s
    if done.cancelled:
        return "cancelled", None, {}, CANCELLED_REASON, done.duration_s
    if done.terminated:
        return (
            "timeout",
            None,
            {},
            f"evaluation still running at its {evaluation.budget_s:g}s budget",
            done.duration_s,
        )
    if done.exit_code != 0:
        error = last_error_line(done.tail)
        why = describe_exit(done.exit_code if done.exit_code is not None else -1)
        return "crash", None, {}, f"the evaluator failed ({why}): {error}", done.duration_s
    status, metric, values, reason = read_eval_file(layout.eval_path, problem.metric)
    return status, metric, values, reason, done.duration_s


def _hidden(problem: Problem, repo_dir: Path) -> tuple[Path, ...]:
    """The `[eval] hide` paths that exist here (a missing one has nothing to hide)."""
    return tuple(p for p in hidden_paths(problem.evaluation, Path(repo_dir)) if p.exists())


def _model_sandbox(
    base_dir: Path,
    candidate_dir: Path,
    layout: Layout,
    hide: tuple[Path, ...],
    gpus: list[int],
    tmp_bytes: int | None = None,
) -> model_launch.Wrap:
    """How the model launcher sandboxes each of the evaluator's model-side children.

    A child runs the candidate's code: it reads the candidate's files, the
    artefact and the base's files, writes only a fresh directory of its own
    (and its private /tmp), sees no network and not the hidden data. Its
    environment is the evaluator's request less anything the allowlist drops.
    """
    readonly = (
        Path(candidate_dir).resolve(),
        layout.train_dir.resolve(),
        Path(base_dir).resolve(),
    )

    def wrap(command: list[str], env: Mapping[str, str], work: Path) -> list[str]:
        box = job_sandbox.Sandbox(
            work=work.resolve(),
            readonly=readonly,
            hide=hide,
            env=job_sandbox.job_env(dict(env)),
            gpus=tuple(gpus),
            init=True,  # its exit status reaches the launcher as the command's own
            tmp_bytes=tmp_bytes,
        )
        return box.argv(command, cwd=readonly[0])

    return wrap


def _eval_tail(layout: Layout) -> list[str]:
    """The last lines of the training and evaluation logs (read from their tails only)."""

    def last(path: Path) -> list[str]:
        text = read_tail(path, TAIL_READ_BYTES).decode("utf-8", errors="replace")
        return text.splitlines()[-LOG_TAIL_LINES // 2 :]

    try:
        return [*last(layout.log_path), "--- evaluation ---", *last(layout.eval_log_path)]
    except OSError:
        return []


def _finish(
    result: RunResult, status: str, reason: str, layout: Layout, tail: list[str]
) -> RunResult:
    result.status = status  # type: ignore[assignment]
    result.reason = reason
    if status != "ok":
        result.metric = None
    result.log_tail = cap_tail(tail)
    return result


def gpu_kind(gpus: list[int]) -> str:
    """The hardware class a run is compared within: the GPU's name, or "cpu"."""
    if not gpus:
        return "cpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", f"--id={gpus[0]}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "gpu"
    name = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return f"{name} x{len(gpus)}" if name else f"gpu x{len(gpus)}"
