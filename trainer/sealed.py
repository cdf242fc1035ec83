"""What makes a result trustworthy after the fact: the checkout did not move, the evaluator spoke.

A run may change nothing in its checkout: every file is hashed before
training, after training and after evaluation, and any file that appeared,
vanished or changed (frozen, editable or ignored by git alike) makes the run
invalid with its path. The walk opens only regular files (`trainer.safeio`):
a FIFO, socket or device in the checkout is a finding, never read, and
hashing is bounded in bytes, entries and time. The primary metric is read only from the evaluator's
file, which lives outside every directory training can write.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from bot.problem import Evaluation
from trainer.safeio import HashBudget, NotRegular, fingerprint, kind_of, read_capped

SKIP_DIRS = frozenset({".git"})
MAX_LISTED = 5
SPECIAL = "special:"
HASH_FILE_CAP = 64 << 20  # larger files are recorded by size, mtime, ctime and inode
HASH_TOTAL_CAP = 2 << 30  # bytes hashed per snapshot; past it files are recorded by stat
MAX_ENTRIES = 200_000
SNAPSHOT_TIME_S = 120.0
EVAL_FILE_CAP = 1 << 20  # the evaluator writes one small JSON object


@dataclass
class Snapshot:
    """What the checkout held: relative path -> record, and what could not be checked.

    A record is the sha256 of a regular file (or its size/mtime/ctime/inode
    past the hashing cap), `link:<target>` for a symlink, `special:<kind>`
    for a FIFO, socket or device (never opened), so that a planted link or
    special file counts as a change. `problem` says why the walk stopped
    early (too many files, too slow): a run is then invalid.
    """

    files: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def specials(self) -> list[str]:
        """`path (kind)` of every FIFO, socket or device: a checkout holds none."""
        return sorted(
            f"{path} ({record.removeprefix(SPECIAL)})"
            for path, record in self.files.items()
            if record.startswith(SPECIAL)
        )


def snapshot(
    root: Path,
    *,
    file_cap: int = HASH_FILE_CAP,
    total_cap: int = HASH_TOTAL_CAP,
    max_entries: int = MAX_ENTRIES,
    time_s: float = SNAPSHOT_TIME_S,
) -> Snapshot:
    """Every file under `root` (`.git` aside), walked without following or opening what is not a file.

    Bounded: at most `file_cap` bytes hashed per file and `total_cap` in all
    (larger files are recorded by their stat, which a rewrite changes through
    ctime), at most `max_entries` entries and `time_s` seconds. Names are
    visited in sorted order, so the same tree gets the same records.
    """
    snap = Snapshot()
    budget = HashBudget(file_cap=file_cap, total_cap=total_cap)
    deadline = time.monotonic() + time_s
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            if len(snap.files) >= max_entries:
                snap.problem = f"the checkout holds more than {max_entries} files"
                return snap
            if time.monotonic() > deadline:
                snap.problem = f"the checkout could not be checked within {time_s:g}s"
                return snap
            rel = (rel_dir / name).as_posix()
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    continue
                if stat.S_ISLNK(st.st_mode):
                    snap.files[rel] = "link:" + os.readlink(name, dir_fd=dirfd)
                elif stat.S_ISREG(st.st_mode):
                    snap.files[rel] = fingerprint(name, dirfd, st, budget)
                else:
                    snap.files[rel] = SPECIAL + kind_of(st.st_mode)
            except NotRegular as exc:  # swapped for something else while being read
                snap.files[rel] = SPECIAL + exc.kind
            except OSError as exc:
                snap.files[rel] = f"unreadable:{exc.errno}"
    return snap


def changes(before: Snapshot, after: Snapshot, when: str) -> str | None:
    """None when nothing moved; else the reason a run is invalid, naming the paths.

    A special file (FIFO, socket, device) is named as such, first: the
    harness never reads one, and a checkout has no business holding one.
    """
    if after.problem:
        return f"{after.problem} {when}"
    old, new = before.files, after.files
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(p for p in set(old) & set(new) if old[p] != new[p])
    specials = [
        f"{p} ({new[p].removeprefix(SPECIAL)})"
        for p in added + changed
        if new[p].startswith(SPECIAL)
    ]
    parts = []
    for label, paths in (
        ("special file", specials),
        ("new file", added),
        ("changed", changed),
        ("removed", removed),
    ):
        if paths:
            shown = ", ".join(paths[:MAX_LISTED])
            more = f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
            parts.append(f"{label} {shown}{more}")
    if not parts:
        return None
    return f"the checkout changed {when}: " + "; ".join(parts)


def unfit_checkout(snap: Snapshot) -> str | None:
    """Why a checkout cannot be trained on as it is (before training), or None."""
    if snap.problem:
        return snap.problem
    specials = snap.specials()
    if specials:
        shown = ", ".join(specials[:MAX_LISTED])
        return f"the checkout holds special files (never read by the harness): {shown}"
    return None


def read_eval_file(path: Path, metric: str) -> tuple[str, float | None, dict[str, float], str]:
    """(status, metric, all numeric values, reason) from the evaluator's one JSON object.

    Read as a regular file only, at most EVAL_FILE_CAP bytes.
    """
    try:
        raw = read_capped(path, EVAL_FILE_CAP + 1)
    except FileNotFoundError:
        return "crash", None, {}, "the evaluator wrote no result (KOHAI_EVAL_FILE is missing)"
    except NotRegular as exc:
        return "invalid", None, {}, f"KOHAI_EVAL_FILE: {exc}"
    except OSError as exc:
        return "crash", None, {}, f"the evaluator's result is not readable: {exc}"
    if len(raw) > EVAL_FILE_CAP:
        return "crash", None, {}, f"the evaluator's result is over {EVAL_FILE_CAP} bytes"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return "crash", None, {}, f"the evaluator's result is not JSON: {exc}"
    if not isinstance(data, dict):
        return "crash", None, {}, "the evaluator's result is not a JSON object"
    values = {
        str(k): float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    if "invalid" in data:
        return "invalid", None, values, f"evaluation: {str(data['invalid'])[:500]}"
    value = data.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "crash", None, values, f"the evaluator reported no {metric}"
    if not math.isfinite(value):
        return "invalid", None, values, f"evaluation: {metric} is not finite ({value})"
    return "ok", float(value), values, ""


@dataclass
class Artefacts:
    """What training left in KOHAI_RUN_DIR: its regular files, and what may not be there."""

    files: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def artefact_files(run_dir: Path, metrics_file: Path) -> Artefacts:
    """What training left behind for the evaluator (the metrics file is progress, not an artefact).

    Walked without following links; a symlink leading out of the run
    directory, or a FIFO, socket or device, is a finding (the evaluator would
    read it as the artefact).
    """
    found = Artefacts()
    if not run_dir.is_dir() or run_dir.is_symlink():
        return found
    root = Path(os.path.abspath(run_dir))
    for dirpath, dirnames, filenames, dirfd in os.fwalk(run_dir, follow_symlinks=False):
        for name in sorted(filenames + dirnames):
            path = Path(dirpath) / name
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            rel = path.relative_to(run_dir).as_posix()
            if stat.S_ISREG(st.st_mode):
                if path != metrics_file:
                    found.files.append(path)
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(name, dir_fd=dirfd)
                target = Path(os.path.normpath(Path(os.path.abspath(dirpath)) / link))
                if not (target == root or root in target.parents):
                    found.findings.append(f"{rel} (symlink out of the run directory)")
            elif not stat.S_ISDIR(st.st_mode):
                found.findings.append(f"{rel} ({kind_of(st.st_mode)})")
    return found


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
