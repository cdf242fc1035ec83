"""From a human's label to a results comment, through every real part on loopback."""

from __future__ import annotations

import json
import subprocess

import pytest

from bot.core.audit import audit_diff
from tests.e2e.conftest import Lab

pytestmark = pytest.mark.slow


def comments(lab: Lab, number: int) -> list[str]:
    return [c["body"] for c in lab.control.comments(lab.repo, number)]


def test_issue_label_becomes_a_trained_pr_with_results(make_lab) -> None:
    lab: Lab = make_lab()
    lab.add_host("fern")
    # The App's installation made the bot read the repo and queue the baseline.
    lab.wait("baseline", lambda: lab.q("SELECT * FROM runs WHERE kind = 'baseline'"), timeout=180)

    issue = lab.control.open_issue(
        lab.repo,
        "Lower the learning rate",
        "LEARNING_RATE = 0.001",
        labels=["student:fern"],
        as_user="bob",
    )
    exp = lab.wait(
        "the draft PR",
        lambda: lab.q("SELECT * FROM experiments WHERE pr_number IS NOT NULL"),
        timeout=30,
    )[0]
    assert exp["issue_number"] == issue["number"]
    assert exp["branch"].startswith(f"kohai/{exp['id']}-lower-the-learning-rate")

    # The host implements (sets the knob), pushes, trains and reports.
    lab.wait(
        "results",
        lambda: any("### Results" in b for b in comments(lab, exp["pr_number"])),
        timeout=180,
    )
    bodies = comments(lab, exp["pr_number"])
    [results] = [b for b in bodies if "### Results" in b]  # one sticky results comment
    assert "| seed | status | val_bpb |" in results
    assert "xychart-beta" in results
    assert "<!-- kohai:results:" in results
    assert any("<!-- kohai:status:" in b for b in bodies)
    labels = lab.wait(
        "labels settled",
        lambda: (
            (ls := lab.control.labels_of(lab.repo, exp["pr_number"]))
            and "status:wip" not in ls
            and ls
        ),
        timeout=60,
    )
    assert "student:fern" in labels
    # The student's commit is on the PR branch in the sandbox's bare repo, with the knob set.
    bare = lab.sandbox.repo_path(lab.repo)
    train_py = subprocess.run(
        ["git", "show", f"{exp['branch']}:train.py"],
        cwd=bare,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "LEARNING_RATE = 0.001" in train_py
    runs = lab.q("SELECT * FROM runs WHERE experiment_id = ?", (exp["id"],))
    assert runs and runs[0]["status"] == "ok" and runs[0]["metric"] > 0
    # The bot diffed the tip it accepted itself (for the hypothesis-vs-diff audit): the knob,
    # nothing else; the runs are stored against that tip.
    [pushed] = lab.q(
        "SELECT tip_sha, tip_diff FROM jobs WHERE experiment_id = ? AND tip_diff IS NOT NULL",
        (exp["id"],),
    )
    diff = pushed["tip_diff"]
    assert runs[0]["commit_sha"] == pushed["tip_sha"]
    assert "-LEARNING_RATE = 3e-3" in diff and "+LEARNING_RATE = 0.001" in diff
    assert audit_diff(diff, exp["hypothesis"], editable=["train.py"]).passed
    # The bot keeps the base's editable files: where the offline advisor reads the incumbent.
    [repo] = lab.q("SELECT base_files FROM repos")
    assert "LEARNING_RATE = 3e-3" in json.loads(repo["base_files"])["train.py"]
