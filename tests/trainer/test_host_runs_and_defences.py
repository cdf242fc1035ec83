"""The host daemon end to end: a hostile checkout ends the job, run dirs go after the ack,
and each host's defences reach the bot's /healthz (the real bot app over HTTP).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from trainer_helpers import TOKEN, FakeBot, job_dict, make_origin

from bot.cli.lab import ServerThread
from bot.config import Settings
from bot.engine.jobs import register_student
from trainer import limits, sandbox
from trainer.daemon import HostDaemon, StudentSpec, host_defences
from trainer.hostapi import HostClient
from webhooks.app import create_app
from webhooks.context import BotContext
from webhooks.hosts import parse_defences

pytestmark = pytest.mark.skipif(sandbox.probe() is not None, reason="bubblewrap cannot start here")

FIFO_SCRIPT = """
    import json, os
    with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
        fh.write(json.dumps({"final": True, "score": 0.5}) + "\\n")
    os.mkfifo("jam.fifo")  # in the checkout: a plain open() of it would block forever
"""


def run_daemon(bot: FakeBot, work: Path, until, *, keep_runs: bool = False) -> None:
    daemon = HostDaemon(
        [StudentSpec("fern", TOKEN, [])], bot.url, work, grace_s=2.0, keep_runs=keep_runs
    )
    daemon.start()
    try:
        bot.wait_for(until, 90.0)  # a hung snapshot would hold the lease far longer
    finally:
        daemon.shutdown()
        daemon.wait()


def test_a_fifo_in_the_checkout_ends_the_job_invalid_and_frees_the_lease(
    tmp_path: Path, fake_bot: FakeBot
) -> None:
    bare, base = make_origin(tmp_path, FIFO_SCRIPT)
    fake_bot.jobs.append(job_dict(bare, base))
    run_daemon(fake_bot, tmp_path / "host", lambda: 7 in fake_bot.completed)
    result = fake_bot.completed[7]
    run = result["runs"][0]
    assert run["status"] == "invalid", run["reason"]
    assert "jam.fifo (fifo)" in run["reason"]
    # The bot acknowledged the result: the job's run directories are gone.
    assert not (tmp_path / "host" / "fern" / "runs" / "job7").exists()


def test_keep_runs_keeps_the_run_directories(tmp_path: Path, fake_bot: FakeBot) -> None:
    bare, base = make_origin(tmp_path)
    fake_bot.jobs.append(job_dict(bare, base))
    run_daemon(fake_bot, tmp_path / "host", lambda: 7 in fake_bot.completed, keep_runs=True)
    assert fake_bot.completed[7]["status"] == "ok"
    seed_dir = tmp_path / "host" / "fern" / "runs" / "job7" / "seed-1"
    assert (seed_dir / "log.txt").is_file()
    assert (seed_dir / "train" / "metrics.jsonl").is_file()


def test_each_lease_tells_the_bot_the_hosts_defences(tmp_path: Path, pem: str) -> None:
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="http://127.0.0.1:9",  # nothing listens: no GitHub call is needed
        db_path=str(tmp_path / "kohai.db"),
    )
    ctx = BotContext.build(settings)
    ctx.workers = []
    with ServerThread(create_app(ctx)) as server:
        token = register_student(ctx.store, "fern")
        said = host_defences(sandboxed=True)
        client = HostClient(server.url, "fern", token, defences=said)
        assert client.lease(wait_s=0) is None
        client.close()
        health = httpx.get(f"{server.url}/healthz", timeout=30).json()
        fern = health["hosts"]["fern"]
        assert fern["defences"]["sandbox"] == "bubblewrap"
        assert fern["defences"]["disk"] == "watcher"
        expected = limits.probe()
        assert fern["defences"]["memory"] == expected.as_dict()["memory"]
        assert fern["degraded"] == sorted(expected.degraded())
        # A host that says it runs on fallbacks is named degraded; what it says is
        # kept only as short plain pairs, never echoed as markup.
        hostile = "sandbox=NONE (--unsandboxed);memory=RLIMIT_AS;x=<img src=//e>;" + "y" * 5000
        client = HostClient(server.url, "fern", token, defences=hostile)
        client.lease(wait_s=0)
        client.close()
        fern = httpx.get(f"{server.url}/healthz", timeout=30).json()["hosts"]["fern"]
        assert fern["degraded"] == ["memory", "sandbox"]
        assert "x" not in fern["defences"] and "<img" not in str(fern)


def test_parse_defences_keeps_plain_pairs_only() -> None:
    parsed = parse_defences("memory=cgroup v1;processes=RLIMIT_NPROC (per user);bad;=x;k=\n")
    assert parsed == {
        "defences": {"memory": "cgroup v1", "processes": "RLIMIT_NPROC (per user)"},
        "degraded": ["processes"],
    }
