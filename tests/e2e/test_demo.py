"""`kohai demo`, small: what a user would check afterwards, in GitHub and in the database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.control import SandboxControl
from sandbox.server import SandboxServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
REPO = "lab/charlm"
WIDE = "lab/charlm-wide"  # the demo's second lab: a wider model


def test_small_demo_runs_the_lab_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = {**os.environ, "WANDB_MODE": "disabled", "KOHAI_WANDB": "disabled"}
    env.pop("ANTHROPIC_API_KEY", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "demo",
            "--experiments",
            "1",
            "--budget",
            "6s",
            "--dir",
            str(work),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Leaderboard" in done.stdout and "report.md" in done.stdout
    assert (work / "report" / "report.md").is_file()

    db = sqlite3.connect(work / "kohai.db")
    db.row_factory = sqlite3.Row
    exps = [
        dict(r)
        for r in db.execute(
            "SELECT e.*, r.full_name AS repo FROM experiments e JOIN repos r ON r.id = e.repo_id "
            "WHERE e.pr_number IS NOT NULL"
        )
    ]
    assert {e["source"] for e in exps} == {"advisor", "human"}
    # Two labs, each with its own baseline and advisor experiments, sharing the students.
    assert {e["repo"] for e in exps if e["source"] == "advisor"} == {REPO, WIDE}
    baselines = {
        r[0]
        for r in db.execute(
            "SELECT r.full_name FROM runs u JOIN repos r ON r.id = u.repo_id "
            "WHERE u.kind = 'baseline' AND u.status = 'ok'"
        )
    }
    assert baselines == {REPO, WIDE}
    assert "Leaderboard of lab/charlm-wide" in done.stdout
    assert all(e["state"] in ("merged", "closed") for e in exps), exps

    # GitHub's side, read back from the sandbox's persisted state.
    with SandboxServer(work / "github") as sandbox:
        github = SandboxControl(sandbox.url)
        for exp in exps:
            pr = github.pull(exp["repo"], exp["pr_number"])
            assert pr["head"]["ref"] == exp["branch"]
            assert pr["merged"] == (exp["state"] == "merged")
            assert pr["state"] == "closed"
            labels = github.labels_of(exp["repo"], exp["pr_number"])
            assert f"student:{exp['student']}" in labels
            assert not [label for label in labels if label.startswith("status:")]
            bodies = [c["body"] for c in github.comments(exp["repo"], exp["pr_number"])]
            assert any("| seed | status | val_bpb |" in b for b in bodies)
            assert any("<!-- kohai:status:" in b for b in bodies)
        human = next(e for e in exps if e["source"] == "human")
        bodies = [c["body"] for c in github.comments(REPO, human["pr_number"])]
        assert any(
            "needs write, maintain or admin permission" in b and "carol" in b for b in bodies
        )
        assert (
            db.execute(
                "SELECT COUNT(*) FROM decisions WHERE experiment_id = ? AND verdict = 'rerun' AND actor = 'human:bob'",
                (human["id"],),
            ).fetchone()[0]
            == 1
        )
        # Every merge in the database is a commit on its lab's main, and nothing else is.
        for repo in (REPO, WIDE):
            log = subprocess.run(
                ["git", "log", "--format=%s", "main"],
                cwd=sandbox.repo_path(repo),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            merged = [e for e in exps if e["state"] == "merged" and e["repo"] == repo]
            assert len(log) == 1 + len(merged)
            for exp in merged:
                assert any(exp["title"][:40] in subject for subject in log)
