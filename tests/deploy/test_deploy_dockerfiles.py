"""The Dockerfiles, read instruction by instruction (no engine here to build them)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
SERVER_ONLY = ("litestar", "githubkit", "sqlite-utils", "uvicorn")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def last_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"]
    return steps[starts[-1] :]


def values(steps: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for k, rest in steps if k == keyword]


def assert_non_root(stage: list[tuple[str, str]]) -> None:
    users = values(stage, "USER")
    assert users, "the image runs as root: no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_bot_image_is_slim_python_without_torch() -> None:
    steps = instructions(DOCKER / "Dockerfile.bot")
    stage = last_stage(steps)

    assert all(v.startswith("python:3.11-slim") for v in values(steps, "FROM"))
    assert any("pip install ." in run for run in values(steps, "RUN"))
    assert all("torch" not in rest.lower() for _, rest in steps)
    assert "[" not in " ".join(values(steps, "RUN")), "the bot installs no extras"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("torch") for dep in project["dependencies"])
    assert "KOHAI_DB=/data/kohai.db" in " ".join(values(stage, "ENV"))
    assert " git " in " ".join(values(stage, "RUN"))  # the bot pushes the hosts' bundles
    assert json.loads(values(stage, "VOLUME")[-1]) == ["/data"]
    assert_non_root(stage)
    (healthcheck,) = values(stage, "HEALTHCHECK")
    assert "/healthz" in healthcheck and "CMD" in healthcheck
    cmd = json.loads(values(stage, "CMD")[-1])
    assert cmd == ["kohai", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_host_image_is_cuda_with_torch_and_the_host_extra_only() -> None:
    steps = instructions(DOCKER / "Dockerfile.host")
    args = dict(a.split("=", 1) for a in values(steps, "ARG") if "=" in a)
    runs = " ".join(values(steps, "RUN"))

    assert values(steps, "FROM") == ["${CUDA_IMAGE}"]
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert "torch==${TORCH_VERSION}" in runs and "${TORCH_INDEX_URL}" in runs
    assert "download.pytorch.org/whl/cu" in args["TORCH_INDEX_URL"]
    assert "['optional-dependencies']['host']" in runs
    assert "pip install --no-deps ." in runs
    assert " bubblewrap " in runs and " git " in runs  # the job sandbox; bundles of commits
    assert_non_root(steps)
    assert values(steps, "HEALTHCHECK")
    entrypoint = json.loads(values(steps, "ENTRYPOINT")[-1])
    assert entrypoint[-3:] == ["kohai", "host", "run"]


def test_the_host_extra_needs_none_of_the_servers_dependencies() -> None:
    """What the host image installs instead of `.[host]`'s server half."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    host = " ".join(project["optional-dependencies"]["host"]).lower()

    assert all(name not in host for name in SERVER_ONLY)


@pytest.mark.parametrize("name", ["Dockerfile.bot", "Dockerfile.host"])
def test_copied_files_exist_and_local_state_stays_out(name: str) -> None:
    for source in values(instructions(DOCKER / name), "COPY"):
        if source.startswith("--from") or source.startswith(". "):
            continue
        assert (REPO / source.split()[0]).is_file(), source
    ignored = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    assert ".venv" in ignored and ".git" in ignored and "*.db" in ignored


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "host_healthcheck", DOCKER / "host_healthcheck.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "daemon"),
    [
        (["/opt/kohai/bin/python", "/opt/kohai/bin/kohai", "host", "run", "--name", "fern"], True),
        (["/opt/kohai/bin/kohai", "host", "run"], True),
        (["tini", "--", "kohai", "host", "run"], True),
        (["/opt/kohai/bin/kohai", "hosts", "list"], False),
        (["python", "/opt/kohai/host_healthcheck.py"], False),
        (["kohai", "serve"], False),
    ],
)
def test_healthcheck_recognises_the_daemon(argv: list[str], daemon: bool) -> None:
    assert _healthcheck().is_daemon(argv) is daemon


def test_healthcheck_finds_a_live_daemon_and_not_a_dead_one(tmp_path: Path) -> None:
    health = _healthcheck()
    script = tmp_path / "kohai"
    script.write_text("import sys, time\nif sys.argv[-1] == 'linger':\n    time.sleep(30)\n")
    live = subprocess.Popen([sys.executable, str(script), "host", "run", "linger"])
    dead = subprocess.Popen([sys.executable, str(script), "host", "run", "exit"])
    try:
        deadline = time.monotonic() + 10
        while dead.pid in health.daemon_pids() or live.pid not in health.daemon_pids():
            assert time.monotonic() < deadline, "the daemon stand-ins never settled"
            time.sleep(0.05)
        # `dead` has exited and, not yet waited for, is a zombie: not alive.
        assert live.pid in health.daemon_pids()
        assert dead.pid not in health.daemon_pids()
    finally:
        live.kill()
        live.wait()
        dead.wait()
    assert live.pid not in health.daemon_pids()
