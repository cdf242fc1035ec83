"""`[data]` and `[eval]` run in the job sandbox, and the host token stays in the daemon's memory.

The end-to-end case: a real host daemon (started as `kohai host run`, with its
token in its own environment, the worst delivery there is) leases a job from
a fake bot on loopback whose problem's `[data]` and `[eval]` commands are a
spy. The spy reads every `/proc/*/environ` and `/proc/*/cmdline` it can
see, its parent's environment, the token file, and connects to a listener of
the test's. What the spy found reaches the bot in the completion (training
prints the data step's findings; the evaluator reports its own as the
invalid reason). Sandboxed, the token appears nowhere and every attempt
fails; the same job on a host started `--unsandboxed` (a control, as `[data]`
ran before) hands the token to the spy.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from trainer_helpers import FakeBot, git, job_dict

from tests.support.listener import Listener
from trainer import daemon
from trainer.daemon import check_token_mode, parse_students, read_token_file

pytestmark = pytest.mark.timeout(180)

SECRET = "khost_spy_target_5f3c9a0e1d2b4c6a"
REPO_ROOT = Path(__file__).resolve().parents[2]

SPY = """
import glob, json, os, socket, sys
SECRET_HINT = "KOHAI_HOST_TOKEN"
findings = []
def note(what, value):
    findings.append(f"{what}={value}")
try:
    text = open(f"/proc/{os.getppid()}/environ", "rb").read().decode(errors="replace")
    note("ppid-environ", text if SECRET_HINT in text else "no-token")
except OSError as exc:
    note("ppid-environ", f"denied:{exc.errno}")
hits = []
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        text = open(path, "rb").read().decode(errors="replace")
    except OSError:
        continue
    if SECRET_HINT in text or "--token" in text:
        hits.append(f"{path}:{text}")
note("proc-hits", hits)
try:
    note("token-file", open(TOKEN_FILE).read())
except OSError as exc:
    note("token-file", f"denied:{exc.errno}")
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    note("network", "connected")
except OSError as exc:
    note("network", f"refused:{exc.errno}")
report = f"SPY {sys.argv[1]}: " + " | ".join(findings)
print(report, flush=True)
if sys.argv[1] == "data":
    with open(os.path.join(os.environ["KOHAI_DATA_DIR"], "findings.txt"), "w") as fh:
        fh.write(report)
else:
    with open(os.environ["KOHAI_EVAL_FILE"], "w") as fh:
        json.dump({"invalid": report}, fh)
"""

TRAIN = """
import os
print(open(os.path.join(os.environ["KOHAI_DATA_DIR"], "findings.txt")).read(), flush=True)
open(os.path.join(os.environ["KOHAI_RUN_DIR"], "model.bin"), "wb").write(b"weights")
"""

TOML = """
[metric]
name = "score"
direction = "minimize"
[train]
command = "python train.py"
budget = "30s"
grace = "5s"
[files]
editable = ["train.py"]
frozen = ["spy.py"]
[data]
command = "python spy.py data"
[eval]
command = "python spy.py eval"
budget = "60s"
"""


def spy_origin(tmp_path: Path, token_file: Path, port: int) -> tuple[Path, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kohai.toml").write_text(TOML)
    (src / "spy.py").write_text(f"TOKEN_FILE = {str(token_file)!r}\nPORT = {port}\n" + SPY)
    (src / "train.py").write_text(textwrap.dedent(TRAIN))
    git(src, "init", "--quiet", "--initial-branch=main")
    git(src, "add", "--all")
    git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "base")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(src), str(bare))
    return bare, git(src, "rev-parse", "HEAD")


def run_spy_job(tmp_path: Path, *, unsandboxed: bool) -> tuple[dict, int]:
    """One job on a real daemon holding SECRET in its environment; (completion, connections)."""
    token_file = tmp_path / "host.token"
    token_file.write_text(SECRET + "\n")
    token_file.chmod(0o600)
    listener = Listener()
    bot = FakeBot(token=SECRET)
    try:
        bare, base = spy_origin(tmp_path, token_file, listener.port)
        bot.jobs.append(job_dict(bare, base))
        env = dict(os.environ, KOHAI_WANDB="disabled", PYTHONPATH=str(REPO_ROOT))
        env["KOHAI_HOST_TOKEN"] = SECRET
        args = ["host", "run", "--name", "fern", "--bot-url", bot.url]
        args += ["--work-dir", str(tmp_path / "host"), *(["--unsandboxed"] if unsandboxed else [])]
        launcher = "import sys; from bot.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            bot.wait_for(lambda: 7 in bot.completed, timeout=150)
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        return bot.completed[7], listener.accepted
    finally:
        bot.stop()
        listener.close()


def test_data_and_eval_cannot_reach_the_daemon_its_token_or_the_network(tmp_path: Path) -> None:
    completion, connections = run_spy_job(tmp_path, unsandboxed=False)
    text = json.dumps(completion)
    assert SECRET not in text
    run = completion["runs"][0]
    # Both steps ran and reported: the data step's findings in training's output,
    # the evaluator's as its result.
    assert "SPY data: " in run["log_tail"], run
    assert run["status"] == "invalid" and "SPY eval: " in run["reason"], run
    for report in (run["log_tail"], run["reason"]):
        assert "proc-hits=[]" in report
        assert "token-file=denied:2" in report  # no such file in the sandbox
        assert "network=refused:" in report
        assert "ppid-environ=denied" in report or "ppid-environ=no-token" in report
    assert connections == 0


def test_control_an_unsandboxed_host_hands_the_spy_its_token(tmp_path: Path) -> None:
    """Proof that the spy works: without the sandbox it finds the token and the network."""
    completion, connections = run_spy_job(tmp_path, unsandboxed=True)
    assert SECRET in json.dumps(completion)
    assert connections >= 1


# ------------------------------------------------------------ token delivery


@pytest.mark.parametrize(
    ("mode", "ok"),
    [(0o100600, True), (0o100400, True), (0o100640, False), (0o100604, False), (0o020600, False)],
)
def test_check_token_mode_refuses_what_others_can_read(mode: int, ok: bool) -> None:
    if ok:
        check_token_mode(mode, "t")
    else:
        with pytest.raises(ValueError, match="token-file t"):
            check_token_mode(mode, "t")


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = dict(name="fern", token=None, token_file=None, gpus="", student=[])
    base.update(kw)
    return argparse.Namespace(**base)


def test_a_token_file_is_read_only_when_private_and_the_env_copy_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("from-file\n")
    path.chmod(0o640)
    with pytest.raises(ValueError, match="chmod 600"):
        parse_students(_args(token_file=str(path)))
    path.chmod(0o600)
    monkeypatch.setenv("KOHAI_HOST_TOKEN", "from-env")
    students = parse_students(_args(token_file=str(path)))
    assert [(s.name, s.token) for s in students] == [("fern", "from-file")]
    assert "KOHAI_HOST_TOKEN" not in os.environ  # no child of the daemon inherits it


def test_the_token_from_standard_input_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin\n"))
    assert read_token_file("-") == "from-stdin"
    monkeypatch.setenv("KOHAI_HOST_TOKEN", "from-env")
    students = parse_students(_args())
    assert [s.token for s in students] == ["from-env"]
    assert "KOHAI_HOST_TOKEN" not in os.environ


def test_spawn_passes_the_token_on_stdin_never_in_argv_or_environ(tmp_path: Path) -> None:
    """The daemon `spawn` starts authenticates, and its /proc shows the token nowhere."""
    bot = FakeBot(token=SECRET)
    env = dict(os.environ, KOHAI_HOST_TOKEN=SECRET, PYTHONPATH=str(REPO_ROOT))
    proc = daemon.spawn(
        "fern",
        SECRET,
        bot.url,
        tmp_path / "host",
        env=env,
        unsandboxed=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        bot.wait_for(lambda: any(r["auth"] == f"Bearer {SECRET}" for r in bot.requests), timeout=60)
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in environ
        assert SECRET.encode() not in cmdline
        assert stat.S_ISFIFO(os.stat(f"/proc/{proc.pid}/fd/0").st_mode)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        bot.stop()
