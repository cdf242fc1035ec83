"""The host daemon against a real HTTP bot on loopback and real git repositories."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_helpers import TOKEN, FakeBot, git, job_dict, make_origin, push_branch

from trainer.daemon import HostDaemon, StudentSpec, parse_students
from trainer.hostapi import HostClient
from trainer.reporter import JobReporter

REPO_ROOT = Path(__file__).resolve().parents[2]

SLOW_SCRIPT = """
    import json, os, time
    open(os.path.join(os.environ["KOHAI_RUN_DIR"], "pid"), "w").write(str(os.getpid()))
    for step in range(1, 600):
        with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
            fh.write(json.dumps({"step": step, "train_loss": 1.0}) + "\\n")
        time.sleep(0.1)
"""


def run_daemon(bot: FakeBot, work: Path, until, timeout: float = 30.0, token: str = TOKEN) -> int:
    daemon = HostDaemon([StudentSpec("fern", token, [])], bot.url, work, grace_s=2.0)
    daemon.start()
    try:
        bot.wait_for(until, timeout)
    finally:
        daemon.shutdown()
        code = daemon.wait()
    return code


def test_baseline_job_end_to_end(tmp_path: Path, fake_bot: FakeBot) -> None:
    bare, base = make_origin(tmp_path)
    fake_bot.jobs.append(job_dict(bare, base, seeds=[1, 2]))
    assert run_daemon(fake_bot, tmp_path / "host", lambda: 7 in fake_bot.completed) == 0

    result = fake_bot.completed[7]
    assert result["status"] == "ok"
    assert result["head_sha"] == base
    assert [(r["seed"], r["status"]) for r in result["runs"]] == [(1, "ok"), (2, "ok")]
    assert [r["metric"] for r in result["runs"]] == pytest.approx([0.11, 0.12])
    assert result["runs"][0]["curve"][:2] == [[1.0, 2.0], [2.0, 1.0]]
    lease = fake_bot.requests[0]
    assert lease["path"] == "/api/hosts/fern/lease" and lease["query"]["wait"] == ["25"]
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake_bot.requests)
    kinds = fake_bot.kinds(7)
    assert "heartbeat" in kinds and "progress" in kinds and "log" in kinds
    phases = [
        r["body"] for r in fake_bot.requests if r["body"] and r["body"].get("kind") == "phase"
    ]
    # Seed 1 is shown on the PR as soon as it ends; seed 2's result is the completion.
    assert [(p["phase"], p["head_sha"], p["seed"]) for p in phases] == [
        ("training", base, None),
        ("measured", None, 1),
    ]
    assert list(phases[1]["metrics"].values()) == pytest.approx([0.11])
    progress = [
        r["body"] for r in fake_bot.requests if r["body"] and r["body"].get("kind") == "progress"
    ]
    assert {p["seed"] for p in progress} <= {1, 2} and all(p["metrics"] for p in progress)
    assert not (tmp_path / "host" / "fern" / "worktrees" / "fern-job7").exists()


def test_implement_job_commits_pushes_and_trains_the_new_commit(
    tmp_path: Path, fake_bot: FakeBot
) -> None:
    bare, base = make_origin(tmp_path)
    head = push_branch(
        tmp_path, bare, "kohai/3-lr", {"train.py": (tmp_path / "src" / "train.py").read_text()}
    )
    fake_bot.jobs.append(
        job_dict(
            bare,
            base,
            kind="experiment",
            pr_number=3,
            head_ref="kohai/3-lr",
            head_sha=head,
            implement={
                "hypothesis": "A higher LR",
                "title": "Raise LR",
                "knobs": {"LR": 0.5},
                "mode": "offline",
            },
        )
    )
    run_daemon(fake_bot, tmp_path / "host", lambda: 7 in fake_bot.completed)

    result = fake_bot.completed[7]
    assert result["status"] == "ok", result["reason"]
    pushed = git(bare, "rev-parse", "refs/heads/kohai/3-lr")
    assert result["head_sha"] == pushed != head
    assert git(bare, "log", "-1", "--format=%an", pushed) == "kohai student fern"
    assert "LR = 0.5" in git(bare, "show", f"{pushed}:train.py")
    assert result["changed_files"] == ["train.py"]
    assert result["runs"][0]["metric"] == pytest.approx(0.51)
    phases = [
        r["body"]["phase"]
        for r in fake_bot.requests
        if r["body"] and r["body"].get("kind") == "phase"
    ]
    assert phases == ["implementing", "training"]


def test_frozen_edit_is_refused_without_training(tmp_path: Path, fake_bot: FakeBot) -> None:
    bare, base = make_origin(tmp_path)
    head = push_branch(tmp_path, bare, "kohai/4-cheat", {"prepare.py": "OFFSET = 0\n"})
    fake_bot.jobs.append(
        job_dict(
            bare, base, kind="experiment", pr_number=4, head_ref="kohai/4-cheat", head_sha=head
        )
    )
    run_daemon(fake_bot, tmp_path / "host", lambda: 7 in fake_bot.completed)
    result = fake_bot.completed[7]
    assert result["status"] == "refused"
    assert "prepare.py" in result["reason"]
    assert result["runs"] == []


def test_job_survives_the_bot_going_down(tmp_path: Path, fake_bot: FakeBot) -> None:
    bare, base = make_origin(tmp_path)
    fake_bot.jobs.append(job_dict(bare, base))
    went_down: list[float] = []

    def on_event(job_id: int, body: dict) -> None:
        if body["kind"] == "progress" and not went_down:
            went_down.append(time.monotonic())
            fake_bot.down_for(2.5)

    fake_bot.on_event = on_event
    run_daemon(fake_bot, tmp_path / "host", lambda: 7 in fake_bot.completed, timeout=40)
    result = fake_bot.completed[7]
    assert result["status"] == "ok" and result["runs"][0]["metric"] == pytest.approx(0.11)
    complete = next(r for r in fake_bot.requests if r["path"] == "/api/jobs/7/complete")
    assert complete["at"] >= went_down[0] + 2.5  # posted again once the bot was back


def test_stop_from_the_bot_kills_the_run(tmp_path: Path, fake_bot: FakeBot) -> None:
    bare, base = make_origin(tmp_path, SLOW_SCRIPT)
    fake_bot.jobs.append(job_dict(bare, base))

    def on_event(job_id: int, body: dict) -> None:
        if body["kind"] == "progress":
            fake_bot.cancel_jobs.add(job_id)

    fake_bot.on_event = on_event
    started = time.monotonic()
    run_daemon(fake_bot, tmp_path / "host", lambda: 7 in fake_bot.completed)
    assert time.monotonic() - started < 15
    result = fake_bot.completed[7]
    assert result["status"] == "cancelled"  # never a training failure
    assert result["reason"] == "cancelled by the bot"
    assert result["runs"][0]["status"] == "cancelled"


def test_wrong_token_stops_with_an_error(tmp_path: Path, fake_bot: FakeBot) -> None:
    daemon = HostDaemon(
        [StudentSpec("fern", "wrong", [])], fake_bot.url, tmp_path / "host", grace_s=1
    )
    daemon.start()
    assert daemon.wait() == 1
    assert "401" in (daemon.workers[0].error or "")


def test_sigterm_releases_the_running_job(tmp_path: Path, fake_bot: FakeBot) -> None:
    bare, base = make_origin(tmp_path, SLOW_SCRIPT, budget="60s")
    fake_bot.jobs.append(job_dict(bare, base))
    env = dict(
        os.environ,
        KOHAI_SHUTDOWN_GRACE_S="1",
        KOHAI_WANDB="disabled",
        PYTHONPATH=str(REPO_ROOT),
        KOHAI_HOST_TOKEN=TOKEN,
    )
    args = ["host", "run", "--name", "fern", "--bot-url", fake_bot.url]
    args += ["--work-dir", str(tmp_path / "host")]
    launcher = "import sys; from bot.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        fake_bot.wait_for(lambda: "progress" in fake_bot.kinds(7), timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()
    assert fake_bot.released == [7]
    assert 7 not in fake_bot.completed
    # The run wrote its pid, but inside the job sandbox's PID namespace that is not a host
    # pid: look instead for any live process still working in the host's directories.
    assert live_processes_under(tmp_path / "host") == []
    # Released, the job runs again elsewhere: its run directories went with it.
    assert not (tmp_path / "host" / "fern" / "runs" / "job7").exists()


def live_processes_under(root: Path) -> list[int]:
    """Host pids of processes (not zombies) whose working directory is under `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == root or root in cwd.parents):
            found.append(int(entry.name))
    return found


def _token_file(directory: Path, name: str, token: str) -> str:
    path = directory / f"{name}.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def test_students_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {n: _token_file(tmp_path, n, f"t-{n}") for n in ("fern", "frieren", "himmel")}
    args = argparse.Namespace(
        name=None,
        token=None,
        gpus="",
        student=[
            f"fern:0,1:{files['fern']}",
            f"frieren:2,:{files['frieren']}",
            f"himmel::{files['himmel']}",
        ],
    )
    students = parse_students(args)
    assert [(s.name, s.gpus, s.token) for s in students] == [
        ("fern", [0, 1], "t-fern"),
        ("frieren", [2], "t-frieren"),
        ("himmel", [], "t-himmel"),
    ]
    monkeypatch.setenv("KOHAI_HOST_TOKEN", "from-env")
    single = parse_students(argparse.Namespace(name="fern", token=None, gpus="3,", student=[]))
    assert [(s.name, s.gpus, s.token) for s in single] == [("fern", [3], "from-env")]
    monkeypatch.setenv("KOHAI_HOST_TOKEN", "from-env")
    counted = parse_students(argparse.Namespace(name="fern", token=None, gpus="2", student=[]))
    assert [(s.name, s.gpus) for s in counted] == [("fern", [0, 1])]  # a bare number: a count
    with pytest.raises(ValueError, match="GPU 1"):
        parse_students(
            argparse.Namespace(
                name=None,
                token=None,
                gpus="",
                student=[f"a:1,:{files['fern']}", f"b:1,:{files['frieren']}"],
            )
        )
    with pytest.raises(ValueError):
        parse_students(argparse.Namespace(name=None, token=None, gpus="", student=[]))


def test_a_token_on_the_command_line_is_refused(tmp_path: Path) -> None:
    """DESIGN: the host token is never taken on the command line (every user of a shared GPU
    box reads `ps`). `--token T` and `--student NAME:GPUS:T` are refused in one line that
    names the way that works; a token file is taken."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), KOHAI_BOT_WAIT_S="0")
    env.pop("KOHAI_HOST_TOKEN", None)
    common = ["--bot-url", "http://127.0.0.1:9", "--work-dir", str(tmp_path), "--unsandboxed"]

    def host_run(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", "host", "run", *flags, *common],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    for flags in (
        ["--name", "fern", "--token", "kohai_h_secret"],
        ["--student", "fern::kohai_h_secret"],
    ):
        done = host_run(*flags)
        assert done.returncode == 2, done.stderr
        assert "never taken on the command line" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert "kohai_h_secret" not in done.stderr  # the refusal does not repeat it
    done = host_run("--student", f"fern::{_token_file(tmp_path, 'fern', 't')}")
    assert "cannot reach the bot" in done.stderr, done.stderr  # it got past the token


def test_reporter_throttles_progress_and_batches_log_lines(fake_bot: FakeBot) -> None:
    client = HostClient(fake_bot.url, "fern", TOKEN)
    with JobReporter(client, 9, progress_every_s=1.0, log_every_s=1.0) as reporter:
        deadline = time.monotonic() + 1.5
        step = 0
        while time.monotonic() < deadline:
            step += 1
            reporter.progress(1, {"step": step, "train_loss": 1.0 / step})
            reporter.line(f"line {step}")
            time.sleep(0.005)
    client.close()
    bodies = [r["body"] for r in fake_bot.requests if r["path"] == "/api/jobs/9/events"]
    progress = [b for b in bodies if b["kind"] == "progress"]
    assert 1 <= len(progress) <= 3  # ~1.5 s at most one a second, plus the final flush
    assert progress[-1]["step"] == step  # the latest point is never lost
    lines = [line for b in bodies if b["kind"] == "log" for line in b["lines"]]
    assert lines[-1] == f"line {step}"
    assert bodies[0]["kind"] == "heartbeat"
