"""The job sandbox against hostile scripts: each runs for real under bubblewrap.

Every test starts a real Python script through `Sandbox(...).argv(...)` and
checks from the outside (the host's files, the test's own listener, `ps`)
that what the script tried did not happen, and the honest path still works.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trainer import sandbox
from trainer.sandbox import Sandbox, allowlisted_env

pytestmark = pytest.mark.timeout(60)

FAKE_TOKEN = "khost_fake_0123456789abcdef"


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    reason = sandbox.probe()
    assert reason is None, f"`make test` installs bubblewrap; it cannot start here: {reason}"


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A job checkout: a git repository with one commit, as the host would make it."""
    work = tmp_path / "job"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "train.py").write_text("print('train')\n")
    return work


def run(
    box: Sandbox, script: str, *, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `script` with this Python inside `box`; the script prints a JSON report."""
    return subprocess.run(
        box.argv([sys.executable, "-c", script], cwd=cwd or box.work),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def report(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_honest_path_runs_python_writes_into_work_and_sees_its_env(job: Path) -> None:
    env = allowlisted_env(os.environ, {"KOHAI_SEED": "7", "KOHAI_RUN_DIR": str(job)})
    script = """
import json, os, pathlib, sys
pathlib.Path("artefact.bin").write_bytes(b"weights")
print(json.dumps({"seed": os.environ["KOHAI_SEED"], "home": os.environ["HOME"],
                  "cwd": os.getcwd(), "tmp": os.access("/tmp", os.W_OK)}))
"""
    out = report(run(Sandbox(work=job, env=env), script))
    assert out == {"seed": "7", "home": "/tmp", "cwd": str(job), "tmp": True}
    assert (job / "artefact.bin").read_bytes() == b"weights"


def test_secrets_are_in_neither_the_env_nor_any_visible_proc_environ(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host token and API keys in the daemon's env must not reach agent code."""
    monkeypatch.setenv("KOHAI_HOST_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_TOKEN + "w")
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_TOKEN + "a")
    host_pid = os.getpid()  # this process plays the daemon: its environ holds the token
    script = f"""
import json, os
found = {{"env": dict(os.environ), "proc": {{}}}}
for pid in ["1", "self", "{host_pid}", *[p for p in os.listdir("/proc") if p.isdigit()]]:
    try:
        found["proc"][pid] = open(f"/proc/{{pid}}/environ", "rb").read().decode(errors="replace")
    except OSError as exc:
        found["proc"][pid] = f"error: {{exc.strerror}}"
print(json.dumps(found))
"""
    out = report(run(Sandbox(work=job, env=allowlisted_env(os.environ)), script))
    assert FAKE_TOKEN not in json.dumps(out)
    assert not {"KOHAI_HOST_TOKEN", "WANDB_API_KEY", "ANTHROPIC_API_KEY"} & set(out["env"])
    # The daemon's pid does not exist in the sandbox's PID namespace.
    assert out["proc"][str(host_pid)].startswith("error") or host_pid < 10


def test_a_tcp_connection_to_a_loopback_listener_fails(job: Path) -> None:
    accepted: list[object] = []
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(0.2)

        def accept() -> None:
            while not done.is_set() and not accepted:
                try:
                    accepted.append(server.accept())
                except TimeoutError:
                    pass

        watcher = threading.Thread(target=accept)
        watcher.start()
        script = f"""
import json, socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"{FAKE_TOKEN}")
    print(json.dumps({{"connected": True}}))
except OSError as exc:
    print(json.dumps({{"connected": False, "error": str(exc)}}))
"""
        out = report(run(Sandbox(work=job, env=allowlisted_env({})), script))
        done.set()
        watcher.join()
    assert out["connected"] is False, out
    assert accepted == []


def test_writes_outside_the_job_directory_fail(job: Path, tmp_path: Path) -> None:
    outside = tmp_path / "host-file.txt"
    outside.write_text("host\n")
    targets = [str(outside), str(tmp_path / "new.txt"), "/etc/kohai-pwned", "/usr/pwned"]
    script = f"""
import json
results = {{}}
for target in {targets!r}:
    try:
        with open(target, "w") as f:
            f.write("pwned")
        results[target] = "written"
    except OSError as exc:
        results[target] = exc.strerror
print(json.dumps(results))
"""
    out = report(run(Sandbox(work=job, env=allowlisted_env({})), script))
    assert outside.read_text() == "host\n"
    assert not (tmp_path / "new.txt").exists()
    assert not Path("/etc/kohai-pwned").exists() and not Path("/usr/pwned").exists()
    # Inside, the host's tmp_path is either absent or read-only; nothing was written.
    assert "written" not in out.values() or all(
        not Path(t).exists() or Path(t).read_text() != "pwned" for t in targets
    )


def test_the_host_home_and_work_dir_are_not_visible(job: Path, tmp_path: Path) -> None:
    cache = tmp_path / "repos" / "lab__charlm.git"
    cache.mkdir(parents=True)
    (cache / "config").write_text("[core]\n")
    script = f"""
import json, os
print(json.dumps({{p: os.path.exists(p) for p in
    ["{cache}", "/root/.ssh", "/root/.gitconfig", "{Path.home() / ".bash_history"}"]}}))
"""
    out = report(run(Sandbox(work=job, env=allowlisted_env({})), script))
    assert out == dict.fromkeys(out, False)


def test_a_setsid_double_forked_child_dies_with_the_job(job: Path) -> None:
    """The survivor would touch a file in the (writable) job dir a moment later."""
    marker = job / "survivor-was-here"
    tag = f"kohai-survivor-{os.getpid()}-{time.monotonic_ns()}"
    script = f"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        sys.argv[0] = "{tag}"
        time.sleep(1.5)
        open("{marker}", "w").write("alive")
        os._exit(0)
    os._exit(0)
time.sleep(0.2)
print('{{"parent": "exits"}}')
"""
    box = Sandbox(work=job, env=allowlisted_env({}))
    proc = subprocess.run(
        box.argv([sys.executable, "-c", script, tag], cwd=job),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert report(proc) == {"parent": "exits"}
    time.sleep(2.5)
    assert not marker.exists(), "a setsid child outlived the sandbox"
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert tag not in ps


def test_git_hooks_and_git_config_cannot_be_planted(job: Path) -> None:
    config_before = (job / ".git" / "config").read_text()
    script = """
import json, os
results = {}
for path, body in [(".git/hooks/pre-push", "#!/bin/sh\\ncurl evil\\n"),
                   (".git/config", "[core]\\n\\tfsmonitor = /tmp/evil\\n\\thooksPath = /tmp\\n"),
                   (".git/info/attributes", "* filter=evil\\n")]:
    try:
        with open(path, "a") as f:
            f.write(body)
        results[path] = "written"
    except OSError as exc:
        results[path] = exc.strerror
import subprocess
git = subprocess.run(["git", "config", "core.hooksPath", "/tmp"], capture_output=True, text=True)
results["git config"] = git.returncode
print(json.dumps(results))
"""
    out = report(run(Sandbox(work=job, env=allowlisted_env(os.environ)), script))
    assert out[".git/hooks/pre-push"] == "Read-only file system"
    assert out[".git/config"] == "Read-only file system"
    assert out["git config"] != 0
    assert not (job / ".git" / "hooks" / "pre-push").exists()
    assert (job / ".git" / "config").read_text() == config_before
    # The working tree itself stays writable: the agent's edits land.
    assert report(run(Sandbox(work=job, env={}), "open('train.py','a');print('{}')")) == {}


def test_hidden_paths_cannot_be_read(job: Path, tmp_path: Path) -> None:
    data = job / "eval-data"
    data.mkdir()
    (data / "val.bin").write_text("the evaluation split")
    secret = job / "answers.txt"
    secret.write_text("42")
    script = """
import json, os
out = {"dir": os.listdir("eval-data")}
for name in ["answers.txt", "eval-data/val.bin"]:
    try:
        out[name] = open(name).read()
    except OSError as exc:
        out[name] = exc.strerror
print(json.dumps(out))
"""
    out = report(run(Sandbox(work=job, hide=(data, secret), env={}), script))
    assert out["dir"] == []
    assert out["eval-data/val.bin"] == "No such file or directory"
    assert out["answers.txt"] in ("", "Permission denied")  # masked by /dev/null
    assert (data / "val.bin").read_text() == "the evaluation split"


def test_readonly_binds_are_visible_but_not_writable(job: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "prepare.py").write_text("FROZEN = 1\n")
    script = f"""
import json
out = {{"read": open("{base}/prepare.py").read()}}
try:
    open("{base}/prepare.py", "w").write("FROZEN = 2")
except OSError as exc:
    out["write"] = exc.strerror
print(json.dumps(out))
"""
    out = report(run(Sandbox(work=job, readonly=(base,), env={}), script))
    assert out == {"read": "FROZEN = 1\n", "write": "Read-only file system"}


def test_signal_tree_delivers_sigterm_inside_so_the_script_can_save(job: Path) -> None:
    script = """
import signal, sys, time, pathlib
def save(*_):
    pathlib.Path("saved").write_text("ok")
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
pathlib.Path("started").write_text("1")
time.sleep(30)
"""
    box = Sandbox(work=job, env={})
    proc = subprocess.Popen(box.argv([sys.executable, "-c", script], cwd=job))
    deadline = time.monotonic() + 10
    while not (job / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sandbox.signal_tree(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert (job / "saved").read_text() == "ok"


@pytest.mark.parametrize(
    "name",
    [
        "KOHAI_HOST_TOKEN",
        "GITHUB_TOKEN",
        "WANDB_API_KEY",
        "ANTHROPIC_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "PYTHONPATH",
        "PYTHON_KEYRING_PASSWORD",
        "HOME",
        "SSH_AUTH_SOCK",
        "GIT_CONFIG_VALUE_0",
        "LD_PRELOAD",
    ],
)
def test_allowlisted_env_drops_credentials_and_host_settings(name: str) -> None:
    env = allowlisted_env({name: "leak", "PATH": "/usr/bin", "LC_ALL": "C", "CUDA_HOME": "/c"})
    assert env.get(name) != "leak"
    assert env["PATH"] == "/usr/bin" and env["LC_ALL"] == "C" and env["CUDA_HOME"] == "/c"
    assert env["HOME"] == "/tmp"


def test_allowlisted_env_puts_extra_on_top() -> None:
    env = allowlisted_env({"PATH": "/a"}, {"PATH": "/b", "ANTHROPIC_API_KEY": "model-key"})
    assert env["PATH"] == "/b" and env["ANTHROPIC_API_KEY"] == "model-key"


def test_probe_names_a_missing_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")
    reason = sandbox.probe.__wrapped__()
    assert reason is not None and "not installed" in reason
    with pytest.raises(sandbox.SandboxUnavailable):
        monkeypatch.setattr(sandbox, "probe", lambda: reason)
        sandbox.require()


def test_host_run_refuses_without_a_sandbox_and_names_the_way_out(tmp_path: Path) -> None:
    """A host where bubblewrap is missing stops at start-up; --unsandboxed is the choice."""
    root = Path(__file__).resolve().parents[2]
    env = {
        "PATH": str(tmp_path),  # no bwrap here
        "KOHAI_HOST_TOKEN": FAKE_TOKEN,
        "PYTHONPATH": str(root),
    }
    args = ["host", "run", "--name", "fern", "--bot-url", "http://127.0.0.1:9", "--work-dir"]
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args, str(tmp_path / "host")],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "the job sandbox cannot start: bubblewrap (bwrap) is not installed" in proc.stderr
    assert "--unsandboxed" in proc.stderr
    assert FAKE_TOKEN not in proc.stderr + proc.stdout


def test_sandbox_refusal_is_none_when_it_starts_or_when_told_unsandboxed() -> None:
    from trainer.daemon import sandbox_refusal

    assert sandbox_refusal(None, False) is None
    assert sandbox_refusal("no userns", True) is None
    assert "no userns" in (sandbox_refusal("no userns", False) or "")


def test_with_kohai_init_the_commands_usage_reaches_wait4(job: Path) -> None:
    """bwrap's own PID 1 is never waited for; kohai's is, so peak memory and CPU are measured."""
    burn = (
        "x = bytearray(150_000_000)\nimport time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.5: pass\n"
    )
    box = Sandbox(work=job, env=allowlisted_env({}), init=True)
    proc = subprocess.Popen(box.argv([sys.executable, "-c", burn], cwd=job))
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_maxrss / 1024 > 140 and usage.ru_utime + usage.ru_stime >= 0.45


@pytest.mark.parametrize("handler", [True, False])
def test_signal_init_gives_sigterm_its_default_action_or_the_handler(
    job: Path, handler: bool
) -> None:
    script = (
        "import pathlib, signal, sys, time\n"
        + (
            "signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path('saved').write_text('ok'),"
            " sys.exit(0)))\n"
            if handler
            else ""
        )
        + "pathlib.Path('started').write_text('1')\ntime.sleep(30)\n"
    )
    box = Sandbox(work=job, env=allowlisted_env({}), init=True)
    proc = subprocess.Popen(box.argv([sys.executable, "-c", script], cwd=job))
    deadline = time.monotonic() + 10
    while not (job / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sandbox.signal_init(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=10)
    if handler:
        assert code == 0 and (job / "saved").read_text() == "ok"
    else:
        assert sandbox.unwrap_exit(code) == -signal.SIGTERM


def test_kohai_init_still_ends_a_setsid_survivor(job: Path) -> None:
    tag = f"kohai-init-survivor-{os.getpid()}-{time.monotonic_ns()}"
    script = f"""
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["sh", "-c", "sleep 30", "{tag}"])
    os._exit(0)
os.wait()
"""
    box = Sandbox(work=job, env=allowlisted_env({}), init=True)
    assert (
        subprocess.run(box.argv([sys.executable, "-c", script], cwd=job), timeout=20).returncode
        == 0
    )
    time.sleep(0.3)
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert tag not in ps


@pytest.mark.parametrize(
    "code, unwrapped", [(0, 0), (1, 1), (143, -15), (137, -9), (255, 255), (160, -32), (None, None)]
)
def test_unwrap_exit(code: int | None, unwrapped: int | None) -> None:
    assert sandbox.unwrap_exit(code) == unwrapped


@pytest.mark.parametrize("sandboxed", [True, False])
def test_the_run_log_says_whether_the_run_was_sandboxed(tmp_path: Path, sandboxed: bool) -> None:
    from bot.problem import loads_problem
    from trainer.harness import run_once

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("print('val_bpb: 1.25')\n")
    problem = loads_problem(
        '[metric]\nname = "val_bpb"\n[train]\ncommand = "python train.py"\nbudget = "5s"\n'
    )
    result = run_once(repo, problem, 0, run_dir=tmp_path / "run", sandboxed=sandboxed)
    assert result.status == "ok" and result.metric == 1.25 and result.sandboxed is sandboxed
    log = (tmp_path / "run" / "log.txt").read_text()
    expected = "# job sandbox (bubblewrap): no network" if sandboxed else "# UNSANDBOXED"
    assert expected in log


def test_a_sigterm_sent_at_once_is_not_lost_before_kohai_init_is_ready(job: Path) -> None:
    """A PID 1 ignores signals it has no handler for: signal_init waits for the handler."""
    box = Sandbox(work=job, env=allowlisted_env({}), init=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        box.argv([sys.executable, "-c", "import time; time.sleep(30)"], cwd=job)
    )
    sandbox.signal_init(proc.pid, signal.SIGTERM)
    assert sandbox.unwrap_exit(proc.wait(timeout=25)) == -signal.SIGTERM
    assert time.monotonic() - started < 20  # a lost signal would leave it asleep for 30 s
