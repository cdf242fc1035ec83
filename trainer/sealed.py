"""What makes a result trustworthy after the fact: the checkout did not move, the evaluator spoke.

A run may change nothing in its checkout: every file is hashed before
training, after training and after evaluation, and any file that appeared,
vanished or changed (frozen, editable or ignored by git alike) makes the run
invalid with its path. The primary metric is read only from the evaluator's
file, which lives outside every directory training can write.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from pathlib import Path

from bot.problem import Evaluation

SKIP_DIRS = frozenset({".git"})
MAX_LISTED = 5


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (relative path -> digest), `.git` aside.

    Links are recorded by their target, so a link planted to point elsewhere
    counts as a change too.
    """
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == root and d in SKIP_DIRS)]
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                files[rel] = "link:" + os.readlink(path)
                continue
            digest = hashlib.sha256()
            try:
                with path.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError as exc:
                files[rel] = f"unreadable:{exc.errno}"
                continue
            files[rel] = digest.hexdigest()
    return files


def changes(before: dict[str, str], after: dict[str, str], when: str) -> str | None:
    """None when nothing moved; else the reason a run is invalid, naming the paths."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    parts = []
    for label, paths in (("new file", added), ("changed", changed), ("removed", removed)):
        if paths:
            shown = ", ".join(paths[:MAX_LISTED])
            more = f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
            parts.append(f"{label} {shown}{more}")
    if not parts:
        return None
    return f"the checkout changed {when}: " + "; ".join(parts)


def read_eval_file(path: Path, metric: str) -> tuple[str, float | None, dict[str, float], str]:
    """(status, metric, all numeric values, reason) from the evaluator's one JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "crash", None, {}, "the evaluator wrote no result (KOHAI_EVAL_FILE is missing)"
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        return "crash", None, {}, f"the evaluator's result is not JSON: {exc}"
    if not isinstance(data, dict):
        return "crash", None, {}, "the evaluator's result is not a JSON object"
    values = {
        str(k): float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    if "invalid" in data:
        return "invalid", None, values, f"evaluation: {data['invalid']}"
    value = data.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "crash", None, values, f"the evaluator reported no {metric}"
    if not math.isfinite(value):
        return "invalid", None, values, f"evaluation: {metric} is not finite ({value})"
    return "ok", float(value), values, ""


def artefact_files(run_dir: Path, metrics_file: Path) -> list[Path]:
    """What training left behind for the evaluator (the metrics file is progress, not an artefact)."""
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.rglob("*") if p.is_file() and p != metrics_file]


def hidden_paths(evaluation: Evaluation | None, checkout: Path) -> list[Path]:
    """The absolute paths that `[eval] hide` names; modules resolve to their files' directory."""
    if evaluation is None:
        return []
    paths: list[Path] = []
    for entry in evaluation.hide:
        if entry.startswith("module:"):
            spec = importlib.util.find_spec(entry.removeprefix("module:"))
            if spec is None or spec.origin is None:
                continue
            origin = Path(spec.origin)
            paths.append(origin.parent if origin.name == "__init__.py" else origin)
        elif entry.startswith("/"):
            paths.append(Path(entry))
        else:
            paths.append(checkout / entry)
    return paths
