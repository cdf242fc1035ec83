"""The two metrics protocols and the harness's verdict, as pure functions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trainer.harness import build_command, judge, reported_metrics, run_env
from trainer.metrics import (
    MetricsFollower,
    numeric_values,
    parse_summary_lines,
    read_metrics_lines,
)


def test_metrics_lines_give_final_line_and_curve() -> None:
    lines = [
        '{"step": 10, "train_loss": 2.5}',
        "not json",
        '{"step": 20, "train_loss": 2.0, "lr": 0.001}',
        '{"step": 30, "train_loss": NaN}',
        '{"final": true, "val_bpb": 1.25, "steps": 30}',
        '{"step": 40, "train_lo',  # a line cut off by a kill
    ]
    reading = read_metrics_lines(lines)
    assert reading.final == {"final": True, "val_bpb": 1.25, "steps": 30}
    assert reading.curve == [[10.0, 2.5], [20.0, 2.0]]
    assert reading.last_step["step"] == 30


def test_summary_lines_are_the_fallback_protocol() -> None:
    out = [
        "step 5 loss 2.1",
        "---",
        "val_bpb: 0.9979",
        "training_seconds: 300.1",
        "note: fine",
        "depth: 8",
    ]
    assert parse_summary_lines(out) == {"val_bpb": 0.9979, "training_seconds": 300.1, "depth": 8.0}
    assert math.isnan(parse_summary_lines(["val_bpb: nan"])["val_bpb"])


def test_numeric_values_drop_what_json_cannot_carry() -> None:
    assert numeric_values({"final": True, "a": 1, "b": float("inf"), "c": "x", "d": 0.5}) == {
        "a": 1.0,
        "d": 0.5,
    }


def test_follower_returns_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    follower = MetricsFollower(path)
    assert follower.new_records() == []
    path.write_text('{"step": 1}\n{"step"')
    assert follower.new_records() == [{"step": 1}]
    with path.open("a") as fh:
        fh.write(": 2}\n")
    assert follower.new_records() == [{"step": 2}]
    assert follower.new_records() == []


@pytest.mark.parametrize(
    ("command", "gpus", "expected"),
    [
        ("python train.py", 0, "python train.py"),
        ("python train.py", 1, "python train.py"),
        ("python train.py --fast", 4, "torchrun --standalone --nproc_per_node=4 train.py --fast"),
        ("python3 src/train.py", 2, "torchrun --standalone --nproc_per_node=2 src/train.py"),
        ("bash run.sh", 2, "bash run.sh"),
    ],
)
def test_multi_gpu_python_commands_run_under_torchrun(
    command: str, gpus: int, expected: str
) -> None:
    assert build_command(command, gpus) == expected


def test_run_env_sets_the_protocol_variables(tmp_path: Path) -> None:
    env = run_env({"PATH": "/usr/bin"}, seed=3, budget_s=30.0, run_dir=tmp_path, gpus=[])
    assert env["KOHAI_SEED"] == "3"
    assert env["KOHAI_BUDGET_S"] == "30"
    assert env["KOHAI_RUN_DIR"] == str(tmp_path)
    assert env["KOHAI_METRICS_FILE"] == str(tmp_path / "metrics.jsonl")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["PATH"].endswith("/usr/bin")
    assert (
        run_env({}, seed=0, budget_s=1, run_dir=tmp_path, gpus=[2, 3])["CUDA_VISIBLE_DEVICES"]
        == "2,3"
    )


BASE = dict(
    metric_name="val_bpb", budget_s=10, grace_s=5, log_lines=["Traceback", "ValueError: boom"]
)


@pytest.mark.parametrize(
    ("exit_code", "timed_out", "cancelled", "reported", "status", "metric", "reason_part"),
    [
        (0, False, False, {"val_bpb": 1.5}, "ok", 1.5, ""),
        (1, False, False, {}, "crash", None, "exit code 1: ValueError: boom"),
        (-9, False, False, {}, "crash", None, "killed by SIGKILL"),
        (0, False, False, {"loss": 2.0}, "crash", None, "reported no val_bpb"),
        (0, False, False, {"val_bpb": float("nan")}, "crash", None, "not finite"),
        (-15, True, False, {"val_bpb": 2.0}, "timeout", 2.0, "budget 10s + grace 5s"),
        (-15, False, True, {}, "cancelled", None, "cancelled"),
    ],
)
def test_judge(exit_code, timed_out, cancelled, reported, status, metric, reason_part) -> None:
    got = judge(
        exit_code=exit_code, timed_out=timed_out, cancelled=cancelled, reported=reported, **BASE
    )
    assert got[0] == status
    assert got[1] == metric
    assert reason_part in got[2]


def test_reported_metrics_prefer_the_final_line_then_summary_then_last_step() -> None:
    final = read_metrics_lines(
        ['{"step": 1, "train_loss": 3.0}', '{"final": true, "val_bpb": 1.1}']
    )
    assert reported_metrics(final, ["val_bpb: 9.9", "tokens: 100"]) == {
        "val_bpb": 1.1,
        "tokens": 100.0,
    }
    no_final = read_metrics_lines(['{"step": 1, "train_loss": 3.0}'])
    assert reported_metrics(no_final, ["val_bpb: 2.0"]) == {"val_bpb": 2.0}
    assert reported_metrics(no_final, []) == {"step": 1.0, "train_loss": 3.0}
    assert reported_metrics(read_metrics_lines([]), []) == {}
