"""The sandbox's minimal file system, the model launcher, and `[data] network`, run for real.

Each check runs code inside bubblewrap and looks at what it could see or do:
only the interpreter the job runs on (no other standard library, no /usr
as a whole, no /etc/passwd), yet Python, torch and a shell still work; each
model child the harness starts for the evaluator is a fresh sandbox that
dies with its client; and a `[data]` step reaches the network only when the
problem declares it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from bot.problem import ProblemError, loads_problem
from tests.support.listener import Listener
from trainer import model_launch, sandbox
from trainer.harness import prepare_data
from trainer.sandbox import Sandbox, allowlisted_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    assert sandbox.probe() is None, f"`make test` installs bubblewrap: {sandbox.probe()}"


def inside(tmp_path: Path, script: str) -> dict:
    box = Sandbox(work=tmp_path, env=allowlisted_env(os.environ))
    proc = subprocess.run(
        box.argv([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_only_the_running_interpreter_and_what_it_needs_are_bound(tmp_path: Path) -> None:
    seen = inside(
        tmp_path,
        """
        import json, os, subprocess
        import numpy, torch  # the job's packages and their shared libraries load
        stdlibs = []
        for top, dirs, files in os.walk("/"):
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev")]
            if "os.py" in files and "abc.py" in files:
                stdlibs.append(top)
        print(json.dumps({
            "stdlibs": stdlibs,
            "usr": sorted(os.listdir("/usr")),
            "usr_lib": sorted(os.listdir("/usr/lib")),
            "etc": sorted(os.listdir("/etc")),
            "shell": subprocess.run(["/bin/sh", "-c", "echo ok"], capture_output=True,
                                    text=True).stdout.strip(),
            "torch": float(torch.ones(3).sum()),
        }))
        """,
    )
    # Exactly one standard library: this interpreter's. No /usr/lib/python3*, no
    # other pyenv or conda interpreter with its own copy of pydoc_data.
    assert seen["stdlibs"] == [sysconfig.get_paths()["stdlib"]]
    assert "share" not in seen["usr"] and "include" not in seen["usr"]
    assert not any(name.startswith("python") for name in seen["usr_lib"])
    assert "passwd" not in seen["etc"] and "shadow" not in seen["etc"]
    assert "hosts" not in seen["etc"] and "resolv.conf" not in seen["etc"]
    assert "ld.so.cache" in seen["etc"]
    assert seen["shell"] == "ok" and seen["torch"] == 3.0


def test_the_resolver_and_tls_roots_come_only_with_the_network() -> None:
    quiet = sandbox.system_binds(network=False)
    loud = sandbox.system_binds(network=True)
    assert not set(sandbox.NETWORK_PATHS) & set(quiet)
    assert set(loud) - set(quiet) <= set(sandbox.NETWORK_PATHS) | {"--ro-bind"}


# ------------------------------------------------------------ the model launcher


def wrap_with(code: Path) -> model_launch.Wrap:
    """Each child in a sandbox of its own: `code` read-only, its fresh directory writable."""

    def wrap(command: list[str], env: Mapping[str, str], work: Path) -> list[str]:
        box = Sandbox(work=work, readonly=(code,), env=sandbox.job_env(dict(env)), init=True)
        return box.argv(command, cwd=work)

    return wrap


CHILD = r"""
import os, sys, time
mode = sys.argv[1]
if mode == "echo":
    sys.stdout.write(sys.stdin.read().upper()); sys.exit(3)
if mode == "mark":
    found = [p for p in ("/tmp/mark", "mark") if os.path.exists(p)]
    for p in ("/tmp/mark", "mark"):
        open(p, "w").write("x")
    print(",".join(found) or "clean")
if mode == "hang":
    print("up", flush=True)
    time.sleep(600)
"""


def client(launcher: model_launch.ModelLauncher, tmp_path: Path, mode: str, **kw: object):
    script = tmp_path / "code" / "child.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(CHILD)
    return subprocess.Popen(
        [*launcher.client_argv(), sys.executable, str(script), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "KOHAI_CANDIDATE_DIR": str(tmp_path)},
        **kw,  # type: ignore[arg-type]
    )


def test_the_launcher_runs_the_command_on_the_clients_pipes_with_its_exit_code(
    tmp_path: Path,
) -> None:
    with model_launch.launcher(wrap_with(tmp_path / "code"), tmp_path / "children") as launcher:
        proc = client(launcher, tmp_path, "echo")
        out, err = proc.communicate(b"logits please", timeout=60)
    assert out == b"LOGITS PLEASE", err
    assert proc.returncode == 3


def test_each_child_is_a_fresh_sandbox_that_keeps_nothing(tmp_path: Path) -> None:
    """What one child writes (its /tmp, its directory) is gone for the next."""
    with model_launch.launcher(wrap_with(tmp_path / "code"), tmp_path / "children") as launcher:
        first = client(launcher, tmp_path, "mark").communicate(timeout=60)[0]
        second = client(launcher, tmp_path, "mark").communicate(timeout=60)[0]
    assert first.strip() == b"clean" and second.strip() == b"clean"
    assert not (tmp_path / "children").exists() or not any((tmp_path / "children").iterdir())


def test_a_client_that_dies_takes_its_child_with_it(tmp_path: Path) -> None:
    with model_launch.launcher(wrap_with(tmp_path / "code"), tmp_path / "children") as launcher:
        proc = client(launcher, tmp_path, "hang")
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        assert len(launcher.children) == 1
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while launcher.children and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not launcher.children


# ------------------------------------------------------------ [data] network


HEAD = '[metric]\nname = "score"\ndirection = "minimize"\n[train]\ncommand = "python train.py"\n'


@pytest.mark.parametrize("network", [False, True])
def test_the_data_step_reaches_the_network_only_when_declared(
    tmp_path: Path, network: bool
) -> None:
    listener = Listener()
    try:
        base = tmp_path / "base"
        base.mkdir()
        (base / "fetch.py").write_text(
            "import socket, sys\n"
            f"socket.create_connection(('127.0.0.1', {listener.port}), timeout=5).close()\n"
        )
        problem = loads_problem(
            HEAD + f'[data]\ncommand = "python fetch.py"\nnetwork = {str(network).lower()}\n'
        )
        assert problem.data_network is network
        failure = prepare_data(problem, base, tmp_path / "data", tmp_path / "log.txt")
    finally:
        listener.close()
    log = (tmp_path / "log.txt").read_text()
    if network:
        assert failure is None, log
        assert listener.accepted == 1
        assert "with network" in log
    else:
        assert failure is not None and "[data] command failed" in failure
        assert listener.accepted == 0
        assert "no network" in log


def test_data_network_must_be_a_boolean() -> None:
    with pytest.raises(ProblemError, match="data.network"):
        loads_problem(HEAD + '[data]\ncommand = "python d.py"\nnetwork = "yes"\n')
