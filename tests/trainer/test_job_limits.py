"""Per-job limits on real processes in the job sandbox: memory, processes, disk, log size.

Each hostile script runs through the real harness in bubblewrap, under the
limits of its `kohai.toml` (`[train] memory`, `processes`, `disk`), with the
mechanism this host offers (a cgroup where one is writable, rlimits
otherwise; the rlimit fallback is forced in its own tests). Every run ends
`crash` with the reason naming the limit.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from bot.problem import ProblemError, Resources, loads_problem
from bot.protocol import RunResult
from trainer import limits, sandbox
from trainer.harness import run_once
from trainer.limits import Defences, Guard, Limits, exit_verdict

pytestmark = pytest.mark.skipif(sandbox.probe() is not None, reason="bubblewrap cannot start here")

HOST = limits.probe()


def make_repo(root: Path, train_py: str, train_extra: str, budget: str = "20s") -> Path:
    root.mkdir(parents=True)
    (root / "kohai.toml").write_text(
        textwrap.dedent(
            f"""
            [metric]
            name = "score"
            [train]
            command = "python train.py"
            budget = "{budget}"
            grace = "2s"
            """
        )
        + train_extra
        + '\n[files]\neditable = ["train.py"]\nfrozen = []\n'
    )
    (root / "train.py").write_text(textwrap.dedent(train_py))
    return root


def run(tmp_path: Path, train_py: str, train_extra: str) -> tuple[RunResult, float]:
    repo = make_repo(tmp_path / "repo", train_py, train_extra)
    problem = loads_problem((repo / "kohai.toml").read_text())
    started = time.monotonic()
    result = run_once(repo, problem, 0, run_dir=tmp_path / "run")
    return result, time.monotonic() - started


def leftover_cgroups() -> list[Path]:
    found: list[Path] = []
    for controller in (HOST.memory, HOST.pids):
        if controller is not None:
            found += controller.parent.glob(f"{limits.CGROUP_PREFIX}{os.getpid()}-*")
    return found


FORK_400 = """
    import os, time
    children = 0
    try:
        for _ in range(400):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
    except OSError as exc:
        print(f"fork {children + 1} failed: {exc}", flush=True)
    print("score: 0.5")  # exits 0: the verdict comes from the limit, not the exit
"""

MEMORY_HOG = """
    chunks = []
    for _ in range(64):  # 1 GB, every page written
        chunks.append(b"\\x01" * (16 << 20))
    print("score: 0.5")
"""

BIG_FILE = """
    import os
    with open(os.path.join(os.environ["KOHAI_RUN_DIR"], "huge.bin"), "wb") as fh:
        block = b"\\x00" * (1 << 20)
        for _ in range(1200):  # 1.2 GB in one file
            fh.write(block)
    print("score: 0.5")
"""

MANY_FILES = """
    import os, time
    run_dir = os.environ["KOHAI_RUN_DIR"]
    for i in range(200):  # 8 MB files, far past the disk limit, each under the file limit
        with open(os.path.join(run_dir, f"part{i}.bin"), "wb") as fh:
            fh.write(os.urandom(8 << 20))
        time.sleep(0.1)
    print("score: 0.5")
"""


@pytest.mark.skipif(HOST.pids is None, reason="no writable pids cgroup here")
def test_four_hundred_processes_end_as_too_many_processes(tmp_path: Path) -> None:
    result, took = run(tmp_path, FORK_400, "processes = 64\n")
    assert result.status == "crash", (result.status, result.reason, result.log_tail)
    assert result.reason.startswith("too many processes"), result.reason
    assert "64" in result.reason
    assert took < 60.0  # the 60 s sleepers ended with the run
    assert leftover_cgroups() == []


@pytest.mark.skipif(HOST.memory is None, reason="no writable memory cgroup here")
def test_a_memory_hog_ends_as_out_of_memory(tmp_path: Path) -> None:
    result, _ = run(tmp_path, MEMORY_HOG, 'memory = "256M"\n')
    assert result.status == "crash", (result.status, result.reason)
    assert result.reason.startswith("out of memory"), result.reason
    assert "256MB" in result.reason
    assert leftover_cgroups() == []


def test_a_memory_hog_under_rlimits_alone_ends_as_out_of_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host without a writable cgroup: RLIMIT_AS per process, a working fallback.
    monkeypatch.setattr(limits, "probe", lambda: Defences())
    result, _ = run(tmp_path, MEMORY_HOG, 'memory = "512M"\n')
    assert result.status == "crash", (result.status, result.reason)
    assert result.reason.startswith("out of memory"), result.reason


def test_a_gigabyte_file_ends_as_disk_quota(tmp_path: Path) -> None:
    result, took = run(tmp_path, BIG_FILE, 'disk = "64M"\n')
    assert result.status == "crash", (result.status, result.reason)
    assert result.reason.startswith("disk quota"), result.reason
    huge = tmp_path / "run" / "train" / "huge.bin"
    assert huge.stat().st_size <= 64 << 20  # RLIMIT_FSIZE stopped it at the limit


def test_many_files_past_the_disk_limit_stop_the_job(tmp_path: Path) -> None:
    # Each file is under the file-size limit: the watcher sums them and stops the job.
    result, took = run(tmp_path, MANY_FILES, 'disk = "48M"\n')
    assert result.status == "crash", (result.status, result.reason)
    assert result.reason.startswith("disk quota"), result.reason
    written = sum(p.stat().st_size for p in (tmp_path / "run" / "train").glob("part*.bin"))
    assert written < 200 * (8 << 20)  # stopped long before the script's end
    assert took < 60.0


def test_the_sandboxs_tmp_counts_against_the_disk_limit(tmp_path: Path) -> None:
    # /tmp inside the sandbox is a tmpfs the disk watcher cannot see: it is sized instead.
    script = """
        for i in range(64):  # 4 MB files: each under the file-size limit, 256 MB in all
            with open(f"/tmp/fill{i}.bin", "wb") as fh:
                fh.write(b"\\x01" * (4 << 20))
    """
    result, _ = run(tmp_path, script, 'disk = "32M"\n')
    assert result.status == "crash", (result.status, result.reason)
    assert result.reason.startswith("disk quota: no space left"), result.reason


def test_gpu_jobs_without_a_cgroup_are_not_given_rlimit_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RLIMIT_AS breaks CUDA: without a cgroup a GPU job runs without a memory limit, and
    # the guard says so instead of breaking the job.
    monkeypatch.setattr(limits, "probe", lambda: Defences())
    guard = Guard(Limits(memory_bytes=1 << 30, processes=100, gpu=True))
    argv = guard.wrap(["true"])
    assert not any(a.startswith("AS=") for a in argv)
    assert any("RLIMIT_AS would break CUDA" in note for note in guard.notes)
    cpu_guard = Guard(Limits(memory_bytes=1 << 30))
    assert f"AS={1 << 30}" in cpu_guard.wrap(["true"])
    # Through the harness: the run goes on, and its log tail says it had no memory limit.
    repo = make_repo(tmp_path / "repo", 'print("score: 0.5")\n', 'memory = "1G"\n')
    problem = loads_problem((repo / "kohai.toml").read_text())
    result = run_once(repo, problem, 0, run_dir=tmp_path / "run", gpus=[0])
    assert result.status == "ok", result.reason
    assert "memory not limited" in result.log_tail


@pytest.mark.parametrize(
    "exit_code,tail,expected",
    [
        (0, ["MemoryError"], None),  # it ended well: no verdict from words alone
        (-signal.SIGXFSZ, [], "disk quota"),
        (1, ["OSError: [Errno 27] File too large"], "disk quota"),
        (-signal.SIGXCPU, [], "cpu time"),
        (1, ["Traceback (most recent call last):", "MemoryError"], "out of memory"),
        (1, ["BlockingIOError: [Errno 11] Resource temporarily unavailable"], "too many processes"),
        (1, ["ValueError: bad shape"], None),
        (-signal.SIGKILL, [], None),
    ],
)
def test_exit_verdicts(exit_code: int, tail: list[str], expected: str | None) -> None:
    lim = Limits(memory_bytes=1 << 30, processes=100, disk_bytes=1 << 30, cpu_s=100.0)
    verdict = exit_verdict(exit_code, tail, lim)
    assert (verdict or "").startswith(expected or "") and (verdict is None) == (expected is None)


def test_the_limits_of_kohai_toml() -> None:
    def train(extra: str) -> Resources:
        return loads_problem(f'[metric]\nname = "loss"\n[train]\n{extra}\n').resources

    default = train("")
    assert default.memory_bytes is None and default.memory_share == 0.9
    assert default.memory_on(100 << 30) == 90 << 30
    assert default.processes >= 4096 and default.disk_bytes >= 100 << 30
    assert train('memory = "3G"').memory_on(1 << 40) == 3 << 30
    assert train('memory = "1.5GiB"').memory_bytes == int(1.5 * (1 << 30))
    assert train('memory = "50%"').memory_on(64 << 30) == 32 << 30
    assert train("processes = 64").processes == 64
    assert train('disk = "10G"').disk_bytes == 10 << 30
    for bad, field_name in [
        ('memory = "lots"', "train.memory"),
        ('memory = "1K"', "train.memory"),
        ('memory = "0%"', "train.memory"),
        ('memory = "150%"', "train.memory"),
        ("processes = 1", "train.processes"),
        ("processes = 10000000", "train.processes"),
        ("processes = true", "train.processes"),
        ('disk = "5P"', "train.disk"),
        ('disk = "-1G"', "train.disk"),
    ]:
        with pytest.raises(ProblemError, match=field_name):
            train(bad)


@pytest.mark.skipif(HOST.memory is None, reason="no writable memory cgroup here")
def test_the_evaluator_runs_under_the_limits_too(tmp_path: Path) -> None:
    # Sealed: training saves an artefact, then the base's evaluator (and with it the
    # model-side child it starts) runs in a cgroup of its own under the same memory limit.
    repo = make_repo(
        tmp_path / "repo",
        "import os\nopen(os.path.join(os.environ['KOHAI_RUN_DIR'], 'w.bin'), 'wb').write(b'1')\n",
        'memory = "256M"\n',
    )
    (repo / "kohai.toml").write_text(
        (repo / "kohai.toml").read_text() + '\n[eval]\ncommand = "python prepare.py"\n'
    )
    base = tmp_path / "base"
    base.mkdir()
    (base / "prepare.py").write_text(textwrap.dedent(MEMORY_HOG))
    problem = loads_problem((repo / "kohai.toml").read_text())
    result = run_once(repo, problem, 0, run_dir=tmp_path / "run", base_dir=base)
    assert result.status == "crash", (result.status, result.reason)
    assert result.reason.startswith("evaluation: out of memory"), result.reason


@pytest.mark.skipif(HOST.memory is None, reason="no writable memory cgroup here")
def test_job_cgroups_of_a_dead_kohai_process_are_removed(tmp_path: Path) -> None:
    assert HOST.memory is not None
    stale = HOST.memory.parent / f"{limits.CGROUP_PREFIX}999999999-deadbeef"
    stale.mkdir()
    mine = HOST.memory.parent / f"{limits.CGROUP_PREFIX}{os.getpid()}-alive"
    mine.mkdir()
    try:
        assert limits.remove_stale(HOST.memory.parent) == [stale]
        assert not stale.exists() and mine.exists()
    finally:
        for path in (stale, mine):
            if path.exists():
                path.rmdir()


def test_a_delegated_cgroup_v2_is_split_into_a_leaf_for_the_daemon(tmp_path: Path) -> None:
    # This machine's cgroup v2 hierarchy has no memory controller (v1 holds it), so the
    # v2 start-up step is exercised on its file protocol: a delegated cgroup offering
    # the controller gets the daemon moved into a leaf and the controller enabled for
    # its children; one that does not offer it is left alone.
    delegated = tmp_path / "service"
    delegated.mkdir()
    (delegated / "cgroup.controllers").write_text("cpu memory pids\n")
    (delegated / "cgroup.subtree_control").write_text("\n")
    assert limits._split_delegated(delegated, "memory")
    leaf = delegated / f"{limits.CGROUP_PREFIX}host"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    assert (delegated / "cgroup.subtree_control").read_text() == "+memory"
    (delegated / "cgroup.subtree_control").write_text("memory\n")
    assert not limits._split_delegated(delegated, "memory")  # already enabled
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "cgroup.controllers").write_text("hugetlb\n")
    (bare / "cgroup.subtree_control").write_text("\n")
    assert not limits._split_delegated(bare, "memory")
    assert not (bare / f"{limits.CGROUP_PREFIX}host").exists()


FLOOD = """
    import sys
    line = "x" * 1000 + "\\n"
    while True:  # output without end, and it never stops by itself
        sys.stdout.write(line)
"""


@pytest.mark.skipif(
    HOST.pids is None,
    reason="no writable pids cgroup here, and RLIMIT_NPROC, the fallback, does not bind root",
)
def test_the_agents_smoke_run_has_the_jobs_process_limit(tmp_path: Path) -> None:
    """The coding agent's `smoke_run` runs agent code too: the job's limits hold there."""
    from agents.claude.smoke import smoke_run

    repo = make_repo(tmp_path / "forks", FORK_400, "processes = 64\n")
    problem = loads_problem((repo / "kohai.toml").read_text())
    result = smoke_run(repo, problem, sandboxed=True)
    assert "kohai: too many processes" in result.tail, result.tail
    assert leftover_cgroups() == []


def test_the_agents_smoke_run_reads_a_flood_of_output_as_a_capped_tail(tmp_path: Path) -> None:
    """Output without end is read line by line into a capped tail, not into the daemon's
    memory, and the run is stopped at its limit."""
    from agents.claude.smoke import TAIL_CHARS, smoke_run

    repo = make_repo(tmp_path / "flood", FLOOD, "")
    problem = loads_problem((repo / "kohai.toml").read_text())
    started = time.monotonic()
    result = smoke_run(repo, problem, sandboxed=True, kill_s=3.0)
    assert result.exit_code is None and "still running" in result.report()
    assert len(result.tail) <= TAIL_CHARS and result.tail.endswith("x")
    assert time.monotonic() - started < 30
