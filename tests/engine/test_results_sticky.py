"""One sticky results comment per PR, edited as seeds finish, with the baseline's curve.

The engine on a real SQLite file, its outbox performed by the worker against
the sandbox GitHub over loopback: an experiment that runs three jobs (its
first seed, its confirmation seeds, a rerun) leaves ONE results comment on
its PR, edited in place, showing every seed measured on the commit and base
and a chart of the candidate's curve over the baseline's matched seeds, with
a legend naming which line is which.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.github.client import GitHubApp
from bot.outbox.worker import OutboxWorker, failed_writes
from bot.protocol import MEASURED_PHASE, JobEvent, JobResult, RunResult
from bot.records import Job
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer
from tests.support.engine_lab import Lab
from tests.support.github_mock import FakeTime

REPO = "lab/x"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox") as server:
        server.create_repo(REPO, files={"README.md": "# x\n"})
        yield server


def _curve(start: float) -> list[list[float]]:
    return [[step, start - step / 100] for step in (0, 10, 20, 30)]


def _result(seeds: list[int], base: float, head: str) -> JobResult:
    runs = [
        RunResult(seed=s, status="ok", metric=base + s / 100, curve=_curve(base + s / 10))
        for s in seeds
    ]
    return JobResult(status="ok", runs=runs, head_sha=head)


def lab_on(sandbox: SandboxServer, tmp_path: Path) -> tuple[Lab, OutboxWorker, str]:
    """An engine lab whose repository is the sandbox's, its outbox worker, and main's sha."""
    lab = Lab(tmp_path)
    main = subprocess.run(
        ["git", "--git-dir", str(sandbox.repo_path(REPO)), "rev-parse", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with lab.store.transaction():  # the engine's lab is the sandbox's repository
        inst = sandbox.installation_id(REPO)
        lab.store.update("repos", lab.repo_id, {"installation_id": inst, "base_sha": main})
    github = GitHubApp(sandbox.app_id, sandbox.private_key_pem, sandbox.url, sleep=FakeTime().sleep)
    return lab, OutboxWorker(lab.store, github), main


def results_of(control: SandboxControl, number: int, exp_id: int) -> list[str]:
    """The bodies of the experiment's results comments on its PR."""
    return [
        c["body"]
        for c in control.comments(REPO, number)
        if c["body"].startswith(f"<!-- kohai:results:{exp_id} -->")
    ]


async def test_three_jobs_leave_one_results_comment_with_every_seed_and_the_baseline(
    tmp_path: Path, sandbox: SandboxServer
) -> None:
    lab, worker, main = lab_on(sandbox, tmp_path)
    with SandboxControl(sandbox.url) as control:
        with lab.store.transaction():
            lab.engine.queue_baseline(lab.repo)
        lab.run(_result([0, 1], 2.0, main))  # the lab measures two baseline seeds
        number = 1  # the sandbox is fresh: the experiment's draft PR is its first
        exp_id = lab.experiment(number)
        await worker.run_once()
        assert control.pull(REPO, number)["draft"] is True
        head = str(lab.exp(exp_id).head_sha)

        lab.run(_result([0], 1.9, head))
        await worker.run_once()
        assert not failed_writes(lab.store)
        [first] = results_of(control, number, exp_id)
        assert "| 0 | ok |" in first and "| 1 | ok |" not in first

        for seeds in ([1, 2], [0, 1, 2]):  # confirmation seeds, then a rerun of all three
            with lab.store.transaction():
                lab.engine.queue_experiment_job(lab.repo, lab.exp(exp_id), seeds=seeds)
            lab.run(_result(seeds, 1.9, head))
        await worker.run_once()
        assert not failed_writes(lab.store)
        [body] = results_of(
            control, number, exp_id
        )  # one comment, edited in place: not one per job
        for seed in (0, 1, 2):
            assert f"| {seed} | ok |" in body
        assert "**baseline**:" in body and "(n=2)" in body
        assert "xychart-beta" in body and body.count("    line [") == 2
        assert "plotColorPalette" in body
        assert "blue = this PR, orange = baseline" in body
        assert "🟦 this PR" in body and "🟧 baseline on the same base (matched seeds: 0, 1)" in body
        ops = lab.store.query(
            "SELECT DISTINCT op FROM outbox WHERE json_extract(args, '$.kind') = 'results'"
        )
        assert [r["op"] for r in ops] == ["sticky"]


async def test_the_results_comment_shows_each_seed_as_its_host_finishes_it(
    tmp_path: Path, sandbox: SandboxServer
) -> None:
    """A three-seed job: after each seed's `measured` event the PR's one results comment lists
    it (the host's report, apart from the table); the completion replaces the list with the
    table. A seed the job does not have is dropped, and the job's phase stays `training`."""
    lab, worker, _ = lab_on(sandbox, tmp_path)
    with SandboxControl(sandbox.url) as control:
        lab.baseline(2.0, 2.1)
        number = 1
        exp_id = lab.experiment(number)
        with lab.store.transaction():  # the experiment's job trains three seeds
            lab.store.execute(
                "UPDATE jobs SET seeds = '[0, 1, 2]' WHERE experiment_id = ?", (exp_id,)
            )
        leased = lab.jobs.take("fern")
        assert leased is not None
        job, lease = leased.job, str(leased.job.lease_id)
        lab.jobs.record_event(
            job.id, "fern", JobEvent(kind="phase", phase="training", lease_id=lease)
        )

        def measured(seed: int, metrics: dict[str, float]) -> None:
            event = JobEvent(
                kind="phase", phase=MEASURED_PHASE, seed=seed, metrics=metrics, lease_id=lease
            )
            event.check()
            lab.jobs.record_event(job.id, "fern", event)

        measured(0, {"loss": 1.95})
        measured(7, {"loss": 0.1})  # not a seed of this job: nothing shown
        await worker.run_once()
        assert not failed_writes(lab.store)
        [body] = results_of(control, number, exp_id)
        assert "Training: 1 of 3 seeds finished" in body
        assert "seed 0: 1.95" in body and "still to run: 1, 2" in body
        assert "seed 7" not in body and "| 0 | ok |" not in body

        measured(1, {})  # a seed that ended without a metric
        await worker.run_once()
        [body] = results_of(control, number, exp_id)
        assert "Training: 2 of 3 seeds finished" in body and "seed 1: no metric" in body
        stored = lab.store.get(Job, job.id)
        assert stored is not None and stored.phase == "training"
        assert control.pull(REPO, number)["draft"] is True  # not ready while it trains

        result = JobResult(
            status="ok",
            runs=[RunResult(seed=s, status="ok", metric=1.9 + s / 100) for s in (0, 1, 2)],
            head_sha=lab.exp(exp_id).head_sha,
            lease_id=lease,
        )
        lab.jobs.complete(job.id, "fern", result)
        await worker.run_once()
        [body] = results_of(
            control, number, exp_id
        )  # still one comment: the table replaced the list
        assert "Training:" not in body
        for seed in (0, 1, 2):
            assert f"| {seed} | ok |" in body
