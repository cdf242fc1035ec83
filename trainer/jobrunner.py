"""One leased job, start to finish: checkout, implement, check, train, result.

The steps mirror the experiment lifecycle; every failure becomes a JobResult
with a reason a human can act on, because the bot posts it on the PR.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.early_stop import stop_rule
from bot.problem import CONFIG_FILE, Problem, ProblemError, loads_problem
from bot.protocol import DIFF_INCOMPLETE, MAX_DIFF_CHARS, Job, JobResult
from trainer import workspace
from trainer.harness import StopRule, run_once
from trainer.reporter import JobReporter
from trainer.wandb_log import RunContext, log_run
from trainer.workspace import GitError, Workspace

log = logging.getLogger(__name__)

STOPPED_REASON = "cancelled by the bot"


class Aborted(Exception):
    """The host is shutting down and the job cannot finish: give it back to the bot."""


@dataclass
class JobContext:
    """What a job needs from its host: where to work, which GPUs, and the stop signals."""

    student: str
    work_dir: Path
    gpus: list[int] = field(default_factory=list)
    abort: threading.Event = field(default_factory=threading.Event)  # host shutdown
    wandb_project: str = ""  # default: WANDB_PROJECT, else the repository's name
    sandboxed: bool = True  # False only when the host was started --unsandboxed


def early_stop_rule(job: Job, problem: Problem, seed: int | None = None) -> StopRule | None:
    """The harness's early-stop rule for one seed of a candidate, when the problem asks for one.

    Off for baselines, without `[train] early_stop`, and without baseline
    curves to compare with (the first experiments on a new base). When the
    baseline has a curve of this `seed`, the comparison is paired: the run
    against its own seed's curve, the band narrowed by the lab's seed
    correlation (`bot.core.early_stop.decide`); otherwise against the seeds' mean.
    """
    if job.kind == "baseline" or problem.early_stop is None or not job.baseline_curves:
        return None
    return stop_rule(
        job.baseline_curves,
        problem.early_stop,
        minimize=True,
        matched=job.matched_curve(seed) if seed is not None else None,
        seed_correlation=job.lab_seed_correlation(),
    )


def problem_at(worktree: Path, sha: str) -> Problem:
    """The problem as the base commit defines it: a branch cannot loosen its own rules."""
    text = workspace.git(worktree, "show", f"{sha}:{CONFIG_FILE}")
    return loads_problem(text)


def run_job(job: Job, ctx: JobContext, reporter: JobReporter) -> JobResult:
    """Do the job; raises Aborted when `ctx.abort` is set before it could finish."""
    ws = Workspace(ctx.work_dir)
    train_sha = job.base_sha if job.kind == "baseline" else (job.head_sha or job.base_sha)
    try:
        cache = ws.fetch(job.repo, job.clone_url, job.token, [job.base_sha, train_sha])
    except GitError as exc:
        return JobResult(status="crash", reason=f"could not fetch {job.repo}: {exc}")
    tree = ws.worktree(cache, train_sha, f"{ctx.student}-job{job.id}")
    base = ctx.work_dir / "base" / f"{ctx.student}-job{job.id}"
    try:
        workspace.export(cache, job.base_sha, base)
        return _run_in_worktree(job, ctx, reporter, tree, train_sha, base)
    except GitError as exc:
        return JobResult(status="crash", reason=f"could not check out the base: {exc}")
    finally:
        ws.remove(cache, tree)
        shutil.rmtree(base, ignore_errors=True)


def _run_in_worktree(
    job: Job, ctx: JobContext, reporter: JobReporter, tree: Path, head: str, base: Path
) -> JobResult:
    try:
        problem = problem_at(tree, job.base_sha)
    except (ProblemError, GitError) as exc:
        return JobResult(status="refused", reason=f"{CONFIG_FILE} at base: {exc}", head_sha=head)

    if job.kind != "baseline" and job.head_ref:
        onto_base = bool(job.implement and job.implement.onto_base)
        conflict = workspace.catch_up_with_base(
            tree, job.base_sha, student=ctx.student, prefer_base=onto_base
        )
        if conflict is not None:
            return JobResult(status="refused", reason=conflict, head_sha=head)
        if job.implement is None and not workspace.changed_since(tree, job.base_sha):
            return JobResult(
                status="refused",
                reason=f"already in base: no change left against {job.base_sha[:10]}",
                head_sha=head,
            )
        merged = workspace.head_sha(tree)
        if merged != head:
            try:
                workspace.publish(tree, job, reporter.client)
            except GitError as exc:
                return JobResult(
                    status="crash", reason=f"could not push the merged base: {exc}", head_sha=head
                )
            head = merged
    result = JobResult(status="ok", head_sha=head)
    if job.implement is not None and job.kind != "baseline":
        reporter.phase("implementing", head_sha=head)
        failure = _implement(job, ctx, tree, problem, result, reporter)
        if failure is not None:
            return failure
        head = result.head_sha or head
    if ctx.abort.is_set():
        raise Aborted
    if reporter.cancel.is_set():
        result.status, result.reason = "cancelled", STOPPED_REASON
        return result
    refusal = workspace.check_diff(tree, job.base_sha, head, problem)
    if refusal is not None:
        result.status, result.reason = "refused", refusal
        return result
    if job.kind != "baseline":  # the bot audits it against the hypothesis (bot/core/audit.py)
        result.diff = pr_diff(tree, job.base_sha, head)

    reporter.phase("training", head_sha=head)
    cancel = _either(reporter.cancel, ctx.abort)
    knobs = dict(job.implement.knobs) if job.implement else {}
    for seed in job.seeds:
        run = run_once(
            tree,
            problem,
            seed,
            run_dir=ctx.work_dir / "runs" / f"job{job.id}" / f"seed-{seed}",
            base_dir=base,
            data_dir=ctx.work_dir / "data" / workspace.cache_name(job.repo) / job.base_sha,
            host=ctx.student,
            sandboxed=ctx.sandboxed,
            gpus=ctx.gpus or job.gpus,
            on_progress=functools.partial(reporter.progress, seed),
            on_line=reporter.line,
            cancel=cancel,
            should_stop=early_stop_rule(job, problem, seed),
        )
        if run.status == "cancelled":
            if ctx.abort.is_set() and not reporter.cancel.is_set():
                raise Aborted
            run.reason = STOPPED_REASON
            result.runs.append(run)
            result.status, result.reason = "cancelled", STOPPED_REASON
            return result
        run.wandb_url = log_run(
            run,
            RunContext(
                project=ctx.wandb_project
                or os.environ.get("WANDB_PROJECT")
                or job.repo.split("/")[-1],
                student=ctx.student,
                pr_number=job.pr_number,
                commit=head,
                knobs=knobs,
                group=job.wandb_group,
            ),
            ctx.work_dir / "runs" / f"job{job.id}" / f"seed-{seed}",
        )
        result.runs.append(run)
        if seed != job.seeds[-1]:  # the last seed's result is the completion itself
            ok = run.status == "ok" and run.metric is not None and math.isfinite(run.metric)
            value = run.metric if ok else None
            reporter.measured(seed, problem.metric, value)
    return result


def _implement(
    job: Job,
    ctx: JobContext,
    tree: Path,
    problem: Problem,
    result: JobResult,
    reporter: JobReporter,
) -> JobResult | None:
    """Let the student change the branch, then commit and push; a JobResult on failure."""
    from agents import student  # the student agent is only needed for implement jobs

    spec = job.implement
    if spec is None:
        return JobResult(
            status="implement_failed",
            reason="the job carries no hypothesis",
            head_sha=result.head_sha,
        )
    try:
        outcome = student.implement(tree, spec, problem)
    except Exception as exc:  # noqa: BLE001 - any failure of the agent is the job's result
        return JobResult(
            status="implement_failed",
            reason=f"{type(exc).__name__}: {exc}",
            head_sha=result.head_sha,
        )
    result.changed_files = list(outcome.changed_files)
    result.reverted_files = list(outcome.reverted_files)
    result.cost_usd = float(outcome.cost_usd)
    result.smoke_s = float(getattr(outcome, "smoke_s", 0.0))
    result.notes = outcome.notes
    if outcome.error:
        result.status, result.reason = "implement_failed", outcome.error
        return result
    before = result.head_sha
    try:
        title = spec.title or spec.hypothesis.splitlines()[0][:72]
        workspace.commit_changes(
            tree, outcome.changed_files, student=ctx.student, message=title or "implement"
        )
        new_head = workspace.head_sha(tree)
        if new_head != before:
            if not job.head_ref:
                raise GitError("the job has no head_ref to push to")
            workspace.publish(tree, job, reporter.client)
    except GitError as exc:
        result.status, result.reason = "implement_failed", f"could not commit or push: {exc}"
        return result
    result.head_sha = new_head
    return None


class _either:
    """An Event-like view that is set when either of two events is."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()


def cleanup_runs(work_dir: Path, job_id: int) -> None:
    """Delete a job's run directories once the bot acknowledged its result.

    What the job wrote (artefacts, logs) has no use on the host after that;
    an offline W&B run (`seed-N/wandb`, written by the host) stays for a later
    `wandb sync`.
    """
    runs = work_dir / "runs" / f"job{job_id}"
    if not runs.is_dir() or runs.is_symlink():
        return
    kept = False
    for seed_dir in runs.iterdir():
        if seed_dir.is_dir() and not seed_dir.is_symlink():
            for entry in seed_dir.iterdir():
                if entry.name == "wandb" and entry.is_dir() and not entry.is_symlink():
                    kept = True
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            if not any(seed_dir.iterdir()):
                seed_dir.rmdir()
        else:
            seed_dir.unlink(missing_ok=True)
    if not kept:
        shutil.rmtree(runs, ignore_errors=True)


def pr_diff(tree: Path, base_sha: str, head: str) -> str:
    """The pull request's diff as GitHub shows it (from the merge base), bounded.

    Cut short or impossible to make, it ends with DIFF_INCOMPLETE, which the
    audit counts as a finding: what it could not read it cannot pass.
    """
    try:
        text = workspace.git(
            tree, "diff", "--no-color", "--no-ext-diff", "--no-textconv", f"{base_sha}...{head}"
        )
    except GitError:
        return DIFF_INCOMPLETE + "\n"
    if len(text) > MAX_DIFF_CHARS:
        return text[:MAX_DIFF_CHARS] + "\n" + DIFF_INCOMPLETE + "\n"
    return text
