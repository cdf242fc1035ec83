"""Opening a file the job controls without letting the job steer the harness.

Training code can replace any file it may write (the metrics file, an
artefact, a file of its checkout) by a FIFO, a socket, a device or a symlink
to a host file. A plain `open()` would then block forever (a FIFO without a
writer), read without end (`/dev/zero`) or copy a host file into the result.
So every read of such a file goes through here:

- `lstat` first: only a regular file is opened; anything else is a
  `NotRegular` finding with the path and its kind, never read;
- then `open(O_NOFOLLOW | O_NONBLOCK)`, and `fstat` on the descriptor must
  show the same regular file (a swap between the two calls is a finding too);
- with `root`, every directory on the way is opened the same way relative to
  the previous one, so a directory swapped for a symlink cannot lead outside;
- every read has a byte cap, so a file the size of a disk costs no more than
  the cap.

Standard library only: it runs on GPU hosts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
CHUNK = 1 << 20


class NotRegular(OSError):
    """A path the harness will not read: not a regular file, or swapped while being opened."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(f"{path} is a {kind}, not a regular file: not read")
        self.path = str(path)
        self.kind = kind


def kind_of(mode: int) -> str:
    """A human word for a file type: the finding names what was planted."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _open_dir_beneath(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of root/parts[0]/..., each step without following a symlink."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise NotRegular(root.joinpath(*parts), "path that leaves its root")
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    raise NotRegular(root.joinpath(*parts), kind_of(st.st_mode)) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(
    path: str | Path, *, dir_fd: int | None = None, root: Path | None = None
) -> tuple[int, os.stat_result]:
    """(descriptor, fstat) of a regular file; NotRegular for anything else, never opened.

    `dir_fd`: `path` is a name relative to that directory. `root`: `path` lies
    under `root` and no directory between them may be a symlink.
    FileNotFoundError passes through (a missing file is not a finding).
    """
    name: str | Path = path
    parent_fd = dir_fd
    own_parent = False
    if root is not None:
        rel = Path(path).relative_to(root)
        parent_fd = _open_dir_beneath(Path(root), rel.parts[:-1])
        own_parent = True
        name = rel.parts[-1]
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(path, kind_of(st.st_mode))
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotRegular(path, "symlink") from None
            raise
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise NotRegular(path, f"{kind_of(fst.st_mode)} swapped in while opening")
        return fd, fst
    finally:
        if own_parent and parent_fd is not None:
            os.close(parent_fd)


@contextmanager
def opened(
    path: str | Path, *, dir_fd: int | None = None, root: Path | None = None
) -> Iterator[tuple[int, os.stat_result]]:
    fd, st = open_regular(path, dir_fd=dir_fd, root=root)
    try:
        yield fd, st
    finally:
        os.close(fd)


def _read_at(fd: int, offset: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = os.pread(fd, min(CHUNK, limit - got), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_capped(path: str | Path, max_bytes: int, *, root: Path | None = None) -> bytes:
    """At most the first `max_bytes` of a regular file (NotRegular / OSError otherwise)."""
    with opened(path, root=root) as (fd, _):
        return _read_at(fd, 0, max_bytes)


def read_tail(path: str | Path, max_bytes: int, *, root: Path | None = None) -> bytes:
    """At most the last `max_bytes` of a regular file: where a log's last lines are."""
    with opened(path, root=root) as (fd, st):
        start = max(0, st.st_size - max_bytes)
        return _read_at(fd, start, max_bytes)


def read_from(
    path: str | Path, offset: int, max_bytes: int, *, root: Path | None = None
) -> tuple[bytes, int]:
    """(at most `max_bytes` from `offset`, the file's size now): for following a growing file."""
    with opened(path, root=root) as (fd, st):
        if st.st_size <= offset:
            return b"", st.st_size
        return _read_at(fd, offset, max_bytes), st.st_size


def sha256(path: str | Path) -> str:
    """sha256 of a whole regular file (NotRegular otherwise), read in chunks."""
    digest = hashlib.sha256()
    with opened(path) as (fd, _):
        offset = 0
        while chunk := os.pread(fd, CHUNK, offset):
            digest.update(chunk)
            offset += len(chunk)
    return digest.hexdigest()


@dataclass
class HashBudget:
    """What one snapshot may spend on hashing: bytes per file, and in all."""

    file_cap: int
    total_cap: int
    spent: int = 0


def fingerprint(name: str, dir_fd: int, st: os.stat_result, budget: HashBudget) -> str:
    """sha256 of a regular file within the budget; else its size, mtime, ctime and inode.

    The choice depends on the file's size alone (never on timing), so the
    same file gets the same kind of record before and after a run. ctime
    cannot be set from user space: a rewrite in place changes it even when
    the size and mtime are forged back.
    """
    if st.st_size > budget.file_cap or budget.spent + st.st_size > budget.total_cap:
        return f"stat:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    budget.spent += st.st_size
    digest = hashlib.sha256()
    with opened(name, dir_fd=dir_fd) as (fd, fst):
        offset = 0
        while offset < budget.file_cap:
            chunk = os.pread(fd, min(CHUNK, budget.file_cap - offset), offset)
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
        if offset >= budget.file_cap and os.pread(fd, 1, offset):
            return f"stat:{fst.st_size}:{fst.st_mtime_ns}:{fst.st_ctime_ns}:{fst.st_ino}"
    return digest.hexdigest()
