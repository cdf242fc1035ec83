"""Is the held-out data within reach of training? Searched for from inside the sandbox itself.

`[eval] hide` masks the paths a problem names, but a copy of the same bytes
elsewhere (another interpreter's standard library, a package cache, a
dataset mirror) would still be readable. The only honest answer to "can
training read this file?" comes from inside the training sandbox: this
module starts one, walks its whole file system and reports every file whose
size and sha256 match a held-out file's. `kohai check` can warn with it; a
problem author can run it on a new host.

Standard library only (it runs on hosts).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.problem import Problem
from trainer import sandbox
from trainer.sealed import hidden_paths

SEARCH_TIMEOUT_S = 300.0
SKIP_ROOTS = ("/proc", "/sys", "/dev")
MIN_SIZE = 1024  # smaller files (an empty __init__.py) say nothing about the data

# Run inside the sandbox with `python -I -S -c`: argv[1] is {size: [sha256, ...]}.
_FINDER = r"""
import hashlib, json, os, stat, sys
wanted = {int(k): set(v) for k, v in json.loads(sys.argv[1]).items()}
skip = set(json.loads(sys.argv[2]))
found = []
for top, dirs, files in os.walk("/", followlinks=False):
    if top in skip:
        dirs[:] = []
        continue
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
    for name in files:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size not in wanted:
                continue
            digest = hashlib.sha256()
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            continue
        if digest.hexdigest() in wanted[st.st_size]:
            found.append(path)
print(json.dumps(found))
"""


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a held-out file: its size and sha256, and where it was read from."""

    path: str
    size: int
    sha256: str


def fingerprint(path: Path) -> Fingerprint:
    """The size and sha256 of one held-out file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return Fingerprint(str(path), Path(path).stat().st_size, digest.hexdigest())


def held_out_files(problem: Problem, checkout: Path) -> list[Path]:
    """Every regular file under the paths `[eval] hide` names (a module: its directory).

    Bytecode caches and files under MIN_SIZE aside: they match too much and hold no data.
    """
    files: list[Path] = []
    for path in hidden_paths(problem.evaluation, Path(checkout)):
        found = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        files += [
            p
            for p in found
            if p.is_file()
            and not p.is_symlink()
            and "__pycache__" not in p.parts
            and p.stat().st_size >= MIN_SIZE
        ]
    return files


def reachable_copies(box: sandbox.Sandbox, prints: Iterable[Fingerprint]) -> list[str]:
    """The paths inside `box` whose content equals one of `prints` (empty: none reachable).

    Raises sandbox.SandboxUnavailable when the sandbox cannot start, and
    RuntimeError when the search itself fails.
    """
    wanted: dict[int, list[str]] = {}
    for fp in prints:
        wanted.setdefault(fp.size, []).append(fp.sha256)
    if not wanted:
        return []
    sandbox.require()
    command = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _FINDER,
        json.dumps(wanted),
        json.dumps(SKIP_ROOTS),
    ]
    proc = subprocess.run(
        box.argv(command, cwd=box.work),
        capture_output=True,
        text=True,
        timeout=SEARCH_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the search in the sandbox failed: {proc.stderr.strip()[-500:]}")
    return sorted(json.loads(proc.stdout.strip().splitlines()[-1]))


def training_box(problem: Problem, checkout: Path, run_dir: Path) -> sandbox.Sandbox:
    """The sandbox training gets (as the harness builds it): the checkout, the run dir, hidden data."""
    hide = tuple(p for p in hidden_paths(problem.evaluation, Path(checkout)) if p.exists())
    return sandbox.Sandbox(
        work=Path(checkout).resolve(),
        writable=(Path(run_dir).resolve(),),
        hide=hide,
        env=sandbox.allowlisted_env({}),
    )


def held_out_reachable(problem: Problem, checkout: Path, run_dir: Path) -> list[str]:
    """Where training could read a copy of the problem's held-out files; empty when nowhere.

    The held-out files are those under `[eval] hide`; each is looked for by
    content inside the training sandbox, so a copy under any other name or
    directory counts, and the hidden originals do not.
    """
    prints = [fingerprint(p) for p in held_out_files(problem, checkout)]
    return reachable_copies(training_box(problem, checkout, run_dir), prints)
