"""The problem repository contract: `kohai.toml`, parsed and validated.

Shared by the bot and the GPU hosts, so it depends on the standard library only.
The budget lives here, in a file the agents may not edit (it is never in
`files.editable`), and the trainer enforces it; a prompt never does.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "kohai.toml"
PROGRAM_FILE = "program.md"
DEFAULT_TRACK = "default"
TRACK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
MAX_TRACKS = 16
MAX_WEIGHT = 1000.0  # a share of the students' time: a lab or track of 1 still gets its turn

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ProblemError(ValueError):
    """A `kohai.toml` that cannot be used; the message names the field."""


def parse_duration(value: str | int | float, *, field_name: str = "duration") -> float:
    """Seconds from `"5m"`, `"30s"`, `"1.5h"`, `"250ms"` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ProblemError(f"{field_name}: expected a duration like '5m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ProblemError(
                f"{field_name}: expected a duration like '5m' or '30s', got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ProblemError(f"{field_name}: must be positive, got {value!r}")
    return seconds


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

    @classmethod
    def from_toml(cls, name: str, spec: dict[str, Any]) -> Knob:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ProblemError(f"search.{name}: knob names must be identifiers")
        group = spec.get("group")
        if group is not None and (
            not isinstance(group, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", group)
        ):
            raise ProblemError(f"search.{name}.group: expected a group name, got {group!r}")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise ProblemError(f"search.{name}.choices: expected a non-empty list")
            return cls(name=name, choices=tuple(choices), group=group)
        if "min" not in spec or "max" not in spec:
            raise ProblemError(f"search.{name}: expected min and max, or choices")
        low, high = spec["min"], spec["max"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            raise ProblemError(f"search.{name}: min and max must be numbers")
        if low >= high:
            raise ProblemError(f"search.{name}: min must be below max")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise ProblemError(f"search.{name}: a log range needs min > 0")
        integer = bool(spec.get("int", isinstance(low, int) and isinstance(high, int) and not log))
        return cls(
            name=name, low=float(low), high=float(high), log=log, integer=integer, group=group
        )


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
    # "test" stays the default: the Bayesian gate beats it in bench/lab.py only with a known
    # prior, not yet with the prior learned online (docs/lab-benchmark.md).
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
    early_stop: EarlyStop | None = None
    weight: float = 1.0  # `[lab] weight`: the default line's share of the students' time
    tracks: tuple[Track, ...] = field(default_factory=tuple)
    gate: GateConfig = field(default_factory=GateConfig)

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


def _int_at_least(table: dict[str, Any], key: str, default: int, minimum: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProblemError(f"{where}.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _paths(table: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = table.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ProblemError(f"files.{key}: expected a list of paths")
    for path in value:
        if path.startswith("/") or ".." in Path(path).parts:
            raise ProblemError(f"files.{key}: {path!r} must be relative to the repository root")
    return tuple(value)


def _command(table: dict[str, Any], where: str) -> str:
    command = table.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ProblemError(f"{where}.command: expected a command line")
    return command


def _evaluation(table: dict[str, Any]) -> Evaluation:
    hide = table.get("hide", [])
    if not isinstance(hide, list) or not all(isinstance(h, str) and h for h in hide):
        raise ProblemError("eval.hide: expected a list of paths or module:NAME entries")
    for entry in hide:
        if ".." in Path(entry.removeprefix("module:")).parts:
            raise ProblemError(f"eval.hide: {entry!r} may not contain '..'")
    return Evaluation(
        command=_command(table, "eval"),
        budget_s=parse_duration(table.get("budget", "2m"), field_name="eval.budget"),
        hide=tuple(hide),
    )


def _early_stop(value: Any) -> EarlyStop | None:
    if value is None or value is False:
        return None
    if value is True:
        return EarlyStop()
    if not isinstance(value, dict):
        raise ProblemError("train.early_stop: expected true, false or { after = 0.3, band = 3 }")
    after, band = value.get("after", 0.3), value.get("band", 3.0)
    for key, number in (("after", after), ("band", band)):
        if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
            raise ProblemError(f"train.early_stop.{key}: expected a positive number")
    if after >= 1:
        raise ProblemError("train.early_stop.after: a fraction of the budget below 1")
    return EarlyStop(after_fraction=float(after), band=float(band))


def _gate(value: Any) -> GateConfig:
    if value is None:
        return GateConfig()
    if not isinstance(value, dict):
        raise ProblemError("[gate] must be a table")
    keys = {"screen", "sequential", "pooled", "method", "false_merges"}
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ProblemError(f"gate: unknown keys {unknown} (expected {', '.join(sorted(keys))})")
    default = GateConfig()
    screen = value.get("screen", default.screen)
    if (
        isinstance(screen, bool)
        or not isinstance(screen, int | float)
        or not 0 <= screen <= MAX_SCREEN  # NaN fails this too
    ):
        raise ProblemError(
            f"gate.screen: expected a number of baseline stds in [0, {MAX_SCREEN:g}] "
            f"(0 = off), got {screen!r}"
        )
    flags = {}
    for key in ("sequential", "pooled"):
        flag = value.get(key, getattr(default, key))
        if not isinstance(flag, bool):
            raise ProblemError(f"gate.{key}: expected true or false, got {flag!r}")
        flags[key] = flag
    method = value.get("method", default.method)
    if method not in GATE_METHODS:
        raise ProblemError(
            f"gate.method: expected one of {', '.join(GATE_METHODS)}, got {method!r}"
        )
    budget = value.get("false_merges", default.false_merges)
    if (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or not 0 < budget <= MAX_FALSE_MERGES  # NaN fails this too
    ):
        raise ProblemError(
            f"gate.false_merges: expected a share of merges in (0, {MAX_FALSE_MERGES:g}], "
            f"got {budget!r}"
        )
    return GateConfig(screen=float(screen), method=method, false_merges=float(budget), **flags)


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


def _track(name: Any, table: Any) -> Track:
    where = f"tracks.{name}"
    if not isinstance(name, str) or not TRACK_NAME.fullmatch(name):
        raise ProblemError(
            f"{where}: a track name is lowercase letters, digits and '-' (at most 40), got {name!r}"
        )
    if name == DEFAULT_TRACK:
        raise ProblemError(f"{where}: 'default' is the repository's own line and is reserved")
    if not isinstance(table, dict):
        raise ProblemError(f"[{where}] must be a table")
    unknown = sorted(set(table) - {"base", "program", "weight"})
    if unknown:
        raise ProblemError(f"{where}: unknown keys {unknown} (expected base, program, weight)")
    base = table.get("base", f"track/{name}")
    if not isinstance(base, str) or not valid_branch(base):
        raise ProblemError(f"{where}.base: expected a branch name, got {base!r}")
    program = table.get("program", PROGRAM_FILE)
    if (
        not isinstance(program, str)
        or not program
        or program.startswith("/")
        or ".." in Path(program).parts
    ):
        raise ProblemError(f"{where}.program: expected a path relative to the repository root")
    weight = _weight(table.get("weight", 1), f"{where}.weight")
    return Track(name=name, base=base, program=program, weight=weight)


def _weight(value: Any, where: str) -> float:
    """A share of the students' time: positive and finite, so no file takes every student or none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProblemError(f"{where}: expected a positive number, got {value!r}")
    if not 0 < float(value) <= MAX_WEIGHT:  # NaN fails this too
        raise ProblemError(f"{where}: expected a number in (0, {MAX_WEIGHT:g}], got {value!r}")
    return float(value)


def _lab_weight(value: Any) -> float:
    if value is None:
        return 1.0
    if not isinstance(value, dict):
        raise ProblemError("[lab] must be a table")
    unknown = sorted(set(value) - {"weight"})
    if unknown:
        raise ProblemError(f"lab: unknown keys {unknown} (expected weight)")
    return _weight(value.get("weight", 1), "lab.weight")


def _tracks(value: Any) -> tuple[Track, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ProblemError("[tracks] must be a table of [tracks.<name>] tables")
    if len(value) > MAX_TRACKS:
        raise ProblemError(f"tracks: at most {MAX_TRACKS} tracks, got {len(value)}")
    tracks = tuple(_track(name, table) for name, table in value.items())
    bases = [t.base for t in tracks]
    if len(set(bases)) != len(bases):
        raise ProblemError("tracks: two tracks share a base branch")
    return tracks


def parse_problem(data: dict[str, Any]) -> Problem:
    """Validate a parsed `kohai.toml`; raise ProblemError naming the first bad field."""
    metric = data.get("metric", {})
    train = data.get("train", {})
    files = data.get("files", {})
    search = data.get("search", {})
    evaluation = data.get("eval")
    prepare = data.get("data")
    tables = [("metric", metric), ("train", train), ("files", files), ("search", search)]
    tables += [(n, t) for n, t in (("eval", evaluation), ("data", prepare)) if t is not None]
    for name, table in tables:
        if not isinstance(table, dict):
            raise ProblemError(f"[{name}] must be a table")
    name = metric.get("name", "val_bpb")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w./-]*", name):
        raise ProblemError(f"metric.name: expected a metric name, got {name!r}")
    direction = metric.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise ProblemError(
            f"metric.direction: expected 'minimize' or 'maximize', got {direction!r}"
        )
    command = train.get("command", "python train.py")
    if not isinstance(command, str) or not command.strip():
        raise ProblemError("train.command: expected a command line")
    editable = _paths(files, "editable", ("train.py",))
    frozen = _paths(files, "frozen", ())
    overlap = set(editable) & set(frozen)
    if overlap:
        raise ProblemError(f"files: {sorted(overlap)} cannot be both editable and frozen")
    if CONFIG_FILE in editable:
        raise ProblemError(f"files.editable: {CONFIG_FILE} holds the budget and cannot be editable")
    knobs = tuple(Knob.from_toml(k, v) for k, v in search.items() if isinstance(v, dict))
    if len(knobs) != len(search):
        raise ProblemError("search: every knob must be a table like { min = 1, max = 2 }")
    _check_groups(knobs)
    problem = Problem(
        metric=name,
        direction=direction,
        command=command,
        budget_s=parse_duration(train.get("budget", "5m"), field_name="train.budget"),
        grace_s=parse_duration(train.get("grace", "10s"), field_name="train.grace"),
        seeds=_int_at_least(train, "seeds", 1, 1, "train"),
        confirm_seeds=_int_at_least(train, "confirm_seeds", 5, 1, "train"),
        baseline_seeds=_int_at_least(train, "baseline_seeds", 5, 1, "train"),
        editable=editable,
        frozen=frozen,
        knobs=knobs,
        evaluation=_evaluation(evaluation) if evaluation is not None else None,
        data_command=_command(prepare, "data") if prepare is not None else None,
        early_stop=_early_stop(train.get("early_stop")),
        weight=_lab_weight(data.get("lab")),
        tracks=_tracks(data.get("tracks")),
        gate=_gate(data.get("gate")),
    )
    return problem


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
