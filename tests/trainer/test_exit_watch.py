"""The harness's loops wake when a child exits, not at their next tick.

A bounded run and each of the evaluator's model children used to be noticed
up to a tick late (200 ms per model child): `ExitWatch` waits on a pidfd, so
a loop with a long tick still returns as the child ends.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from trainer.process import ExitWatch


def test_a_wait_returns_when_the_child_exits_not_at_the_tick() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    watch = ExitWatch(proc.pid)
    assert watch.fd is not None, "this kernel has pidfd_open (Linux >= 5.3)"
    try:
        started = time.monotonic()
        while proc.poll() is None:
            assert watch.wait(60.0) == []  # nothing else was watched
        assert time.monotonic() - started < 30.0  # woken by the exit, not the 60 s tick
    finally:
        watch.close()
    assert watch.fd is None


def test_other_descriptors_still_wake_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    left, right = socket.socketpair()
    watch = ExitWatch(proc.pid)
    try:
        right.send(b"x")
        assert watch.wait(60.0, left) == [left]
    finally:
        watch.close()
        proc.kill()
        proc.wait()
        left.close()
        right.close()
