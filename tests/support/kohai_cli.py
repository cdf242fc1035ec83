"""Run the real `kohai` command line in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tests/support/ -> the repository


def kohai(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`kohai ARGS` in `cwd` with this checkout's code and `env` on top of a clean environment.

    The KOHAI_* variables of the test run are dropped so a user's settings never leak in.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KOHAI_", "ANTHROPIC_"))}
    full = {**base, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def one_line(text: str) -> str:
    """The single non-empty line of `text`; fails when there are more (or a traceback)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text, text
    return lines[0]
