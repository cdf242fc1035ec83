"""The harness never blocks on, or follows, a file the job controls (real FIFOs, links, files).

Each test runs a small problem through the real harness in the job sandbox
(bubblewrap), as a host does. The job plants something where the harness
reads: a FIFO or a huge sparse file in its checkout, the metrics file
replaced by a FIFO, a symlink to a host file or to /dev/zero, a line of
output the size of a disk. The run must end in bounded time with a reason
naming what was planted, and nothing the harness was led to must reach the
result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from trainer_helpers import git

from bot.problem import load_problem
from bot.protocol import RunResult
from trainer import sandbox
from trainer.harness import run_once
from trainer.metrics import MAX_CURVE_POINTS, MetricsFollower
from trainer.process import MAX_TAIL_CHARS
from trainer.safeio import NotRegular, read_capped
from trainer.sealed import changes, snapshot, unfit_checkout
from trainer.workspace import check_diff

pytestmark = pytest.mark.skipif(sandbox.probe() is not None, reason="bubblewrap cannot start here")

SECRET = "HOST-SECRET-7f3a"
# Generous on two loaded cores; a hung harness would take forever, not this.
BOUND_S = 60.0


def make_repo(root: Path, train_py: str, *, budget: str = "3s", grace: str = "2s") -> Path:
    """An unsealed problem in a real git repo: the script's final line is its result."""
    root.mkdir(parents=True)
    (root / "kohai.toml").write_text(
        textwrap.dedent(
            f"""
            [metric]
            name = "score"
            [train]
            command = "python train.py"
            budget = "{budget}"
            grace = "{grace}"
            [files]
            editable = ["train.py"]
            frozen = ["prepare.py"]
            """
        )
    )
    (root / "prepare.py").write_text("OFFSET = 1.0\n")
    (root / "train.py").write_text(textwrap.dedent(train_py))
    git(root, "init", "--quiet")
    git(root, "add", "--all")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "base")
    return root


HONEST = """
    import json, os
    with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
        fh.write(json.dumps({"step": 1, "train_loss": 1.5}) + "\\n")
        fh.write(json.dumps({"final": True, "score": 0.5}) + "\\n")
"""


def run(repo: Path, tmp_path: Path) -> tuple[RunResult, float]:
    started = time.monotonic()
    result = run_once(repo, load_problem(repo), 0, run_dir=tmp_path / "run")
    return result, time.monotonic() - started


def test_a_fifo_in_the_checkout_is_invalid_in_bounded_time(tmp_path: Path) -> None:
    # A FIFO without a writer blocks a plain open() forever: the snapshot must not open it.
    repo = make_repo(tmp_path / "repo", HONEST)
    os.mkfifo(repo / "data.pipe")
    result, took = run(repo, tmp_path)
    assert result.status == "invalid", result.reason
    assert "data.pipe (fifo)" in result.reason
    assert took < BOUND_S


def test_a_fifo_made_during_training_is_invalid_naming_it(tmp_path: Path) -> None:
    script = HONEST + '    os.mkfifo("cache.fifo")\n'
    repo = make_repo(tmp_path / "repo", script)
    result, took = run(repo, tmp_path)
    assert result.status == "invalid", result.reason
    assert "special file cache.fifo (fifo)" in result.reason
    assert took < BOUND_S


def test_a_sparse_8_gb_file_is_checked_in_bounded_time(tmp_path: Path) -> None:
    # Hashing 8 GB of zeroes would take minutes; past the cap a file is recorded by
    # its size, times and inode, so an untouched one still matches after the run.
    repo = make_repo(tmp_path / "repo", HONEST)
    with open(repo / "big.bin", "wb") as fh:
        fh.truncate(8 << 30)
    started = time.monotonic()
    snap = snapshot(repo)
    assert time.monotonic() - started < 10.0
    assert snap.files["big.bin"].startswith("stat:8589934592:")
    result, took = run(repo, tmp_path)
    assert result.status == "ok", result.reason
    assert took < BOUND_S


def test_a_large_file_rewritten_in_place_is_still_a_change(tmp_path: Path) -> None:
    # Recorded by stat, a forged mtime does not hide a rewrite: ctime moves with it.
    repo = make_repo(tmp_path / "repo", HONEST)
    big = repo / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)
    before = snapshot(repo)
    st = big.stat()
    with open(big, "r+b") as fh:
        fh.write(b"changed")
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert snapshot(repo).files["big.bin"] != before.files["big.bin"]


def test_the_metrics_file_as_a_fifo_does_not_hold_the_budget(tmp_path: Path) -> None:
    # The script makes its metrics file a FIFO and trains on: the harness must neither
    # block on it (the budget's clock goes on) nor crash on it, and it says what it found.
    script = """
        import os, time
        os.mkfifo(os.environ["KOHAI_METRICS_FILE"])
        time.sleep(30)
    """
    repo = make_repo(tmp_path / "repo", script, budget="2s", grace="1s")
    result, took = run(repo, tmp_path)
    assert result.status == "invalid", result.reason
    assert "KOHAI_METRICS_FILE" in result.reason and "fifo" in result.reason
    assert took < 2 + 1 + 5 + 20  # budget + grace + the kill, with room for a loaded host


def test_the_metrics_file_as_a_symlink_to_a_host_file_is_never_read(tmp_path: Path) -> None:
    # The link's target is a path on the host (the harness runs outside the sandbox):
    # followed, it would carry that file's lines into the result and the curve.
    host_file = tmp_path / "host-secret.jsonl"
    host_file.write_text(
        json.dumps({"step": 1, "train_loss": 0.1, "note": SECRET})
        + "\n"
        + json.dumps({"final": True, "score": 0.001, "note": SECRET})
        + "\n"
    )
    script = f"""
        import os
        os.symlink({str(host_file)!r}, os.environ["KOHAI_METRICS_FILE"])
        print("linked")
    """
    repo = make_repo(tmp_path / "repo", script)
    result, _ = run(repo, tmp_path)
    assert result.status == "invalid", result.reason
    assert "symlink" in result.reason
    assert result.metric is None and result.curve == []
    assert SECRET not in json.dumps(dataclasses.asdict(result))


def test_the_metrics_file_as_a_symlink_to_dev_zero_is_never_read(tmp_path: Path) -> None:
    script = """
        import os
        os.symlink("/dev/zero", os.environ["KOHAI_METRICS_FILE"])
    """
    repo = make_repo(tmp_path / "repo", script)
    result, took = run(repo, tmp_path)
    assert result.status == "invalid", result.reason
    assert "symlink" in result.reason
    assert took < BOUND_S


def test_a_huge_single_log_line_is_capped_before_it_leaves_the_host(tmp_path: Path) -> None:
    # 64 MB on one line, then a normal one: the log tail stays small, the log file too.
    script = """
        import sys
        chunk = "x" * (1 << 20)
        for _ in range(64):
            sys.stdout.write(chunk)
        sys.stdout.write("\\nscore: 0.5\\n")
        sys.stdout.flush()
    """
    repo = make_repo(tmp_path / "repo", script, budget="30s")
    result, _ = run(repo, tmp_path)
    assert result.status == "ok", result.reason
    assert len(result.log_tail) <= MAX_TAIL_CHARS + 20
    assert "more bytes of this line cut" in result.log_tail
    assert (tmp_path / "run" / "log.txt").stat().st_size < 1 << 20


def test_a_symlinked_artefact_leading_out_is_invalid(tmp_path: Path) -> None:
    # A sealed problem: the artefact is what the evaluator reads. A link out of the run
    # directory would have it read a host file as the model.
    repo = make_repo(tmp_path / "repo", HONEST)
    (repo / "kohai.toml").write_text(
        (repo / "kohai.toml").read_text() + '\n[eval]\ncommand = "python prepare.py"\n'
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "sealed")
    (repo / "train.py").write_text(
        "import os\nos.symlink('/etc/passwd', os.path.join(os.environ['KOHAI_RUN_DIR'], 'model.bin'))\n"
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "link")
    base = tmp_path / "base"
    git(repo, "worktree", "add", "--quiet", "--detach", str(base), "HEAD")
    result = run_once(repo, load_problem(repo), 0, run_dir=tmp_path / "run", base_dir=base)
    assert result.status == "invalid", result.reason
    assert "model.bin (symlink out of the run directory)" in result.reason


def test_safe_reads_refuse_what_is_not_a_regular_file(tmp_path: Path) -> None:
    # The one place every read goes through: a FIFO is refused without blocking,
    # a link is refused whatever it points at, a directory swapped for a link too.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to("/etc/hostname")
    for path, kind in ((fifo, "fifo"), (link, "symlink")):
        done: list[BaseException] = []

        def attempt(p: Path = path, sink: list[BaseException] = done) -> None:
            try:
                read_capped(p, 100)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                sink.append(exc)

        reader = threading.Thread(target=attempt, daemon=True)
        reader.start()
        reader.join(timeout=10.0)
        assert not reader.is_alive(), f"reading {path} blocked"
        assert isinstance(done[0], NotRegular) and done[0].kind == kind
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "m.jsonl").write_text("{}\n")
    (tmp_path / "sub").symlink_to(tmp_path / "real")
    with pytest.raises(NotRegular):
        read_capped(tmp_path / "sub" / "m.jsonl", 100, root=tmp_path)
    assert read_capped(tmp_path / "real" / "m.jsonl", 100, root=tmp_path) == b"{}\n"


def test_the_metrics_follower_caps_lines_bytes_and_curve(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "train_loss": 1.0 / (i + 1)}) for i in range(30_000)]
    huge = json.dumps({"step": -1, "train_loss": 9.0, "pad": "y" * (1 << 17)})
    path.write_text(huge + "\n" + "\n".join(lines) + "\n" + json.dumps({"final": True, "s": 1}))
    follower = MetricsFollower(path)
    records = follower.new_records()
    assert len(records) == 30_000  # the over-long line is dropped; the unterminated one waits
    reading = follower.finish()  # the run is over: the last line counts without its newline
    assert reading.final == {"final": True, "s": 1}
    assert all(step >= 0 for step, _ in reading.curve)
    assert 0 < len(reading.curve) <= MAX_CURVE_POINTS
    assert reading.curve[-1][0] >= 29_000  # thinned evenly, the end kept
    capped = MetricsFollower(path, max_bytes=1 << 20)
    capped.new_records()
    assert capped.capped  # progress stops at the cap; the final line is found in the tail
    assert capped.finish().final == {"final": True, "s": 1}


def test_a_frozen_file_replaced_by_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    # The diff check hashes frozen files in the worktree after the implement step: a
    # FIFO there (matched by an editable glob, so git's own check lets it through)
    # must be a difference, not a hang.
    repo = make_repo(tmp_path / "repo", HONEST)
    base_sha = git(repo, "rev-parse", "HEAD")
    problem = load_problem(repo)
    (repo / "prepare.py").unlink()
    os.mkfifo(repo / "prepare.py")
    started = time.monotonic()
    refusal = check_diff(repo, base_sha, base_sha, replace(problem, editable=("*.py",)))
    assert time.monotonic() - started < BOUND_S
    assert refusal is not None and "frozen file prepare.py differs" in refusal


def test_a_checkout_past_the_entry_cap_is_a_finding_not_a_long_walk(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(30):
        (root / f"f{i}").write_text("x")
    snap = snapshot(root, max_entries=10)
    assert snap.problem == "the checkout holds more than 10 files"
    assert unfit_checkout(snap) == snap.problem
    assert changes(snapshot(root), snap, "during training") == (
        "the checkout holds more than 10 files during training"
    )
