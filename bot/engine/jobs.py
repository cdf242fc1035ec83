"""Jobs for hosts: the queue, leases, progress and results.

A lease lasts `LEASE_SECONDS` and every event from the host extends it; an
expired lease puts the job back in the queue with its attempt count raised,
and after `MAX_ATTEMPTS` the experiment goes to review with the failure
explained. Each lease has an id: events, results and releases name it, and
anything naming a lease that is not the job's current one is refused (409)
and changes nothing. Completion is idempotent for its own lease: a host that
retries a `complete` whose answer it never saw changes nothing the second time.
Bot downtime does not count against a lease: at start-up every lease is
extended by how long the bot was away.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any

from bot import queries
from bot.engine import labs
from bot.engine.engine import Engine, Repo
from bot.outbox import writes as w
from bot.protocol import (
    JOB_STATUSES,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    MEASURED_PHASE,
    RUN_STATUSES,
    JobEvent,
    JobResult,
)
from bot.records import Experiment, Job, Run
from bot.render.comments import RunningSeeds, results_comment
from bot.store import dumps, now, run_columns

log = logging.getLogger("kohai.jobs")

MAX_BASELINE_JOBS = 3  # per base commit: the first measurement and two re-queues of failed seeds
MAX_REBASE_ROUNDS = 2  # "bring this hypothesis onto the new base" jobs per experiment
CONFLICT_MARK = "conflicts with the new base"
ALREADY_IN_BASE_MARK = "already in base"
FINISHED_JOB_STATES = ("done", "failed", "cancelled")


STOPPED_REASON = "stopped by /stop"  # how hosts before `cancelled` reported a stopped run


def as_cancelled(result: JobResult) -> JobResult:
    """A result of a job the bot told to cancel, with its stopped runs marked `cancelled`.

    Hosts report a stopped run as `cancelled`; older ones said "crash" with
    the reason "stopped by /stop". Either way a stop is never a training failure.
    """
    if result.status != "cancelled" and result.reason != STOPPED_REASON:
        return result
    for run in result.runs:
        if run.reason == STOPPED_REASON:
            run.status = "cancelled"
    result.status = "cancelled"
    return result


class LeaseConflict(Exception):
    """A call that names a lease which is not the job's current one (HTTP 409)."""


def check_lease(job_id: int, current: str | None, named: str | None) -> None:
    """Raise LeaseConflict unless `named` is the job's `current` lease."""
    if not named or current != named:
        raise LeaseConflict(f"lease {named or '(none)'} is not the current lease of job {job_id}")


class TipConflict(LeaseConflict):
    """A result that names a commit other than the one the bot gave or accepted (HTTP 409)."""


def expected_tip(job: Job, exp: Experiment | None) -> str | None:
    """The commit a job must have trained: what the bot recorded, never what a host says.

    The tip the bot accepted from the job's own push, else the experiment's head
    when it was leased (rows from before that was recorded: the head now), the
    base for a baseline.
    """
    if job.tip_sha:
        return job.tip_sha
    if job.kind == "baseline":
        return job.base_sha
    return exp.head_sha if exp is not None else None


def tip_conflict(reported: str | None, expected: str | None) -> str | None:
    """Why a result's `head_sha` cannot be taken for this job, or None. Pure.

    A host may leave it out (the bot records its own tip either way), but one
    that names a commit names the bot's.
    """
    if reported is None or reported == expected:
        return None
    return (
        f"the result names commit {str(reported)[:12]}, but the commit this job trains is "
        f"{(expected or '(none)')[:12]} (the bot records the tips it accepts; a host reports)"
    )


def new_lease_id() -> str:
    return secrets.token_hex(8)


def validate_result(job: Job, student: str, result: JobResult) -> str | None:
    """What makes a posted result unusable for this job; None when it may be stored.

    Pure: the seeds must be the job's own (each once, all of them when the job
    finished "ok"), statuses from the protocol, metrics finite numbers, and the
    poster the student holding the lease.
    """
    if job.leased_by not in (None, student):
        return f"job {job.id} is leased by another student"
    if result.status not in JOB_STATUSES:
        return f"status must be one of {sorted(JOB_STATUSES)}, not {result.status!r}"
    seeds = [run.seed for run in result.runs]
    if any(not isinstance(seed, int) or isinstance(seed, bool) for seed in seeds):
        return "every run needs an integer seed"
    if len(set(seeds)) != len(seeds):
        return "a seed appears twice"
    wanted = list(job.seeds)
    strangers = sorted(set(seeds) - set(wanted))
    if strangers:
        return f"seeds {strangers} were not asked for (the job's seeds are {wanted})"
    if result.status == "ok" and sorted(seeds) != sorted(wanted):
        return f"an ok job reports every seed it was given ({wanted}), not {sorted(seeds)}"
    for run in result.runs:
        if run.status not in RUN_STATUSES:
            return f"run of seed {run.seed}: status {run.status!r} is not one of {sorted(RUN_STATUSES)}"
        if run.metric is not None and (
            not isinstance(run.metric, int | float)
            or isinstance(run.metric, bool)
            or not math.isfinite(run.metric)
        ):
            return f"run of seed {run.seed}: metric must be a finite number"
        if run.status == "ok" and run.metric is None:
            return f"run of seed {run.seed}: an ok run needs its metric"
        if not isinstance(run.metrics, dict) or any(
            not isinstance(v, int | float) or isinstance(v, bool) for v in run.metrics.values()
        ):
            return f"run of seed {run.seed}: metrics must map names to numbers"
        for name in ("duration_s", "peak_mem_mb", "gpu_hours"):
            value = getattr(run, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return f"run of seed {run.seed}: {name} must be a non-negative number"
    if not isinstance(result.cost_usd, int | float) or result.cost_usd < 0:
        return "cost_usd must be a non-negative number"
    return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_host_token() -> str:
    """A fresh host token; the bot keeps only its hash."""
    return "kohai_h_" + secrets.token_urlsafe(24)


def rotate_student_token(store: Any, name: str) -> str | None:
    """A new token for an existing student (the old one stops working now); None if unknown."""
    token = new_host_token()
    with store.transaction():
        if not store.one("SELECT name FROM students WHERE name = ?", (name,)):
            return None
        store.update("students", name, {"token_hash": hash_token(token)})
    return token


def register_student(store: Any, name: str, gpus: int = 0) -> str:
    """Create or re-key a student; return its host token (shown once, stored hashed)."""
    token = new_host_token()
    with store.transaction():
        existing = store.one("SELECT name FROM students WHERE name = ?", (name,))
        if existing:
            store.update("students", name, {"token_hash": hash_token(token), "gpus": gpus})
        else:
            store.insert(
                "students",
                {
                    "name": name,
                    "token_hash": hash_token(token),
                    "gpus": gpus,
                    "state": "idle",
                    "created_at": now(),
                },
            )
    return token


def authenticate(store: Any, name: str, token: str | None) -> bool:
    if not token:
        return False
    row = store.one("SELECT token_hash FROM students WHERE name = ?", (name,))
    return bool(
        row and row["token_hash"] and secrets.compare_digest(row["token_hash"], hash_token(token))
    )


@dataclass
class Leased:
    job: Job
    repo: Repo
    experiment: Experiment | None


class JobBook:
    """The queue and leases, on top of the engine's store and writes."""

    def __init__(self, engine: Engine, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.engine = engine
        self.store = engine.store
        self.lease_seconds = lease_seconds
        engine.on_pr_opened = self.late_results

    def late_results(self, repo: Repo, exp: Experiment) -> None:
        """Results that came back before the experiment's PR existed, posted now that it does."""
        for job in self.store.rows(
            Job,
            "experiment_id = ? AND kind = 'experiment' "
            "AND state IN ('done', 'failed') AND result IS NOT NULL",
            (exp.id,),
            order_by="id",
        ):
            data = job.result or {}
            status = str(data.get("status") or "")
            has_runs = self.store.one("SELECT id FROM runs WHERE job_id = ? LIMIT 1", (job.id,))
            if has_runs or status in ("refused", "implement_failed", "crash", "timeout"):
                summary = JobResult(
                    status=status,  # type: ignore[arg-type]
                    reason=str(data.get("reason") or ""),
                    cost_usd=float(data.get("cost_usd") or 0.0),
                )
                self._results_comment(repo, exp, job, job.leased_by or "", summary)

    # ------------------------------------------------------------- leasing

    def take(self, student: str) -> Leased | None:
        """Lease the next job this student may run, or None. One transaction."""
        with self.store.transaction():
            busy = self.store.one(
                "SELECT id FROM jobs WHERE leased_by = ? AND state = 'leased'", (student,)
            )
            if busy:
                return None
            picked = self._next_job(student)
            if picked is None:
                self.store.execute(
                    "UPDATE students SET last_seen = ?, state = 'idle' WHERE name = ?",
                    (now(), student),
                )
                return None
            job, exp = picked
            t = now()
            self.store.update(
                "jobs",
                job.id,
                {
                    "state": "leased",
                    "leased_by": student,
                    "lease_id": new_lease_id(),
                    "attempts": job.attempts + 1,
                    "lease_expires": t + self.lease_seconds,
                    "last_event_at": t,
                    "cancel": 0,
                    "updated_at": t,
                    # What this lease must train, until the bot accepts a push of its own.
                    "tip_sha": exp.head_sha if exp is not None else job.base_sha,
                    "tip_diff": None,
                    "measured": None,  # seeds an earlier lease reported are not this one's
                },
            )
            leased = self.store.get(Job, job.id)  # whole: the choice read only a few columns
            assert leased is not None, "leased in this transaction"
            job = leased
            repo = self.engine.repo_by_id(job.repo_id, job.track)
            if exp is not None:
                if exp.student != student:
                    self.engine.reassign(repo, exp, student)
                phase = "implementing" if job.implement else "training"
                self.engine.move(repo, exp, "implement" if job.implement else "train", "bot")
                self.engine.refresh_status(repo, exp.id, phase_note=f"{student} is {phase}")
                self.store.update("students", student, {"state": phase, "last_seen": t})
            else:
                self.store.update("students", student, {"state": "training", "last_seen": t})
        self.engine.bus.publish("job", id=job.id, state="leased", student=student)
        return Leased(job=job, repo=repo, experiment=exp)

    def _next_job(self, student: str) -> tuple[Job, Experiment | None] | None:
        """The job the scheduler gives this student, with its experiment; None when none.

        A job left behind by a final experiment is cancelled on the way, never run.
        """
        allowed = labs.student_labs(self.store, student)
        usage: dict[str, float] | None = None
        weights = {lab.key: lab.weight for lab in labs.active_labs(self.store)}
        while True:
            queued = [
                (labs.lab_key(row["lab_name"], row["track"]), Job.from_row(row))
                for row in self.store.query(
                    # What the choice needs (the leased job is read whole once chosen).
                    "SELECT j.id, j.kind, j.repo_id, j.state, j.experiment_id, j.student, "
                    "j.priority, j.attempts, j.track, r.full_name AS lab_name FROM jobs j "
                    "LEFT JOIN experiments e ON e.id = j.experiment_id "
                    "JOIN repos r ON r.id = j.repo_id "
                    "WHERE j.state = 'queued' AND r.active = 1 "
                    "AND (j.student IS NULL OR j.student = ?) "
                    "AND (e.id IS NULL OR e.hold = 0) "
                    "ORDER BY j.priority DESC, (j.student IS NULL) ASC, j.id ASC",
                    (student,),
                )
                if labs.may_serve(allowed, row["lab_name"], row["track"])
            ]
            if len({key for key, _ in queued}) > 1 and usage is None:
                usage = labs.gpu_usage(self.store)
            chosen = labs.choose_job(queued, usage or {}, weights)
            if chosen is None:
                return None
            job = chosen[1]
            exp = self.store.get(Experiment, job.experiment_id) if job.experiment_id else None
            if exp is None or not exp.final:
                return job, exp
            self.store.update("jobs", job.id, {"state": "cancelled", "updated_at": now()})

    def current(self, job_id: int, lease_id: str | None) -> Job:
        """The job if `lease_id` is its current lease; raises LeaseConflict otherwise."""
        job = self.store.get(Job, job_id)
        if job is None:
            raise KeyError(job_id)
        check_lease(job_id, job.lease_id, lease_id)
        return job

    def accept_push(self, job_id: int, lease_id: str, tip: str, diff: str) -> None:
        """The bot pushed a tip of this lease: it is what the job trains and what merges.

        Recorded with the bot's own diff (what the audit reads); the
        experiment's head follows at once, before GitHub's webhook confirms it.
        """
        with self.store.transaction():
            job = self.current(job_id, lease_id)
            self.store.update(
                "jobs", job.id, {"tip_sha": tip, "tip_diff": diff, "updated_at": now()}
            )
            exp = self.store.get(Experiment, job.experiment_id) if job.experiment_id else None
            if exp is not None and not exp.final:
                self.store.update("experiments", exp.id, {"head_sha": tip, "updated_at": now()})

    def refuse_push(self, job_id: int, student: str, lease_id: str, reason: str) -> None:
        """A push the lab does not allow ends its job as `refused`, with the reason on the PR.

        The bot ends the lease itself: a host that pushed it may not go on to
        train or report on that job (a later completion is a duplicate).
        """
        result = JobResult(
            status="refused",
            reason=f"the bot refused the pushed commit: {reason}",
            lease_id=lease_id,
        )
        self.complete(job_id, student, result)

    def give_back(self, job_id: int, *, count_attempt: bool, lease_id: str | None = None) -> None:
        """Undo a lease (token minting failed, or the host released it on shutdown).

        With `lease_id`, only that lease is given back (LeaseConflict otherwise).
        """
        with self.store.transaction():
            job = self.store.get(Job, job_id)
            if job is None or job.state != "leased":
                if lease_id is not None and (job is None or job.lease_id != lease_id):
                    raise LeaseConflict(
                        f"lease {lease_id} is not the current lease of job {job_id}"
                    )
                return
            if lease_id is not None and job.lease_id != lease_id:
                raise LeaseConflict(f"lease {lease_id} is not the current lease of job {job_id}")
            attempts = job.attempts if count_attempt else max(0, job.attempts - 1)
            self._requeue(job, attempts)

    def _requeue(self, job: Job, attempts: int) -> None:
        self.store.update(
            "jobs",
            job.id,
            {
                "state": "queued",
                "leased_by": None,
                "lease_id": None,
                "lease_expires": None,
                "attempts": attempts,
                "updated_at": now(),
            },
        )
        if job.leased_by:
            self.store.update("students", job.leased_by, {"state": "idle"})
        if job.experiment_id:
            repo = self.engine.repo_by_id(job.repo_id, job.track)
            exp = self.store.get(Experiment, job.experiment_id)
            if exp is not None and exp.state in ("implementing", "training"):
                self.engine.move(repo, exp, "requeue", "bot")
                self.engine.refresh_status(repo, exp.id)
        self.engine.notify_job_queued(job.student)

    # ------------------------------------------------------------ progress

    def record_event(self, job_id: int, student: str, event: JobEvent) -> dict[str, Any]:
        """Extend the lease named by the event and note its progress (LeaseConflict: not current)."""
        with self.store.transaction():
            job = self.current(job_id, event.lease_id)
            if job.leased_by != student or job.state != "leased":
                raise LeaseConflict(f"job {job_id} is no longer leased to {student}")
            t = now()
            values: dict[str, Any] = {
                "lease_expires": t + self.lease_seconds,
                "last_event_at": t,
                "updated_at": t,
            }
            measured = event.kind == "phase" and event.phase == MEASURED_PHASE
            if measured and event.seed in job.seeds:
                # Not a phase of the job: one of its seeds, finished while the others run.
                problem = self.engine.repo_by_id(job.repo_id, job.track).problem
                value = event.metrics.get(problem.metric)
                values["measured"] = dumps({**job.measured, str(event.seed): value})
            elif event.kind == "phase" and event.phase and not measured:
                values["phase"] = event.phase
                if job.experiment_id and not job.cancel:
                    repo = self.engine.repo_by_id(job.repo_id, job.track)
                    exp = self.store.get(Experiment, job.experiment_id)
                    if exp is not None and event.phase in ("implementing", "training"):
                        # A host's `head_sha` is not taken: the head moves only with a push
                        # the bot accepted (`accept_push`) or GitHub's own word (a webhook).
                        event_name = "implement" if event.phase == "implementing" else "train"
                        if self.engine.move(repo, exp, event_name, "host"):
                            self.engine.refresh_status(
                                repo, exp.id, phase_note=f"{student} is {event.phase}"
                            )
                    self.store.update("students", student, {"state": event.phase})
            self.store.update("jobs", job_id, values)
            self.store.execute("UPDATE students SET last_seen = ? WHERE name = ?", (t, student))
            if "measured" in values:
                self._results_so_far(job_id, student)
        self.engine.bus.publish(
            "progress",
            job_id=job_id,
            student=student,
            kind=event.kind,
            phase=event.phase,
            seed=event.seed,
            step=event.step,
            metrics=event.metrics,
        )
        return {"lease_expires_at": values["lease_expires"], "cancel": job.cancel}

    # ------------------------------------------------------------ liveness

    def beat(self) -> None:
        """Record that the bot is alive now (what `survive_downtime` measures from)."""
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO bot_state (key, value) VALUES ('alive_at', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (repr(now()),),
            )

    def survive_downtime(self) -> float:
        """At start-up: extend every lease by the time the bot was away; returns that time.

        Hosts could not reach a dead bot to extend their leases, so the
        downtime is not theirs to lose; a host that really died is still
        caught one lease period later.
        """
        with self.store.transaction():
            row = self.store.one("SELECT value FROM bot_state WHERE key = 'alive_at'")
            if row is None:
                return 0.0
            downtime = max(0.0, now() - float(row["value"]))
            self.store.execute(
                "UPDATE jobs SET lease_expires = lease_expires + ? WHERE state = 'leased'",
                (downtime,),
            )
        if downtime:
            log.info("extended every lease by the bot's downtime of %.1f s", downtime)
        self.beat()
        return downtime

    def expire_leases(self) -> list[int]:
        """Requeue jobs whose host went silent; fail them for good after MAX_ATTEMPTS."""
        expired: list[int] = []
        with self.store.transaction():
            for job in self.store.rows(
                Job, "state = 'leased' AND lease_expires < ?", (now(),), order_by="id"
            ):
                expired.append(job.id)
                if job.attempts >= MAX_ATTEMPTS:
                    reason = (
                        f"the host of student {job.leased_by} stopped reporting {MAX_ATTEMPTS} times "
                        f"(lease of {self.lease_seconds:.0f} s expired each time)"
                    )
                    self._fail(job, reason)
                else:
                    self._requeue(job, job.attempts)
        return expired

    def _fail(self, job: Job, reason: str) -> None:
        self.store.update(
            "jobs",
            job.id,
            {"state": "failed", "result": dumps({"reason": reason}), "updated_at": now()},
        )
        if job.leased_by:
            self.store.update("students", job.leased_by, {"state": "idle"})
        repo = self.engine.repo_by_id(job.repo_id, job.track)
        if job.kind == "baseline":
            self._baseline_short(repo, job, reason)
            return
        if job.experiment_id:
            exp = self.store.get(Experiment, job.experiment_id)
            if exp is not None and exp.pr_number and self.engine.move(repo, exp, "fail", "bot"):
                self.engine.write(
                    repo,
                    w.Comment(
                        number=exp.pr_number,
                        kind="failure",
                        key=str(job.id),
                        body=f"### Job {job.id} failed\n\n{reason}. The experiment goes to review.",
                    ),
                )
                self.store.update("experiments", exp.id, {"review_requested": 1})
                self.engine.refresh_status(repo, exp.id)

    # ----------------------------------------------------------- completion

    def complete(self, job_id: int, student: str, result: JobResult) -> str:
        """Store a job's result once; return 'stored' or 'duplicate'.

        Raises KeyError (no such job), LeaseConflict (the result names a lease
        that is not the job's current one: nothing changes) or ValueError (the
        result does not fit the job).
        """
        with self.store.transaction():
            job = self.store.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            if not result.lease_id or job.lease_id != result.lease_id:
                raise LeaseConflict(
                    f"lease {result.lease_id or '(none)'} is not the current lease of job {job_id}"
                )
            if job.state in FINISHED_JOB_STATES:
                return "duplicate"
            problem = validate_result(job, student, result)
            if problem:
                raise ValueError(problem)
            exp = None
            if job.experiment_id:
                exp = self.store.get(Experiment, job.experiment_id)
            tip = expected_tip(job, exp)
            conflict = tip_conflict(result.head_sha, tip)
            if conflict:
                raise TipConflict(conflict)
            # Stored as the bot knows it: its own tip, and no diff of the host's telling.
            result.head_sha, result.diff = tip, ""
            if job.cancel:
                result = as_cancelled(result)
            repo = self.engine.repo_by_id(job.repo_id, job.track)
            cancelled = result.status == "cancelled"
            runs = [r for r in result.runs if r.status != "cancelled"]
            self._store_runs(repo, job, student, result, runs)
            t = now()
            self.store.update(
                "jobs",
                job_id,
                {
                    "state": "cancelled" if cancelled else "done",
                    "result": dumps(result.to_dict() | {"runs": len(result.runs)}),
                    "updated_at": t,
                },
            )
            self.store.update("students", student, {"state": "idle", "last_seen": t})
            if job.kind == "baseline":
                self._baseline_done(repo, job)
            elif exp is not None:
                self._experiment_done(repo, exp, job, student, result, runs)
        self.engine.bus.publish("job", id=job_id, state="done", student=student)
        self.engine.notify_job_queued(None)
        return "stored"

    def _store_runs(
        self,
        repo: Repo,
        job: Job,
        student: str,
        result: JobResult,
        runs: list[Any],
    ) -> None:
        kind = "baseline" if job.kind == "baseline" else "candidate"
        commit = result.head_sha or (job.base_sha if kind == "baseline" else None)
        t = now()
        for run in runs:
            row = {
                "repo_id": repo.id,
                "track": job.track,
                "experiment_id": job.experiment_id,
                "job_id": job.id,
                "kind": kind,
                "student": student,
                "seed": run.seed,
                "commit_sha": commit,
                "base_sha": job.base_sha,
                "cost_usd": result.cost_usd / max(len(runs), 1),
                "created_at": t,
                **run_columns(run, student),
            }
            self.store.execute(
                f"INSERT OR IGNORE INTO runs ({', '.join(row)}) "
                f"VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )

    # ------------------------------------------------------------ baseline

    def _baseline_done(self, repo: Repo, job: Job) -> None:
        """A baseline job finished: re-queue its failed seeds (bounded), then wake the reviews."""
        if job.base_sha == repo.base_sha:
            ok = {
                r["seed"]
                for r in self.store.query(
                    "SELECT seed FROM runs WHERE repo_id = ? AND track = ? AND kind = 'baseline' "
                    "AND base_sha = ? AND status = 'ok'",
                    (repo.id, repo.track, repo.base_sha),
                )
            }
            wanted = list(range(repo.problem.baseline_seeds))
            missing = [s for s in wanted if s not in ok]
            if missing:
                self._baseline_short(repo, job, f"seeds {missing} of the baseline failed")
            else:
                self.engine.set_baseline_problem(repo, None)
        for exp in self.store.rows(
            Experiment,
            "repo_id = ? AND track = ? AND state IN ('queued', 'implementing', 'training', 'review')",
            (repo.id, repo.track),
        ):
            if exp.state == "review":
                self.store.update("experiments", exp.id, {"review_requested": 1})
            self.engine.refresh_status(repo, exp.id)

    def _baseline_short(self, repo: Repo, job: Job, why: str) -> None:
        """Some baseline seeds are missing: queue them again, or say on every PR that it cannot be measured."""
        if job.base_sha != repo.base_sha:
            return
        jobs = self.store.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'baseline' AND repo_id = ? "
            "AND track = ? AND base_sha = ?",
            (repo.id, repo.track, repo.base_sha),
        )
        ok = {
            r["seed"]
            for r in self.store.query(
                "SELECT seed FROM runs WHERE repo_id = ? AND track = ? AND kind = 'baseline' "
                "AND base_sha = ? AND status = 'ok'",
                (repo.id, repo.track, repo.base_sha),
            )
        }
        missing = [s for s in range(repo.problem.baseline_seeds) if s not in ok]
        if not missing:
            return
        if jobs < MAX_BASELINE_JOBS:
            self.engine.queue_baseline(repo, seeds=missing, again=True)
            return
        problem = (
            f"The baseline on `{(repo.base_sha or '?')[:10]}` cannot be measured: {why} "
            f"after {jobs} jobs. Experiments wait; fix the base or re-run the baseline."
        )
        self.engine.set_baseline_problem(repo, problem)
        for row in self.store.query(
            "SELECT id FROM experiments WHERE repo_id = ? AND track = ? AND state IN "
            "('proposed', 'queued', 'implementing', 'training', 'review')",
            (repo.id, repo.track),
        ):
            self.engine.refresh_status(repo, row["id"])

    # ---------------------------------------------------------- experiment

    def _experiment_done(
        self,
        repo: Repo,
        exp: Experiment,
        job: Job,
        student: str,
        result: JobResult,
        runs: list[Any],
    ) -> None:
        final = exp.final
        values: dict[str, Any] = {
            "cost_usd": (exp.cost_usd or 0) + result.cost_usd,
            "updated_at": now(),
        }
        if not final:
            values["base_sha"] = job.base_sha
            if result.head_sha:
                values["head_sha"] = result.head_sha
            if result.status not in ("implement_failed", "refused", "cancelled"):
                values["implemented"] = 1
                values["feedback"] = ""
        self.store.update("experiments", exp.id, values)
        exp = self.store.get(Experiment, exp.id) or exp
        if runs or result.status in ("refused", "implement_failed", "crash", "timeout"):
            self._results_comment(repo, exp, job, student, result)
        if final:
            return  # the job was cancelled by the end of the experiment: nothing to decide
        if result.status == "cancelled":
            # /stop: done, and it counts against nothing; the held PR waits in review.
            if self.engine.move(repo, exp, "stop", "bot"):
                self.engine.refresh_status(repo, exp.id, phase_note="stopped")
            return
        if result.status == "refused" and ALREADY_IN_BASE_MARK in result.reason:
            self.engine.finish(
                repo,
                exp,
                "closed",
                actor="bot",
                rationale=f"Closed: {result.reason}",
            )
            self.engine.decision_comment(
                repo,
                exp,
                "Closing: already in base",
                "The branch has no change left against the base "
                f"`{(job.base_sha or '?')[:10]}`: what it tries is already there, "
                "so there is nothing to measure.",
                key=f"already-{job.id}",
            )
            if exp.pr_number:
                self.engine.write(repo, w.Close(number=exp.pr_number))
            return
        if result.status == "refused" and CONFLICT_MARK in result.reason:
            if self._onto_new_base(repo, exp, job, result.reason):
                return
        waiting = self.store.one(
            "SELECT id FROM jobs WHERE experiment_id = ? AND state = 'queued'", (exp.id,)
        )
        if waiting:
            # A command queued more work meanwhile: it runs before anything is decided.
            self.engine.move(repo, exp, "requeue", "bot")
            self.engine.refresh_status(repo, exp.id)
            return
        ok_runs = [r for r in runs if r.status == "ok"]
        if self.engine.move(repo, exp, "results", "host") or exp.state == "review":
            self.store.update("experiments", exp.id, {"review_requested": 1})
        self.engine.refresh_status(
            repo, exp.id, phase_note=f"{len(ok_runs)}/{len(runs)} seeds ok; deciding"
        )

    def _onto_new_base(self, repo: Repo, exp: Experiment, job: Job, reason: str) -> bool:
        """The branch conflicts with the new base: its student brings the hypothesis onto it."""
        rounds = self.store.count(
            "SELECT COUNT(*) AS n FROM decisions WHERE experiment_id = ? AND verdict = 'rebase'",
            (exp.id,),
        )
        if rounds >= MAX_REBASE_ROUNDS:
            return False
        for other in self.store.rows(
            Job,
            "experiment_id = ? AND id != ? AND state IN ('queued', 'leased') AND base_sha IS ?",
            (exp.id, job.id, repo.base_sha),
        ):
            if other.implement.get("onto_base"):
                # Two jobs of this experiment hit the conflict (a /rerun beside the
                # first): one move onto the new base is on its way already.
                return True
        self.engine.move(repo, exp, "results", "host")
        rationale = (
            f"The branch conflicts with the new base `{(job.base_sha or '?')[:10]}`; "
            f"{exp.student or 'its student'} brings this hypothesis onto the new base, "
            "then it is measured again."
        )
        decision_id = self.engine.decide(exp.id, "rebase", "bot", rationale)
        self.engine.decision_comment(
            repo, exp, "Bringing the hypothesis onto the new base", rationale, key=str(decision_id)
        )
        fresh = self.store.get(Experiment, exp.id)
        assert fresh is not None
        self.engine.queue_experiment_job(
            repo, fresh, seeds=list(range(repo.problem.seeds)), onto_base=True
        )
        return True

    def _results_so_far(self, job_id: int, student: str) -> None:
        """A seed of a running job finished: the PR's results comment shows it now."""
        job = self.store.get(Job, job_id)
        if job is None or job.kind == "baseline" or not job.experiment_id:
            return
        exp = self.store.get(Experiment, job.experiment_id)
        if exp is None or not exp.pr_number or exp.final:
            return
        repo = self.engine.repo_by_id(job.repo_id, job.track)
        self._results_comment(repo, exp, job, student, None)

    def _results_comment(
        self,
        repo: Repo,
        exp: Experiment,
        job: Job,
        student: str,
        result: JobResult | None,
    ) -> None:
        """The PR's one results comment (sticky, edited in place), brought up to date after a
        job, and as each seed of a running job finishes (`result` None).

        It shows every seed measured so far on the commit and base of the latest
        runs (what the gate pools), against the baseline measured on that same base,
        with both training curves; a job that ran nothing says why at its top; a
        running job's finished seeds follow, as its host reported them.
        """
        mine = self.store.rows(Run, "experiment_id = ? AND kind = 'candidate'", (exp.id,))
        group = queries.current_group(mine)
        base_sha = group[0].base_sha if group else job.base_sha
        baseline_runs = self.store.rows(
            Run,
            "repo_id = ? AND track = ? AND kind = 'baseline' AND base_sha IS ?",
            (repo.id, repo.track, base_sha),
            order_by="seed",
        )
        notes = [f"Attempt {job.attempts}." if job.attempts > 1 else ""]
        if repo.tracked:  # say which research line these results belong to
            notes.insert(0, f"Track **{repo.track}**, against `{repo.base_branch}`.")
        if base_sha and repo.base_sha and base_sha != repo.base_sha:
            notes.append(
                f"Measured on an older base; the lab's base is now `{repo.base_sha[:10]}`, "
                "where it is measured again before any merge."
            )
        body = results_comment(
            title=exp.title,
            metric=repo.problem.metric,
            minimize=repo.problem.minimize,
            runs=sorted(group, key=lambda r: (r.seed, r.id)),
            baseline=[r.metric for r in baseline_runs if r.ok and r.metric is not None],
            head_sha=group[0].commit_sha if group else exp.head_sha,
            base_sha=base_sha,
            student=student,
            job_status=result.status if result is not None else "running",
            reason=result.reason if result is not None else "",
            cost_usd=sum(r.cost_usd or 0.0 for r in group)
            if group or result is None
            else result.cost_usd,
            attempt_note=" ".join(n for n in notes if n),
            smoke_s=result.smoke_s if result is not None else 0.0,
            notes=result.notes if result is not None else "",
            unsandboxed=result is not None and any(not run.sandboxed for run in result.runs),
            baseline_runs=baseline_runs,
            running=_seeds_so_far(job) if result is None else None,
        )
        if exp.pr_number:
            self.engine.write(
                repo,
                w.StatusComment(number=exp.pr_number, kind="results", key=exp.id, body=body),
            )
            if not exp.final and result is not None:
                self.engine.write(repo, w.MarkReady(number=exp.pr_number))


def _seeds_so_far(job: Job) -> RunningSeeds:
    """A running job's seeds: those its host reported finished (metric or None), the rest."""
    done = [
        (int(seed), value) for seed, value in job.measured.items() if seed.lstrip("-").isdigit()
    ]
    done_seeds = {seed for seed, _ in done}
    return RunningSeeds(
        finished=sorted(done), waiting=[seed for seed in job.seeds if seed not in done_seeds]
    )
