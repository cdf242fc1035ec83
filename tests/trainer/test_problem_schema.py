"""kohai.toml's one model: typos name the closest key, [metric] is required, every bad key is
one line naming its path, and the JSON Schema editors read agrees with the model.

Before the model, `seed = 1` (for `seeds`) passed silently with one seed, and a file
without `[metric]` trained against a default `val_bpb`; both are errors now.
"""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest

from bot.problem import (
    MAX_KNOBS,
    MAX_PATHS,
    MAX_TRACKS,
    ProblemError,
    json_schema,
    loads_problem,
)
from trainer.cli import REFERENCE_PROBLEM

METRIC = '[metric]\nname = "loss"\n'
REFERENCE = (REFERENCE_PROBLEM / "kohai.toml").read_text()


def error_of(text: str) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        loads_problem(text)
    return caught.value


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # the example: one seed for `seeds`, silently, before
        (METRIC + "[train]\nseed = 3\n", "train.seed: unknown key; did you mean `seeds`?"),
        (METRIC + '[train]\nbugdet = "5m"\n', "train.bugdet: unknown key; did you mean `budget`?"),
        (METRIC + "[train]\nconfirm_seed = 3\n", "did you mean `confirm_seeds`?"),
        (METRIC + '[train]\ncomand = "x"\n', "train.comand: unknown key; did you mean `command`?"),
        ('[metric]\nname = "loss"\ndirecton = "maximize"\n', "did you mean `direction`?"),
        (METRIC + '[files]\neditables = ["a.py"]\n', "did you mean `editable`?"),
        (METRIC + '[eval]\ncommand = "x"\nhidden = []\n', "eval.hidden: unknown key"),
        (
            METRIC + '[data]\ncommand = "x"\nzzz = 1\n',
            "data.zzz: unknown key; expected one of command",
        ),
        (METRIC + "[search]\nlr = { min = 1, max = 2, lg = true }\n", "search.lr.lg: unknown key"),
        (METRIC + "[search]\nlr = { mn = 1, max = 2 }\n", "search.lr.mn: unknown key"),
        (METRIC + "[lab]\nweigth = 2\n", "lab.weigth: unknown key; did you mean `weight`?"),
        (METRIC + "[tracks.wide]\nprogramme = 'x.md'\n", "did you mean `program`?"),
        (METRIC + "[gate]\npool = false\n", "gate.pool: unknown key; did you mean `pooled`?"),
        (METRIC + "[train]\nearly_stop = { aftr = 0.5 }\n", "train.early_stop.aftr: unknown"),
        ("[metrics]\nname = 'x'\n[metric]\nname = 'y'\n", "metrics: unknown key; did you mean"),
        (METRIC + "[serach]\n", "serach: unknown key; did you mean `search`?"),
        # a key that belongs to a table of its own, written under [metric]
        (METRIC + "lab = 5\n", "metric.lab: unknown key; [lab] is a table of its own"),
        # a key of another table: where it lives
        ('budget = "5m"\n' + METRIC, "budget: unknown key; `budget` is a key of [train] or [eval]"),
        (METRIC + "seeds = 3\n", "metric.seeds: unknown key; `seeds` is a key of [train]"),
        (METRIC + "[lab]\nprogram = 'x.md'\n", "`program` is a key of [tracks.<name>]"),
    ],
)
def test_an_unknown_key_is_an_error_naming_the_closest_known_key(text: str, line: str) -> None:
    assert line in str(error_of(text))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "[metric] is missing"),
        ('[train]\ncommand = "python train.py"\n', "[metric] is missing"),
        ('[metric]\ndirection = "maximize"\n', "metric.name is missing"),
        ("metric = 3\n", "[metric] must be a table"),
    ],
)
def test_a_file_without_a_metric_is_an_error_not_a_default_val_bpb(text: str, needle: str) -> None:
    message = str(error_of(text))
    assert message.startswith(needle)
    if "missing" in needle:
        assert 'name = "val_bpb"' in message  # it says what to write


def test_the_direction_still_defaults_to_minimize() -> None:
    assert loads_problem(METRIC).direction == "minimize"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (METRIC + '[train]\ngrace = "61m"\n', "train.grace: at most 1h"),
        (METRIC + "[train]\nbaseline_seeds = 0\n", "train.baseline_seeds: expected an integer"),
        (METRIC + "[train]\nseeds = 2.0\n", "train.seeds: expected an integer"),
        (METRIC + '[train]\nseeds = "2"\n', "train.seeds: expected an integer"),
        (METRIC + "[train]\nbudget = true\n", "train.budget: expected a duration"),
        (METRIC + '[train]\ncommand = "a\\u0000b"\n', "train.command: at most 10000 characters"),
        (METRIC + "[train]\nearly_stop = { band = 0 }\n", "train.early_stop.band"),
        (METRIC + "[train]\nearly_stop = 3\n", "train.early_stop: expected true, false or"),
        (
            METRIC + "[eval]\ncommand = 'x'\nhide = [" + ", ".join(['"a"'] * 1001) + "]\n",
            f"eval.hide: at most {MAX_PATHS} entries",
        ),
        (
            METRIC + "[search]\n" + "".join(f"k{i} = {{ choices = [1] }}\n" for i in range(101)),
            f"search: at most {MAX_KNOBS} entries",
        ),
        (
            METRIC + "".join(f"[tracks.t{n}]\n" for n in range(MAX_TRACKS + 1)),
            f"tracks: at most {MAX_TRACKS} entries",
        ),
        (METRIC + "[search]\nlr = { min = 2, max = 1 }\n", "search.lr: min must be below max"),
        (METRIC + "[search]\nlr = { min = 0, max = 1, log = true }\n", "needs min > 0"),
        (METRIC + "[search]\nlr = { max = 1 }\n", "search.lr: expected min and max, or choices"),
        (METRIC + "[search]\nd = { choices = [] }\n", "search.d.choices: expected a non-empty"),
        (
            METRIC + "[search]\nd = { choices = [1], min = 0, max = 1 }\n",
            "search.d: either choices or min and max, not both",
        ),
        (METRIC + '[search]\n"1lr" = { min = 1, max = 2 }\n', "search.1lr: knob names must be"),
        (METRIC + "[search]\nlr = 0.1\n", "[search.lr] must be a table like { min = 1"),
        (METRIC + "search = 3\n", "metric.search: unknown key"),
        ("search = 3\n" + METRIC, "[search] must be a table"),
        (METRIC + "[lab]\nweight = 1001\n", "lab.weight: expected a number in (0, 1000]"),
        (METRIC + "[gate]\nscreen = 5.5\n", "gate.screen: expected a number of baseline stds"),
        (METRIC + '[files]\nfrozen = ["../x"]\n', "files.frozen[0]: '../x' must be relative"),
        (METRIC + '[files]\neditable = ["a.py"]\nfrozen = ["a.py"]\n', "both editable and frozen"),
        (METRIC + '[files]\neditable = ["kohai.toml"]\n', "kohai.toml holds the budget"),
    ],
)
def test_every_bound_is_one_line_naming_its_key(text: str, needle: str) -> None:
    message = str(error_of(text))
    assert needle in message
    assert "\n" not in message


def test_every_bad_key_is_listed_unknown_keys_first() -> None:
    """`kohai check` shows them all: a typo first, as the likeliest cause of the rest."""
    error = error_of(
        METRIC + "[train]\nseeds = 100\nseed = 1\n[gate]\nscreen = -1\n[lab]\nwieght = 2\n"
    )
    assert str(error) == error.problems[0]
    assert error.problems[0].startswith("train.seed: unknown key")
    assert {line.split(":")[0] for line in error.problems} == {
        "train.seed",
        "lab.wieght",
        "train.seeds",
        "gate.screen",
    }


@pytest.mark.parametrize(
    ("text", "path"),
    [
        # hostile keys: a newline or a quote in a key must not break the one line
        (METRIC + '[tracks."a\\nb"]\n', 'tracks."a\\nb"'),
        (METRIC + '[search]\n"x\\"y" = { min = 1, max = 2 }\n', 'search."x\\"y"'),
    ],
)
def test_a_hostile_key_is_quoted_on_one_line(text: str, path: str) -> None:
    message = str(error_of(text))
    assert message.startswith(path + ":")
    assert "\n" not in message


def test_a_huge_value_is_cut_short_in_the_message() -> None:
    message = str(error_of(METRIC + '[metric.x]\n[train]\nbudget = "' + "9" * 5000 + 'h"\n'))
    assert len(message) < 300


def test_the_reference_problem_and_every_default_still_parse() -> None:
    problem = loads_problem(REFERENCE)
    assert (problem.metric, problem.budget_s, problem.seeds) == ("val_bpb", 30.0, 1)
    plain = loads_problem(METRIC)
    assert (plain.budget_s, plain.grace_s, plain.confirm_seeds, plain.editable) == (
        300.0,
        10.0,
        5,
        ("train.py",),
    )
    assert plain.evaluation is None and plain.early_stop is None and plain.tracks == ()


# ------------------------------------------------------------------ the JSON Schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # a valid JSON Schema itself
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_is_json_and_accepts_the_reference_problem(validator) -> None:
    json.dumps(json_schema())
    assert list(validator.iter_errors(tomllib.loads(REFERENCE))) == []


@pytest.mark.parametrize(
    "text",
    [
        METRIC,
        REFERENCE,
        METRIC + "[train]\nearly_stop = true\nbudget = 90\n",
        METRIC + "[train]\nearly_stop = { after = 0.5 }\n[gate]\nscreen = 0\n",
        METRIC + '[tracks.wide]\nbase = "track/wide"\nweight = 2\n[lab]\nweight = 3\n',
        METRIC + '[search]\nA = { min = 1, max = 8, int = true, group = "g" }\n'
        'B = { choices = ["x", 2], group = "g" }\n',
    ],
)
def test_what_the_model_accepts_the_schema_accepts(validator, text: str) -> None:
    loads_problem(text)
    assert list(validator.iter_errors(tomllib.loads(text))) == []


@pytest.mark.parametrize(
    "text",
    [
        "",  # no [metric]
        METRIC + "[train]\nseed = 1\n",
        METRIC + "[train]\nseeds = 65\n",
        METRIC + "[train]\nbudget = 1e9\n",
        METRIC + '[train]\nbudget = "soon"\n',
        METRIC + "[train]\nearly_stop = 'yes'\n",
        METRIC + "[metric.extra]\n",
        '[metric]\nname = "x"\ndirection = "up"\n',
        METRIC + "[tracks.Wide]\n",
        METRIC + '[search]\n"a-b" = { choices = [1] }\n',
        METRIC + "[gate]\nscreen = 6\n",
        METRIC + "[lab]\nweight = 0\n",
    ],
)
def test_what_the_model_refuses_for_a_key_the_schema_refuses_too(validator, text: str) -> None:
    with pytest.raises(ProblemError):
        loads_problem(text)
    assert list(validator.iter_errors(tomllib.loads(text)))


def test_the_schema_describes_keys_for_editors() -> None:
    train = json_schema()["$defs"]["TrainTable"]["properties"]
    assert train["seeds"]["maximum"] == 64 and train["seeds"]["description"]
    assert train["budget"]["default"] == "5m"
    assert json_schema()["required"] == ["metric"]
