"""Jobs for hosts: the queue, leases, progress and results.

A lease lasts `LEASE_SECONDS` and every event from the host extends it; an
expired lease puts the job back in the queue with its attempt count raised,
and after `MAX_ATTEMPTS` the experiment goes to review with the failure
explained. Completion is idempotent: a host that retries a `complete` whose
answer it never saw changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from bot.comments import results_comment
from bot.engine import Engine, Repo
from bot.protocol import LEASE_SECONDS, MAX_ATTEMPTS, JobEvent, JobResult
from bot.store import dumps, now


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def register_student(store: Any, name: str, gpus: int = 0) -> str:
    """Create or re-key a student; return its host token (shown once, stored hashed)."""
    token = "kohai_h_" + secrets.token_urlsafe(24)
    with store.transaction():
        existing = store.one("SELECT name FROM students WHERE name = ?", (name,))
        if existing:
            store.update(
                "students", name, {"token_hash": hash_token(token), "gpus": gpus}, key="name"
            )
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
    job: dict[str, Any]
    repo: Repo
    experiment: dict[str, Any] | None


class JobBook:
    """The queue and leases, on top of the engine's store and writes."""

    def __init__(self, engine: Engine, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.engine = engine
        self.store = engine.store
        self.lease_seconds = lease_seconds

    # ------------------------------------------------------------- leasing

    def take(self, student: str) -> Leased | None:
        """Lease the next job this student may run, or None. One transaction."""
        with self.store.transaction():
            busy = self.store.one(
                "SELECT id FROM jobs WHERE leased_by = ? AND state = 'leased'", (student,)
            )
            if busy:
                return None
            rows = self.store.query(
                "SELECT j.* FROM jobs j LEFT JOIN experiments e ON e.id = j.experiment_id "
                "JOIN repos r ON r.id = j.repo_id "
                "WHERE j.state = 'queued' AND r.active = 1 AND (j.student IS NULL OR j.student = ?) "
                "AND (e.id IS NULL OR e.hold = 0) "
                "ORDER BY j.priority DESC, (j.student IS NULL) ASC, j.id ASC LIMIT 1",
                (student,),
            )
            if not rows:
                self.store.execute(
                    "UPDATE students SET last_seen = ?, state = 'idle' WHERE name = ?",
                    (now(), student),
                )
                return None
            job = rows[0]
            t = now()
            self.store.update(
                "jobs",
                job["id"],
                {
                    "state": "leased",
                    "leased_by": student,
                    "attempts": job["attempts"] + 1,
                    "lease_expires": t + self.lease_seconds,
                    "last_event_at": t,
                    "updated_at": t,
                },
            )
            job = self.store.one("SELECT * FROM jobs WHERE id = ?", (job["id"],))
            assert job is not None
            repo = self.engine.repo_by_id(job["repo_id"])
            exp = None
            if job["experiment_id"]:
                exp = self.store.one(
                    "SELECT * FROM experiments WHERE id = ?", (job["experiment_id"],)
                )
                assert exp is not None
                if exp["student"] != student:
                    self.engine.reassign(repo, exp, student)
                payload = json.loads(job["payload"] or "{}")
                phase = "implementing" if payload.get("implement") else "training"
                self.engine.set_state(repo, exp, phase)
                self.engine.refresh_status(repo, exp["id"], phase_note=f"{student} is {phase}")
                self.store.update("students", student, {"state": phase, "last_seen": t}, key="name")
            else:
                self.store.update(
                    "students", student, {"state": "training", "last_seen": t}, key="name"
                )
        self.engine.bus.publish("job", id=job["id"], state="leased", student=student)
        return Leased(job=job, repo=repo, experiment=exp)

    def give_back(self, job_id: int, *, count_attempt: bool) -> None:
        """Undo a lease (token minting failed, or the host released it on shutdown)."""
        with self.store.transaction():
            job = self.store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if job is None or job["state"] != "leased":
                return
            attempts = job["attempts"] if count_attempt else max(0, job["attempts"] - 1)
            self._requeue(job, attempts)

    def _requeue(self, job: dict[str, Any], attempts: int) -> None:
        self.store.update(
            "jobs",
            job["id"],
            {
                "state": "queued",
                "leased_by": None,
                "lease_expires": None,
                "attempts": attempts,
                "updated_at": now(),
            },
        )
        if job["leased_by"]:
            self.store.update("students", job["leased_by"], {"state": "idle"}, key="name")
        if job["experiment_id"]:
            repo = self.engine.repo_by_id(job["repo_id"])
            exp = self.store.one("SELECT * FROM experiments WHERE id = ?", (job["experiment_id"],))
            if exp is not None and exp["state"] in ("implementing", "training"):
                self.engine.set_state(repo, exp, "queued")
                self.engine.refresh_status(repo, exp["id"])
        self.engine._on_job_queued(job["student"])

    # ------------------------------------------------------------ progress

    def record_event(self, job_id: int, student: str, event: JobEvent) -> dict[str, Any]:
        with self.store.transaction():
            job = self.store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if job is None or job["leased_by"] != student or job["state"] != "leased":
                return {"lease_expires_at": 0.0, "cancel": True}
            t = now()
            values: dict[str, Any] = {
                "lease_expires": t + self.lease_seconds,
                "last_event_at": t,
                "updated_at": t,
            }
            if event.kind == "phase" and event.phase:
                values["phase"] = event.phase
                if job["experiment_id"]:
                    repo = self.engine.repo_by_id(job["repo_id"])
                    exp = self.store.one(
                        "SELECT * FROM experiments WHERE id = ?", (job["experiment_id"],)
                    )
                    if exp is not None and event.phase in ("implementing", "training"):
                        if event.head_sha:
                            self.store.update(
                                "experiments", exp["id"], {"head_sha": event.head_sha}
                            )
                        self.engine.set_state(repo, exp, event.phase)
                        self.engine.refresh_status(
                            repo, exp["id"], phase_note=f"{student} is {event.phase}"
                        )
                    self.store.update("students", student, {"state": event.phase}, key="name")
            self.store.update("jobs", job_id, values)
            self.store.execute("UPDATE students SET last_seen = ? WHERE name = ?", (t, student))
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
        return {"lease_expires_at": values["lease_expires"], "cancel": bool(job["cancel"])}

    def expire_leases(self) -> list[int]:
        """Requeue jobs whose host went silent; fail them for good after MAX_ATTEMPTS."""
        expired: list[int] = []
        with self.store.transaction():
            rows = self.store.query(
                "SELECT * FROM jobs WHERE state = 'leased' AND lease_expires < ?", (now(),)
            )
            for job in rows:
                expired.append(job["id"])
                if job["attempts"] >= MAX_ATTEMPTS:
                    reason = (
                        f"the host of student {job['leased_by']} stopped reporting {MAX_ATTEMPTS} times "
                        f"(lease of {self.lease_seconds:.0f} s expired each time)"
                    )
                    self._fail(job, reason)
                else:
                    self._requeue(job, job["attempts"])
        return expired

    def _fail(self, job: dict[str, Any], reason: str) -> None:
        self.store.update(
            "jobs",
            job["id"],
            {"state": "failed", "result": dumps({"reason": reason}), "updated_at": now()},
        )
        if job["leased_by"]:
            self.store.update("students", job["leased_by"], {"state": "idle"}, key="name")
        if job["experiment_id"]:
            repo = self.engine.repo_by_id(job["repo_id"])
            exp = self.store.one("SELECT * FROM experiments WHERE id = ?", (job["experiment_id"],))
            if exp is not None and exp["pr_number"]:
                self.engine._write(
                    repo,
                    "comment",
                    number=exp["pr_number"],
                    kind="failure",
                    key=str(job["id"]),
                    body=f"### Job {job['id']} failed\n\n{reason}. The experiment goes to review.",
                )
                self.engine.set_state(repo, exp, "review")
                self.store.update("experiments", exp["id"], {"review_requested": 1})
                self.engine.refresh_status(repo, exp["id"])

    # ----------------------------------------------------------- completion

    def complete(self, job_id: int, student: str, result: JobResult) -> str:
        """Store a job's result once; return 'stored', 'duplicate' or 'unknown'."""
        with self.store.transaction():
            job = self.store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if job is None:
                return "unknown"
            if job["state"] in ("done", "failed"):
                return "duplicate"
            repo = self.engine.repo_by_id(job["repo_id"])
            t = now()
            exp = None
            if job["experiment_id"]:
                exp = self.store.one(
                    "SELECT * FROM experiments WHERE id = ?", (job["experiment_id"],)
                )
            kind = "baseline" if job["kind"] == "baseline" else "candidate"
            commit = result.head_sha or (job["base_sha"] if kind == "baseline" else None)
            for run in result.runs:
                self.store.execute(
                    "INSERT OR IGNORE INTO runs (repo_id, experiment_id, job_id, kind, student, seed, "
                    "commit_sha, base_sha, status, metric, metrics, curve, duration_s, peak_mem_mb, "
                    "gpu_hours, cost_usd, reason, log_tail, wandb_url, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        repo.id,
                        job["experiment_id"],
                        job_id,
                        kind,
                        student,
                        run.seed,
                        commit,
                        job["base_sha"],
                        run.status,
                        run.metric,
                        dumps(run.metrics),
                        dumps(run.curve),
                        run.duration_s,
                        run.peak_mem_mb,
                        run.gpu_hours,
                        result.cost_usd / max(len(result.runs), 1),
                        run.reason,
                        run.log_tail[-8000:],
                        run.wandb_url,
                        t,
                    ),
                )
            self.store.update(
                "jobs",
                job_id,
                {
                    "state": "done",
                    "result": dumps(result.to_dict() | {"runs": len(result.runs)}),
                    "updated_at": t,
                },
            )
            self.store.update("students", student, {"state": "idle", "last_seen": t}, key="name")
            if kind == "baseline":
                self._baseline_done(repo)
            elif exp is not None:
                self._experiment_done(repo, exp, job, student, result)
        self.engine.bus.publish("job", id=job_id, state="done", student=student)
        self.engine._on_job_queued(None)
        return "stored"

    def _baseline_done(self, repo: Repo) -> None:
        # Experiments waiting in review for this baseline can be decided now; the
        # sticky comments show the new baseline.
        for exp in self.store.query(
            "SELECT * FROM experiments WHERE repo_id = ? AND state IN ('queued', 'implementing', 'training', 'review')",
            (repo.id,),
        ):
            if exp["state"] == "review":
                self.store.update("experiments", exp["id"], {"review_requested": 1})
            self.engine.refresh_status(repo, exp["id"])

    def _experiment_done(
        self, repo: Repo, exp: dict[str, Any], job: dict[str, Any], student: str, result: JobResult
    ) -> None:
        ok_runs = [r for r in result.runs if r.status == "ok"]
        values: dict[str, Any] = {
            "base_sha": job["base_sha"],
            "cost_usd": (exp["cost_usd"] or 0) + result.cost_usd,
            "updated_at": now(),
            "review_requested": 1,
        }
        if result.head_sha:
            values["head_sha"] = result.head_sha
        if result.status not in ("implement_failed", "refused"):
            values["implemented"] = 1
            values["feedback"] = ""
        self.store.update("experiments", exp["id"], values)
        exp = {**exp, **values}
        all_runs = [
            {**r, "curve": json.loads(r["curve"] or "[]")}
            for r in self.store.query(
                "SELECT * FROM runs WHERE job_id = ? ORDER BY seed", (job["id"],)
            )
        ]
        attempt_note = ""
        if job["attempts"] > 1:
            attempt_note = f"Attempt {job['attempts']}."
        body = results_comment(
            title=exp["title"],
            metric=repo.problem.metric,
            minimize=repo.problem.minimize,
            runs=all_runs,
            baseline=self.engine.baseline_values(repo),
            head_sha=exp.get("head_sha"),
            base_sha=job["base_sha"],
            student=student,
            job_status=result.status,
            reason=result.reason,
            cost_usd=result.cost_usd,
            attempt_note=attempt_note,
            smoke_s=result.smoke_s,
            unsandboxed=any(not run.sandboxed for run in result.runs),
        )
        if exp["pr_number"]:
            self.engine._write(
                repo,
                "comment",
                number=exp["pr_number"],
                kind="results",
                key=str(job["id"]),
                body=body,
            )
            self.engine._write(repo, "mark_ready", number=exp["pr_number"])
        self.engine.set_state(repo, exp, "review")
        self.engine.refresh_status(
            repo, exp["id"], phase_note=f"{len(ok_runs)}/{len(result.runs)} seeds ok; deciding"
        )
