"""The offline student: set knob values in the editable files' module-level constants.

An honest, key-free way to implement a proposal: the advisor chose values for
the knobs declared in `kohai.toml`, and the training script exposes them as
plain constants (`LEARNING_RATE = 3e-3`). This rewrites only the value of each
assignment, found with `ast`, and leaves comments, annotations and formatting
alone. A knob it cannot find is an error, never a silent no-op: a run of the
unchanged script would be reported as the hypothesis's result.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

from agents.offline import parsing
from agents.student.rules import ImplementOutcome, knob_summary
from bot.problem import Problem
from bot.protocol import Implement


class KnobNotFound(LookupError):
    """No module-level assignment of the knob in any editable Python file."""


def implement(worktree: Path, spec: Implement, problem: Problem) -> ImplementOutcome:
    """Write `spec.knobs` into the editable files; no knobs means train the branch as it is."""
    if not spec.knobs:
        return ImplementOutcome(notes="No knob values to set; training the branch as it is.")
    files = [f for f in problem.editable if f.endswith(".py") and (Path(worktree) / f).is_file()]
    sources = {f: (Path(worktree) / f).read_text(encoding="utf-8") for f in files}
    edited: dict[str, str] = {}
    for name, value in spec.knobs.items():
        try:
            path = _locate(name, {f: edited.get(f, sources[f]) for f in files})
        except KnobNotFound:
            searched = ", ".join(files) or "(no editable Python files)"
            return ImplementOutcome(
                error=f"knob {name!r}: no module-level assignment `{name} = ...` "
                f"found in the editable files searched: {searched}"
            )
        try:
            edited[path] = set_constant(edited.get(path, sources[path]), name, value)
        except ValueError as exc:
            return ImplementOutcome(error=f"knob {name!r} in {path}: {exc}")
    for path, text in edited.items():
        if text != sources[path]:
            (Path(worktree) / path).write_text(text, encoding="utf-8")
    changed = sorted(p for p, t in edited.items() if t != sources[p])
    return ImplementOutcome(
        changed_files=changed,
        notes=f"Set {knob_summary(spec.knobs)} in {', '.join(sorted(edited)) or '(no file)'}.",
    )


def find_constant(source: str, name: str) -> ast.expr | None:
    """The value node of the first module-level `name = ...` or `name: T = ...`."""
    for node in parsing.parse(source).body:
        if isinstance(node, ast.Assign):
            if len(node.targets) == 1 and _is_name(node.targets[0], name):
                return node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            if _is_name(node.target, name):
                return node.value
    return None


def set_constant(source: str, name: str, value: Any) -> str:
    """`source` with the value of constant `name` replaced by the literal of `value`.

    Raises KnobNotFound if there is no such module-level assignment and
    ValueError if `value` has no Python literal or the result would not parse.
    """
    node = find_constant(source, name)
    if node is None:
        raise KnobNotFound(name)
    literal = python_literal(value)
    lines = source.encode("utf-8").splitlines(keepends=True)
    start = _offset(lines, node.lineno, node.col_offset)
    end = _offset(lines, node.end_lineno or node.lineno, node.end_col_offset or 0)
    raw = b"".join(lines)
    result = (raw[:start] + literal.encode("utf-8") + raw[end:]).decode("utf-8")
    parsing.parse(result)  # a SyntaxError here is a bug worth failing loudly on
    return result


def python_literal(value: Any) -> str:
    """Source text for a JSON-ish knob value, which reads back equal with `ast.literal_eval`."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no Python literal")
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
    elif isinstance(value, list | tuple | dict):
        text = repr(value)
    else:
        raise ValueError(f"{value!r} ({type(value).__name__}) is not a literal knob value")
    if parsing.literal(text) != value:
        raise ValueError(f"{value!r} does not round-trip as a literal")
    return text


def _locate(name: str, sources: dict[str, str]) -> str:
    for path, source in sources.items():
        if find_constant(source, name) is not None:
            return path
    raise KnobNotFound(name)


def _is_name(target: ast.expr, name: str) -> bool:
    return isinstance(target, ast.Name) and target.id == name


def _offset(lines: list[bytes], lineno: int, col: int) -> int:
    """Byte offset of (1-based line, byte column), as `ast` reports positions."""
    return sum(len(line) for line in lines[: lineno - 1]) + col
