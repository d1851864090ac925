"""A stage as the build goes: its files, layers, history and config, and how an instruction's
arguments name things in it (paths, --chmod, --chown)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.builder._store import ContentStore
from harness.builder._tree import Node, Tree
from harness.errors import BuildError, Location
from harness.oci import HISTORY_COMMENT, Descriptor

__all__ = [
    "BaseLayer",
    "Change",
    "History",
    "StageState",
    "chmod_bits",
    "directory_files",
    "file_node",
    "listing",
    "owner_ids",
]


@dataclass(frozen=True)
class Change:
    """The files one instruction wrote: one layer."""

    created_by: str
    files: dict[str, Node]


@dataclass(frozen=True)
class BaseLayer:
    """A layer taken as-is from a base image."""

    descriptor: Descriptor
    diff_id: str
    blob: Path


@dataclass(frozen=True)
class History:
    """One history entry, final: ours say ``... # buildkit`` like the seed's frontend."""

    created_by: str
    empty_layer: bool
    comment: str = HISTORY_COMMENT
    created: str | None = None  # a base image's entry keeps its date; ours get the build's


@dataclass
class StageState:
    tree: Tree = field(default_factory=Tree)
    layers: list[Change | BaseLayer] = field(default_factory=list)
    history: list[History] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    cmd: tuple[str, ...] | None = None
    base_name: str | None = None
    base_digest: str | None = None

    def copy(self) -> StageState:
        return StageState(
            self.tree,
            list(self.layers),
            list(self.history),
            dict(self.labels),
            self.cmd,
            self.base_name,
            self.base_digest,
        )


def directory_files(tree: Tree, path: str, where: Location) -> dict[str, Node]:
    files = tree.below(path)
    if not files:
        raise BuildError(f"{path}: no such directory in the source of this step", where)
    return files


def file_node(tree: Tree, path: str, where: Location) -> Node:
    try:
        return tree[path]
    except KeyError:
        raise BuildError(f"{path}: no such file in the source of this step", where) from None


def listing(files: Mapping[str, Node]) -> list[tuple[str, str]]:
    return sorted((rel, node.digest) for rel, node in files.items())


def chmod_bits(chmod: str | None, where: Location) -> int | None:
    if chmod is None:
        return None
    # Octal digits only: int() would also take "-1" or "0o7", and masking 17777 to 7777 would
    # hide the mistake.
    if not (chmod and set(chmod) <= set("01234567") and int(chmod, 8) <= 0o7777):
        raise BuildError(f"--chmod={chmod}: expected an octal mode such as 644", where)
    return int(chmod, 8)


def owner_ids(
    chown: str | None, tree: Tree, store: ContentStore, where: Location
) -> tuple[int | None, int | None]:
    """--chown=USER[:GROUP] by number, or by name through the stage's /etc/passwd and group."""
    if chown is None:
        return None, None
    user, _, group = chown.partition(":")
    uid = _id(user, "etc/passwd", tree, store, where)
    gid = _id(group, "etc/group", tree, store, where) if group else uid
    return uid, gid


def _id(name: str, table: str, tree: Tree, store: ContentStore, where: Location) -> int:
    if name.isdigit():
        return int(name)
    if table in tree:
        for line in store.path(tree[table].digest).read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
    raise BuildError(f"--chown: no {name!r} in the stage's /{table}", where)
