"""The problem repository contract: `kohai.toml`, parsed and validated.

Shared by the bot and the GPU hosts, so it depends on the standard library and
pydantic only (the `host` extra installs it). One pydantic model, `KohaiToml`,
states every key: it validates the file (an unknown key is an error naming the
closest known one), and it is the JSON Schema editors read (`kohai schema`).
The rest of kohai reads the frozen `Problem` dataclass built from it.

The budget lives here, in a file the agents may not edit (it is never in
`files.editable`), and the trainer enforces it; a prompt never does.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

CONFIG_FILE = "kohai.toml"
PROGRAM_FILE = "program.md"
DEFAULT_TRACK = "default"
TRACK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
MAX_TRACKS = 16
MAX_WEIGHT = 1000.0  # a share of the students' time: a lab or track of 1 still gets its turn

# Upper bounds of what kohai.toml may ask for, well above real use (one run of a
# speedrun variant takes about 1 h 50 min on an H100, a three-arm hypothesis about
# 5 h 30 min) and far below what would tie up the students for good: a day of
# training passes, `1000h` does not; a million seeds does not.
MAX_BUDGET_S = 72 * 3600.0  # [train] budget
MAX_GRACE_S = 3600.0  # [train] grace: saving the artefact after the budget's SIGTERM
MAX_EVAL_BUDGET_S = 24 * 3600.0  # [eval] budget
MAX_SEEDS = 64  # seeds, confirm_seeds, baseline_seeds
MAX_PATHS = 1000  # entries of files.editable, files.frozen, eval.hide
MAX_KNOBS = 100  # [search] knobs
MAX_CHOICES = 1000  # choices of one knob
MAX_COMMAND_CHARS = 10_000  # a command line
MAX_BAND = 100.0  # [train] early_stop band, in baseline standard deviations
# What no editable pattern may cover, with paths to try under it: the bot refuses
# any change to them anyway (the contract, the workflows), so such a pattern is a mistake.
PROTECTED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kohai.toml", ()),
    (".github/", (".github/workflows/ci.yml", ".github/CODEOWNERS")),
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ProblemError(ValueError):
    """A `kohai.toml` that cannot be used; the message names the key and what to change.

    `problems` holds one such line for every bad key (the message is the first).
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


def path_matches(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Listed exactly, under a listed directory, or matched by a listed glob.

    The one reading of `files.editable` and `files.frozen`: the host's check
    before training and the bot's check of every pushed tip and merge use it.
    """
    for pattern in patterns:
        entry = pattern.rstrip("/")
        if path == entry or path.startswith(entry + "/") or fnmatch.fnmatchcase(path, entry):
            return True
    return False


def parse_duration(
    value: str | int | float, *, field_name: str = "duration", maximum: float | None = None
) -> float:
    """Seconds from `"5m"`, `"30s"`, `"1.5h"`, `"250ms"` or a bare number of seconds.

    Positive and finite; at most `maximum` seconds when one is given.
    """
    seconds, problem = _seconds(value, maximum)
    if problem:
        raise ProblemError(f"{field_name}: {problem}")
    return seconds


def _hours(seconds: float) -> str:
    """A bound or a duration for an error message: `72h`, `1h`, `90s`."""
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Knob:
    """One searchable setting of the offline strategy: a float range or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None
    # A declared group: knobs of one group move together in one PR, as one hypothesis
    # (a learning rate and its warmup). None: the knob moves alone.
    group: str | None = None


@dataclass(frozen=True)
class SearchUnit:
    """What one offline proposal moves: a knob alone, or every knob of a declared group."""

    name: str  # the knob's name, or the group's
    knobs: tuple[Knob, ...]
    group: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.knobs)


def search_units(knobs: tuple[Knob, ...]) -> tuple[SearchUnit, ...]:
    """The move units in `[search]` order (a group where its first knob is declared)."""
    units: list[SearchUnit] = []
    seen: set[str] = set()
    for knob in knobs:
        if knob.group is None:
            units.append(SearchUnit(knob.name, (knob,)))
        elif knob.group not in seen:
            seen.add(knob.group)
            members = tuple(k for k in knobs if k.group == knob.group)
            units.append(SearchUnit(knob.group, members, group=True))
    return tuple(units)


def _check_groups(knobs: tuple[Knob, ...]) -> None:
    """A group names two or more knobs, and no knob outside it: else it is likely a typo.

    The `group` key on a knob makes "a knob is in at most one group" hold by
    construction; what is left to check is that a group is a real group.
    """
    names = {k.name for k in knobs}
    for unit in search_units(knobs):
        if not unit.group:
            continue
        if len(unit.knobs) < 2:
            raise ProblemError(
                f"search.{unit.knobs[0].name}.group: group {unit.name!r} has only this knob; "
                "a group moves two or more knobs together (a misspelt group name?)"
            )
        if unit.name in names:
            raise ProblemError(
                f"search: group {unit.name!r} has the name of a knob; hypotheses name groups "
                "and knobs alike, so they must differ"
            )


@dataclass(frozen=True)
class Evaluation:
    """The sealed evaluator: `[eval]` in kohai.toml. Its files come from the base commit."""

    command: str
    budget_s: float = 120.0
    # What training (and the model-side child) must not read: repo-relative
    # paths, absolute paths, or `module:NAME` for an importable module's files.
    hide: tuple[str, ...] = ()


@dataclass(frozen=True)
class EarlyStop:
    """`[train] early_stop`: stop a run that trails the baseline's curve beyond its noise.

    Off unless declared: stopping costs power when curves cross late.
    """

    after_fraction: float = 0.3  # never before this fraction of the budget
    band: float = 3.0  # how many baseline standard deviations behind counts as losing


MAX_SCREEN = 5.0  # a first-seed margin of more baseline stds than this would screen out all
GATE_METHODS = ("test", "bayes")
MAX_FALSE_MERGES = 0.5  # a budget above one false merge in two would be no gate


@dataclass(frozen=True)
class GateConfig:
    """`[gate]`: the merge gate's opt-in levers (`bot.core.gate.decide`).

    `screen`: a first seed not ahead of its matched baseline seed by this many
    baseline standard deviations closes without confirmation seeds (0: off).
    `sequential`: confirmation seeds one at a time, a candidate no longer ahead
    closing at once (the test is still made only at `confirm_seeds`).
    `pooled`: the paired test pools its variance with the lab's (repo and
    track) earlier paired comparisons. The defaults are what `bench/decisions.py
    --levers` supports (docs/agents.md, "The merge gate").
    `method`: "test" (the significance test above, the default) or "bayes" (the
    Bayesian gate with a false-merge budget, `bot.core.gate.decide_bayes`).
    `false_merges`: the Bayesian gate's budget, expected false merges per merge.
    """

    # All three on: each kept false merges at or under 5 % and raised true merges
    # per candidate run at every seed correlation (bench/decisions.py --levers).
    screen: float = 0.5
    sequential: bool = True
    pooled: bool = True
    # "test" stays the default: the Bayesian gate beats it in bench/lab.py with its prior
    # learned online, but the demo with it merged no advisor idea (its vague start is too
    # cautious for a lab of a few short runs; docs/lab-benchmark.md, "The engine and the bench").
    method: str = "test"
    false_merges: float = 0.05


@dataclass(frozen=True)
class Track:
    """A research line of its own in one repository: `[tracks.<name>]` in kohai.toml.

    It has its own base branch (created from the default branch when missing),
    program file, baseline, advisor and share of the students' time; its
    merges land on its own base branch, never on the default one.
    """

    name: str
    base: str
    program: str = PROGRAM_FILE
    weight: float = 1.0


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)i?B?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
MIN_MEMORY = 64 << 20
MAX_MEMORY = 64 << 40
MIN_DISK = 1 << 20
MAX_DISK = 1 << 50
MIN_PROCESSES = 16
MAX_PROCESSES = 1_000_000


def parse_size(value: str | int, *, field_name: str) -> int:
    """Bytes from `"512M"`, `"3G"`, `"1.5T"`, `"64GiB"` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ProblemError(f"{field_name}: expected a size like '16G', got {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ProblemError(f"{field_name}: expected a size like '16G' or '512M', got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


@dataclass(frozen=True)
class Resources:
    """`[train] memory`, `processes`, `disk`: what one job may use on its host (`trainer.limits`).

    The defaults sit well above real use on a GPU box: most of the host's
    memory, thousands of processes and threads (a cgroup's pids count
    threads), and room for checkpoints. Breaking one ends the run as a crash
    naming it (`out of memory`, `too many processes`, `disk quota`).
    """

    memory_bytes: int | None = None  # an absolute limit; None: `memory_share` of the host
    memory_share: float = 0.9
    processes: int = 16384
    disk_bytes: int = 200 << 30

    def memory_on(self, host_bytes: int) -> int:
        """The memory limit on a host with `host_bytes` of memory."""
        if self.memory_bytes is not None:
            return self.memory_bytes
        return int(host_bytes * self.memory_share)


def _resources(train: dict[str, Any]) -> Resources:
    default = Resources()
    memory_bytes, share = None, default.memory_share
    memory = train.get("memory")
    if isinstance(memory, str) and memory.strip().endswith("%"):
        try:
            share = float(memory.strip()[:-1]) / 100.0
        except ValueError:
            share = -1.0
        if not 0.01 <= share <= 1.0:  # NaN fails this too
            raise ProblemError(f"train.memory: a share of the host in [1%, 100%], got {memory!r}")
    elif memory is not None:
        memory_bytes = parse_size(memory, field_name="train.memory")
        if not MIN_MEMORY <= memory_bytes <= MAX_MEMORY:
            raise ProblemError(f"train.memory: expected between 64M and 64T, got {memory!r}")
    processes = train.get("processes", default.processes)
    if (
        isinstance(processes, bool)
        or not isinstance(processes, int)
        or not MIN_PROCESSES <= processes <= MAX_PROCESSES
    ):
        raise ProblemError(
            f"train.processes: expected an integer in [{MIN_PROCESSES}, {MAX_PROCESSES}], "
            f"got {processes!r}"
        )
    disk = train.get("disk")
    disk_bytes = default.disk_bytes if disk is None else parse_size(disk, field_name="train.disk")
    if not MIN_DISK <= disk_bytes <= MAX_DISK:
        raise ProblemError(f"train.disk: expected between 1M and 1P, got {disk!r}")
    return Resources(
        memory_bytes=memory_bytes, memory_share=share, processes=processes, disk_bytes=disk_bytes
    )


@dataclass(frozen=True)
class Problem:
    """Everything the bot and the trainer need to know about a problem repository."""

    metric: str = "val_bpb"
    direction: str = "minimize"
    command: str = "python train.py"
    budget_s: float = 300.0
    grace_s: float = 10.0  # between the budget's SIGTERM (save the artefact) and SIGKILL
    seeds: int = 1
    confirm_seeds: int = 5  # 5/5 reaches 80 % power at a 2-sigma effect (bench/decisions.py)
    baseline_seeds: int = 5
    editable: tuple[str, ...] = ("train.py",)
    frozen: tuple[str, ...] = ("prepare.py",)
    knobs: tuple[Knob, ...] = field(default_factory=tuple)
    evaluation: Evaluation | None = None  # None: unsealed, the script's own claim is the result
    data_command: str | None = None  # `[data] command`: trusted, before training
    data_network: bool = False  # `[data] network = true`: the data step may reach the network
    early_stop: EarlyStop | None = None
    weight: float = 1.0  # `[lab] weight`: the default line's share of the students' time
    tracks: tuple[Track, ...] = field(default_factory=tuple)
    gate: GateConfig = field(default_factory=GateConfig)
    resources: Resources = field(default_factory=Resources)

    @property
    def sealed(self) -> bool:
        return self.evaluation is not None

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"

    def better(self, a: float, b: float) -> bool:
        """True when metric value `a` is strictly better than `b`."""
        return a < b if self.minimize else a > b

    def knob(self, name: str) -> Knob | None:
        return next((k for k in self.knobs if k.name == name), None)

    def track(self, name: str | None) -> Track | None:
        """The declared track of that name (None for the default track or an unknown name)."""
        return next((t for t in self.tracks if t.name == (name or "").lower()), None)

    @property
    def track_names(self) -> tuple[str, ...]:
        """Every track of the repository, the default one first."""
        return (DEFAULT_TRACK, *(t.name for t in self.tracks))

    @property
    def units(self) -> tuple[SearchUnit, ...]:
        """The offline advisor's move units: each ungrouped knob, each declared group."""
        return search_units(self.knobs)


def _example(pattern: str) -> str:
    """A path `pattern` matches: each wildcard filled with a plain character."""
    path = re.sub(
        r"\[(!?)([^\]]*)\]", lambda m: "x" if m.group(1) else (m.group(2) or "x")[0], pattern
    )
    return path.rstrip("/").replace("*", "x").replace("?", "x")


def _covers(pattern: str, entry: str, probes: tuple[str, ...] = ()) -> bool:
    """Whether the editable `pattern` covers something the `files` entry `entry` names.

    Either the entry (or a probe path under it) matches the pattern, or a path
    the pattern matches lies under the entry (`data/*.py` inside `data/`).
    """
    literal = entry.rstrip("/")
    return any(path_matches(path, [pattern]) for path in (literal, *probes)) or path_matches(
        _example(pattern), [entry]
    )


def _check_editable(editable: tuple[str, ...], frozen: tuple[str, ...]) -> None:
    """No editable entry may cover a frozen file, kohai.toml or `.github/`: a student
    could never change them (the trainer and the bot refuse it), so such a pattern is
    a mistake to name, not a permission to grant."""
    for pattern in editable:
        for entry, probes in PROTECTED:
            if _covers(pattern, entry, probes):
                raise ProblemError(
                    f"files.editable: {pattern!r} covers {entry}, which no student may change"
                )
        for entry in frozen:
            if _covers(pattern, entry):
                raise ProblemError(
                    f"files.editable: {pattern!r} covers the frozen {entry!r}; "
                    "a file cannot be both editable and frozen"
                )


_BRANCH_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def valid_branch(name: str) -> bool:
    """A branch name git and GitHub accept (the rules of `git check-ref-format`, in short)."""
    return (
        bool(name)
        and len(name) <= 200
        and not _BRANCH_BAD.search(name)
        and not name.startswith(("/", "-", "."))
        and not name.endswith(("/", ".", ".lock"))
        and "/." not in name
        and name != "@"
    )


# ------------------------------------------------------------------ the schema
#
# `KohaiToml` below is kohai.toml: every table and key with its type, default,
# bound and description. It is the only validation of the file and the JSON
# Schema editors read (`kohai schema`). Adding a key is one line in its table's
# class (and, where the rest of the code reads it, one field of `Problem`).


def _shown(value: Any) -> str:
    """A value for an error line: its repr, cut short (a command can be 10 000 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(text: str) -> PydanticCustomError:
    """An error whose message is `text` exactly (pydantic would prefix a ValueError's)."""
    return PydanticCustomError("kohai", "{text}", {"text": text})


def _rule(check: Callable[[Any], str | None]) -> WrapValidator:
    """Check the raw value first; a sentence from `check` is the error, in kohai's words.

    The type and the `Field` bounds beside it still describe the key in the
    JSON Schema; the check says what to change where pydantic would not.
    """

    def wrap(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problem = check(value)
        if problem:
            raise _fail(problem)
        return handler(value)

    return WrapValidator(wrap)


def _says(text: str) -> WrapValidator:
    """Whatever fails in this key, the error is `text, got <value>`."""

    def wrap(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise _fail(f"{text}, got {_shown(value)}") from None

    return WrapValidator(wrap)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: Any, maximum: float | None) -> tuple[float, str | None]:
    """Seconds from a duration, or why it is not one (without the key's name)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return 0.0, f"expected a duration like '5m', got {_shown(value)}"
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            return 0.0, f"expected a duration like '5m' or '30s', got {_shown(value)}"
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        seconds = float(value)
    if not 0 < seconds < float("inf"):  # NaN fails this too
        return 0.0, f"must be positive, got {_shown(value)}"
    if maximum is not None and seconds > maximum:
        return 0.0, f"at most {_hours(maximum)}, got {_shown(value)} ({_hours(seconds)})"
    return seconds, None


def _to_seconds(maximum: float) -> Callable[[Any], float]:
    """The reading of a duration key: `"5m"`, `"30s"`, `"1.5h"`, `"250ms"` or seconds."""

    def convert(value: Any) -> float:
        seconds, problem = _seconds(value, maximum)
        if problem:
            raise _fail(problem)
        return seconds

    return convert


def _duration_schema(maximum: float) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "pattern": _DURATION.pattern},
            {"type": "number", "exclusiveMinimum": 0, "maximum": maximum},
        ],
    }


def _command_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "expected a command line"
    if len(value) > MAX_COMMAND_CHARS or "\x00" in value:
        return f"at most {MAX_COMMAND_CHARS} characters, without NUL bytes"
    return None


def _relative_problem(value: Any) -> str | None:
    if isinstance(value, str) and (value.startswith("/") or ".." in Path(value).parts):
        return f"{_shown(value)} must be relative to the repository root"
    return None


def _paths_problem(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        return "expected a list of paths"
    if len(value) > MAX_PATHS:
        return f"at most {MAX_PATHS} entries, got {len(value)}"
    return None


def _hide_problem(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        return "expected a list of paths or module:NAME entries"
    if len(value) > MAX_PATHS:
        return f"at most {MAX_PATHS} entries, got {len(value)}"
    for entry in value:
        if ".." in Path(entry.removeprefix("module:")).parts:
            return f"{_shown(entry)} may not contain '..'"
    return None


def _choices_problem(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "expected a non-empty list"
    if len(value) > MAX_CHOICES:
        return f"at most {MAX_CHOICES} choices, got {len(value)}"
    return None


def _branch_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not valid_branch(value):
        return f"expected a branch name, got {_shown(value)}"
    return None


def _program_problem(value: Any) -> str | None:
    if (
        not isinstance(value, str)
        or not value
        or value.startswith("/")
        or ".." in Path(value).parts
    ):
        return "expected a path relative to the repository root"
    return None


def _not_default(name: str) -> str:
    if name == DEFAULT_TRACK:
        raise _fail("'default' is the repository's own line and is reserved")
    return name


def _after_problem(value: Any) -> str | None:
    if not _number(value) or not value > 0:
        return "expected a positive number"
    if not value < 1:
        return "a fraction of the budget below 1"
    return None


def _band_problem(value: Any) -> str | None:
    if not _number(value) or not value > 0:
        return "expected a positive number"
    if not value <= MAX_BAND:
        return f"at most {MAX_BAND:g} baseline standard deviations, got {_shown(value)}"
    return None


Command = Annotated[str, Field(min_length=1, max_length=MAX_COMMAND_CHARS), _rule(_command_problem)]
RelativePath = Annotated[str, Field(min_length=1), _rule(_relative_problem)]
Paths = Annotated[list[RelativePath], Field(max_length=MAX_PATHS), _rule(_paths_problem)]
Seeds = Annotated[
    int, Field(ge=1, le=MAX_SEEDS), _says(f"expected an integer from 1 to {MAX_SEEDS}")
]
Weight = Annotated[
    float,
    Field(gt=0, le=MAX_WEIGHT, description="a share of the students' time"),
    _says(f"expected a number in (0, {MAX_WEIGHT:g}]"),
]
Flag = Annotated[bool, _says("expected true or false")]
Finite = Annotated[
    int | Annotated[float, Field(allow_inf_nan=False)], _says("expected a finite number")
]
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
KnobName = Annotated[str, Field(pattern=IDENTIFIER), _says("knob names must be identifiers")]
GroupName = Annotated[
    str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$"), _says("expected a group name")
]
TrackName = Annotated[
    str,
    Field(pattern=f"^{TRACK_NAME.pattern}$"),
    _says("a track name is lowercase letters, digits and '-' (at most 40)"),
    AfterValidator(_not_default),
]
TrainBudget = Annotated[
    float,
    BeforeValidator(_to_seconds(MAX_BUDGET_S)),
    WithJsonSchema(_duration_schema(MAX_BUDGET_S)),
]
TrainGrace = Annotated[
    float, BeforeValidator(_to_seconds(MAX_GRACE_S)), WithJsonSchema(_duration_schema(MAX_GRACE_S))
]
EvalBudget = Annotated[
    float,
    BeforeValidator(_to_seconds(MAX_EVAL_BUDGET_S)),
    WithJsonSchema(_duration_schema(MAX_EVAL_BUDGET_S)),
]
# The tags of `[train] early_stop`'s two forms: not keys, so error paths leave them out.
_FLAG, _TABLE = "<true or false>", "<table>"


class _Table(BaseModel):
    """A TOML table: its keys are exactly the declared ones, with kohai's error sentences."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # What the table looks like, for the error when a value stands where it belongs.
    shape: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _a_table(cls, data: Any) -> Any:
        """A value where a table belongs: say what the table looks like."""
        if not isinstance(data, dict):
            raise PydanticCustomError(
                "table", "{text}", {"text": f"must be a table{cls.shape}, got {_shown(data)}"}
            )
        return data

    @classmethod
    def keys(cls) -> list[str]:
        """The keys this table knows, as the file spells them."""
        return [field.alias or name for name, field in cls.model_fields.items()]


class MetricTable(_Table):
    """`[metric]`: the primary metric, the one number a run is judged by."""

    name: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z_][A-Za-z0-9_./-]*$",
            description="the primary metric's key in the evaluator's JSON (e.g. val_bpb)",
        ),
        _says("expected a metric name"),
    ]
    direction: Annotated[
        Literal["minimize", "maximize"],
        Field(description="which way is better"),
        _says("expected 'minimize' or 'maximize'"),
    ] = "minimize"


class EarlyStopTable(_Table):
    """`[train] early_stop = { ... }`: stop a run that trails the baseline's curve beyond its noise."""

    shape: ClassVar[str] = " like { after = 0.3, band = 3 }"
    after: Annotated[
        float,
        Field(gt=0, lt=1, description="never before this fraction of the budget"),
        _rule(_after_problem),
    ] = 0.3
    band: Annotated[
        float,
        Field(
            gt=0,
            le=MAX_BAND,
            description="baseline standard deviations behind that count as losing",
        ),
        _rule(_band_problem),
    ] = 3.0


def _early_stop_form(value: Any) -> str:
    return _TABLE if isinstance(value, dict) else _FLAG


EarlyStopKey = Annotated[
    Annotated[bool, _says("expected true, false or { after = 0.3, band = 3 }"), Tag(_FLAG)]
    | Annotated[EarlyStopTable, Tag(_TABLE)],
    Discriminator(_early_stop_form),
]


def _resource_problem(key: str) -> Callable[[Any], str | None]:
    """The check of one `[train]` limit key, in `_resources`' own words."""

    def check(value: Any) -> str | None:
        try:
            _resources({key: value})
        except ProblemError as exc:
            return str(exc).split(": ", 1)[-1]
        return None

    return check


Size = Annotated[str | int | None, _rule(_resource_problem("memory"))]
DiskSize = Annotated[str | int | None, _rule(_resource_problem("disk"))]
Processes = Annotated[
    int, Field(ge=MIN_PROCESSES, le=MAX_PROCESSES), _rule(_resource_problem("processes"))
]


class TrainTable(_Table):
    """`[train]`: the training command and its budget, and the seeds a decision needs."""

    command: Annotated[Command, Field(description="run from the repository root")] = (
        "python train.py"
    )
    budget: Annotated[
        TrainBudget,
        Field(description="training time; the script sees it as KOHAI_BUDGET_S"),
    ] = Field(default="5m", validate_default=True)
    grace: Annotated[
        TrainGrace,
        Field(description="between the budget's SIGTERM (save the artefact) and SIGKILL"),
    ] = Field(default="10s", validate_default=True)
    seeds: Annotated[Seeds, Field(description="seeds per ordinary run")] = 1
    confirm_seeds: Annotated[Seeds, Field(description="seeds a candidate needs before a merge")] = 5
    baseline_seeds: Annotated[
        Seeds, Field(description="seeds of the baseline after each merge")
    ] = 5
    early_stop: Annotated[
        EarlyStopKey,
        Field(description="stop runs that trail the baseline's curve (off unless declared)"),
    ] = False
    memory: Annotated[
        Size, Field(description='memory per job: a size ("16G") or a share of the host ("90%")')
    ] = None
    processes: Annotated[
        Processes, Field(description="processes and threads per job (cgroup pids)")
    ] = Resources().processes
    disk: Annotated[
        DiskSize, Field(description='disk per job: the checkout and the run directory ("200G")')
    ] = None


class FilesTable(_Table):
    """`[files]`: what a student may change, and what is hashed and must not change."""

    editable: Annotated[Paths, Field(description="the only files a student may change")] = [
        "train.py"
    ]
    frozen: Annotated[
        Paths, Field(description="hashed; a run whose frozen files differ fails")
    ] = []


class EvalTable(_Table):
    """`[eval]`: the sealed evaluator, run from the base commit after training."""

    command: Annotated[Command, Field(description="writes the result to KOHAI_EVAL_FILE")]
    budget: Annotated[EvalBudget, Field(description="bounded separately from training")] = Field(
        "2m", validate_default=True
    )
    hide: Annotated[
        list[str],
        Field(
            max_length=MAX_PATHS,
            description="what training must not read: paths, or module:NAME for a module's files",
        ),
        _rule(_hide_problem),
    ] = []


class DataTable(_Table):
    """`[data]`: the trusted preparation step, run from the base commit before training."""

    command: Annotated[Command, Field(description="run from the repository root")]
    network: Annotated[
        Flag,
        Field(
            description="the step may reach the network (to download a data set); "
            "it runs in the job sandbox without it otherwise"
        ),
    ] = False


class KnobTable(_Table):
    """A `[search]` knob of the offline strategy: a range (`min`, `max`) or `choices`."""

    shape: ClassVar[str] = " like { min = 1, max = 2 } or { choices = [1, 2] }"
    low: Finite | None = Field(None, alias="min", description="the range's lower end")
    high: Finite | None = Field(None, alias="max", description="the range's upper end")
    log: Annotated[Flag, Field(description="sample the range on a log scale")] = False
    integer: Annotated[Flag | None, Field(alias="int", description="integer values")] = None
    choices: Annotated[
        list[Any] | None,
        Field(min_length=1, max_length=MAX_CHOICES, description="the values to choose from"),
        _rule(lambda v: None if v is None else _choices_problem(v)),
    ] = None
    group: Annotated[
        GroupName | None,
        Field(description="knobs of one group move together, as one hypothesis"),
    ] = None

    @model_validator(mode="after")
    def _one_form(self) -> KnobTable:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise _fail("either choices or min and max, not both")
            return self
        if self.low is None or self.high is None:
            raise _fail("expected min and max, or choices")
        if self.low >= self.high:
            raise _fail("min must be below max")
        if self.log and self.low <= 0:
            raise _fail("a log range needs min > 0")
        return self


class LabTable(_Table):
    """`[lab]`: the repository's default line."""

    weight: Annotated[
        Weight, Field(description="the default line's share of the students' time")
    ] = 1.0


class TrackTable(_Table):
    """`[tracks.<name>]`: a research line with its own base branch, program and baseline."""

    base: Annotated[
        str | None,
        Field(description="its base branch (default track/<name>), created when missing"),
        _rule(lambda v: None if v is None else _branch_problem(v)),
    ] = None
    program: Annotated[str, Field(description="its program file"), _rule(_program_problem)] = (
        PROGRAM_FILE
    )
    weight: Annotated[Weight, Field(description="its share of the students' time")] = 1.0


class GateTable(_Table):
    """`[gate]`: the merge gate's opt-in levers (see `GateConfig`)."""

    screen: Annotated[
        float,
        Field(ge=0, le=MAX_SCREEN, description="first-seed margin in baseline stds (0: off)"),
        _says(f"expected a number of baseline stds in [0, {MAX_SCREEN:g}] (0 = off)"),
    ] = GateConfig.screen
    sequential: Annotated[Flag, Field(description="confirmation seeds one at a time")] = (
        GateConfig.sequential
    )
    pooled: Annotated[Flag, Field(description="pool the paired test's variance")] = (
        GateConfig.pooled
    )
    method: Annotated[
        Literal["test", "bayes"],
        Field(description='"test": the significance test; "bayes": the false-merge budget'),
        _says(f"expected one of {', '.join(GATE_METHODS)}"),
    ] = "test"
    false_merges: Annotated[
        float,
        Field(
            gt=0,
            le=MAX_FALSE_MERGES,
            description="the Bayesian gate's budget: expected false merges per merge",
        ),
        _says(f"expected a share of merges in (0, {MAX_FALSE_MERGES:g}]"),
    ] = GateConfig.false_merges


class KohaiToml(_Table):
    """A problem repository's `kohai.toml`: the contract the bot and the trainer enforce."""

    model_config = ConfigDict(title="kohai.toml")

    metric: MetricTable
    train: TrainTable = TrainTable()
    files: FilesTable = FilesTable()
    data: DataTable | None = None
    eval: EvalTable | None = None
    search: Annotated[
        dict[KnobName, KnobTable],
        Field(max_length=MAX_KNOBS, description="knobs of the offline strategy"),
    ] = {}
    lab: LabTable = LabTable()
    tracks: Annotated[
        dict[TrackName, TrackTable],
        Field(max_length=MAX_TRACKS, description="research tracks, each [tracks.<name>]"),
    ] = {}
    gate: GateTable = GateTable()

    @model_validator(mode="after")
    def _across_tables(self) -> KohaiToml:
        """The rules that read two keys at once; their messages name the keys."""
        editable, frozen = tuple(self.files.editable), tuple(self.files.frozen)
        overlap = set(editable) & set(frozen)
        if overlap:
            raise _fail(f"files: {sorted(overlap)} cannot be both editable and frozen")
        if CONFIG_FILE in editable:
            raise _fail(f"files.editable: {CONFIG_FILE} holds the budget and cannot be editable")
        _check_editable(editable, frozen)
        _check_groups(_knobs(self.search))
        bases = [t.base for t in _tracks(self.tracks)]
        if len(set(bases)) != len(bases):
            raise _fail("tracks: two tracks share a base branch")
        return self


def _knobs(search: dict[str, KnobTable]) -> tuple[Knob, ...]:
    knobs = []
    for name, spec in search.items():
        if spec.choices is not None:
            knobs.append(Knob(name=name, choices=tuple(spec.choices), group=spec.group))
            continue
        assert spec.low is not None and spec.high is not None  # _one_form
        integer = spec.integer
        if integer is None:
            integer = isinstance(spec.low, int) and isinstance(spec.high, int) and not spec.log
        knobs.append(
            Knob(
                name=name,
                low=float(spec.low),
                high=float(spec.high),
                log=spec.log,
                integer=integer,
                group=spec.group,
            )
        )
    return tuple(knobs)


def _tracks(tracks: dict[str, TrackTable]) -> tuple[Track, ...]:
    return tuple(
        Track(name=name, base=t.base or f"track/{name}", program=t.program, weight=t.weight)
        for name, t in tracks.items()
    )


def _problem(doc: KohaiToml) -> Problem:
    """The dataclass the rest of kohai reads, from a validated file."""
    train = doc.train
    early_stop = train.early_stop
    return Problem(
        metric=doc.metric.name,
        direction=doc.metric.direction,
        command=train.command,
        budget_s=train.budget,
        grace_s=train.grace,
        seeds=train.seeds,
        confirm_seeds=train.confirm_seeds,
        baseline_seeds=train.baseline_seeds,
        editable=tuple(doc.files.editable),
        frozen=tuple(doc.files.frozen),
        knobs=_knobs(doc.search),
        evaluation=(
            Evaluation(
                command=doc.eval.command, budget_s=doc.eval.budget, hide=tuple(doc.eval.hide)
            )
            if doc.eval is not None
            else None
        ),
        data_command=doc.data.command if doc.data is not None else None,
        data_network=doc.data.network if doc.data is not None else False,
        early_stop=(
            EarlyStop(after_fraction=early_stop.after, band=early_stop.band)
            if isinstance(early_stop, EarlyStopTable)
            else EarlyStop()
            if early_stop
            else None
        ),
        weight=doc.lab.weight,
        tracks=_tracks(doc.tracks),
        gate=GateConfig(
            screen=doc.gate.screen,
            sequential=doc.gate.sequential,
            pooled=doc.gate.pooled,
            method=doc.gate.method,
            false_merges=doc.gate.false_merges,
        ),
        resources=_resources(
            {
                key: value
                for key, value in (
                    ("memory", train.memory),
                    ("processes", train.processes),
                    ("disk", train.disk),
                )
                if value is not None
            }
        ),
    )


# What to write where a required key is missing, by its path.
_MISSING = {
    "metric": "[metric] is missing: name the primary metric and its direction, e.g. "
    '[metric] name = "val_bpb", direction = "minimize" (nothing is assumed)',
    "metric.name": "metric.name is missing: the primary metric's key in the evaluator's "
    'JSON, e.g. name = "val_bpb"',
    "eval.command": "eval.command: expected a command line (the evaluator to run)",
    "data.command": "data.command: expected a command line (the preparation to run)",
}


def _key_path(loc: Sequence[int | str]) -> str:
    """`train.seeds`, `files.editable[2]`, `tracks."a b".base`: a key path as TOML writes it."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        key = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
        text += f".{key}" if text else key
    return text


def _find_table(annotation: Any) -> type[_Table] | None:
    """The table class a key's type holds, through unions and optional forms."""
    if isinstance(annotation, type) and issubclass(annotation, _Table):
        return annotation
    for arg in get_args(annotation):
        found = _find_table(arg)
        if found is not None:
            return found
    return None


def _keys_at(loc: Sequence[int | str]) -> list[str]:
    """The keys of the table at `loc` (`("search", "lr")`: a knob's keys)."""
    table: type[_Table] | None = KohaiToml
    parts = list(loc)
    while parts and table is not None:
        part = parts.pop(0)
        field = next((f for n, f in table.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        annotation = field.annotation
        if get_origin(annotation) is dict:  # [search] and [tracks]: a name, then its table
            if not parts:
                return []
            parts.pop(0)
            annotation = get_args(annotation)[1]
        table = _find_table(annotation)
    return table.keys() if table is not None else []


def _table_keys() -> dict[str, list[str]]:
    """Where each key lives (`[train]`, `[tracks.<name>]`), for a key written in the wrong table."""
    homes: dict[str, list[str]] = {}
    for name, info in KohaiToml.model_fields.items():
        table = _find_table(info.annotation)
        if table is not None:
            inner = {"search": ".<knob>", "tracks": ".<name>"}.get(name, "")
            homes[f"[{name}{inner}]"] = table.keys()
    return homes


_TABLE_KEYS = _table_keys()


def error_line(error: ErrorDetails) -> str:
    """One line for one validation error: the key path and what to change."""
    loc = [part for part in error["loc"] if part not in ("[key]", _FLAG, _TABLE)]
    kind, ctx = error["type"], error.get("ctx") or {}
    path = _key_path(loc)
    if kind == "extra_forbidden":  # `extra="forbid"`: a key no table of kohai.toml has
        known = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            hint = f"did you mean `{close[0]}`?"
        elif len(loc) > 1 and loc[-1] in KohaiToml.keys():  # `eval = ...` below [metric]
            hint = f"[{loc[-1]}] is a table of its own, not a key of [{_key_path(loc[:-1])}]"
        elif homes := [t for t, keys in _TABLE_KEYS.items() if loc[-1] in keys]:
            hint = f"`{loc[-1]}` is a key of {' or '.join(homes)}"  # `budget` above any table
        else:
            hint = f"expected one of {', '.join(known)}"
        return f"{path}: unknown key; {hint}"
    if kind == "table":
        return f"[{path}] {ctx['text']}"
    if kind == "dict_type":  # [search] or [tracks] as a value
        return f"[{path}] must be a table, got {_shown(error['input'])}"
    if kind == "missing":
        return _MISSING.get(path, f"{path}: required")
    if kind == "kohai":
        text = ctx["text"]
    elif kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
    elif kind == "too_long":
        text = f"at most {ctx.get('max_length')} entries, got {ctx.get('actual_length')}"
    else:
        text = f"{error['msg']}, got {_shown(error['input'])}"
    return f"{path}: {text}" if path else text


class _TomlSchema(GenerateJsonSchema):
    """JSON Schema for a TOML file: TOML has no null, so an optional table is just the table."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """A table's default is its keys' defaults, shown on each key: not repeated whole."""
        json_schema = super().default_schema(schema)
        if json_schema.get("default", 0) is None or isinstance(json_schema.get("default"), dict):
            del json_schema["default"]
        return json_schema

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        """Knob and track names follow a pattern: a name outside it is an error, as in kohai."""
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema:
            json_schema["additionalProperties"] = False
        return json_schema


def json_schema() -> dict[str, Any]:
    """kohai.toml's JSON Schema (draft 2020-12): what `kohai schema` prints for editors."""
    schema = KohaiToml.model_json_schema(schema_generator=_TomlSchema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def parse_problem(data: dict[str, Any]) -> Problem:
    """Validate a parsed `kohai.toml`; raise ProblemError naming the first bad key.

    The error's `problems` lists every bad key, one line each (`kohai check` shows them all).
    """
    try:
        doc = KohaiToml.model_validate(data)
    except ValidationError as exc:
        # An unknown key first: a misspelt key is the likeliest cause of what else fails.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        lines = tuple(dict.fromkeys(error_line(e) for e in errors))
        raise ProblemError(lines[0], problems=lines) from None
    return _problem(doc)


@functools.lru_cache(maxsize=256)
def parsed_problem(text: str | None) -> Problem | None:
    """A stored kohai.toml parsed once; None when there is none or it does not parse.

    The engine and the scheduler read a lab's stored file on every event and
    lease; a `Problem` is frozen, so one parsed copy serves them all.
    """
    try:
        return loads_problem(text) if text else None
    except ProblemError:
        return None


def loads_problem(text: str) -> Problem:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProblemError(f"{CONFIG_FILE}: {exc}") from exc
    return parse_problem(data)


def load_problem(root: str | Path) -> Problem:
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        raise ProblemError(f"{path}: not found; run `kohai init` to scaffold a problem repository")
    return loads_problem(path.read_text(encoding="utf-8"))
