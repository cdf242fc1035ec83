"""`kohai host run`: the GPU host daemon, one worker thread per student.

Each worker long-polls the bot for a job, runs it (see `trainer.jobrunner`)
and posts the result until the bot acknowledges it. On SIGTERM or SIGINT the
host stops leasing, lets running jobs finish within a short grace
(KOHAI_SHUTDOWN_GRACE_S, default 20 s), then kills what is left and releases
those jobs so another host can take them without losing an attempt.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bot.gpus import parse_gpus
from bot.protocol import Job, JobResult
from trainer import connect, limits, sandbox
from trainer.hostapi import HostAuthError, HostClient
from trainer.jobrunner import Aborted, JobContext, cleanup_runs, run_job
from trainer.reporter import JobReporter

log = logging.getLogger("kohai.host")

DEFAULT_SHUTDOWN_GRACE_S = 20.0


@dataclass
class StudentSpec:
    name: str
    token: str
    gpus: list[int] = field(default_factory=list)


TOKEN_ENV = "KOHAI_HOST_TOKEN"
MAX_TOKEN_BYTES = 4096


def check_token_mode(mode: int, path: str) -> None:
    """Refuse a token file that someone else on the host could read (pure, on st_mode)."""
    if not stat.S_ISREG(mode):
        raise ValueError(f"--token-file {path} is not a regular file")
    if mode & 0o077:
        raise ValueError(
            f"--token-file {path} is readable or writable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
        )


def read_token_file(path: str) -> str:
    """The token from a 0600 file, or from standard input for `-`; its first line."""
    if path == "-":
        text = sys.stdin.readline(MAX_TOKEN_BYTES)
    else:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            check_token_mode(os.fstat(fh.fileno()).st_mode, path)
            text = fh.read(MAX_TOKEN_BYTES).decode("utf-8", errors="replace")
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ValueError(f"--token-file {path} holds no token")
    return token


def take_token(args: argparse.Namespace) -> str | None:
    """The host token from --token-file, else KOHAI_HOST_TOKEN.

    Whichever it came from, KOHAI_HOST_TOKEN leaves this process's environment
    at once, so nothing the host starts inherits it; the token lives on only
    in the daemon's memory. (The kernel keeps a process's initial environment
    in /proc/PID/environ: deliver it by file or standard input, as `spawn`
    and the deploy units do, to leave none there.)
    """
    from_env = os.environ.pop(TOKEN_ENV, None)
    path = getattr(args, "token_file", None)
    if path:
        return read_token_file(path)
    return from_env


COMMAND_LINE_TOKEN = (
    "a host token is never taken on the command line (every user of this machine reads "
    "a process's arguments in `ps`): {what}"
)


def parse_students(args: argparse.Namespace) -> list[StudentSpec]:
    """Students from `--name/--token-file/--gpus` and repeated `--student NAME:GPUS:TOKEN_FILE`.

    With `--name`, the token comes from --token-file (a 0600 file, or `-`
    for standard input) or KOHAI_HOST_TOKEN; each `--student` names its own
    0600 token file. A token itself on the command line is refused.
    """
    if getattr(args, "token", None):
        raise ValueError(
            COMMAND_LINE_TOKEN.format(what="give --token-file FILE (mode 0600) or --token-file -")
        )
    students: list[StudentSpec] = []
    token = take_token(args) if args.name or getattr(args, "token_file", None) else None
    if args.name or token:
        if not (args.name and token):
            raise ValueError("--name and a token (--token-file or KOHAI_HOST_TOKEN) go together")
        students.append(StudentSpec(args.name, token, parse_gpus(args.gpus or "")))
    for entry in args.student or []:
        name, sep, rest = entry.partition(":")
        gpus, sep2, path = rest.partition(":")
        if not (name and sep and sep2 and path):
            raise ValueError(
                f"--student expects NAME:GPUS:TOKEN_FILE, got {entry.split(':')[0]}:..."
            )
        if not os.path.lexists(path):
            raise ValueError(
                COMMAND_LINE_TOKEN.format(
                    what=f"--student {name}:{gpus}:... names no file; give NAME:GPUS:TOKEN_FILE, "
                    "the file mode 0600"
                )
            )
        students.append(StudentSpec(name, read_token_file(path), parse_gpus(gpus)))
    if not students:
        raise ValueError(
            "give --name and a token (--token-file), or at least one --student NAME:GPUS:TOKEN_FILE"
        )
    names = [s.name for s in students]
    if len(set(names)) != len(names):
        raise ValueError(f"student names must be distinct: {names}")
    taken: dict[int, str] = {}
    for s in students:
        for gpu in s.gpus:
            if gpu in taken:
                raise ValueError(f"GPU {gpu} is given to both {taken[gpu]} and {s.name}")
            taken[gpu] = s.name
    return students


class StudentWorker(threading.Thread):
    """Lease, run, complete, repeat, until the host shuts down."""

    def __init__(
        self,
        spec: StudentSpec,
        bot_url: str,
        work_dir: Path,
        stopping: threading.Event,
        sandboxed: bool = True,
        keep_runs: bool = False,
    ) -> None:
        super().__init__(name=f"student-{spec.name}", daemon=True)
        self.spec = spec
        self.sandboxed = sandboxed
        self.keep_runs = keep_runs
        self.stopping = stopping  # no new leases
        self.abort = threading.Event()  # kill the current job and release it
        self.client = HostClient(
            bot_url, spec.name, spec.token, stop=stopping, defences=host_defences(sandboxed)
        )
        self.work_dir = work_dir / spec.name
        self.busy = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self.lease_and_handle()
                except HostAuthError:
                    raise
                except Exception:  # noqa: BLE001 - an odd answer must not end the worker
                    log.exception("student %s: unexpected error; going on", self.spec.name)
                    self.stopping.wait(5.0)
        except HostAuthError as exc:
            self.error = str(exc)
            log.error("%s", exc)
        finally:
            self.client.close()

    def lease_and_handle(self) -> None:
        job = self.client.lease()
        if job is None:
            return
        if self.stopping.is_set():
            self.client.release(job.id, stop=_timeout_event(10.0))
            return
        self.busy.set()
        try:
            self.handle(job)
        finally:
            self.busy.clear()

    def handle(self, job: Job) -> None:
        log.info(
            "%s: job %s (%s, PR %s, seeds %s)",
            self.spec.name,
            job.id,
            job.kind,
            job.pr_number,
            job.seeds,
        )
        ctx = JobContext(
            student=self.spec.name,
            work_dir=self.work_dir,
            gpus=self.spec.gpus,
            abort=self.abort,
            sandboxed=self.sandboxed,
        )
        with JobReporter(self.client, job.id) as reporter:
            try:
                result = run_job(job, ctx, reporter)
            except Aborted:
                result = None
            except Exception as exc:  # noqa: BLE001 - the bot must hear about it
                log.exception("job %s failed", job.id)
                result = JobResult(
                    status="crash", reason=f"host error: {type(exc).__name__}: {exc}"
                )
        if result is None:
            log.info("%s: releasing job %s (host shutting down)", self.spec.name, job.id)
            self.client.release(job.id, stop=_timeout_event(10.0))
            if not self.keep_runs:  # the job runs again elsewhere: these files have no use
                cleanup_runs(self.work_dir, job.id)
            return
        acknowledged = self.client.complete(job.id, result)
        log.info("%s: job %s %s %s", self.spec.name, job.id, result.status, result.reason)
        if acknowledged and not self.keep_runs:
            # The bot holds the result: the logs and artefacts (the job's files) go.
            cleanup_runs(self.work_dir, job.id)


def _timeout_event(seconds: float) -> threading.Event:
    event = threading.Event()
    timer = threading.Timer(seconds, event.set)
    timer.daemon = True
    timer.start()
    return event


class HostDaemon:
    """All the students of one host; `shutdown()` is what SIGTERM calls."""

    def __init__(
        self,
        students: list[StudentSpec],
        bot_url: str,
        work_dir: Path,
        grace_s: float,
        *,
        sandboxed: bool = True,
        keep_runs: bool = False,
    ) -> None:
        self.stopping = threading.Event()
        self.grace_s = grace_s
        self.sandboxed = sandboxed
        self.workers = [
            StudentWorker(s, bot_url, work_dir, self.stopping, sandboxed, keep_runs)
            for s in students
        ]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def shutdown(self) -> None:
        self.stopping.set()

    def wait(self) -> int:
        """Block until shut down (or every worker died); the exit code."""
        while not self.stopping.is_set() and any(w.is_alive() for w in self.workers):
            self.stopping.wait(0.5)
        deadline = time.monotonic() + self.grace_s
        while any(w.busy.is_set() for w in self.workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        for worker in self.workers:
            if worker.busy.is_set():
                worker.abort.set()
        for worker in self.workers:
            if worker.busy.is_set() or not self.stopping.is_set():
                worker.join(timeout=30.0)
        errors = [w.error for w in self.workers if w.error]
        return 1 if errors and len(errors) == len(self.workers) else 0


def host_defences(sandboxed: bool) -> str:
    """What this host enforces, as it tells the bot with each lease (shown in `/healthz`)."""
    text = limits.probe().header()
    return f"sandbox={'bubblewrap' if sandboxed else 'NONE (--unsandboxed)'};{text}"


def sandbox_refusal(reason: str | None, unsandboxed: bool) -> str | None:
    """The start-up refusal when the job sandbox cannot start and --unsandboxed is not given.

    Agent-written code would otherwise run with the host's files and
    network; running so must be a visible choice, never a silent fallback.
    """
    if reason is None or unsandboxed:
        return None
    return (
        f"kohai host run: the job sandbox cannot start: {reason}\n"
        "  Install bubblewrap and allow unprivileged user namespaces (see docs/sandbox.md, "
        '"The job sandbox"), or start with --unsandboxed: jobs then run without it and '
        'every result says "unsandboxed".'
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        students = parse_students(args)
    except (ValueError, OSError) as exc:
        print(f"kohai host run: {exc}", file=sys.stderr)
        return 2
    finally:
        os.environ.pop(TOKEN_ENV, None)  # however the token came, no child inherits it
    unsandboxed = bool(getattr(args, "unsandboxed", False))
    refusal = sandbox_refusal(sandbox.probe(), unsandboxed)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    problems = connect.check_bot(
        args.bot_url,
        [(s.name, s.token) for s in students],
        wait_s=float(os.environ.get("KOHAI_BOT_WAIT_S", connect.DEFAULT_WAIT_S)),
        on_wait=lambda line: print(f"kohai host run: {line}", file=sys.stderr, flush=True),
    )
    for line in problems:
        print(f"kohai host run: {line}", file=sys.stderr)
    if problems:
        return 2
    work_dir = Path(args.work_dir or os.environ.get("KOHAI_HOST_DIR", "~/.kohai/host")).expanduser()
    grace_s = float(os.environ.get("KOHAI_SHUTDOWN_GRACE_S", DEFAULT_SHUTDOWN_GRACE_S))
    sandbox.set_unsandboxed(unsandboxed)
    keep_runs = bool(getattr(args, "keep_runs", False))
    daemon = HostDaemon(
        students, args.bot_url, work_dir, grace_s, sandboxed=not unsandboxed, keep_runs=keep_runs
    )
    # Which mechanism holds each per-job limit here; rlimits alone are a working
    # fallback, said rather than refused.
    log.info("%s", limits.probe().line())
    if unsandboxed:
        log.warning("running UNSANDBOXED: agent code sees this host; every result says so")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.shutdown())
    names = ", ".join(f"{s.name} (GPUs {s.gpus or 'none'})" for s in students)
    log.info("host up: %s -> %s, work dir %s", names, args.bot_url, work_dir)
    daemon.start()
    code = daemon.wait()
    for worker in daemon.workers:
        if worker.error:
            print(f"kohai host run: {worker.spec.name}: {worker.error}", file=sys.stderr)
    return code


def spawn(
    name: str,
    token: str,
    bot_url: str,
    work_dir: Path,
    *,
    env: dict[str, str] | None = None,
    unsandboxed: bool = False,
    **popen: object,
) -> subprocess.Popen[bytes]:
    """Start `kohai host run` for one student as a child process (demo, tests, benchmarks).

    The token travels on the child's standard input (`--token-file -`): never
    on the command line, and not in its environment, where the kernel would
    keep it readable in /proc/PID/environ for the daemon's whole life.
    """
    command = [
        sys.executable,
        "-m",
        "bot.cli",
        "host",
        "run",
        "--name",
        name,
        "--token-file",
        "-",
        "--bot-url",
        bot_url,
        "--work-dir",
        str(work_dir),
        *(["--unsandboxed"] if unsandboxed else []),
    ]
    full_env = {k: v for k, v in (os.environ if env is None else env).items() if k != TOKEN_ENV}
    proc = subprocess.Popen(  # type: ignore[call-overload]
        command,
        env=full_env,
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE,
        **popen,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(token.encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died at once; its exit status and log say why
    proc.stdin = None  # done with: communicate() and wait() must not touch it again
    return proc  # type: ignore[no-any-return]
