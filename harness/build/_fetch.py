"""ADD's remote sources: files over HTTP(S) and git repositories (Git LFS files included).

Downloads resume where an earlier, interrupted one stopped (a ``.part`` file and a Range
request), and a ``--checksum`` is verified before the file is used. A git repository is cloned
with the system's git; with git-lfs installed, LFS files arrive as their real content, which the
seed could only do with a forked BuildKit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness.build._errors import BuildError
from harness.errors import Location

__all__ = ["download", "git_clone", "is_git_url", "is_http_url", "url_basename"]

_CHUNK = 1 << 20
_ALGORITHMS = {"sha256", "sha384", "sha512"}

Progress = Callable[[int, int | None], None]


def is_http_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def is_git_url(text: str) -> bool:
    """Docker's rule: a git@ or git:// address, or an http(s) URL whose path ends in .git."""
    if text.startswith(("git@", "git://")):
        return True
    if is_http_url(text):
        path = urllib.parse.urlsplit(text).path
        return path.endswith(".git")
    return False


def url_basename(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name or "index.html"


def _parse_checksum(checksum: str, where: Location) -> tuple[str, str]:
    algorithm, _, value = checksum.partition(":")
    if algorithm not in _ALGORITHMS or not value:
        raise BuildError(f"--checksum={checksum}: expected sha256:, sha384: or sha512:HEX", where)
    return algorithm, value.lower()


def download(
    url: str,
    dest: Path,
    *,
    checksum: str | None,
    where: Location,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> None:
    """Fetch ``url`` into ``dest`` (resuming ``dest.part``), verifying ``checksum`` if given."""
    expected = _parse_checksum(checksum, where) if checksum else None
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            total = _total(response.headers.get("Content-Length"), have if resumed else 0)
            with open(part, "ab" if resumed else "wb") as out:
                done = have if resumed else 0
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file is already whole
            pass
        else:
            raise BuildError(f"{url}: HTTP {error.code} {error.reason}", where) from None
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise BuildError(f"{url}: download failed ({reason}); rerun to resume", where) from None
    if expected is not None:
        algorithm, value = expected
        actual = _hash_file(part, algorithm)
        if actual != value:
            part.unlink()
            raise BuildError(
                f"{url}: checksum mismatch: expected {algorithm}:{value}, got {algorithm}:{actual}",
                where,
            )
    os.replace(part, dest)


def _total(length: str | None, offset: int) -> int | None:
    return int(length) + offset if length and length.isdigit() else None


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_clone(url: str, dest: Path, *, keep_git_dir: bool, where: Location) -> str:
    """Clone ``url`` (``URL#REF`` picks a branch, tag or commit) into ``dest``; return the
    commit. LFS files are fetched when git-lfs is installed, and left as pointers otherwise."""
    if shutil.which("git") is None:
        raise BuildError(f"{url}: ADD of a git repository needs git installed", where)
    address, _, ref = url.partition("#")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "0"}
    clone = ["git", "clone", "--quiet", "--no-tags"]
    if not ref:
        clone += ["--depth", "1"]
    _git([*clone, address, str(dest)], env, url, where)
    if ref:
        _git(["git", "-C", str(dest), "checkout", "--quiet", ref], env, url, where)
    if shutil.which("git-lfs") is not None:
        _git(["git", "-C", str(dest), "lfs", "pull"], env, url, where)
    commit = _git(["git", "-C", str(dest), "rev-parse", "HEAD"], env, url, where).strip()
    if not keep_git_dir:
        shutil.rmtree(dest / ".git")
    return commit


def _git(args: list[str], env: dict[str, str], url: str, where: Location) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BuildError(f"{url}: {' '.join(args[:4])} failed: {' '.join(tail)}", where)
    return done.stdout
