"""The job sandbox: agent-written code runs in bubblewrap, without the host's secrets.

Everything a coding agent writes (its tools, the training command, the model
side of evaluation) runs on a GPU host that holds credentials. bubblewrap
(Debian's `bubblewrap`, `/usr/bin/bwrap`) puts it in fresh namespaces:

- its own PID namespace: when the top command exits, the kernel ends every
  process left in it, also one that called `setsid()` and double-forked;
- no network (only a private loopback) unless `network=True`;
- a filesystem of read-only system directories, the Python it runs on, the
  binds asked for, and only `work` (plus `writable`) writable. Nothing of
  $HOME, /root or the host's work directory (its repository cache) exists
  inside unless it is bound. A `.git` inside a writable directory is bound
  read-only on top, so code in the sandbox cannot plant hooks or config
  (`core.hooksPath`, `core.fsmonitor`) that the host's later git commands
  would run;
- a complete, allowlisted environment (`--clearenv`, then `--setenv`), so
  neither the environment nor `/proc/<pid>/environ` of a host process shows
  a token: the host's processes are not even visible in the new /proc.

This module uses the standard library only: hosts do not install the
server's dependencies.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BWRAP = "bwrap"
INIT_READY_S = 10.0  # how long a signal may wait for kohai's PID 1 to be ready (a loaded host)
INIT_FILE = Path(__file__).resolve().parent / "sandbox_init.py"
PROBE_TIMEOUT_S = 20.0

# Read-only system directories bound when present (symlinks are recreated as symlinks).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
GPU_DEVICE_GLOBS = ("/dev/nvidia*", "/dev/dri")

# Environment that may cross into the sandbox (exact names, then prefixes).
_ALLOWED_NAMES = {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR"}
_ALLOWED_PREFIXES = ("LC_", "PYTHON", "CUDA_", "NCCL_", "NVIDIA_")
# Never allowed, whatever the prefix lists say: credentials and the host's own settings.
_DENIED_PATTERNS = ("*TOKEN*", "*KEY*", "*SECRET*", "*PASSWORD*", "*CREDENTIAL*")
_DENIED_PREFIXES = ("WANDB_", "KOHAI_HOST", "GITHUB_", "ANTHROPIC_", "AWS_", "GIT_")
# PYTHONPATH from outside could point into the host's tree; PYTHONSTARTUP/… run code.
_DENIED_NAMES = {"PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONHOME"}


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot start here; the message says why, in one line."""


def _denied(name: str) -> bool:
    upper = name.upper()
    return (
        upper in _DENIED_NAMES
        or upper.startswith(_DENIED_PREFIXES)
        or any(fnmatch.fnmatchcase(upper, p) for p in _DENIED_PATTERNS)
    )


def allowlisted_env(base: Mapping[str, str], extra: Mapping[str, str] = {}) -> dict[str, str]:  # noqa: B006 - read only
    """The environment a sandboxed process may see: `base` filtered, then `extra` on top.

    Allowed from `base`: PATH, LANG/LC_*, TZ, TERM, TMPDIR, PYTHON* (not
    PYTHONPATH and the like), CUDA_*/NCCL_*/NVIDIA_*; never a name that looks
    like a credential (*TOKEN*, *KEY*, *SECRET*, ...) or the host's own
    settings (WANDB_*, KOHAI_HOST*, GITHUB_*, ANTHROPIC_*, GIT_*). HOME is
    /tmp (a private tmpfs inside). `extra` is trusted: the caller puts the
    metrics protocol's variables there, or the coding agent's model key.
    """
    env: dict[str, str] = {}
    for name, value in base.items():
        if _denied(name):
            continue
        if name in _ALLOWED_NAMES or name.startswith(_ALLOWED_PREFIXES):
            env[name] = value
    env["HOME"] = "/tmp"
    env.setdefault("TMPDIR", "/tmp")
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    return env


def job_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a sandboxed run: the allowlist, plus the run's own KOHAI_* settings.

    The harness puts the metrics protocol in `env` (KOHAI_SEED, KOHAI_RUN_DIR,
    ...); those pass, as does any other KOHAI_* knob the problem reads, but
    never one that looks like a credential or names the bot's GitHub settings.
    """
    extra = {
        k: v
        for k, v in env.items()
        if k.startswith("KOHAI_") and not _denied(k) and not k.startswith("KOHAI_GITHUB")
    }
    return allowlisted_env(env, extra)


def _python_dirs() -> list[Path]:
    """The Python this process runs on, and its venv: a sandboxed `python` must find both."""
    dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    dirs.add(Path(os.path.realpath(sys.executable)).parent.parent)
    return sorted(d for d in dirs if d.is_dir() and str(d) not in ("/", "/usr"))


def _covered(path: Path, roots: Sequence[str]) -> bool:
    return any(path == Path(r) or Path(r) in path.parents for r in roots)


@dataclass(frozen=True)
class Sandbox:
    """One sandboxed command's world; `argv` renders it as a bubblewrap command line."""

    work: Path  # the only writable place (the job's checkout or run dir)
    writable: tuple[Path, ...] = ()
    readonly: tuple[Path, ...] = ()  # extra read-only binds (base checkout, artefacts, data)
    hide: tuple[Path, ...] = ()  # must not be readable inside: masked by an empty tmpfs/file
    env: Mapping[str, str] = field(default_factory=dict)  # the complete environment inside
    network: bool = False  # False: a private network namespace with loopback only
    gpus: tuple[int, ...] = ()  # any GPU: /dev/nvidia*, /dev/dri and /sys pass through
    # Run the command under kohai's PID 1 (sandbox_init.py): SIGTERM to it reaches the
    # command's process group (`signal_init`), and the command's CPU time and peak
    # memory reach the caller's wait4, which bwrap's own PID 1 would swallow.
    init: bool = False
    # A limits hook: the size of the private /tmp (a tmpfs, in memory, out of the disk
    # watcher's sight); None leaves the kernel's default (half the memory).
    tmp_bytes: int | None = None

    def argv(self, command: Sequence[str], *, cwd: Path) -> list[str]:
        """`["env", "-i", "bwrap", ..., "--", *command]`, run from `cwd` (visible inside).

        The environment inside is exactly `env` (passed with `--setenv`, so its
        values are on bwrap's command line: put the allowlisted environment
        there, not the host's credentials; see `exec_args` for those).
        """
        # bwrap's own process (pid 1 inside) keeps the environment it was started
        # with, readable in /proc/1/environ: start it with none at all.
        return ["/usr/bin/env", "-i", *self._args(command, cwd=cwd, inline_env=True)]

    def exec_args(self, command: Sequence[str], *, cwd: Path) -> list[str]:
        """`["bwrap", ..., "--", *command]` for a caller that execs it with env=`self.env`.

        The environment then never appears on a command line (the coding
        agent's model key, for one); whoever runs it must pass exactly
        `self.env` as the process environment, since bwrap keeps its own.
        """
        return self._args(command, cwd=cwd, inline_env=False)

    def _args(self, command: Sequence[str], *, cwd: Path, inline_env: bool) -> list[str]:
        readonly = self.readonly
        if self.init:
            readonly = (*readonly, INIT_FILE)
            command = [sys.executable, "-I", "-S", str(INIT_FILE), "--", *command]
        args = [
            shutil.which(BWRAP) or BWRAP,
            *(["--as-pid-1"] if self.init else []),
            "--unshare-all",
            *(["--share-net"] if self.network else []),
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            *(["--size", str(self.tmp_bytes)] if self.tmp_bytes else []),
            "--tmpfs",
            "/tmp",
        ]
        for name in SYSTEM_DIRS:
            path = Path(name)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), name]
            elif path.is_dir():
                args += ["--ro-bind", name, name]
        for extra in _python_dirs():
            if not _covered(extra, SYSTEM_DIRS):
                args += ["--ro-bind", str(extra), str(extra)]
        if self.network:
            # Name resolution may need the host's resolver files (already under /etc).
            args += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
        for path in readonly:
            args += ["--ro-bind", str(path), str(path)]
        writable = (self.work, *self.writable)
        for path in writable:
            args += ["--bind", str(path), str(path)]
        for path in writable:  # on top of the writable binds: git metadata stays read-only
            dotgit = Path(path) / ".git"
            if dotgit.exists() or dotgit.is_symlink():
                args += ["--ro-bind", str(dotgit), str(dotgit)]
        for path in self.hide:
            if Path(path).is_dir():
                args += ["--tmpfs", str(path), "--remount-ro", str(path)]
            else:
                args += ["--ro-bind", "/dev/null", str(path)]
        if self.gpus:
            for pattern in GPU_DEVICE_GLOBS:
                for dev in sorted(Path("/").glob(pattern.lstrip("/"))):
                    args += ["--dev-bind", str(dev), str(dev)]
            args += ["--ro-bind-try", "/sys", "/sys"]
        if inline_env:
            args += ["--clearenv"]
            for name, value in self.env.items():
                args += ["--setenv", name, value]
        args += ["--chdir", str(cwd), "--", *command]
        return args


@functools.cache
def probe() -> str | None:
    """None when a sandbox can start here; else one line saying why not. Cached per process."""
    if shutil.which(BWRAP) is None:
        return (
            "bubblewrap (bwrap) is not installed: apt-get install bubblewrap "
            "(or dnf install bubblewrap)"
        )
    sandbox = Sandbox(work=Path("/tmp"), env=allowlisted_env(os.environ))
    try:
        proc = subprocess.run(
            sandbox.argv(["true"], cwd=Path("/")),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not start: {exc}"
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        why = detail[-1] if detail else f"exit status {proc.returncode}"
        hint = ""
        if "namespace" in why.lower() or "permission" in why.lower():
            hint = " (unprivileged user namespaces are refused here: a container's seccomp "
            hint += "profile or kernel.unprivileged_userns_clone=0)"
        return f"bubblewrap cannot create a sandbox here: {why}{hint}"
    return None


_unsandboxed = False


def set_unsandboxed(unsandboxed: bool) -> None:
    """Set by `kohai host run --unsandboxed`: this process runs agent code without a sandbox."""
    global _unsandboxed
    _unsandboxed = unsandboxed


def use_sandbox() -> bool:
    """True: run agent code sandboxed. False: the host was started --unsandboxed.

    Raises SandboxUnavailable when no sandbox can start and the host did not
    choose to run without one: never a silent fallback.
    """
    if _unsandboxed:
        return False
    reason = probe()
    if reason is not None:
        raise SandboxUnavailable(reason)
    return True


def require() -> None:
    """Raise SandboxUnavailable with probe()'s reason when a sandbox cannot start."""
    reason = probe()
    if reason is not None:
        raise SandboxUnavailable(reason)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, found through /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def signal_init(pid: int, sig: int = signal.SIGTERM, *, wait_s: float = INIT_READY_S) -> None:
    """Send `sig` to the PID 1 of a sandbox started with `init=True` (`pid`: its bwrap).

    kohai's PID 1 passes it on to the command's process group, so the command
    gets the signal's default action unless it handles it: the same as a
    signal to the process group of an unsandboxed run. A PID 1 ignores a
    signal it has no handler for, so a signal sent in the first milliseconds
    waits (up to `wait_s`) until kohai's PID 1 has its handler in place.
    """
    deadline = time.monotonic() + wait_s
    while True:
        targets = [p for p in descendants(pid) if _parent(p) == pid]
        ready = [p for p in targets if _catches(p, sig)]
        if ready or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    if not ready:  # no kohai PID 1 (or it is gone): the whole tree, to be sure
        signal_tree(pid, sig)
    for child in ready:
        try:
            os.kill(child, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (SigCgt in its status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def unwrap_exit(code: int | None) -> int | None:
    """The command's exit as `subprocess` reports it: 128+N from kohai's PID 1 is signal N.

    A PID 1 cannot die of its own signal, so `sandbox_init.py` exits 128+N for a
    command killed by signal N; the harness reads negative codes as signals.
    """
    if code is not None and 128 < code < 128 + 65:
        return 128 - code
    return code


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else None


def signal_tree(pid: int, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to every process under `pid` (the bwrap process of a sandboxed command).

    The command runs in a new session (`--new-session`), so a signal to the
    harness's process group reaches bwrap only, and bwrap does not forward it;
    this lets the training script still get its SIGTERM to save the artefact.
    """
    for child in descendants(pid):
        try:
            os.kill(child, sig)
        except (ProcessLookupError, PermissionError):
            pass
