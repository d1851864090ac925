"""Where COPY, ADD, CONVERT and QUANTIZE take files from: a directory or a stage's tree.

Both answer the same question, "which files does this source pattern name?", with files in the
content store, so every step after this point works on digests alone; with ``defer``, a context
file never hashed before is left pending instead, for the pass that writes its layer to hash
(builder/_steps.py: a stage outside the image holds a stand-in digest for it meanwhile).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.builder._layers import Pending
from harness.builder._store import ContentStore, stamp_of
from harness.builder._tree import Node, Tree, clean_path, join
from harness.errors import BuildError, Location
from harness.packerfile import IgnoreMatcher

__all__ = ["DirectorySource", "Match", "Source", "TreeSource", "place"]


@dataclass(frozen=True)
class Match:
    """One thing a pattern named: a file (``files`` has the single key "") or a directory."""

    path: str  # relative to the source's root
    is_dir: bool
    files: dict[str, Node]  # relative to ``path``
    pending: dict[str, Pending] = field(default_factory=dict)  # not hashed yet (``defer``)


class Source(Protocol):
    name: str

    def matches(
        self, pattern: str, exclude: tuple[str, ...], where: Location, *, defer: bool = False
    ) -> list[Match]: ...


def _excluded(relpath: str, exclude: tuple[str, ...]) -> bool:
    name = relpath.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(name, p) for p in exclude)


class TreeSource:
    """An earlier stage or an image: a tree that is already in the store."""

    def __init__(self, name: str, tree: Tree) -> None:
        self.name = name
        self.tree = tree

    def matches(
        self, pattern: str, exclude: tuple[str, ...], where: Location, *, defer: bool = False
    ) -> list[Match]:
        found = []
        for path in self.tree.glob(pattern):
            if path in self.tree:
                found.append(Match(path, False, {"": self.tree[path]}))
            else:
                prefix = f"{path}/" if path else ""
                files = {
                    rel: node
                    for rel, node in self.tree.below(path).items()
                    if not _excluded(prefix + rel, exclude)
                }
                found.append(Match(path, True, files))
        if not found:
            raise BuildError(f"{pattern}: not found in {self.name}", where)
        return found


# Files that hold credentials: a second line of defence behind the contexts' own bounds, since a
# layer, once published, is anyone's.
_SECRET_NAMES = frozenset(
    {".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc", "shadow", "gshadow",
     "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"}
)  # fmt: skip
_SECRET_PATHS = (".docker/config.json", ".aws/credentials", ".kube/config", ".config/gh/hosts.yml")
_PRIVATE_KEY = b"PRIVATE KEY-----"


def _refuse_secret(relpath: str, path: Path, where: Location) -> None:
    name = posixpath.basename(relpath)
    what = None
    if name in _SECRET_NAMES:
        what = f"a credentials file ({name})"
    elif any(relpath == s or relpath.endswith("/" + s) for s in _SECRET_PATHS):
        what = "a credentials file"
    elif path.stat().st_size <= 64 << 10:
        with path.open("rb") as file:
            if _PRIVATE_KEY in file.read(64 << 10):
                what = "a private key"
    if what is not None:
        raise BuildError(
            f"{relpath}: {what}; refusing to put it into an image layer (exclude it with"
            " .ggufpackerignore or COPY --exclude)",
            where,
        )


class DirectorySource:
    """A build context: files enter the store when named, minus the ignore file's patterns."""

    def __init__(
        self, name: str, root: Path, store: ContentStore, ignore: IgnoreMatcher | None
    ) -> None:
        self.name = name
        self.root = root.resolve()
        self.store = store
        self.ignore = ignore

    def _skip(self, relpath: str, exclude: tuple[str, ...]) -> bool:
        if self.ignore is not None and relpath and self.ignore.ignored(relpath):
            return True
        return bool(exclude) and _excluded(relpath, exclude)

    def matches(
        self, pattern: str, exclude: tuple[str, ...], where: Location, *, defer: bool = False
    ) -> list[Match]:
        """The files ``pattern`` names, in the store; with ``defer``, a file never hashed
        before is left pending, for the pass that writes its layer to hash."""
        wanted = clean_path(pattern)
        if any(ch in wanted for ch in "*?["):
            names = sorted(
                str(p.relative_to(self.root)) for p in self.root.glob(wanted) if p.exists()
            )
        else:
            names = [wanted] if (self.root / wanted).exists() or not wanted else []
        found = [
            self._match(name, exclude, where, defer) for name in names if not self._skip(name, ())
        ]
        if not found:
            raise BuildError(f"{pattern}: not found in {self.name} ({self.root})", where)
        return found

    def _match(self, relpath: str, exclude: tuple[str, ...], where: Location, defer: bool) -> Match:
        path = self._inside(relpath, where)
        files: dict[str, Node] = {}
        pending: dict[str, Pending] = {}

        def add(rel: str, full: Path) -> None:
            st = full.stat()
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            if defer and self.store.known_digest(full) is None:
                pending[rel] = Pending(full, stamp_of(full), st.st_size, mode)
            else:
                files[rel] = Node(self.store.put_file(full), st.st_size, mode)

        if path.is_file():
            _refuse_secret(relpath, path, where)
            add("", path)
            return Match(relpath, False, files, pending)
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            base = Path(dirpath)
            dirnames.sort()
            for filename in sorted(filenames):
                full = base / filename
                rel_to_root = str(full.relative_to(self.root))
                if self._skip(rel_to_root, exclude):
                    continue
                self._inside(rel_to_root, where)
                if full.is_file():
                    _refuse_secret(rel_to_root, full, where)
                    add(str(full.relative_to(path)), full)
            dirnames[:] = [
                d for d in dirnames if not self._skip(str((base / d).relative_to(self.root)), ())
            ]
        return Match(relpath, True, files, pending)

    def _inside(self, relpath: str, where: Location) -> Path:
        """The real path of a context file; links that leave the context are refused."""
        path = (self.root / relpath).resolve()
        if path != self.root and self.root not in path.parents:
            raise BuildError(f"{relpath}: points outside {self.name} ({self.root})", where)
        return path


def place(
    matches: list[Match],
    dest: str,
    into_dir: bool,
    parents: bool,
    owner: tuple[int | None, int | None, int | None],
    pending: dict[str, Pending] | None,
) -> dict[str, Node]:
    """Where COPY/ADD puts each matched file (``owner``: uid, gid, mode to set); files not
    hashed yet go to ``pending`` instead."""
    files: dict[str, Node] = {}
    waiting = {} if pending is None else pending
    for match in matches:
        found: list[tuple[str, Node | Pending]] = [*match.files.items()]
        found += match.pending.items()
        for rel, node in found:
            if parents:  # keep the source's own directories below the destination
                path = join(dest, posixpath.join(match.path, rel))
            elif match.is_dir:  # a directory's contents, not the directory itself
                path = join(dest, rel)
            elif into_dir:
                path = join(dest, posixpath.basename(match.path))
            else:
                path = clean_path(dest)
            # A later source wins a path, as in Docker, hashed or not.
            files.pop(path, None)
            waiting.pop(path, None)
            if isinstance(node, Pending):
                waiting[path] = node.owned(*owner)
            else:
                files[path] = node.owned(*owner)
    return files
