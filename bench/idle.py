"""Host idle time: one host working through a backlog of short jobs.

Queues N experiments (labelled issues) in the sandbox, then starts one real
host daemon and samples the bot's job table every 20 ms until the backlog is
done. Reports the fraction of wall time in which no job was leased (the host
was between jobs), and the fraction in which no training process was running
(from the harness's own run durations). Goal: no job running < 1 % of the time.

    python bench/idle.py [--n 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from bot.cli.lab import LocalLab

PROBLEM = {
    "kohai.toml": (
        '[metric]\nname = "score"\ndirection = "maximize"\n\n[train]\ncommand = "python train.py"\n'
        'budget = "10s"\ngrace = "5s"\nseeds = 1\nconfirm_seeds = 1\nbaseline_seeds = 1\n\n'
        '[files]\neditable = ["train.py"]\nfrozen = []\n'
    ),
    "train.py": "import time\ntime.sleep(1.0)\nprint('score: 1.0')\n",
    "program.md": "A job that takes one second.\n",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        lab = LocalLab(Path(tmp), pacing=False, catch_up=False).start()
        token = lab.register("idle")
        lab.add_repo("lab/idle", files=PROBLEM)
        store, control = lab.store, lab.control
        for i in range(args.n):
            control.open_issue("lab/idle", f"Job {i}", "x", labels=["student:idle"], as_user="bob")
        total = args.n + 1  # and the baseline
        deadline = time.time() + 120
        while store.count("SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued'") < total:
            if time.time() > deadline:
                print("the backlog was not queued in time", file=sys.stderr)
                return 1
            time.sleep(0.1)
        lab.add_host("idle", token=token, env={"KOHAI_WANDB": "disabled", "WANDB_MODE": "disabled"})
        samples: list[bool] = []
        started = None
        while True:
            row = store.one(
                "SELECT COALESCE(SUM(state = 'leased'), 0) AS leased, "
                "COALESCE(SUM(state IN ('done', 'failed')), 0) AS done FROM jobs"
            ) or {"leased": 0, "done": 0}
            if started is None and (row["leased"] or row["done"]):
                started = time.time()
            if started is not None:
                samples.append(bool(row["leased"]))
            if row["done"] >= total:
                break
            if time.time() - (started or time.time()) > 600:
                print("the backlog did not finish in 10 minutes", file=sys.stderr)
                break
            time.sleep(0.02)
        wall = time.time() - (started or time.time())
        trained = (store.one("SELECT SUM(duration_s) AS s FROM runs") or {}).get("s") or 0.0
        lab.stop()
    idle_jobs = 1 - sum(samples) / max(len(samples), 1)
    print(f"{total} jobs in {wall:.1f} s on one host")
    print(f"no job leased: {idle_jobs:.1%} of wall time (goal < 1 %)")
    print(
        f"no training process running: {max(0.0, 1 - trained / wall):.1%} of wall time "
        "(includes fetch, worktree and diff check between runs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
