"""Leases with identity over real HTTP: stale leases get 409, results must fit their job.

The bot runs as the litestar app on loopback with its SQLite file; jobs are
leased through the job book (minting a GitHub token is not what is tested
here) and then driven through the host API exactly as a host would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli.lab import ServerThread
from bot.config import Settings
from bot.engine.jobs import register_student, validate_result
from bot.protocol import JobResult, RunResult
from bot.records import Experiment
from webhooks.app import create_app
from webhooks.context import BotContext


@pytest.fixture
def bot(tmp_path: Path, pem: str):
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="http://127.0.0.1:9",
        db_path=str(tmp_path / "kohai.db"),
    )
    ctx = BotContext.build(settings)
    ctx.workers = []
    store, engine = ctx.store, ctx.engine
    with store.transaction():
        store.insert(
            "repos",
            {
                "full_name": "lab/x",
                "installation_id": 1,
                "base_sha": "b" * 40,
                "synced_at": 1.0,
                "problem_toml": '[metric]\nname = "loss"\n[train]\ncommand = "true"\nseeds = 2\n',
                "created_at": 0,
            },
        )
        repo = engine.repo("lab/x")
        exp_id = engine.open_experiment(
            repo, title="t", hypothesis="h", student=None, source="human"
        )
        store.update(
            "experiments", exp_id, {"pr_number": 4, "head_sha": "c" * 40, "implemented": 1}
        )
        exp = store.get(Experiment, exp_id)
        engine.queue_experiment_job(repo, exp, seeds=[0, 1])
    tokens = {name: register_student(store, name) for name in ("fern", "frieren")}
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        yield ctx, server.url, tokens, exp_id


def call(url: str, token: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
    return httpx.post(
        f"{url}{path}",
        json=body,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def ok_result(lease_id: str, seeds: list[int], metric: float = 1.0) -> dict[str, Any]:
    runs = [RunResult(seed=s, status="ok", metric=metric) for s in seeds]
    return JobResult(status="ok", runs=runs, head_sha="c" * 40, lease_id=lease_id).to_dict()


def test_a_completion_for_a_lease_that_is_not_current_is_409_and_changes_nothing(bot) -> None:
    ctx, url, tokens, exp_id = bot
    first = ctx.jobs.take("fern")
    assert first is not None
    job_id, old_lease = first.job.id, first.job.lease_id
    assert old_lease
    # The bot decides fern went silent: the lease expires, frieren takes the job.
    ctx.store.execute("UPDATE jobs SET lease_expires = 0 WHERE id = ?", (job_id,))
    ctx.jobs.expire_leases()
    second = ctx.jobs.take("frieren")
    assert second is not None and second.job.id == job_id
    new_lease = second.job.lease_id
    assert new_lease != old_lease

    # fern's host comes back: its events and its result name the old lease.
    event = call(url, tokens["fern"], f"/api/jobs/{job_id}/events", {"kind": "heartbeat"})
    assert event.status_code == 403  # the job is now leased by another student
    ctx.store.execute("UPDATE jobs SET leased_by = NULL WHERE id = ?", (job_id,))
    stale = call(
        url,
        tokens["fern"],
        f"/api/jobs/{job_id}/events",
        {"kind": "heartbeat", "lease_id": old_lease},
    )
    assert stale.status_code == 409 and "not the current lease" in stale.json()["error"]
    ctx.store.execute("UPDATE jobs SET leased_by = 'frieren' WHERE id = ?", (job_id,))
    done = call(
        url, tokens["frieren"], f"/api/jobs/{job_id}/complete", ok_result(old_lease, [0, 1])
    )
    assert done.status_code == 409
    assert ctx.store.count("SELECT COUNT(*) AS n FROM runs") == 0
    assert ctx.store.one("SELECT state FROM jobs WHERE id = ?", (job_id,))["state"] == "leased"

    # The current lease completes once; a retry of the same lease is a harmless duplicate.
    body = ok_result(new_lease, [0, 1])
    first_try = call(url, tokens["frieren"], f"/api/jobs/{job_id}/complete", body)
    assert first_try.status_code == 200 and first_try.json()["status"] == "stored"
    again = call(url, tokens["frieren"], f"/api/jobs/{job_id}/complete", body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert ctx.store.count("SELECT COUNT(*) AS n FROM runs") == 2
    # ... and the old lease still gets 409 after the job is done.
    late = call(
        url, tokens["frieren"], f"/api/jobs/{job_id}/complete", ok_result(old_lease, [0, 1])
    )
    assert late.status_code == 409
    exp = ctx.store.one("SELECT state, review_requested FROM experiments WHERE id = ?", (exp_id,))
    assert (exp["state"], exp["review_requested"]) == ("review", 1)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        # Five seeds for a two-seed job: the attack from the issue, refused.
        (lambda r: r["runs"].extend([dict(r["runs"][0], seed=s) for s in (2, 3, 4)]), "not asked"),
        (lambda r: r["runs"].pop(), "every seed it was given"),
        # NaN is not JSON: refused while parsing, before it could reach the gate.
        (lambda r: r["runs"][0].update(metric=float("nan")), "expected a JSON result"),
        (lambda r: r["runs"][0].update(metric=True), "number"),
        (lambda r: r["runs"][0].update(metric=None), "needs its metric"),
        (lambda r: r["runs"][0].update(status="exploded"), "is not one of"),
        (lambda r: r.update(status="done"), "status must be one of"),
        (lambda r: r["runs"][0].update(metrics={"loss": "low"}), "map names to numbers"),
        (lambda r: r["runs"][0].update(duration_s=-1), "non-negative"),
    ],
)
def test_a_result_that_does_not_fit_its_job_is_400(bot, change, needle: str) -> None:
    ctx, url, tokens, _ = bot
    leased = ctx.jobs.take("fern")
    assert leased is not None
    body = ok_result(leased.job.lease_id, [0, 1])
    body = json.loads(json.dumps(body))
    change(body)
    response = httpx.post(
        f"{url}/api/jobs/{leased.job.id}/complete",
        content=json.dumps(body, allow_nan=True),
        headers={"Authorization": f"Bearer {tokens['fern']}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
    assert ctx.store.count("SELECT COUNT(*) AS n FROM runs") == 0
    assert ctx.store.one("SELECT state FROM jobs")["state"] == "leased"


def test_another_students_completion_is_refused(bot) -> None:
    ctx, url, tokens, _ = bot
    leased = ctx.jobs.take("fern")
    assert leased is not None
    response = call(
        url,
        tokens["frieren"],
        f"/api/jobs/{leased.job.id}/complete",
        ok_result(leased.job.lease_id, [0, 1]),
    )
    assert response.status_code == 403
    assert validate_result(leased.job, "frieren", JobResult(status="ok")) is not None


def test_a_completion_without_a_lease_id_is_409(bot) -> None:
    ctx, url, tokens, _ = bot
    leased = ctx.jobs.take("fern")
    assert leased is not None
    response = call(
        url, tokens["fern"], f"/api/jobs/{leased.job.id}/complete", ok_result("", [0, 1])
    )
    assert response.status_code == 409


def test_release_names_its_lease(bot) -> None:
    ctx, url, tokens, _ = bot
    leased = ctx.jobs.take("fern")
    assert leased is not None
    job_id = leased.job.id
    wrong = call(url, tokens["fern"], f"/api/jobs/{job_id}/release", lease_id="nope")
    assert wrong.status_code == 409
    right = call(url, tokens["fern"], f"/api/jobs/{job_id}/release", lease_id=leased.job.lease_id)
    assert right.status_code == 200
    job = ctx.store.one("SELECT state, lease_id, attempts FROM jobs WHERE id = ?", (job_id,))
    assert (job["state"], job["lease_id"], job["attempts"]) == ("queued", None, 0)


def test_a_cancelled_job_is_done_without_counting_against_the_experiment(bot) -> None:
    ctx, url, tokens, exp_id = bot
    leased = ctx.jobs.take("fern")
    assert leased is not None
    ctx.store.execute("UPDATE jobs SET cancel = 1")  # what /stop does to a leased job
    reply = call(
        url,
        tokens["fern"],
        f"/api/jobs/{leased.job.id}/events",
        {"kind": "heartbeat", "lease_id": leased.job.lease_id},
    )
    assert reply.json()["cancel"] is True
    result = JobResult(
        status="cancelled",
        runs=[RunResult(seed=0, status="ok", metric=1.0), RunResult(seed=1, status="cancelled")],
        head_sha="c" * 40,
        lease_id=leased.job.lease_id,
    ).to_dict()
    done = call(url, tokens["fern"], f"/api/jobs/{leased.job.id}/complete", result)
    assert done.status_code == 200
    runs = ctx.store.query("SELECT seed, status FROM runs")
    assert runs == [{"seed": 0, "status": "ok"}]  # the cancelled seed is no failure
    assert ctx.store.one("SELECT state FROM jobs")["state"] == "cancelled"
    exp = ctx.store.one("SELECT state, review_requested FROM experiments WHERE id = ?", (exp_id,))
    assert exp["state"] == "review" and exp["review_requested"] == 0


def test_bot_downtime_does_not_expire_leases(bot) -> None:
    ctx, _, _, _ = bot
    leased = ctx.jobs.take("fern")
    assert leased is not None
    ctx.jobs.beat()
    # The bot was down for ten minutes: longer than any lease.
    ctx.store.execute(
        "UPDATE bot_state SET value = ? WHERE key = 'alive_at'", (repr(time.time() - 600),)
    )
    ctx.store.execute("UPDATE jobs SET lease_expires = ?", (time.time() - 540,))
    downtime = ctx.jobs.survive_downtime()
    assert 590 < downtime < 700
    assert ctx.jobs.expire_leases() == []
    assert ctx.store.one("SELECT state FROM jobs")["state"] == "leased"
    # A host that really died is still caught one lease later.
    ctx.store.execute("UPDATE jobs SET lease_expires = ?", (time.time() - 1,))
    assert ctx.jobs.expire_leases() == [leased.job.id]


def test_a_stopped_run_reported_as_a_crash_by_an_older_host_is_no_failure(bot) -> None:
    ctx, url, tokens, exp_id = bot
    leased = ctx.jobs.take("fern")
    assert leased is not None
    ctx.store.execute("UPDATE jobs SET cancel = 1")
    result = JobResult(
        status="crash",
        reason="stopped by /stop",
        runs=[RunResult(seed=0, status="crash", reason="stopped by /stop")],
        lease_id=leased.job.lease_id,
    ).to_dict()
    done = call(url, tokens["fern"], f"/api/jobs/{leased.job.id}/complete", result)
    assert done.status_code == 200
    assert ctx.store.query("SELECT * FROM runs") == []
    assert ctx.store.one("SELECT state FROM jobs")["state"] == "cancelled"
