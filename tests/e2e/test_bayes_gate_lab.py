"""The Bayesian gate through every real part on loopback: a helpful idea merges, a null one
closes, and each PR says why in the gate's own numbers.

The sandbox GitHub, the bot and a real host daemon run a tiny problem whose training script
is a known function of its knobs and seed: `GAIN` lowers the score by its value (helpful),
`NOTE` changes nothing but the run's own small noise (null). Seed luck (0.1) is shared by
matched seeds, so the gate's paired belief about the base sees through it.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Lab

pytestmark = pytest.mark.slow

TOML = """[metric]
name = "score"
direction = "minimize"

[train]
command = "python train.py"
budget = "30s"
grace = "5s"
seeds = 1
confirm_seeds = 3
baseline_seeds = 3

[files]
editable = ["train.py"]
frozen = []

[search]
GAIN = { min = 0.0, max = 1.0 }
NOTE = { choices = [0, 1] }

[gate]
method = "bayes"
"""

TRAIN = """import os
import random

GAIN = 0.0
NOTE = 0

seed = int(os.environ.get("KOHAI_SEED", "0"))
luck = random.Random(seed).gauss(0.0, 0.1)
own = random.Random(seed * 7919 + round(GAIN * 1000) + NOTE * 31).gauss(0.0, 0.01)
print(f"score: {1.0 + luck - GAIN + own:.6f}")
"""

FILES = {"kohai.toml": TOML, "train.py": TRAIN, "program.md": "Lower the score.\n"}


def _decision(lab: Lab, number: int) -> str:
    bodies = [c["body"] for c in lab.control.comments(lab.repo, number)]
    decisions = [b for b in bodies if "<!-- kohai:decision:" in b]
    return decisions[-1] if decisions else ""


def _verdict(lab: Lab, number: int, heading: str) -> str:
    text = _decision(lab, number)
    return text if heading in text else ""


def test_a_helpful_idea_merges_and_a_null_one_closes_with_their_reasons(make_lab) -> None:
    lab: Lab = make_lab(files=FILES)
    lab.add_host("fern")
    lab.wait("baseline", lambda: len(lab.q("SELECT * FROM runs WHERE kind = 'baseline'")) >= 3, 180)
    for title, body in (("Raise the gain", "GAIN = 0.5"), ("Set the note", "NOTE = 1")):
        lab.control.open_issue(lab.repo, title, body, labels=["student:fern"], as_user="bob")
    done = lab.wait(
        "both decided",
        lambda: (
            (rows := lab.q("SELECT * FROM experiments WHERE state IN ('merged', 'closed')"))
            and len(rows) == 2
            and rows
        ),
        timeout=360,
    )
    by_title = {row["title"]: row for row in done}
    helpful, null = by_title["Raise the gain"], by_title["Set the note"]
    assert helpful["state"] == "merged" and null["state"] == "closed"
    # The decision comments reach GitHub through the outbox, a moment after the state moves.
    merged_text = lab.wait(
        "the merge's reasons", lambda: _verdict(lab, helpful["pr_number"], "Merging"), 60
    )
    closed_text = lab.wait(
        "the close's reasons", lambda: _verdict(lab, null["pr_number"], "Closing"), 60
    )
    for text in (merged_text, closed_text):
        assert "chance that the effect is positive" in text
        assert "false-merge budget" in text and "one more seed" in text
    assert "Merging" in merged_text
    assert "Closing" in closed_text
