"""An engine lab on a real SQLite file: a repository, a student, experiments and their runs.

Shared by the tests of the reviewer, the audit's wiring and the advisor's failures:
GitHub is the outbox rows the engine leaves behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.engine.engine import Engine
from bot.engine.jobs import JobBook
from bot.engine.review import Ask, Opinion, Reviewer
from bot.protocol import JobResult, RunResult
from bot.records import Experiment, Job
from bot.store import Store

TOML = (
    '[metric]\nname = "loss"\ndirection = "minimize"\n'
    '[train]\ncommand = "true"\nseeds = 1\nconfirm_seeds = 1\nbaseline_seeds = 2\n'
)


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(tmp_path / "k.db")
        self.engine = Engine(self.store)
        self.jobs = JobBook(self.engine)
        self.reviewer = Reviewer(self.engine)
        with self.store.transaction():
            self.store.insert(
                "students", {"name": "fern", "token_hash": "x", "state": "idle", "created_at": 0}
            )
            self.repo_id = self.store.insert(
                "repos",
                {
                    "full_name": "lab/x",
                    "installation_id": 1,
                    "base_sha": "b" * 40,
                    "synced_at": 1.0,
                    "problem_toml": TOML,
                    "created_at": 0,
                },
            )

    @property
    def repo(self) -> Any:
        return self.engine.repo_by_id(self.repo_id)

    def experiment(self, number: int) -> int:
        with self.store.transaction():
            exp_id = self.engine.open_experiment(
                self.repo, title=f"e{number}", hypothesis="h", student="fern", source="human"
            )
            self.store.update(
                "experiments",
                exp_id,
                {"pr_number": number, "head_sha": f"{number}" * 40, "implemented": 1},
            )
            self.engine.queue_experiment_job(self.repo, self.exp(exp_id), seeds=[0])
        return exp_id

    def exp(self, exp_id: int) -> Experiment:
        exp = self.store.get(Experiment, exp_id)
        assert exp is not None
        return exp

    def run(self, result: JobResult, student: str = "fern") -> Job:
        leased = self.jobs.take(student)
        assert leased is not None
        result.lease_id = leased.job.lease_id
        self.jobs.complete(leased.job.id, student, result)
        return leased.job

    def baseline(self, *values: float) -> None:
        with self.store.transaction():
            self.engine.queue_baseline(self.repo)
        self.run(ok(*values))

    def comments(self, kind: str) -> list[str]:
        rows = self.store.query("SELECT args FROM outbox WHERE op = 'comment' ORDER BY id")
        return [
            json.loads(r["args"])["body"] for r in rows if json.loads(r["args"])["kind"] == kind
        ]

    def review(self, exp_id: int, opinion: Opinion | None = None) -> str:
        ask = self.reviewer.begin(self.exp(exp_id))
        if not isinstance(ask, Ask):
            return ask
        return self.reviewer.conclude(ask, opinion or Opinion(ask.gate.verdict, by="gate"))


def ok(*values: float, head: str | None = None) -> JobResult:
    runs = [RunResult(seed=s, status="ok", metric=v) for s, v in enumerate(values)]
    return JobResult(status="ok", runs=runs, head_sha=head)
