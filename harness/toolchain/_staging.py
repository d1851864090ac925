"""Outputs that appear complete or not at all."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["staged_output"]


@contextmanager
def staged_output(target: Path) -> Iterator[Path]:
    """Yield a fresh path beside ``target`` for a tool to write; on success rename it into place.

    The path is only named, not created: the tool creates it with the usual umask-derived mode
    (a pre-created ``mkstemp`` file would stay 0600, and that mode would travel into images).
    On any exception, Ctrl-C included, the partial file is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        yield tmp
        with tmp.open("rb") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
