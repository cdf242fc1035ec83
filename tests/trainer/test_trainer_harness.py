"""run_once against real processes: tiny scripts written into temporary directories."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from pathlib import Path

from bot.problem import Problem
from trainer.harness import run_once


def problem(
    command: str = "python train.py",
    *,
    metric: str = "val_bpb",
    budget: float = 10,
    grace: float = 5,
) -> Problem:
    return Problem(metric=metric, command=command, budget_s=budget, grace_s=grace)


def script(tmp_path: Path, body: str, name: str = "train.py") -> Path:
    """A checkout holding one script; runs go beside it, never inside it."""
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / name).write_text(textwrap.dedent(body))
    return repo


def test_metrics_file_protocol_with_live_progress(tmp_path: Path) -> None:
    repo = script(
        tmp_path,
        """
        import json, os
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
        seed = int(os.environ["KOHAI_SEED"])
        with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
            for step in (10, 20, 30):
                fh.write(json.dumps({"step": step, "train_loss": 3.0 - step / 10}) + "\\n")
            fh.write(json.dumps({"final": True, "val_bpb": 1.0 + seed / 10, "steps": 30,
                                 "budget": float(os.environ["KOHAI_BUDGET_S"])}) + "\\n")
        """,
    )
    seen: list[dict] = []
    result = run_once(
        repo, problem(), 4, run_dir=tmp_path / "run", budget_s=7, on_progress=seen.append
    )
    assert result.status == "ok", result.reason
    assert result.metric == 1.4
    assert result.metrics == {"val_bpb": 1.4, "steps": 30.0, "budget": 7.0}
    assert result.curve == [[10.0, 2.0], [20.0, 1.0], [30.0, 0.0]]
    assert [r.get("step") for r in seen] == [10, 20, 30, None]
    assert result.exit_code == 0
    assert result.peak_mem_mb > 0
    assert result.gpu_hours == 0.0
    assert (tmp_path / "run" / "log.txt").read_text().startswith("$ python train.py")
    assert result.sealed is False  # no [eval]: the script's own claim


def test_summary_lines_protocol(tmp_path: Path) -> None:
    repo = script(
        tmp_path,
        'print("training...")\nprint("---")\nprint("val_bpb: 0.9979")\nprint("training_seconds: 1.5")\n',
    )
    result = run_once(repo, problem(), 0, run_dir=tmp_path / "run")
    assert result.status == "ok"
    assert result.metric == 0.9979
    assert result.metrics["training_seconds"] == 1.5
    assert "val_bpb: 0.9979" in result.log_tail


def test_budget_is_enforced_on_the_process_group_with_partial_metrics(tmp_path: Path) -> None:
    repo = script(
        tmp_path,
        """
        import json, os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ignores the polite request too
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "TAG"])
        open(os.path.join(os.environ["KOHAI_RUN_DIR"], "child.pid"), "w").write(str(child.pid))
        with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
            fh.write(json.dumps({"step": 1, "train_loss": 4.0}) + "\\n")
            fh.write(json.dumps({"step": 2, "train_loss": 3.5}) + "\\n")
        while True:
            time.sleep(0.1)
        """,
    )
    # Pids inside the job sandbox are its own namespace's: find the grandchild by a tag.
    tag = f"kohai-grandchild-{os.getpid()}-{time.monotonic_ns()}"
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("TAG", tag))
    started = time.monotonic()
    result = run_once(repo, problem(budget=1, grace=1), 0, run_dir=tmp_path / "run", kill_after_s=1)
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert "budget 1s + grace 1s" in result.reason
    assert 2.0 <= elapsed < 6.0
    assert result.curve == [[1.0, 4.0], [2.0, 3.5]]
    assert result.metrics["train_loss"] == 3.5
    assert result.metric is None
    assert (tmp_path / "run" / "train" / "child.pid").exists()
    time.sleep(0.2)
    assert not _alive_with(tag), "the grandchild outlived the run"


def test_crash_keeps_the_traceback(tmp_path: Path) -> None:
    repo = script(
        tmp_path,
        "print('starting')\ndef f():\n    raise ValueError('learning rate exploded')\nf()\n",
    )
    result = run_once(repo, problem(), 0, run_dir=tmp_path / "run")
    assert result.status == "crash"
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.log_tail
    assert "ValueError: learning rate exploded" in result.log_tail
    assert result.reason == "exit code 1: ValueError: learning rate exploded"


def test_exit_zero_without_the_metric_is_a_crash(tmp_path: Path) -> None:
    repo = script(tmp_path, "print('loss: 1.0')\n")
    result = run_once(repo, problem(), 0, run_dir=tmp_path / "run")
    assert result.status == "crash"
    assert result.exit_code == 0
    assert "reported no val_bpb" in result.reason
    assert result.metrics == {"loss": 1.0}


def test_cancel_kills_the_run(tmp_path: Path) -> None:
    repo = script(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    cancel = threading.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        cancel.set()

    started = time.monotonic()
    result = run_once(repo, problem(), 0, run_dir=tmp_path / "run", cancel=cancel, on_line=on_line)
    assert time.monotonic() - started < 5
    assert result.status == "cancelled"
    assert result.reason == "cancelled"
    assert lines == ["up"]


def test_gpu_hours_count_every_gpu(tmp_path: Path) -> None:
    # Two GPUs with a non-python command: no torchrun, but the devices are visible and billed.
    repo = script(
        tmp_path, 'echo "val_bpb: 1.0"\necho "gpus: ${CUDA_VISIBLE_DEVICES/,/}"\n', "run.sh"
    )
    result = run_once(repo, problem("bash run.sh"), 0, run_dir=tmp_path / "run", gpus=[0, 1])
    assert result.status == "ok"
    assert result.metrics["gpus"] == 1.0  # "0,1" with the comma removed
    assert abs(result.gpu_hours - result.duration_s * 2 / 3600) < 1e-5


def _alive_with(tag: str) -> bool:
    """A live (not zombie) process whose command line holds `tag`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    return True
            except OSError:
                continue
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); it is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_run_the_stop_rule_gives_up_on_is_stopped_early(tmp_path: Path) -> None:
    repo = script(
        tmp_path,
        """
        import json, os, time
        with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
            for step in range(1, 200):
                fh.write(json.dumps({"step": step, "train_loss": 5.0}) + "\\n")
                fh.flush()
                time.sleep(0.05)
        print("val_bpb: 1.0")
        """,
    )
    asked: list[tuple[int, float]] = []

    def rule(curve: list[list[float]], fraction: float) -> str | None:
        asked.append((len(curve), fraction))
        return "trails the baseline by 2.1 sigma at step 20" if curve[-1][0] >= 20 else None

    started = time.monotonic()
    result = run_once(repo, problem(), 0, run_dir=tmp_path / "run", should_stop=rule)
    assert time.monotonic() - started < 8
    assert result.status == "stopped-early"
    assert result.reason == "trails the baseline by 2.1 sigma at step 20"
    assert result.metric is None and result.curve and result.curve[-1][0] >= 20
    assert all(0 <= f < 1 for _, f in asked)
