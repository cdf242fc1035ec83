"""The hypothesis-vs-diff audit: table-driven over diffs, and over a real `git diff` of charlm."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.core.audit import TRUNCATED_MARK, audit_diff

CHARLM = Path(__file__).resolve().parents[2] / "trainer" / "examples" / "charlm"


def diff(*lines: str, path: str = "train.py") -> str:
    return (
        f"diff --git a/{path} b/{path}\nindex 1..2 100644\n--- a/{path}\n+++ b/{path}\n"
        "@@ -1,3 +1,3 @@\n" + "\n".join(lines) + "\n"
    )


LR = "Set LEARNING_RATE = 0.003 (the base has LEARNING_RATE = 0.001); change nothing else."


@pytest.mark.parametrize(
    ("hypothesis", "the_diff", "found"),
    [
        # the knob and nothing else: passes
        (LR, diff("-LEARNING_RATE = 1e-3", "+LEARNING_RATE = 0.003"), []),
        # the knob and the seed: flagged (the case the issue names)
        (
            LR,
            diff(
                "-LEARNING_RATE = 1e-3",
                "+LEARNING_RATE = 0.003",
                '-    seed = int(os.environ.get("KOHAI_SEED", "0"))',
                '+    seed = int(os.environ.get("KOHAI_SEED", "7"))',
            ),
            [("seed", "seed"), ("seed", "KOHAI_SEED")],
        ),
        (
            LR,
            diff("-    torch.manual_seed(seed)", "+    torch.manual_seed(seed + 1)"),
            [
                ("seed", "manual_seed"),
                ("seed", "seed"),
            ],
        ),
        # ... unless the hypothesis is about seeds
        (
            "Average over a different seed schedule: seed + 1.",
            diff("-    torch.manual_seed(seed)", "+    torch.manual_seed(seed + 1)"),
            [],
        ),
        # data order
        (
            LR,
            diff(
                "-    batches = torch.Generator().manual_seed(seed * 1000 + rank)",
                "+    batches = torch.Generator().manual_seed(0)",
            ),
            [("data order", "Generator"), ("seed", "manual_seed"), ("seed", "seed")],
        ),
        (
            "Sample batches with a fixed permutation per epoch via get_batch.",
            diff("-    x, y = get_batch(data, g)", "+    x, y = get_batch(perm_data, g)"),
            [],
        ),
        # the budget: the env var, the clock, the SIGTERM handler
        (
            LR + " Within the fixed budget and training time.",  # common words excuse nothing
            diff(
                '-    budget_s = float(os.environ.get("KOHAI_BUDGET_S", "30"))',
                '+    budget_s = float(os.environ.get("KOHAI_BUDGET_S", "30")) * 2',
                "-        elapsed = time.time() - t_start",
                "+        elapsed = (time.time() - t_start) / 2",
                "-signal.signal(signal.SIGTERM, request_stop)",
            ),
            [
                ("budget", "KOHAI_BUDGET_S"),
                ("budget", "time"),
                ("budget", "signal"),
                ("budget", "SIGTERM"),
            ],
        ),
        # evaluation paths
        (
            LR,
            diff(
                "-from prepare import VOCAB_SIZE, get_batch, load_train, save_artifact",
                "+from prepare import VOCAB_SIZE, get_batch, load_train",
                "-        save_artifact(model, run_dir)",
                '+        torch.save(model.state_dict(), os.environ["KOHAI_DATA_DIR"] + "/w.pt")',
            ),
            [
                ("evaluation", "prepare"),
                ("data order", "get_batch"),
                ("data order", "load_train"),
                ("evaluation", "save_artifact"),
                ("evaluation", "KOHAI_DATA_DIR"),
            ],
        ),
        # the progress stream early stopping reads
        (
            LR,
            diff('+    append_metrics(metrics_file, {"step": s, "val_bpb": 0.1})'),
            [
                ("progress", "append_metrics"),
            ],
        ),
        # comments and words inside strings are not code
        (
            LR,
            diff(
                "+# a different seed would help, and more time",
                '+print("training time and seed")  # seed',
                "+LEARNING_RATE = 0.003",
            ),
            [],
        ),
        # identifiers merely containing the letters are not the names
        (LR, diff("+timeline = seedling = preparer = 1", "+evaluated = 2"), []),
    ],
)
def test_audit_table(hypothesis: str, the_diff: str, found: list[tuple[str, str]]) -> None:
    audit = audit_diff(the_diff, hypothesis, editable=["train.py"])
    assert [(f.category, f.name) for f in audit.findings] == found
    assert audit.passed is (not found)
    if found:
        assert "Hypothesis-vs-diff audit" in audit.summary()
        assert all(f.path == "train.py" for f in audit.findings)


def test_files_outside_the_editable_list_and_truncated_diffs_are_findings() -> None:
    audit = audit_diff(
        diff("+x = 1", path="prepare.py") + diff("+LEARNING_RATE = 0.01") + TRUNCATED_MARK + "\n",
        LR,
        editable=["train.py"],
    )
    assert [f.category for f in audit.findings] == ["files", "size"]
    assert "`prepare.py` is not an editable file" in audit.summary()
    assert "too large to audit" in audit.summary()


def test_backticks_in_the_diff_cannot_break_the_comment() -> None:
    audit = audit_diff(diff("+seed = 1  ", "+x = `seed`"), LR)
    assert "``" not in audit.summary()


def test_a_real_git_diff_that_also_changes_the_seed_is_flagged(tmp_path: Path) -> None:
    """charlm's train.py in a real repository: the knob move passes, the knob plus seed fails."""
    source = (CHARLM / "train.py").read_text()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@e", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    git("init", "-q", "-b", "main")
    (tmp_path / "train.py").write_text(source)
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    base = git("rev-parse", "HEAD").strip()
    knob = source.replace("LEARNING_RATE = 3e-3", "LEARNING_RATE = 1e-2")
    assert knob != source
    (tmp_path / "train.py").write_text(knob)
    clean = git("diff", base)
    seeded = knob.replace("torch.manual_seed(seed)", "torch.manual_seed(1234)")
    assert seeded != knob
    (tmp_path / "train.py").write_text(seeded)
    dirty = git("diff", base)
    hypothesis = "Set LEARNING_RATE = 0.01 (the base has LEARNING_RATE = 0.003)."
    assert audit_diff(clean, hypothesis, editable=["train.py"]).passed
    flagged = audit_diff(dirty, hypothesis, editable=["train.py"])
    assert [(f.category, f.name) for f in flagged.findings] == [
        ("seed", "manual_seed"),
        ("seed", "seed"),
    ]
    assert "`seed`: `manual_seed` changes in `train.py`" not in flagged.summary()
    assert (
        "seed: `manual_seed` changes in `train.py`: `- torch.manual_seed(seed)`"
        in flagged.summary()
    )
