"""`kohai.toml`'s upper bounds: real labs pass, runaway or mistaken values fail clearly.

Real use, for scale: one run of a speedrun variant takes about 1 h 50 min on
an H100, a three-arm hypothesis about 5 h 30 min. A day of training must pass;
`1000h` and a million seeds must not, and each error names the field.
"""

from __future__ import annotations

import pytest

from bot.problem import (
    MAX_BUDGET_S,
    MAX_SEEDS,
    ProblemError,
    loads_problem,
)


def toml(train: str = "", files: str = "", extra: str = "") -> str:
    return f'[metric]\nname = "val_bpb"\n[train]\n{train}\n[files]\n{files}\n{extra}'


@pytest.mark.parametrize(
    ("text", "check"),
    [
        (toml('budget = "24h"'), lambda p: p.budget_s == 24 * 3600),
        (toml('budget = "5.5h"'), lambda p: p.budget_s == 19800),
        (toml('budget = "72h"'), lambda p: p.budget_s == MAX_BUDGET_S),
        (toml('grace = "10m"'), lambda p: p.grace_s == 600),
        (
            toml("seeds = 8\nconfirm_seeds = 64\nbaseline_seeds = 16"),
            lambda p: p.confirm_seeds == 64,
        ),
        (
            toml(extra='[eval]\ncommand = "python prepare.py evaluate"\nbudget = "3h"'),
            lambda p: p.evaluation.budget_s == 3 * 3600,
        ),
        (
            toml(
                files='editable = ["train.py", "model/", "configs/*.yaml"]\nfrozen = ["prepare.py"]'
            ),
            lambda p: p.editable == ("train.py", "model/", "configs/*.yaml"),
        ),
    ],
)
def test_real_settings_pass(text: str, check) -> None:
    assert check(loads_problem(text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (toml('budget = "1000h"'), "train.budget: at most 72h"),
        (toml("budget = 1e12"), "train.budget: at most 72h"),
        (toml("budget = inf"), "train.budget: must be positive"),
        (toml("budget = nan"), "train.budget: must be positive"),
        (toml('grace = "2h"'), "train.grace: at most 1h"),
        (toml(extra='[eval]\ncommand = "x"\nbudget = "1000h"'), "eval.budget: at most 24h"),
        (toml("seeds = 1000000"), f"train.seeds: expected an integer from 1 to {MAX_SEEDS}"),
        (toml("confirm_seeds = 65"), "train.confirm_seeds"),
        (toml("baseline_seeds = 1000000"), "train.baseline_seeds"),
        (toml("seeds = 0"), "train.seeds"),
        (toml('command = "' + "x" * 20_000 + '"'), "train.command: at most"),
        (toml("early_stop = { band = 1e9 }"), "train.early_stop.band: at most"),
        (toml("early_stop = { after = nan }"), "train.early_stop.after"),
        (
            toml(extra="[search]\nlr = { min = 0.0, max = inf }"),
            "search.lr.max: expected a finite number",
        ),
        (
            toml(extra="[search]\nlr = { min = nan, max = 1.0 }"),
            "search.lr.min: expected a finite number",
        ),
        (
            toml(extra="[search]\nd = { choices = [" + ", ".join(["1"] * 1001) + "] }"),
            "at most 1000 choices",
        ),
        (
            toml(files="editable = [" + ", ".join(f'"f{i}.py"' for i in range(1001)) + "]"),
            "files.editable: at most",
        ),
    ],
)
def test_runaway_values_fail_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message.replace("(", r"\(").replace(")", r"\)")):
        loads_problem(text)


@pytest.mark.parametrize(
    ("editable", "frozen", "named"),
    [
        ('["*"]', '["prepare.py"]', "kohai.toml"),  # everything, the contract included
        ('["*.toml"]', "[]", "kohai.toml"),
        ('["*.yml"]', "[]", ".github/"),  # workflows: they run with the repository's secrets
        ('[".github/"]', "[]", ".github/"),
        ('[".github/*.md"]', "[]", ".github/"),
        ('["*.py"]', '["prepare.py"]', "the frozen 'prepare.py'"),
        ('["data/*.csv"]', '["data/"]', "the frozen 'data/'"),
        ('["src/"]', '["src/eval.py"]', "the frozen 'src/eval.py'"),
        ('["model_[ab].py"]', '["model_a.py"]', "the frozen 'model_a.py'"),
    ],
)
def test_an_editable_glob_that_covers_a_protected_file_fails_naming_both(
    editable: str, frozen: str, named: str
) -> None:
    text = toml(files=f"editable = {editable}\nfrozen = {frozen}")
    with pytest.raises(ProblemError) as caught:
        loads_problem(text)
    message = str(caught.value)
    assert message.startswith("files.editable:")
    assert named in message
    assert editable.strip('[]"').split('", "')[0] in message
