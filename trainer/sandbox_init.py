"""PID 1 of a job sandbox: run the command, pass on SIGTERM, reap, report its usage upward.

bubblewrap's own PID 1 reports the command's exit through a pipe and is never
waited for, so the command's CPU time and peak memory would not reach the
harness's `wait4`. Started with `bwrap --as-pid-1`, this file is PID 1
instead: it starts the command in a process group of its own, forwards
SIGTERM/SIGINT to that group (the harness's budget signal, with the default
action where the command set no handler), reaps every orphan, and exits with
the command's status once the command is done; the kernel then ends whatever
is left in the namespace. Because it waits for the command, the command's
resource usage is part of its own, and bwrap's `wait4` passes it on.

Standard library only; it runs read-only inside the sandbox as
`python -I -S sandbox_init.py -- COMMAND...`.
"""

from __future__ import annotations

import os
import signal
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: sandbox_init.py -- COMMAND...", file=sys.stderr)
        return 2
    command = argv[1:]
    child = 0
    pending: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if child == 0:  # not started yet: pass it on once it is
            pending.append(signum)
            return
        try:
            os.killpg(child, signum)
        except ProcessLookupError:
            pass

    # Handlers first: PID 1 ignores any signal it has no handler for.
    for sig in FORWARDED:
        signal.signal(sig, forward)
    # Signals wait (blocked) while the command's process group is being made: a
    # SIGTERM in that instant is delivered once there is a group to pass it to.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    child = os.fork()
    if child == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"kohai sandbox: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
            os._exit(127)
    try:
        os.setpgid(child, child)
    except OSError:
        pass  # the child did it first
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    for signum in pending:
        forward(signum, None)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
