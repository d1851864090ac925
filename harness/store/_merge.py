"""Merge an image's layers into one model directory made of hard links.

The plan is computed from the layers' entry lists before anything is written: later layers win,
whiteouts and opaque directories delete, and every symlink is resolved through the merged tree
(following other symlinks) and refused if it leads above the model root. Building the directory
then only creates directories, hard links and the checked symlinks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UnsafeLayerError

from ._unpack import FsEntry, LayerIndex, clean_name

__all__ = ["Placed", "RawFile", "build_model", "plan_model"]

_MAX_HOPS = 40


@dataclass(frozen=True)
class RawFile:
    """A raw (non-tar) layer that is one file of the model: a ModelPack or Docker GGUF."""

    path: str  # in-model path, relative
    blob: Path
    size: int
    mode: int = 0o444


@dataclass(frozen=True)
class Placed:
    """One path of the merged model."""

    path: str
    kind: str  # "file", "dir" or "symlink"
    mode: int
    size: int
    source: Path | None  # a file's bytes: the layer file or blob to hard-link
    target: str | None  # a symlink's target


LayerSource = tuple[LayerIndex, Path] | RawFile  # (index, its fs/ root) or a raw blob


def plan_model(layers: Sequence[LayerSource], what: str) -> dict[str, Placed]:
    """The merged tree, keyed by relative path, sorted; UnsafeLayerError if any link escapes."""
    view: dict[str, Placed] = {}
    for layer in layers:
        if isinstance(layer, RawFile):
            rel = clean_name(layer.path, what)
            if not rel:
                raise UnsafeLayerError(f"{what}: a layer's file path {layer.path!r} is empty")
            _place(view, Placed(rel, "file", layer.mode, layer.size, layer.blob, None), what)
            continue
        index, fs_root = layer
        for directory in index.opaque:
            _remove_under(view, directory)
        for gone in index.whiteouts:
            view.pop(gone, None)
            _remove_under(view, gone)
        for entry in index.entries:
            _place(view, _placed(entry, fs_root, view, what), what)
    for placed in view.values():
        if placed.kind == "symlink":
            assert placed.target is not None
            parent = placed.path.split("/")[:-1]
            _resolve(view, parent, placed.target, placed.path, what, 0)
    return {path: view[path] for path in sorted(view)}


def build_model(plan: dict[str, Placed], dest: Path) -> None:
    """Create the planned tree at ``dest`` (which must not exist)."""
    dest.mkdir()
    for rel, placed in plan.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if placed.kind == "dir":
            path.mkdir(exist_ok=True)
        elif placed.kind == "symlink":
            assert placed.target is not None
            os.symlink(placed.target, path)
        else:
            assert placed.source is not None
            os.link(placed.source, path, follow_symlinks=False)


def _placed(entry: FsEntry, fs_root: Path, view: dict[str, Placed], what: str) -> Placed:
    if entry.kind == "file":
        return Placed(entry.path, "file", entry.mode, entry.size, fs_root / entry.path, None)
    if entry.kind == "dir":
        return Placed(entry.path, "dir", entry.mode, 0, None, None)
    if entry.kind == "symlink":
        return Placed(entry.path, "symlink", entry.mode, 0, None, entry.target)
    # A hard link to a lower layer's file: the same bytes under a second name.
    target = view.get(entry.target or "")
    if target is None or target.kind != "file":
        raise UnsafeLayerError(
            f"{what}: hard link {entry.path!r} points to {entry.target!r}, "
            "which is not an earlier regular file"
        )
    return Placed(entry.path, "file", target.mode, target.size, target.source, None)


def _place(view: dict[str, Placed], placed: Placed, what: str) -> None:
    parts = placed.path.split("/")
    for depth in range(1, len(parts)):
        ancestor = "/".join(parts[:depth])
        found = view.get(ancestor)
        if found is None:
            view[ancestor] = Placed(ancestor, "dir", 0o755, 0, None, None)
        elif found.kind != "dir":
            raise UnsafeLayerError(
                f"{what}: {placed.path!r} lies under {ancestor!r}, which is a {found.kind}: "
                f"writing it would go through that {found.kind}"
            )
    current = view.get(placed.path)
    if current is not None and current.kind == "dir" and placed.kind != "dir":
        _remove_under(view, placed.path)
    view[placed.path] = placed


def _remove_under(view: dict[str, Placed], rel: str) -> None:
    prefix = rel + "/" if rel else ""
    for key in [key for key in view if key.startswith(prefix)]:
        del view[key]


def _resolve(
    view: dict[str, Placed], start: list[str], target: str, link: str, what: str, hops: int
) -> list[str]:
    """Resolve ``target`` from directory ``start`` through the merged tree; refuse any step
    above the root (a lexical check alone misses ``a -> .`` followed by ``a/..``)."""
    if target.startswith("/"):
        raise UnsafeLayerError(f"{what}: symlink {link!r} -> {target!r} is absolute")
    stack = list(start)
    parts = [part for part in target.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            if not stack:
                raise UnsafeLayerError(
                    f"{what}: symlink {link!r} -> {target!r} leads out of the model root"
                )
            stack.pop()
            continue
        stack.append(part)
        found = view.get("/".join(stack))
        if found is None or found.kind != "symlink":
            continue
        if hops >= _MAX_HOPS:
            raise UnsafeLayerError(f"{what}: symlink {link!r}: too many levels of links")
        assert found.target is not None
        stack = _resolve(view, stack[:-1], found.target, link, what, hops + 1)
    return stack
