"""Per-job resource limits: memory, processes, file size, disk use and CPU time.

A job's code may fork without end, allocate the host's memory or fill its
disk. Every bounded process (training, `[data]`, `[eval]` and, through the
evaluator, its model-side child) runs under the limits of `Limits`:

- memory: a cgroup's `memory.max` (cgroup v2, where this process's cgroup is
  delegated with the `memory` controller), else cgroup v1's
  `memory.limit_in_bytes` where that hierarchy is writable, else
  `RLIMIT_AS` per process. `RLIMIT_AS` breaks CUDA (it reserves far more
  address space than it uses), so a GPU job without a cgroup runs without a
  memory limit, and says so;
- processes: `pids.max` (v2 or v1), else `RLIMIT_NPROC` (per user, and
  without effect for root);
- file size: `RLIMIT_FSIZE` at the disk limit (SIGXFSZ past it);
- disk: a watcher thread that sums the blocks under the job's writable
  directories and stops the job past the limit;
- CPU time: `RLIMIT_CPU` as a backstop past the budget (the budget itself is
  the wall clock's).

The process runner applies them (`Guard`): it prefixes the command with
`python -I -S limits_exec.py --join F... --rlimit N=V -- COMMAND...`, which
joins the cgroup, sets the rlimits and execs the command, so the limits hold
for the sandbox and everything in it. After the
run, `Guard.close` reads the cgroup's counters and names the limit a run
broke: `out of memory`, `too many processes`, `disk quota`, `cpu time`.

Standard library only: it runs on GPU hosts.
"""

from __future__ import annotations

import functools
import os
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

OUT_OF_MEMORY = "out of memory"
TOO_MANY_PROCESSES = "too many processes"
DISK_QUOTA = "disk quota"
CPU_TIME = "cpu time"

DISK_POLL_S = 2.0
DISK_MAX_ENTRIES = 500_000  # past this many entries the watcher counts no further
CGROUP_PREFIX = "kohai-"
# The prefix that joins the cgroup, sets the rlimits and execs: imports nothing heavy.
SCRIPT = Path(__file__).resolve().parent / "limits_exec.py"


@dataclass(frozen=True)
class Limits:
    """What one bounded process (and all it starts) may use; None: not limited."""

    memory_bytes: int | None = None
    processes: int | None = None
    disk_bytes: int | None = None
    cpu_s: float | None = None
    disk_paths: tuple[Path, ...] = ()  # where the job writes: the disk watcher sums these
    gpu: bool = False  # CUDA: no RLIMIT_AS


def host_memory_bytes() -> int:
    """The host's physical memory (what a `[train] memory = "90%"` is a share of)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_backstop_s(wall_s: float, cpus: int | None = None) -> float:
    """RLIMIT_CPU for a process that may run `wall_s` of wall time on every CPU, and a margin."""
    return wall_s * (cpus or os.cpu_count() or 1) * 1.5 + 60.0


# --- which mechanism this host offers -------------------------------------------------


@dataclass(frozen=True)
class Controller:
    """One writable cgroup directory that job cgroups are made under."""

    version: int  # 1 or 2
    parent: Path

    def describe(self) -> str:
        return f"cgroup v{self.version}"


@dataclass(frozen=True)
class Defences:
    """Which mechanism enforces each limit on this host; what `/healthz` shows per host."""

    memory: Controller | None = None
    pids: Controller | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, str]:
        return {
            "memory": self.memory.describe() if self.memory else "RLIMIT_AS (not on GPU jobs)",
            "processes": self.pids.describe() if self.pids else "RLIMIT_NPROC (per user)",
            "file_size": "RLIMIT_FSIZE",
            "disk": "watcher",
            "cpu": "RLIMIT_CPU",
        }

    def degraded(self) -> list[str]:
        """The limits held by a weaker fallback than a cgroup."""
        out = []
        if self.memory is None:
            out.append("memory")
        if self.pids is None:
            out.append("processes")
        return out

    def line(self) -> str:
        """The one start-up line: each limit and what enforces it."""
        parts = [f"{k} by {v}" for k, v in self.as_dict().items()]
        text = "limits: " + ", ".join(parts)
        if self.degraded():
            text += f" (no cgroup for {', '.join(self.degraded())}: rlimits instead)"
        return text

    def header(self) -> str:
        """The same, short, for the host's lease request: `memory=cgroup v1;processes=...`."""
        return ";".join(f"{k}={v}" for k, v in self.as_dict().items())


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every cgroup mount."""
    found: list[tuple[str, str, str]] = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) > 4 and len(tail) > 2 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4].replace("\\040", " "), tail[0], tail[2]))
    return found


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    own: dict[str, str] = {}
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return own
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            own[name] = path
    return own


def _try_child(parent: Path, wanted: Sequence[str], version: int) -> bool:
    """Whether a job cgroup with the `wanted` controllers can be made under `parent`."""
    probe = parent / f"{CGROUP_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        if version == 2:
            have = (probe / "cgroup.controllers").read_text().split()
            return all(c in have for c in wanted)
        return all(
            (probe / f"{c}.{'limit_in_bytes' if c == 'memory' else 'max'}").exists() for c in wanted
        )
    except OSError:
        return False
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass


def _split_delegated(parent: Path, name: str) -> bool:
    """Make a delegated cgroup v2 ready for job cgroups; whether it changed anything.

    cgroup v2 lets a cgroup hand a controller to its children only while it
    holds no process itself. A daemon started in a delegated cgroup
    (systemd `Delegate=yes`) moves itself into a leaf, `kohai-host`, and
    enables the controller for the children; job cgroups are then made beside
    that leaf.
    """
    try:
        if name not in (parent / "cgroup.controllers").read_text().split():
            return False
        if name in (parent / "cgroup.subtree_control").read_text().split():
            return False
        leaf = parent / f"{CGROUP_PREFIX}host"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(parent / "cgroup.subtree_control", f"+{name}")
    except OSError:
        return False
    return True


def find_controller(name: str) -> Controller | None:
    """Where job cgroups for controller `name` ("memory" or "pids") can be made, if anywhere."""
    own = _own_cgroups()
    mounts = _mounts()
    for mount, fstype, _ in mounts:  # v2 first: one hierarchy, memory.max and pids.max
        if fstype != "cgroup2" or "" not in own:
            continue
        parent = Path(mount) / own[""].lstrip("/")
        if _try_child(parent, [name], 2) or (
            _split_delegated(parent, name) and _try_child(parent, [name], 2)
        ):
            return Controller(2, parent)
    for mount, fstype, options in mounts:
        if fstype != "cgroup" or name not in options.split(",") or name not in own:
            continue
        parent = Path(mount) / own[name].lstrip("/")
        if _try_child(parent, [name], 1):
            return Controller(1, parent)
    return None


@functools.cache
def probe() -> Defences:
    """What this host can enforce; cached per process (the daemon prints it at start-up).

    Job cgroups left behind by a kohai process that died are removed on the way.
    """
    found = Defences(memory=find_controller("memory"), pids=find_controller("pids"))
    for controller in {c for c in (found.memory, found.pids) if c is not None}:
        remove_stale(controller.parent)
    return found


def remove_stale(parent: Path) -> list[Path]:
    """rmdir the empty `kohai-<pid>-*` cgroups under `parent` whose process is gone."""
    removed = []
    for path in parent.glob(f"{CGROUP_PREFIX}*-*"):
        owner = path.name.removeprefix(CGROUP_PREFIX).split("-", 1)[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        try:
            path.rmdir()  # only an empty cgroup goes: a live job's would refuse
        except OSError:
            continue
        removed.append(path)
    return removed


# --- one bounded process --------------------------------------------------------------


@dataclass
class _Group:
    controller: Controller
    path: Path


@dataclass
class Guard:
    """The limits of one bounded process: `wrap` its argv, `start`, then `close` for the verdict."""

    limits: Limits
    defences: Defences | None = None  # None: what this host offers (`probe()`)
    groups: list[_Group] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exceeded: str | None = None  # set by the disk watcher while the process runs
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` behind the limits: cgroups made and filled in, rlimits on the command line."""
        lim = self.limits
        if self.defences is None:
            self.defences = probe()
        name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"
        rlimits: dict[str, int] = {}
        memory = self._group(self.defences.memory, name) if lim.memory_bytes else None
        if memory is not None and lim.memory_bytes:
            try:
                _set_memory(memory, lim.memory_bytes)
            except OSError as exc:
                self.notes.append(f"memory limit refused by {memory.path}: {exc.strerror}")
                memory = None
        if memory is None and lim.memory_bytes and lim.gpu:
            self.notes.append("memory not limited: no cgroup here, and RLIMIT_AS would break CUDA")
        elif memory is None and lim.memory_bytes:
            rlimits["AS"] = lim.memory_bytes
        pids = self._group(self.defences.pids, name) if lim.processes else None
        if pids is not None and lim.processes:
            try:
                _write(pids.path / "pids.max", str(lim.processes))
            except OSError as exc:
                self.notes.append(f"process limit refused by {pids.path}: {exc.strerror}")
                pids = None
        if pids is None and lim.processes:
            rlimits["NPROC"] = lim.processes + _user_processes()
        if lim.disk_bytes:
            rlimits["FSIZE"] = lim.disk_bytes
        if lim.cpu_s:
            rlimits["CPU"] = int(lim.cpu_s)
        joins = [str(_procs_file(g)) for g in self.groups]
        prefix = [sys.executable, "-I", "-S", str(SCRIPT)]
        for path in joins:
            prefix += ["--join", path]
        for key, value in rlimits.items():
            prefix += ["--rlimit", f"{key}={value}"]
        return [*prefix, "--", *argv]

    def _group(self, controller: Controller | None, name: str) -> _Group | None:
        if controller is None:
            return None
        for group in self.groups:  # v2: one group holds both controllers
            if group.controller == controller:
                return group
        path = controller.parent / name
        try:
            path.mkdir()
        except OSError as exc:
            self.notes.append(f"could not make {path}: {exc.strerror}; rlimits instead")
            return None
        group = _Group(controller, path)
        self.groups.append(group)
        return group

    def start(self) -> None:
        """Start the disk watcher (when there is a disk limit and somewhere to watch)."""
        if self.limits.disk_bytes and self.limits.disk_paths:
            self._watcher = threading.Thread(target=self._watch, name="kohai-disk", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        assert self.limits.disk_bytes is not None
        while not self._stop.wait(DISK_POLL_S):
            used = disk_usage(self.limits.disk_paths)
            if used > self.limits.disk_bytes:
                self.exceeded = (
                    f"{DISK_QUOTA}: the job's files took {_size(used)}, over its "
                    f"{_size(self.limits.disk_bytes)} ([train] disk)"
                )
                return

    def close(self, exit_code: int | None, tail: Sequence[str] = ()) -> str | None:
        """Stop watching, read the counters, remove the cgroups; the limit the run broke, if any."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=DISK_POLL_S * 2)
        verdict = self.exceeded
        for group in self.groups:
            verdict = verdict or _group_verdict(group, self.limits)
        for group in self.groups:
            _remove(group.path)
        return verdict or exit_verdict(exit_code, tail, self.limits)


def _procs_file(group: _Group) -> Path:
    return group.path / "cgroup.procs"


def _write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _set_memory(group: _Group, limit: int) -> None:
    if group.controller.version == 2:
        _write(group.path / "memory.max", str(limit))
        try:
            _write(group.path / "memory.swap.max", "0")
        except OSError:
            pass
        return
    _write(group.path / "memory.limit_in_bytes", str(limit))
    swap = group.path / "memory.memsw.limit_in_bytes"
    if swap.exists():
        try:
            _write(swap, str(limit))
        except OSError:
            pass


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _group_verdict(group: _Group, limits: Limits) -> str | None:
    how = group.controller.describe()
    memory_events = "memory.events" if group.controller.version == 2 else "memory.oom_control"
    if limits.memory_bytes and _counter(group.path / memory_events, "oom_kill") > 0:
        return (
            f"{OUT_OF_MEMORY}: the job passed its {_size(limits.memory_bytes)} "
            f"([train] memory, {how})"
        )
    if limits.processes and _counter(group.path / "pids.events", "max") > 0:
        return (
            f"{TOO_MANY_PROCESSES}: the job tried to pass {limits.processes} processes "
            f"and threads ([train] processes, {how})"
        )
    return None


def _remove(path: Path, wait_s: float = 5.0) -> None:
    """rmdir the cgroup once its last process is gone (the runner has killed them)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                return
            for line in _read_lines(path / "cgroup.procs"):
                try:
                    os.kill(int(line), signal.SIGKILL)
                except (ValueError, ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


_OOM_WORDS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_FORK_WORDS = ("Resource temporarily unavailable", "can't start new thread", "fork failed")
# Python ignores SIGXFSZ: a write past RLIMIT_FSIZE fails with EFBIG instead.
_FSIZE_WORDS = ("File too large", "[Errno 27]")
_NOSPACE_WORDS = ("No space left on device", "[Errno 28]")


def exit_verdict(exit_code: int | None, tail: Sequence[str], limits: Limits) -> str | None:
    """The limit an rlimit stopped (a signal, or the error the rlimit raises), from the exit alone.

    A pure function of how the process ended: SIGXFSZ (or EFBIG, for a
    program that ignores it, as Python does) is the file-size limit, SIGXCPU
    the CPU backstop; a failing exit whose last lines speak of an allocation
    or a fork that failed is the memory or process limit.
    """
    if exit_code is None or exit_code == 0:
        return None
    if limits.disk_bytes and exit_code == -signal.SIGXFSZ:
        return f"{DISK_QUOTA}: a file grew past {_size(limits.disk_bytes)} ([train] disk)"
    if limits.cpu_s and exit_code == -signal.SIGXCPU:
        return f"{CPU_TIME}: the job used {limits.cpu_s:g} s of CPU time, far past its budget"
    text = "\n".join(tail[-20:])
    if limits.disk_bytes and any(w in text for w in _FSIZE_WORDS):
        return f"{DISK_QUOTA}: a file grew past {_size(limits.disk_bytes)} ([train] disk)"
    if limits.disk_bytes and any(w in text for w in _NOSPACE_WORDS):
        return (
            f"{DISK_QUOTA}: no space left on a device (the sandbox's /tmp holds at most "
            f"{_size(limits.disk_bytes)}, [train] disk; or the host's disk is full)"
        )
    if limits.memory_bytes and any(w in text for w in _OOM_WORDS):
        return f"{OUT_OF_MEMORY}: an allocation failed under {_size(limits.memory_bytes)} ([train] memory)"
    if limits.processes and any(w in text for w in _FORK_WORDS):
        return f"{TOO_MANY_PROCESSES}: a fork failed under {limits.processes} ([train] processes)"
    return None


def disk_usage(paths: Sequence[Path], max_entries: int = DISK_MAX_ENTRIES) -> int:
    """Bytes on disk (allocated blocks) of every file under `paths`, links not followed."""
    total, seen = 0, 0
    inodes: set[tuple[int, int]] = set()
    for root in paths:
        for _dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
            for name in filenames + dirnames:
                seen += 1
                if seen > max_entries:
                    return total
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in inodes:
                    inodes.add((st.st_dev, st.st_ino))  # hard links count once
                    total += st.st_blocks * 512
    return total


def _user_processes() -> int:
    """How many processes this user runs now: RLIMIT_NPROC counts them all, not the job's."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _size(n: int) -> str:
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}B"
    return f"{n}B"
