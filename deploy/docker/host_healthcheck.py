"""Docker HEALTHCHECK of a kohai GPU host: healthy while its daemon process is alive.

Under tini the daemon is not PID 1, so it is looked for by its command line
(`... kohai host run ...`) among the processes in /proc; a zombie does not
count. Exit status 0 healthy, 1 not.
"""

from __future__ import annotations

import sys
from pathlib import Path


def is_daemon(argv: list[str]) -> bool:
    """`kohai host run ...`, whether started as the console script or through its interpreter."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "kohai" and argv[i + 1 : i + 3] == ["host", "run"]:
            return True
    return False


def daemon_pids(proc: Path = Path("/proc")) -> list[int]:
    """Processes running `kohai host run` that are not zombies."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
        if state != "Z" and is_daemon(argv):
            found.append(int(entry.name))
    return found


if __name__ == "__main__":
    sys.exit(0 if daemon_pids() else 1)
