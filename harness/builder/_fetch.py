"""ADD's remote sources: files over HTTP(S) and git repositories (Git LFS files included).

Downloads resume where an earlier, interrupted one stopped (a ``.part`` file and a Range
request), and a ``--checksum`` is verified before the file is used. A git repository is cloned
with the system's git; with git-lfs installed, LFS files arrive as their real content, which the
seed could only do with a forked BuildKit.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness.errors import BuildError, Location

__all__ = ["download", "git_clone", "url_basename"]

_CHUNK = 1 << 20
# Requests per download before an interrupted one is left for the next build to resume.
_ATTEMPTS = 3
_ALGORITHMS = {"sha256", "sha384", "sha512"}

Progress = Callable[[int, int | None], None]


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
) -> str | None:
    """Fetch ``url`` into ``dest`` (resuming ``dest.part``), verifying ``checksum`` if given;
    returns the file's ``sha256:`` digest when the checksum verified one (no second hashing).

    A response that ends before its Content-Length is resumed with a Range request, a few times;
    if it still falls short, the ``.part`` file stays for the next try to resume.
    """
    expected = _parse_checksum(checksum, where) if checksum else None
    part = dest.with_name(dest.name + ".part")
    done, total, broken = 0, None, False
    for _attempt in range(_ATTEMPTS):
        before = part.stat().st_size if part.exists() else 0
        done, total, broken = _fetch(url, part, before, where, progress, timeout)
        if total is None or done >= total or done <= before:
            break
    if (total is not None and done < total) or (total is None and broken):
        of = f" of {total}" if total is not None else ""
        raise BuildError(
            f"{url}: download interrupted after {done}{of} bytes; rerun to resume", where
        )
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
    return f"sha256:{expected[1]}" if expected is not None and expected[0] == "sha256" else None


def _fetch(
    url: str, part: Path, have: int, where: Location, progress: Progress | None, timeout: float
) -> tuple[int, int | None, bool]:
    """One request for what ``part`` lacks: (bytes in ``part``, expected total, whether the
    connection broke before the body ended)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file is already whole
            return have, None, False
        raise BuildError(f"{url}: HTTP {error.code} {error.reason}", where) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", error)
        raise BuildError(f"{url}: download failed ({reason}); rerun to resume", where) from None
    broken = False
    with response:
        resumed = have > 0 and response.status == 206
        done = have if resumed else 0
        total = _total(response.headers.get("Content-Length"), done)
        with open(part, "ab" if resumed else "wb") as out:
            while not broken:
                try:
                    chunk = response.read(_CHUNK)
                except http.client.IncompleteRead as error:
                    chunk, broken = error.partial, True
                except (http.client.HTTPException, OSError):
                    chunk, broken = b"", True
                if not chunk:
                    break
                # what arrived is kept, also from a broken read: the caller resumes from there
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    return done, total, broken


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
    clone = ["git", "clone", "--quiet"]
    if ref:  # the whole history, tags included, so that REF may be a branch, tag or commit
        _git([*clone, address, str(dest)], env, url, where)
    else:
        try:
            _git([*clone, "--no-tags", "--depth", "1", address, str(dest)], env, url, where)
        except BuildError as error:
            if "does not support shallow" not in str(error):  # dumb HTTP: no shallow clones
                raise
            shutil.rmtree(dest, ignore_errors=True)
            _git([*clone, "--no-tags", address, str(dest)], env, url, where)
    if ref:
        _git(["git", "-C", str(dest), "checkout", "--quiet", ref], env, url, where)
    if shutil.which("git-lfs") is not None:
        # The filters in the clone's own config: `git lfs pull` skips the checkout where git-lfs
        # was never `git lfs install`ed for the user or system, leaving pointer files behind.
        _git(["git", "-C", str(dest), "lfs", "install", "--local", "--skip-repo"], env, url, where)
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
