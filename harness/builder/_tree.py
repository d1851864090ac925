"""A stage's filesystem as the builder sees it: in-image paths mapped to stored file digests.

Nothing is unpacked while a build runs: files live once in the content store, a stage is a
mapping, and a layer is the mapping of what one instruction changed.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

__all__ = ["Node", "Tree", "clean_path", "join"]


@dataclass(frozen=True)
class Node:
    """One regular file: its content digest in the store, size and ownership."""

    digest: str
    size: int
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    def owned(self, uid: int | None, gid: int | None, mode: int | None) -> Node:
        return replace(
            self,
            uid=self.uid if uid is None else uid,
            gid=self.gid if gid is None else gid,
            mode=self.mode if mode is None else mode,
        )


def clean_path(path: str) -> str:
    """An in-image path in canonical form: relative to /, no `.` or `..` parts; "" is the root."""
    cleaned = posixpath.normpath("/" + path).lstrip("/")
    return "" if cleaned == "." else cleaned


def join(directory: str, name: str) -> str:
    return clean_path(posixpath.join(directory, name))


class Tree(Mapping[str, Node]):
    """Regular files by canonical path. Directories exist implicitly, as parents of files."""

    def __init__(self, files: Mapping[str, Node] | None = None) -> None:
        self._files: dict[str, Node] = dict(files or {})

    def __getitem__(self, path: str) -> Node:
        return self._files[clean_path(path)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def is_dir(self, path: str) -> bool:
        prefix = clean_path(path)
        if not prefix:
            return True
        prefix += "/"
        return any(name.startswith(prefix) for name in self._files)

    def below(self, path: str) -> dict[str, Node]:
        """Files under a directory, keyed by their path relative to it."""
        prefix = clean_path(path)
        if not prefix:
            return dict(self._files)
        start = prefix + "/"
        return {
            name[len(start) :]: node for name, node in self._files.items() if name.startswith(start)
        }

    def glob(self, pattern: str) -> list[str]:
        """Paths (files and directories) a Docker-style source pattern names, sorted."""
        wanted = clean_path(pattern)
        if not any(ch in wanted for ch in "*?["):
            return [wanted] if wanted in self._files or self.is_dir(wanted) else []
        candidates: set[str] = set()
        depth = wanted.count("/")
        for name in self._files:
            parts = name.split("/")
            if len(parts) > depth:
                candidates.add("/".join(parts[: depth + 1]))
        return sorted(c for c in candidates if fnmatch.fnmatchcase(c, wanted))

    def updated(self, changes: Mapping[str, Node]) -> Tree:
        """A new tree with ``changes`` applied; a file replaces a directory of the same name."""
        files = dict(self._files)
        for path in changes:
            prefix = path + "/"
            for name in [n for n in files if n.startswith(prefix)]:
                del files[name]
        files.update(changes)
        return Tree(files)
