"""The evaluator's model-side children, each started by the harness in a sandbox of its own.

The sealed evaluator runs in the job sandbox itself, and it must start the
candidate's model code in a narrower one (no held-out data, nothing
writable that outlives the child). bubblewrap cannot start a sandbox with a
fresh /proc from inside another, so the harness starts those children
instead, as siblings:

- the harness listens on a Unix socket (`ModelLauncher`) bound into the
  evaluator's sandbox, and hands the evaluator `KOHAI_SANDBOX` = the argv of
  its client (`python -I -S model_client.py SOCKET --`);
- the evaluator starts `[*KOHAI_SANDBOX, python, prepare.py, serve-model]`
  with pipes, as it would start any child; the client sends its standard
  input, output and error (the evaluator's pipes, as file descriptors) and
  the command to the harness, then waits;
- the harness starts the command in a fresh model sandbox with those
  descriptors, and when it ends answers its exit code, which the client
  exits with. A client that dies (the evaluator killed it or gave up) closes
  the socket, and the harness ends the child's sandbox.

Each child is a new sandbox with an empty private /tmp and a fresh working
directory: nothing one child learns reaches the next (what the causality
probe relies on). The client half (`trainer/model_client.py`) runs as
`python -I -S` inside the evaluator's sandbox, standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from trainer import sandbox
from trainer.limits import Guard, Limits
from trainer.process import ExitWatch

CLIENT_FILE = Path(__file__).resolve().with_name("model_client.py")  # the evaluator's half
MAX_REQUEST = 1 << 20  # the command and environment of one child
MAX_CHILDREN = 256  # per evaluation: an evaluator that loops forever starts no more
WAIT_TICK_S = 0.2

# What the harness makes of one request: the argv to run (a sandbox around `command`).
Wrap = Callable[[list[str], Mapping[str, str], Path], list[str]]


class ModelLauncher:
    """The harness's half: a socket that starts one sandboxed child per connection."""

    def __init__(self, wrap: Wrap, scratch_root: Path, limits: Limits | None = None) -> None:
        self.wrap = wrap
        self.limits = limits  # each child's own (`trainer.limits`), as the evaluator's
        self.limit: str | None = None  # the first limit a child broke, if one did
        self.scratch_root = Path(scratch_root)
        # A short path of its own: a Unix socket's name is limited to 107 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="kohai-ml-"))
        self.socket_path = self.directory / "s"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server.bind(str(self.socket_path))
        self.server.listen(8)
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.started = 0
        self.children: set[subprocess.Popen[bytes]] = set()
        self.thread = threading.Thread(target=self._accept, name="model-launcher", daemon=True)
        self.thread.start()

    def client_argv(self) -> list[str]:
        """KOHAI_SANDBOX: the prefix the evaluator puts before its model-side command."""
        return [sys.executable, "-I", "-S", str(CLIENT_FILE), str(self.socket_path), "--"]

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
            request = json.loads(message)
            command = [str(a) for a in request["argv"]]
            env = {str(k): str(v) for k, v in dict(request.get("env") or {}).items()}
            if len(fds) != 3 or not command:
                raise ValueError("a request carries a command and three descriptors")
            with self.lock:
                if self.closing.is_set() or self.started >= MAX_CHILDREN:
                    raise ValueError(f"no more than {MAX_CHILDREN} model children")
                self.started += 1
                number = self.started
            code = self._run(command, env, fds, number, conn)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            code = 125
            with contextlib.suppress(OSError):
                os.write(fds[2], f"kohai: the model child was not started: {exc}\n".encode())
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"exit": code}).encode())
        conn.close()

    def _run(
        self,
        command: list[str],
        env: dict[str, str],
        fds: list[int],
        number: int,
        conn: socket.socket,
    ) -> int:
        work = self.scratch_root / f"model-{number}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        guard = Guard(self.limits) if self.limits is not None else None
        argv = self.wrap(command, env, work)
        if guard is not None:
            argv = guard.wrap(argv)
            guard.start()
        code: int | None = None
        try:
            proc = subprocess.Popen(
                argv,
                stdin=fds[0],
                stdout=fds[1],
                stderr=fds[2],
                start_new_session=True,
            )
            for fd in fds:
                os.close(fd)
            fds.clear()
            with self.lock:
                self.children.add(proc)
            exit_watch = ExitWatch(proc.pid)
            try:
                while proc.poll() is None:
                    ready = exit_watch.wait(WAIT_TICK_S, conn)
                    if (ready and not conn.recv(1)) or self.closing.is_set():
                        break  # the client is gone, or the evaluation is over
                    if guard is not None and guard.exceeded:
                        break  # past a limit: ended at once
                if proc.poll() is None:
                    sandbox.signal_tree(proc.pid, 9)
                    proc.kill()
                code = proc.wait()
            finally:
                exit_watch.close()
                with self.lock:
                    self.children.discard(proc)
            return _exit_status(code)
        finally:
            if guard is not None:
                verdict = guard.close(sandbox.unwrap_exit(code))
                if verdict and self.limit is None:
                    self.limit = verdict
            shutil.rmtree(work, ignore_errors=True)

    def close(self) -> None:
        """Stop listening and end every child still running."""
        self.closing.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        with self.lock:
            children = list(self.children)
        for proc in children:
            sandbox.signal_tree(proc.pid, 9)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        self.thread.join(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _exit_status(code: int) -> int:
    """A shell-style exit status (0-255) for the client to exit with: 128+N for signal N."""
    return 128 - code if code < 0 else code & 0xFF


@contextlib.contextmanager
def launcher(
    wrap: Wrap, scratch_root: Path, limits: Limits | None = None
) -> Iterator[ModelLauncher]:
    server = ModelLauncher(wrap, scratch_root, limits)
    try:
        yield server
    finally:
        server.close()
