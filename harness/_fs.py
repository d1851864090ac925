"""Where the harness keeps what it can rebuild, and writes that never leave half a file behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import HarnessError

__all__ = ["CACHE_ENV", "atomic_write", "cache_root", "ensure_room"]

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
