"""Weights & Biases: one run per seed, logged after the seed has finished.

Logging after the fact keeps W&B out of the timed run and out of the run's
failure modes: whatever W&B does (no key, no network, a bad version), the
measurement stands. Without WANDB_API_KEY the run is written offline (sync it
later with `wandb sync`); `KOHAI_WANDB=disabled` or `WANDB_MODE=disabled`
turns logging off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.protocol import RunResult

log = logging.getLogger(__name__)


def wandb_mode(env: dict[str, str] | None = None) -> Literal["online", "offline", "disabled"]:
    """ "disabled", "offline" or "online", from the environment."""
    env = dict(os.environ) if env is None else env
    if (
        env.get("KOHAI_WANDB", "").lower() == "disabled"
        or env.get("WANDB_MODE", "").lower() == "disabled"
    ):
        return "disabled"
    if env.get("WANDB_MODE", "").lower() == "offline" or not env.get("WANDB_API_KEY"):
        return "offline"
    return "online"


def run_names(pr_number: int | None, seed: int) -> tuple[str, str]:
    """(group, name): `pr-12` and `pr-12/seed-3`, or `baseline` and `baseline/seed-3`."""
    group = f"pr-{pr_number}" if pr_number is not None else "baseline"
    return group, f"{group}/seed-{seed}"


@dataclass
class RunContext:
    project: str
    student: str
    pr_number: int | None
    commit: str
    knobs: dict[str, Any] = field(default_factory=dict)
    group: str = ""  # overrides the derived group when the bot names one


def log_run(result: RunResult, ctx: RunContext, run_dir: Path) -> str:
    """Log one seed; the run's URL when online, "" otherwise. Never raises."""
    mode = wandb_mode()
    if mode == "disabled":
        return ""
    try:
        import wandb
    except ImportError:
        return ""
    group, name = run_names(ctx.pr_number, result.seed)
    try:
        run = wandb.init(
            project=ctx.project,
            group=ctx.group or group,
            name=name,
            tags=[ctx.student],
            config={"knobs": ctx.knobs, "commit": ctx.commit, "seed": result.seed},
            dir=str(run_dir),
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(silent=True),
        )
        for step, loss in result.curve:
            run.log({"train_loss": loss}, step=int(step))
        summary: dict[str, Any] = dict(result.metrics)
        summary.update(
            status=result.status, duration_s=result.duration_s, peak_mem_mb=result.peak_mem_mb
        )
        for key, value in summary.items():
            run.summary[key] = value
        url = run.url if mode == "online" else ""
        run.finish(exit_code=0 if result.status == "ok" else 1)
        return url or ""
    except Exception as exc:  # noqa: BLE001 - W&B is a mirror of the result, never a reason to lose it
        log.warning("W&B logging failed for %s: %s", name, exc)
        return ""
