"""One bounded child process: its output logged, its time limit enforced, its end certain.

Training, the sealed evaluator and the data step all run through here, so the
budget is enforced by the same code for each: SIGTERM to the whole process
group at the budget, SIGKILL after the grace, and nothing of the group left
alive afterwards.
"""

from __future__ import annotations

import collections
import os
import re
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from trainer.limits import Guard, Limits

LOG_TAIL_LINES = 50
MAX_LINE_BYTES = 4096  # a longer output line is cut (the log and the log tail alike)
MAX_LOG_BYTES = 64 << 20  # the log file on disk stops growing here
MAX_TAIL_CHARS = 16_000  # the log tail that leaves the host
POLL_S = 0.05


class CancelFlag(Protocol):
    """Anything with `is_set()`, e.g. a threading.Event."""

    def is_set(self) -> bool: ...


@dataclass
class Exit:
    """How a bounded process ended."""

    exit_code: int | None
    duration_s: float
    peak_rss_mb: float = 0.0
    terminated: bool = False  # got SIGTERM at its budget (a normal end for training)
    killed: bool = False  # still alive `grace` after SIGTERM: SIGKILLed
    cancelled: bool = False
    tail: list[str] = field(default_factory=list)
    summary_lines: list[str] = field(default_factory=list)
    limit: str | None = None  # the resource limit it broke (`trainer.limits`), if any
    limit_notes: list[str] = field(default_factory=list)  # e.g. "memory not limited: ..."


class _LogPump(threading.Thread):
    """Copies the child's output to a log file, keeps the tail and passes lines on.

    The output is the job's: a line is read at most MAX_LINE_BYTES at a time
    (the rest of a longer one is dropped and counted), and the log file stops
    growing at MAX_LOG_BYTES, so neither memory nor disk follows the job.
    """

    def __init__(
        self, stream: IO[bytes], log_path: Path, on_line: Callable[[str], None] | None
    ) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.log_path = log_path
        self.on_line = on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        # Summary lines come at the end; a bounded window keeps memory flat on long runs.
        self.summary_lines: collections.deque[str] = collections.deque(maxlen=2000)
        self.written = 0

    def _lines(self) -> Iterator[str]:
        """The output's lines, each cut at MAX_LINE_BYTES (with how much was cut)."""
        while True:
            raw = self.stream.readline(MAX_LINE_BYTES)
            if not raw:
                return
            if len(raw) >= MAX_LINE_BYTES and not raw.endswith(b"\n"):
                dropped = 0
                while True:  # the rest of the line, read and counted, not kept
                    more = self.stream.readline(MAX_LINE_BYTES)
                    dropped += len(more)
                    if not more or more.endswith(b"\n"):
                        break
                text = raw.decode("utf-8", errors="replace")
                yield f"{text} [... {dropped} more bytes of this line cut]"
                continue
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def run(self) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            for line in self._lines():
                if self.written < MAX_LOG_BYTES:
                    log.write(line + "\n")
                    self.written += len(line) + 1
                    if self.written >= MAX_LOG_BYTES:
                        log.write(
                            f"[kohai: the log passed {MAX_LOG_BYTES} bytes; the rest is not kept]\n"
                        )
                    log.flush()
                self.tail.append(line)
                if ":" in line and len(line) < 200:
                    self.summary_lines.append(line)
                if self.on_line is not None:
                    try:
                        self.on_line(line)
                    except Exception:  # noqa: BLE001 - a reporting hiccup must not stop the log
                        pass
        self.stream.close()


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait4(pid: int, block: bool) -> tuple[int, float] | None:
    """(exit code, peak RSS in MB of the child and its descendants) or None if running.

    wait4 gives this child's own resource usage, so the peak is per run even in
    a long-lived daemon (RUSAGE_CHILDREN would be the maximum over every run).
    """
    try:
        got, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return -1, 0.0
    if got == 0:
        return None
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024.0


class ExitWatch:
    """Wakes a waiting loop the moment a child exits (a pidfd), else after `tick` seconds.

    The harness's loops also look at the clock, the limits and the cancel
    flag between waits, so they cannot block in `wait()`; sleeping a tick
    instead would add up to a tick to every run's end (and, for the
    evaluator's model children, to the evaluation). Where the kernel has no
    pidfd (Linux < 5.3) it is the plain tick.
    """

    def __init__(self, pid: int) -> None:
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, tick: float, *others: Any) -> list[Any]:
        """Until the child exits, one of `others` (selectable) is readable, or `tick` passes."""
        watched: list[Any] = [*others]
        if self.fd is not None:
            watched.append(self.fd)
        if not watched:
            time.sleep(tick)
            return []
        ready, _, _ = select.select(watched, [], [], tick)
        return [r for r in ready if r != self.fd]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_bounded(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    budget_s: float,
    grace_s: float,
    cancel: CancelFlag | None = None,
    on_line: Callable[[str], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    terminate: Callable[[int, signal.Signals], None] = signal_group,
    limits: Limits | None = None,
) -> Exit:
    """Run `argv` until it exits, SIGTERM it at `budget_s`, SIGKILL it `grace_s` later.

    `terminate(pid, signal)` delivers the budget's SIGTERM; by default to the
    child's process group. A sandbox whose processes live in their own
    session can pass its own. `limits` puts the process and everything it
    starts under those limits (`trainer.limits`); a run that breaks one is
    killed at once and `Exit.limit` names it.
    """
    guard = Guard(limits) if limits is not None else None
    if guard is not None:
        argv = guard.wrap(argv)
        guard.start()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group, so the budget reaches every process of the run;
            # not its own session, which with scheduler autogroups would also change
            # how the CPU is shared with the rest of the machine.
            process_group=0,
        )
    except OSError:
        if guard is not None:
            guard.close(None)
        raise
    assert proc.stdout is not None
    pump = _LogPump(proc.stdout, log_path, on_line)
    pump.start()
    exit_watch = ExitWatch(proc.pid)
    deadline = started + budget_s
    result = Exit(exit_code=None, duration_s=0.0)
    term_sent_at: float | None = None
    limit_killed = False
    try:
        while True:
            done = _wait4(proc.pid, block=False)
            if done is not None:
                result.exit_code, result.peak_rss_mb = done
                if term_sent_at is not None:
                    # A shell that died at the SIGTERM may leave the real work
                    # still saving: the group gets its whole grace.
                    _drain_group(proc.pid, until=term_sent_at + grace_s)
                break
            if on_tick is not None:
                on_tick()
            now = time.monotonic()
            if guard is not None and guard.exceeded and not limit_killed:
                limit_killed = True  # past a limit: no grace to save anything
                signal_group(proc.pid, signal.SIGKILL)
            if term_sent_at is None:
                if cancel is not None and cancel.is_set():
                    result.cancelled = True
                elif now >= deadline:
                    result.terminated = True
                if result.cancelled or result.terminated:
                    terminate(proc.pid, signal.SIGTERM)
                    term_sent_at = now
            elif now - term_sent_at >= grace_s:
                result.killed = True
                signal_group(proc.pid, signal.SIGKILL)
            exit_watch.wait(POLL_S)
    finally:
        exit_watch.close()
        result.duration_s = time.monotonic() - started
        proc.returncode = result.exit_code if result.exit_code is not None else -9
        # Nothing of the run may outlive it: stray grandchildren included.
        signal_group(proc.pid, signal.SIGKILL)
        if result.exit_code is None:
            _wait4(proc.pid, block=True)
    pump.join(timeout=5.0)
    result.tail = list(pump.tail)
    result.summary_lines = list(pump.summary_lines)
    if guard is not None:
        result.limit = guard.close(result.exit_code, result.tail)
        result.limit_notes = list(guard.notes)
    return result


def cap_tail(lines: Sequence[str], max_chars: int = MAX_TAIL_CHARS) -> str:
    """The log tail as it leaves the host: its last lines, at most `max_chars` in all."""
    text = "\n".join(lines)
    if len(text) <= max_chars:
        return text
    return "[... cut]\n" + text[-max_chars:]


def _drain_group(pgid: int, *, until: float) -> None:
    while time.monotonic() < until:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(POLL_S)


_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\\"'*?\[\]#~{}\n]|^\S*=")


def command_argv(command: str) -> list[str]:
    """argv for a command line: run directly when it is a plain command, else through sh.

    Run directly, the program is the harness's own child: it receives the
    budget's SIGTERM itself and its peak memory is measured.
    """
    if _SHELL_SYNTAX.search(command):
        return ["/bin/sh", "-c", command]
    return shlex.split(command)


def describe_exit(exit_code: int) -> str:
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}"


def last_error_line(lines: list[str]) -> str:
    """The line a human looks for first in a traceback: the exception itself."""
    for line in reversed(lines):
        text = line.strip()
        if text and not text.startswith(("File ", "^", "~")):
            return text[:300]
    return ""
