"""Where the harness keeps what it can rebuild, and writes that never leave half a file behind."""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError

__all__ = [
    "CACHE_ENV",
    "CLONE_BLOCK",
    "atomic_write",
    "cache_root",
    "clone_head",
    "clone_range",
    "clone_stamp",
    "display_path",
    "ensure_room",
    "owned_name",
    "remove_tree",
    "staged_output",
    "sweep_stale",
    "try_lock",
]


def display_path(path: Path) -> str:
    """``path`` relative to the working directory: what editors and GitHub resolve (model.yaml
    locations in pytest's and the Action's output)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


#: Root of everything the harness caches (builds, unpacked images, llama.cpp's programs).
CACHE_ENV = "GGUF_HARNESS_CACHE"


def cache_root() -> Path:
    """``$GGUF_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/gguf-harness``, else
    ``~/.cache/gguf-harness``: the one rule, for every cache of the harness."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "gguf-harness")


# FICLONERANGE, _IOW(0x94, 13, struct file_clone_range): Linux's "share these blocks" call, which
# XFS (reflink=1) and btrfs answer by pointing the destination at the source's extents. The
# struct is {s64 src_fd; u64 src_offset; u64 src_length; u64 dest_offset}.
_FICLONERANGE = 0x4020940D
_CLONE_RANGE = struct.Struct("=qQQQ")
# What a filesystem or kernel says when it cannot share these blocks (ext4, tmpfs, another
# filesystem, an unaligned offset, a read-only or append-only file): the caller copies instead.
_CANNOT_CLONE = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EBADF}
    | {errno.EPERM, errno.ETXTBSY, errno.ENOSYS}
)


# Filesystem blocks are 4096 bytes on XFS, btrfs and ext4 as made by default; FICLONERANGE shares
# whole blocks only, so data meant to be shared sits at multiples of this.
CLONE_BLOCK = 4096


def clone_head(src_fd: int, src_offset: int, size: int, dest_fd: int) -> int | None:
    """Make the start of ``dest_fd`` share the whole blocks of the ``size`` bytes at
    ``src_offset`` of ``src_fd`` (a member's data in an uncompressed layer): how many bytes now
    share them, 0 when that data is not block-aligned, None when the filesystem refuses (the
    caller copies, and need not ask again for the same files)."""
    body = size - size % CLONE_BLOCK
    if not body or src_offset % CLONE_BLOCK:
        return 0
    return body if clone_range(src_fd, src_offset, body, dest_fd, 0) else None


def clone_stamp(fd: int) -> tuple[int, int]:
    """Size and mtime of a clone's source: the same before and after its bytes were read for a
    digest, or the shared blocks and the hashed bytes may differ (the caller refuses)."""
    found = os.fstat(fd)
    return found.st_size, found.st_mtime_ns


def clone_range(src_fd: int, src_offset: int, length: int, dest_fd: int, dest_offset: int) -> bool:
    """Make ``length`` bytes of ``dest_fd`` at ``dest_offset`` share the disk blocks of
    ``src_fd`` at ``src_offset`` (a reflink: no data is written, and the bytes are stored once
    until one side is changed). Offsets and ``length`` must be multiples of the filesystem's
    block size; the destination may grow. False when the filesystem cannot (the caller copies
    the bytes instead); any other error is raised."""
    if sys.platform != "linux" or length <= 0:
        return False
    import fcntl

    request = _CLONE_RANGE.pack(src_fd, src_offset, length, dest_offset)
    try:
        fcntl.ioctl(dest_fd, _FICLONERANGE, request)
    except OSError as exc:
        if exc.errno in _CANNOT_CLONE:
            return False
        raise
    return True


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    A reader sees either the old file or the complete new one, also after a crash or kill. The
    file gets ``mode`` (a temporary file is created 0600, which a report or a cache entry that
    others read must not keep).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_room(where: str | os.PathLike[str], needed: int, what: str) -> None:
    """Refuse, before anything is written, to write ``needed`` bytes where there is less free
    space: one line with the figures (needed, free, where)."""
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    if needed > free:
        raise HarnessError(
            f"not enough disk for {what}: {needed} bytes needed, {free} free in {path}"
        )


def owned_name(prefix: str) -> str:
    """``<prefix><pid>-``: the start of a temporary name that ``sweep_stale`` can tell is
    abandoned (its process is gone: killed, or lost with the machine)."""
    return f"{prefix}{os.getpid()}-"


def sweep_stale(
    directory: str | os.PathLike[str],
    prefix: str,
    remove: Callable[[Path], object] | None = None,
) -> int:
    """Remove the entries of ``directory`` named ``<prefix><pid>-...`` whose process no longer
    runs: what a ``kill -9`` left half written. Returns how many went. An entry of a live
    process (this one included), or one whose name carries no pid, is left alone."""
    folder = Path(directory)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            (remove or remove_tree)(entry)
        except FileNotFoundError:
            continue  # another process swept it first
        removed += 1
    return removed


def try_lock(path: Path) -> int | None:
    """Open ``path`` (created if missing) holding its exclusive lock, without waiting: the file
    descriptor, or None when another process holds the lock (or removed the file meanwhile).
    The lock goes with the descriptor: closed, or the process killed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Removed by its holder between our open and our lock: the lock is on a lost file.
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def remove_tree(path: Path) -> None:
    """Delete a file or a directory tree, its read-only parts included (a layer's files keep
    the modes the image gave them, 0555 directories among them)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    os.chmod(path, stat.S_IRWXU)
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            child = os.path.join(root, name)
            if not os.path.islink(child):
                os.chmod(child, stat.S_IRWXU)
    shutil.rmtree(path)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: running
    # A zombie still answers: a killed child whose parent died too waits for a reaper that a
    # container's init may never be.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal's answer stands
    return fields[0] not in ("Z", "X")


@contextmanager
def staged_output(target: Path) -> Iterator[Path]:
    """Yield a fresh path beside ``target`` for a tool to write; on success rename it into place.

    The path is only named, not created: the tool creates it with the usual umask-derived mode
    (a pre-created ``mkstemp`` file would stay 0600, and that mode would travel into images).
    On any exception, Ctrl-C included, the partial file is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{owned_name(f'.{target.name}.')}{secrets.token_hex(8)}.tmp"
    try:
        yield tmp
        with tmp.open("rb") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
