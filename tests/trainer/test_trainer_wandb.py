"""W&B modes, names, and that W&B can never fail a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.protocol import RunResult
from trainer.wandb_log import RunContext, log_run, run_names, wandb_mode


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "offline"),
        ({"WANDB_API_KEY": "k"}, "online"),
        ({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),
        ({"WANDB_API_KEY": "k", "KOHAI_WANDB": "disabled"}, "disabled"),
        ({"WANDB_MODE": "disabled"}, "disabled"),
    ],
)
def test_mode(env: dict[str, str], mode: str) -> None:
    assert wandb_mode(env) == mode


def test_names() -> None:
    assert run_names(12, 3) == ("pr-12", "pr-12/seed-3")
    assert run_names(None, 0) == ("baseline", "baseline/seed-0")


def test_disabled_logs_nothing(tmp_path: Path) -> None:
    result = RunResult(seed=1, status="ok", metric=1.0, curve=[[1, 2.0]])
    ctx = RunContext(project="kohai", student="fern", pr_number=1, commit="abc")
    assert log_run(result, ctx, tmp_path) == ""
    assert list(tmp_path.iterdir()) == []


def test_a_broken_wandb_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setenv("KOHAI_WANDB", "")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)

    def broken_init(**kwargs):
        raise RuntimeError("wandb backend unavailable")

    monkeypatch.setattr(wandb, "init", broken_init)
    result = RunResult(seed=1, status="ok", metric=1.0)
    ctx = RunContext(project="kohai", student="fern", pr_number=1, commit="abc")
    assert log_run(result, ctx, tmp_path) == ""


def test_without_a_key_runs_are_written_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOHAI_WANDB", "")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = RunResult(
        seed=2, status="ok", metric=1.5, metrics={"val_bpb": 1.5}, curve=[[10, 3.0], [20, 2.5]]
    )
    ctx = RunContext(project="charlm", student="fern", pr_number=4, commit="abc", knobs={"LR": 0.1})
    assert log_run(result, ctx, tmp_path) == ""  # a URL only when online
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(p.suffix == ".wandb" and p.stat().st_size > 0 for p in runs[0].iterdir())
