"""The audit between the gate and a merge, through the real reviewer on a real store; it reads
the diff the bot computed of the tip it accepted, never the host's; the Claude review prompt
with the diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.core.gate import decide
from bot.engine.review import Ask, Opinion
from bot.protocol import DIFF_INCOMPLETE, MAX_DIFF_CHARS, JobResult
from bot.records import Experiment
from bot.store import Store, now
from tests.agents.conftest import git, make_git_repo
from tests.support.engine_lab import Lab, ok
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


def _reviewed(
    tmp_path: Path,
    diff: str | None,
    opinion: str = "merge",
    rounds: int = 0,
    host_diff: str | None = None,
):
    """One experiment through the real reviewer: a clear win whose pushed tip has `diff`.

    `host_diff` is what the host says its diff was: never read.
    """
    lab = Lab(tmp_path)
    lab.baseline(2.0, 2.0001)
    exp_id = lab.experiment(5)
    with lab.store.transaction():
        lab.store.update("experiments", exp_id, {"hypothesis": "Set LEARNING_RATE = 0.003."})
        for _ in range(rounds):
            lab.store.insert(
                "decisions",
                {
                    "experiment_id": exp_id,
                    "verdict": "changes",
                    "actor": "advisor",
                    "rationale": "earlier",
                    "created_at": now(),
                },
            )
    leased = lab.jobs.take("fern")
    assert leased is not None and leased.job.lease_id
    tip = None
    if diff is not None:  # the host pushed: the bot accepted the tip with the diff it computed
        tip = "5" * 40
        lab.jobs.accept_push(leased.job.id, leased.job.lease_id, tip, diff)
    result = ok(1.0, head=tip)
    result.diff = host_diff if host_diff is not None else ""
    result.lease_id = leased.job.lease_id
    lab.jobs.complete(leased.job.id, "fern", result)
    ask = lab.reviewer.begin(lab.exp(exp_id))
    assert isinstance(ask, Ask) and ask.gate.verdict == "merge"
    by = "gate" if opinion == "merge" else "advisor"
    outcome = lab.reviewer.conclude(ask, Opinion(opinion, "looks fine", by=by))
    return lab, exp_id, outcome


@pytest.mark.parametrize(
    ("diff", "opinion", "rounds", "expected"),
    [
        (SEEDED, "merge", 0, "changes"),  # the gate would merge; the seed sends it back
        (SEEDED, "merge", 2, "close"),  # ... and once change rounds are spent it closes
        (CLEAN, "merge", 0, "merge"),
        (None, "merge", 0, "merge"),  # no push through the bot (a writer's head): no diff
        (SEEDED, "close", 0, "close"),  # the audit never changes a close
        (CLEAN + DIFF_INCOMPLETE + "\n", "merge", 0, "changes"),
    ],
)
def test_the_reviewer_audits_before_a_merge(
    tmp_path: Path, diff: str | None, opinion: str, rounds: int, expected: str
) -> None:
    lab, exp_id, outcome = _reviewed(tmp_path, diff, opinion, rounds)
    assert outcome == expected
    merges = lab.store.query("SELECT * FROM outbox WHERE op = 'merge'")
    assert bool(merges) is (expected == "merge")
    if expected == "changes":
        [body] = lab.comments("decision")
        assert body.startswith("### Changes requested")
        assert "The hypothesis-vs-diff audit asks for changes" in body
        assert "seed: `manual_seed` changes in `train.py`" in body or "too large" in body
        assert lab.exp(exp_id).feedback.startswith("Hypothesis-vs-diff audit")
        [decision] = lab.store.query(
            "SELECT * FROM decisions WHERE experiment_id = ? AND verdict = 'changes' "
            "AND rationale != 'earlier'",
            (exp_id,),
        )
        assert decision["actor"] == "gate"
    if expected == "close" and opinion == "merge":
        assert any("Closed by the hypothesis-vs-diff audit" in b for b in lab.comments("decision"))


def test_the_audit_reads_the_bots_diff_not_the_hosts(tmp_path: Path) -> None:
    """A host that reports a clean diff for a seeded push is not believed, and vice versa."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, _, lied_clean = _reviewed(tmp_path / "a", SEEDED, host_diff=CLEAN)
    assert lied_clean == "changes"
    _, _, lied_seeded = _reviewed(tmp_path / "b", CLEAN, host_diff=SEEDED)
    assert lied_seeded == "merge"


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


def _experiment(store: Store, repo_id: int, diff: str, head: str = "h1") -> Experiment | None:
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
    result = JobResult(status="ok", head_sha=head).to_dict()
    store.insert(
        "jobs",
        {
            "repo_id": repo_id,
            "experiment_id": exp_id,
            "kind": "experiment",
            "state": "done",
            "base_sha": "base1",
            "tip_sha": head,
            "tip_diff": diff,
            "result": json.dumps(result),
            "created_at": now(),
            "updated_at": now(),
        },
    )
    return store.get(Experiment, exp_id)


def test_the_claude_review_sees_the_diff_and_answers_the_audit(store: Store, repo_id: int) -> None:
    """The notebook carries the bot's diff of the pushed tip to the review prompt, with findings."""
    from agents.claude.messages import review_question
    from agents.context import build_context
    from bot.problem import loads_problem

    exp = _experiment(store, repo_id, SEEDED)
    problem = loads_problem('[metric]\nname = "loss"\n[files]\neditable = ["train.py"]\n')
    ctx = build_context(store, repo_id, problem, "", "")
    [record] = [r for r in ctx.history if r.id == exp.id]
    assert record.diff == SEEDED
    question = review_question(ctx, record, MERGE)
    assert "```diff\n" + SEEDED.rstrip() in question
    assert "Static check: Hypothesis-vs-diff audit: the diff changes" in question
    assert "manual_seed" in question
    assert "**Audit**: does the diff implement the hypothesis" in question
