"""Upload sessions that outlive a process: one small JSON file per (registry, repository, blob).

An upload of a blob larger than one chunk writes, after each chunk the registry acknowledged,
where its session stands: the upload URL (with the registry's state token) and the offset. The
next push of the same blob to the same repository asks the registry about that session first
and goes on from the offset the registry reports; the file goes once the blob is committed.

A journal names a session, it does not vouch for it: the registry's answer decides where an
upload resumes, and a registry that no longer knows the session (distribution 2.x cancels one
whose last chunk was cut off: a ``kill -9`` mid-chunk) gets a fresh one from byte 0. A file
that names another registry, repository or blob, points elsewhere than the registry, or does
not parse is ignored with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from harness._fs import atomic_write, cache_root

__all__ = ["Session", "forget", "load", "save"]

_STALE_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Session:
    """An open upload: ``location`` is the registry's upload URL as it last answered."""

    registry: str  # host[:port], as in image references
    repository: str
    digest: str
    size: int
    location: str
    offset: int  # bytes the registry acknowledged


def journal_path(registry: str, repository: str, digest: str) -> Path:
    key = hashlib.sha256(f"{registry}\n{repository}\n{digest}".encode()).hexdigest()
    return cache_root() / "uploads" / f"{digest.rsplit(':', 1)[-1][:16]}-{key[:16]}.json"


def save(session: Session) -> None:
    """Write ``session``'s file; a cache that cannot be written costs a resume, not the push.
    A new upload's first save also removes the files of uploads a week old."""
    data = json.dumps(session.__dict__, indent=1).encode()
    path = journal_path(session.registry, session.repository, session.digest)
    if not path.exists():
        _sweep(path.parent)
    with contextlib.suppress(OSError):
        atomic_write(path, data, 0o600)  # 0600: an upload URL may carry more than a state token


def _sweep(directory: Path) -> None:
    """Journals of pushes never run again would stay for good: a registry forgets a session a
    week old anyway (distribution's uploadpurging default, 168 h), so their files go too."""
    now = time.time()
    with contextlib.suppress(OSError):
        for path in directory.glob("*.json"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _STALE_S:
                    path.unlink()


def forget(registry: str, repository: str, digest: str) -> None:
    with contextlib.suppress(OSError):
        journal_path(registry, repository, digest).unlink(missing_ok=True)


def load(registry: str, repository: str, digest: str, size: int) -> tuple[Session | None, str]:
    """The journaled session of this blob, or None and why not ("" when there is no file)."""
    path = journal_path(registry, repository, digest)
    try:
        data = json.loads(path.read_bytes())
        session = Session(**data)
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError, TypeError) as error:
        return None, f"ignored the unreadable upload journal {path} ({type(error).__name__})"
    fields = (session.registry, session.repository, session.digest, session.size)
    if fields != (registry, repository, digest, size) or not _ours(session.location, registry):
        return None, f"ignored the upload journal {path}: it names another upload"
    if not isinstance(session.offset, int) or not 0 <= session.offset <= size:
        return None, f"ignored the upload journal {path}: offset {session.offset!r}"
    return session, ""


def _ours(location: object, registry: str) -> bool:
    """An upload URL on the registry's own host, or relative to it: an edited journal cannot send
    a blob anywhere else."""
    if not isinstance(location, str) or not location:
        return False
    parts = urllib.parse.urlsplit(location)
    return not parts.netloc or parts.netloc == registry
