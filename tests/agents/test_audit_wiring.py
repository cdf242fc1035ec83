"""The audit between the gate and a merge, over a real store; the host's diff from real git."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.advisor import Review
from agents.screens import audited
from bot.gate import decide
from bot.protocol import DIFF_INCOMPLETE, MAX_DIFF_CHARS, JobResult
from bot.store import Store, now
from tests.agents.conftest import git, make_git_repo
from trainer.jobrunner import pr_diff

SEEDED = (
    "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n"
    "-LEARNING_RATE = 1e-3\n+LEARNING_RATE = 0.003\n"
    "-    torch.manual_seed(seed)\n+    torch.manual_seed(1234)\n"
)
CLEAN = (
    "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n"
    "-LEARNING_RATE = 1e-3\n+LEARNING_RATE = 0.003\n"
)
MERGE = decide(
    [0.90, 0.91, 0.89], [1.0, 1.01, 0.99], minimize=True, confirm_seeds=3, baseline_seeds=3
)
CLOSE = decide([1.1, 1.1, 1.1], [1.0, 1.01, 0.99], minimize=True, confirm_seeds=3, baseline_seeds=3)


def _experiment(store: Store, repo_id: int, diff: str | None, head: str = "h1") -> dict:
    store.update("repos", repo_id, {"problem_toml": '[files]\neditable = ["train.py"]\n'})
    exp_id = store.insert(
        "experiments",
        {
            "repo_id": repo_id,
            "state": "review",
            "source": "advisor",
            "title": "lr",
            "hypothesis": "Set LEARNING_RATE = 0.003.",
            "head_sha": head,
            "created_at": now(),
            "updated_at": now(),
        },
    )
    if diff is not None:
        result = JobResult(status="ok", head_sha=head, diff=diff).to_dict()
        store.insert(
            "jobs",
            {
                "repo_id": repo_id,
                "experiment_id": exp_id,
                "kind": "experiment",
                "state": "done",
                "base_sha": "base1",
                "result": json.dumps(result),
                "created_at": now(),
                "updated_at": now(),
            },
        )
    return store.one("SELECT * FROM experiments WHERE id = ?", (exp_id,))


@pytest.mark.parametrize(
    ("diff", "gate", "verdict", "expected"),
    [
        (SEEDED, MERGE, "merge", "changes"),  # the gate would merge; the seed sends it back
        (CLEAN, MERGE, "merge", "merge"),
        (None, MERGE, "merge", "merge"),  # no diff reported (an older host): the review stands
        (SEEDED, CLOSE, "close", "close"),  # the audit never opens a merge or changes a close
        (CLEAN + DIFF_INCOMPLETE + "\n", MERGE, "merge", "changes"),
    ],
)
def test_audited(store: Store, repo_id: int, diff, gate, verdict, expected) -> None:
    exp = _experiment(store, repo_id, diff)
    review = Review(verdict=verdict, rationale=gate.rationale, mode="offline")
    out = audited(store, exp, gate, review)
    assert out.verdict == expected
    if expected == "changes":
        assert out.feedback.startswith("Hypothesis-vs-diff audit")
        assert out.rationale == out.feedback


def test_a_diff_of_an_older_head_is_not_used(store: Store, repo_id: int) -> None:
    exp = _experiment(store, repo_id, SEEDED, head="old")
    exp["head_sha"] = "new"
    review = Review(verdict="merge", rationale="", mode="offline")
    assert audited(store, exp, MERGE, review).verdict == "merge"


def test_the_host_reports_the_pr_diff_from_the_merge_base(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "r", {"train.py": "LEARNING_RATE = 1e-3\nSEED = 0\n"})
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "train.py").write_text("LEARNING_RATE = 3e-3\nSEED = 0\n")
    git(repo, "commit", "-qam", "lr")
    head = git(repo, "rev-parse", "HEAD").strip()
    text = pr_diff(repo, base, head)
    assert "+LEARNING_RATE = 3e-3" in text and "SEED" not in text.split("@@")[-1].split("\n")[1]
    assert DIFF_INCOMPLETE not in text
    assert pr_diff(repo, "0" * 40, head).strip() == DIFF_INCOMPLETE
    (repo / "train.py").write_text("X = '" + "a" * (MAX_DIFF_CHARS + 10) + "'\n")
    git(repo, "commit", "-qam", "huge")
    huge = pr_diff(repo, base, git(repo, "rev-parse", "HEAD").strip())
    assert huge.endswith(DIFF_INCOMPLETE + "\n") and len(huge) < MAX_DIFF_CHARS + 100


def test_the_claude_review_sees_the_diff_and_answers_the_audit(store: Store, repo_id: int) -> None:
    """The notebook carries the host's diff to the review prompt, with the static findings."""
    from agents.claude.messages import review_question
    from agents.context import build_context
    from bot.problem import loads_problem

    exp = _experiment(store, repo_id, SEEDED)
    problem = loads_problem('[files]\neditable = ["train.py"]\n')
    ctx = build_context(store, repo_id, problem, "", "")
    [record] = [r for r in ctx.history if r.id == exp["id"]]
    assert record.diff == SEEDED
    question = review_question(ctx, record, MERGE)
    assert "```diff\n" + SEEDED.rstrip() in question
    assert "Static check: Hypothesis-vs-diff audit: the diff changes" in question
    assert "manual_seed" in question
    assert "**Audit**: does the diff implement the hypothesis" in question
