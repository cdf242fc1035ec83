"""One hypothesis per pull request, offline: one-knob (or one-group) moves around the incumbent.

The incumbent is what the base's editable files say today (`LEARNING_RATE =
1e-3` in train.py), not a point of a search space: a merge changes it, a closed
experiment does not. Every proposal changes exactly one knob from there, so a
result answers one question ("is a larger learning rate better, everything
else as it is?") and a merge is one idea. A declared group (`group = "optim"`
on knobs in `[search]`) is one unit: its knobs move together, each by the same
step along its own range, in one PR whose hypothesis names the group and every
knob it moves (a learning rate and its warmup are one question, not two). What
follows says "knob" for a unit of either kind. This is coordinate search with a
model of the history:

- **which knob**: a bandit over knobs. Each knob's expected gain is the mean
  improvement its one-knob moves have measured (in units of the baseline's seed
  noise), shrunk towards an optimistic prior of one sigma, so an untried knob is
  worth trying, one whose moves keep losing sinks, and one that has paid stays
  on top. A move still in flight counts as a measurement of zero gain, so two
  students asking at once are sent along different knobs. Ties go to the order
  of `[search]`: the author's prior about what matters.
- **which value**: a step of a quarter of the knob's declared range (in log
  units for a log range, one index for a short list of choices) up or down.
  With no evidence the step goes towards the middle of the declared range
  (for an optimum anywhere in the range, that side more often holds it); a side
  measured worse at this incumbent sends the next move to the other side; a
  value measured better and still being confirmed holds the knob (other knobs
  go first until it merges or closes); both sides measured worse make the half
  step next (refinement).
- **plateau**: after `plateau_after` closed experiments without a merge, moves
  double in size (the local neighbourhood is spent; look further), and again
  when every move of the current size has been tried.

Pure: a function of the problem, the incumbent and the history, so the
advisor resumes from the store after a restart with no state of its own.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.context import ExperimentRecord
from agents.offline import parsing
from agents.offline.student import find_constant
from bot.problem import Knob, Problem, SearchUnit

STEP = 0.25  # a move: this fraction of the knob's declared range, in its own scale
WIDEN = 2.0  # the factor a plateau widens moves by
MAX_WIDEN_LEVEL = 2
PRIOR_GAIN = 1.0  # an untried knob is assumed worth one baseline sigma of improvement
PRIOR_WEIGHT = 1.0  # ... with the weight of one measurement
TOWARD_MIDDLE = 0.25  # bonus (sigmas) for the side towards the middle of the range
OTHER_SIDE = 0.5  # bonus for the side opposite one measured worse at this incumbent
SAME_SIDE = -0.5  # penalty for a side already measured worse at another step
HALF_STEP = -0.3  # refinement comes after the full steps
SIGNIFICANT_DIGITS = 4


@dataclass(frozen=True)
class Move:
    """One proposal: set the unit's knobs from `incumbent` to `values`, and why.

    A unit is one knob, or a declared group whose knobs move together (each by
    the same step along its own declared range) as one hypothesis.
    """

    unit: str  # the knob's name, or the group's
    values: dict[str, Any]
    incumbent: dict[str, Any]  # the base's values of the same knobs (None: unset)
    step: float
    score: float
    gain: float  # the unit's expected gain in sigmas (the bandit's estimate)
    toward_middle: bool
    note: str
    group: bool = False

    @property
    def knob(self) -> str:
        """The unit's name (the knob's, for a one-knob move)."""
        return self.unit

    @property
    def value(self) -> Any:
        """The new value of a one-knob move; a group's values as a tuple in `[search]` order."""
        vals = tuple(self.values.values())
        return vals[0] if len(vals) == 1 else vals


def incumbent_values(problem: Problem, base_files: dict[str, str]) -> dict[str, Any]:
    """The knobs' values in the base's editable Python files (module-level literals).

    A knob with no literal assignment in any editable file is left out; the
    planner then starts it from the middle of its range and says so.
    """
    values: dict[str, Any] = {}
    for path in problem.editable:
        source = base_files.get(path)
        if source is None or not path.endswith(".py"):
            continue
        for knob in problem.knobs:
            if knob.name in values:
                continue
            try:
                node = find_constant(source, knob.name)
                if node is not None:
                    values[knob.name] = ast.literal_eval(node)
            except (SyntaxError, ValueError, TypeError):
                continue
    return values


def to_unit(knob: Knob, value: Any) -> float | None:
    """The value's position in [0, 1] along the knob's declared range (None: not in it)."""
    if knob.choices is not None:
        matches = [i for i, c in enumerate(knob.choices) if _same(c, value)]
        if not matches:
            return None
        return matches[0] / (len(knob.choices) - 1) if len(knob.choices) > 1 else 0.5
    assert knob.low is not None and knob.high is not None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if knob.log:
        if value <= 0:
            return None
        u = (math.log(value) - math.log(knob.low)) / (math.log(knob.high) - math.log(knob.low))
    else:
        u = (value - knob.low) / (knob.high - knob.low)
    return min(1.0, max(0.0, u))


def from_unit(knob: Knob, u: float) -> Any:
    """The knob's value at position `u`, tidied (few significant digits, integers, choices)."""
    u = min(1.0, max(0.0, u))
    if knob.choices is not None:
        return knob.choices[round(u * (len(knob.choices) - 1))]
    assert knob.low is not None and knob.high is not None
    if knob.log:
        value = math.exp(math.log(knob.low) + u * (math.log(knob.high) - math.log(knob.low)))
    else:
        value = knob.low + u * (knob.high - knob.low)
    if knob.integer:
        return int(round(value))
    digits = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value))) if value else 0
    return min(max(round(value, digits), knob.low), knob.high)


def noise_unit(baseline_std: float | None, baseline_mean: float | None) -> float:
    """One sigma of seed noise: the baseline's std, or 1 % of its mean before it has seeds."""
    if baseline_std and math.isfinite(baseline_std) and baseline_std > 0:
        return baseline_std
    if baseline_mean and math.isfinite(baseline_mean):
        return abs(baseline_mean) * 0.01 or 1.0
    return 1.0


def unit_of(problem: Problem, knobs: dict[str, Any]) -> SearchUnit | None:
    """The one unit an experiment moved: its knobs all belong to it (None: several, or none).

    A one-knob experiment of a knob that is now in a group still teaches about
    that group (history from before the group was declared).
    """
    names = set(knobs)
    if not names:
        return None
    return next((u for u in problem.units if names <= set(u.names)), None)


def _gain(record: ExperimentRecord, problem: Problem, noise: float) -> float | None:
    """The record's improvement in sigmas; a failed or finished-unmeasured one is -1; open None."""
    if record.delta is not None:
        return (-record.delta if problem.minimize else record.delta) / noise
    if record.finished or record.n_failed:
        return -1.0
    return None


def knob_gains(
    problem: Problem, history: Sequence[ExperimentRecord], noise: float
) -> dict[str, float]:
    """Each unit's (knob's or group's) expected improvement in sigmas: the bandit's posterior mean.

    Only experiments that moved one unit teach about it (a result of several
    unrelated changes cannot be attributed). Measured ones contribute their
    improvement over their own base's baseline; unfinished ones count as zero,
    so parallel students spread out; failed ones (no value) as one sigma worse.
    """
    sums = {u.name: PRIOR_GAIN * PRIOR_WEIGHT for u in problem.units}
    counts = dict.fromkeys(sums, PRIOR_WEIGHT)
    for record in history:
        unit = unit_of(problem, record.knobs)
        if unit is None:
            continue
        gain = _gain(record, problem, noise)
        sums[unit.name] += 0.0 if gain is None else gain
        counts[unit.name] += 1
    return {name: sums[name] / counts[name] for name in sums}


def at_incumbent(history: Sequence[ExperimentRecord]) -> list[ExperimentRecord]:
    """The experiments that tried something from the current incumbent.

    Those after the last merge, and any still unfinished (a merge sends them to
    be re-measured on the new base, so they are tried there too).
    """
    ordered = sorted(history, key=lambda r: r.id or 0)
    last_merge = max((i for i, r in enumerate(ordered) if r.state == "merged"), default=-1)
    return [r for i, r in enumerate(ordered) if i > last_merge or not r.finished]


def plan(
    problem: Problem,
    incumbent: dict[str, Any],
    history: Sequence[ExperimentRecord],
    *,
    noise: float,
    widen_level: int = 0,
) -> list[Move]:
    """Every untried one-unit move from the incumbent, best first (empty: all tried).

    A unit is a knob or a declared group. Moves of size STEP × WIDEN**level and
    half that are considered; if none of them is untried, the next wider level
    is, up to MAX_WIDEN_LEVEL.
    """
    gains = knob_gains(problem, history, noise)
    here = at_incumbent(history)
    order = {u.name: i for i, u in enumerate(problem.units)}
    for level in range(widen_level, MAX_WIDEN_LEVEL + 1):
        moves = [
            move
            for unit in problem.units
            for move in _unit_moves(
                unit, incumbent, here, gains[unit.name], level, noise, problem, history
            )
        ]
        if moves:
            return sorted(moves, key=lambda m: (-m.score, order[m.unit], -m.step))
    return []


Point = tuple[Any, ...]  # a unit's values, one per knob in the unit's order


def _unit_moves(
    unit: SearchUnit,
    incumbent: dict[str, Any],
    here: Sequence[ExperimentRecord],
    gain: float,
    level: int,
    noise: float,
    problem: Problem,
    history: Sequence[ExperimentRecord],
) -> list[Move]:
    current = tuple(incumbent.get(k.name) for k in unit.knobs)
    u0s: list[float] = []
    notes: list[str] = []
    for knob, value in zip(unit.knobs, current, strict=True):
        u = to_unit(knob, value) if knob.name in incumbent else None
        if u is None:
            notes.append(
                f"{knob.name} has no literal value in the base's editable files"
                if knob.name not in incumbent
                else f"{knob.name} = {value!r} on the base is outside its declared range"
            )
            u = 0.5
        u0s.append(u)
    centre = sum(u0s) / len(u0s)
    tried = _tried_here(unit, incumbent, here, problem, noise)
    tried += _left_behind(unit, incumbent, history, problem, noise)
    winning = any(g is not None and g > 0 and open_ for _, g, open_ in tried)
    step = STEP * WIDEN**level
    seen: set[str] = {repr(current)}
    moves: list[Move] = []
    for size, bonus in ((step, 0.0), (step / 2, HALF_STEP)):
        for direction in (1, -1):
            point = tuple(
                _step_value(k, u0, direction * size) for k, u0 in zip(unit.knobs, u0s, strict=True)
            )
            # A knob that cannot move (a one-choice list, the end of its list) stays; a move
            # in which no knob changes is no move.
            point = tuple(
                cur if new is None else new for new, cur in zip(point, current, strict=True)
            )
            if all(_same(a, b) for a, b in zip(point, current, strict=True)):
                continue
            if repr(point) in seen or _is_tried(point, tried):
                continue
            seen.add(repr(point))
            toward = (0.5 - centre) * direction > 0
            score = gain + bonus + (TOWARD_MIDDLE if toward else 0.0)
            if winning:
                # A value of this unit is measured better and still being confirmed: moves
                # around it wait (other units first) until it merges or closes.
                score -= gain + 1.0
            sides = [g for v, g, _ in tried if g is not None and _side(unit, v, u0s) == -direction]
            if sides and min(sides) < 0:
                score += OTHER_SIDE
            same = [g for v, g, _ in tried if g is not None and _side(unit, v, u0s) == direction]
            if same and max(same) < 0:
                score += SAME_SIDE
            moves.append(
                Move(
                    unit.name,
                    {k.name: v for k, v in zip(unit.knobs, point, strict=True)},
                    {k.name: v for k, v in zip(unit.knobs, current, strict=True)},
                    size,
                    score,
                    gain,
                    toward,
                    "; ".join(notes),
                    unit.group,
                )
            )
    return moves


def _step_value(knob: Knob, u0: float, delta: float) -> Any:
    """The value `delta` away along the knob; for choices at least one index away."""
    if knob.choices is not None:
        n = len(knob.choices)
        if n < 2:
            return None
        index = round(u0 * (n - 1))
        jump = max(1, round(abs(delta) * (n - 1)))
        target = index + (jump if delta > 0 else -jump)
        target = min(n - 1, max(0, target))
        return None if target == index else knob.choices[target]
    return from_unit(knob, u0 + delta)


def _tried_here(
    unit: SearchUnit,
    incumbent: dict[str, Any],
    here: Sequence[ExperimentRecord],
    problem: Problem,
    noise: float,
) -> list[tuple[Point, float | None, bool]]:
    """Points of this unit tried from the incumbent (other knobs as on it): (point, gain, open).

    A knob of the unit that the experiment did not set had its incumbent value.
    """
    names = set(unit.names)
    out: list[tuple[Point, float | None, bool]] = []
    for record in here:
        if not names & set(record.knobs):
            continue
        others = {k: v for k, v in record.knobs.items() if k not in names}
        if any(k in incumbent and not _same(v, incumbent[k]) for k, v in others.items()):
            continue
        point = tuple(record.knobs.get(k.name, incumbent.get(k.name)) for k in unit.knobs)
        out.append((point, _gain(record, problem, noise), not record.finished))
    return out


def _left_behind(
    unit: SearchUnit,
    incumbent: dict[str, Any],
    history: Sequence[ExperimentRecord],
    problem: Problem,
    noise: float,
) -> list[tuple[Point, float | None, bool]]:
    """The point a merged move of this unit left behind: measured worse, so tried.

    The offline advisor's hypotheses name the value each knob moves from ("the
    base has X = v"); without it, the step back to where the lab came from would
    look new.
    """
    out: list[tuple[Point, float | None, bool]] = []
    names = list(unit.names)
    for record in history:
        if record.state != "merged" or not record.knobs or not set(record.knobs) <= set(names):
            continue
        if any(k not in incumbent or not _same(v, incumbent[k]) for k, v in record.knobs.items()):
            continue
        origin: list[Any] = []
        for name in names:
            if name not in record.knobs:
                origin.append(incumbent.get(name))
                continue
            pattern = re.compile(rf"the base has {re.escape(name)} = ([^)]+)\)")
            match = pattern.search(record.hypothesis)
            if match is None:
                break
            try:
                origin.append(parsing.literal(match.group(1).strip()))
            except (SyntaxError, ValueError):
                break
        else:
            gain = None
            if record.delta is not None:
                gain = (-record.delta if problem.minimize else record.delta) / noise
            out.append((tuple(origin), -abs(gain) if gain is not None else -1.0, False))
    return out


def _is_tried(point: Point, tried: Sequence[tuple[Point, float | None, bool]]) -> bool:
    return any(
        len(point) == len(v) and all(_same(a, b) for a, b in zip(point, v, strict=True))
        for v, _, _ in tried
    )


def _side(unit: SearchUnit, point: Point, u0s: Sequence[float]) -> int:
    """Which way a point lies from the incumbent: the sign of its mean move along the unit."""
    moved = []
    for knob, value, u0 in zip(unit.knobs, point, u0s, strict=True):
        u = to_unit(knob, value)
        if u is not None:
            moved.append(u - u0)
    total = sum(moved)
    if not moved or math.isclose(total, 0.0, abs_tol=1e-9):
        return 0
    return 1 if total > 0 else -1


def _same(a: Any, b: Any) -> bool:
    """Equal knob values; floats within 0.1 % are one setting (1e-3 and 0.0009999 are)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-3, abs_tol=1e-12)
    return bool(a == b)
