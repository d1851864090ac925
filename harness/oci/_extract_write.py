"""Writing an image's files out: one pass over each layer, the bytes checked before they land.

Each layer is read once (``merge_layer``): as its names are checked and merged into the view,
the bytes of the regular files the request may need go into a staging directory beside
``dest``, under names of the harness's own (layer, tar offset), hashed as they are written and,
when the layer is an uncompressed local blob on a reflink filesystem and the member's data is
block-aligned, sharing the blob's blocks instead of copying them. Only after every layer has
passed its digest check is the request resolved in the merged view, its tree checked (links
leaving it, devices, FIFOs) and the staged files renamed into place: anything refused leaves
nothing beside ``dest``. A staged file that a later layer deletes or replaces is dropped as soon
as that layer is merged.

Which members are staged: those at or under the requested path as named, or as it resolves
through the symlinks of the layers below. A request that a symlink of a later layer redirects,
or a hard link to a file outside the request, needs members the pass did not keep: only then
are the layers holding them read a second time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from harness._fs import clone_head, clone_stamp
from harness.errors import Location, OCIError

from ._extract import ImageFile, check_tree, layer_diff_id, merge_layer, resolve, unpacked_mode
from ._layout import Image, check_blob_size
from ._media import layer_compression
from ._tarread import Chunks, iter_layer

__all__ = ["Extracted", "extract", "extract_hashed"]

_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")
_Key = tuple[int, int]  # (layer index, the member's header offset in its tar)


@dataclass(frozen=True)
class Extracted:
    """What ``extract_hashed`` wrote: ``path``, and the sha256 of each regular file under it
    (keyed by its path relative to ``path``; a single file's key is ``""``), computed from the
    bytes as they were read and verified, so nothing needs to read the files again. (Through
    ``extract``, which does not hash them, the digests are empty strings.)"""

    path: Path
    digests: dict[str, str]


def extract(image: Image, in_image_path: str, dest: str | os.PathLike[str]) -> Path:
    """Copy one file, or a directory tree, out of the image to ``dest``; return ``dest``.

    A symlink named by ``in_image_path`` is followed inside the image. A file replaces
    ``dest``; a tree needs ``dest`` absent or empty. Ownership is not restored and modes lose
    their setuid/setgid/sticky bits.
    """
    return _extract(image, in_image_path, Path(dest), hashed=False).path


def extract_hashed(image: Image, in_image_path: str, dest: str | os.PathLike[str]) -> Extracted:
    """``extract``, handing back each written file's sha256."""
    return _extract(image, in_image_path, Path(dest), hashed=True)


def _extract(image: Image, in_image_path: str, target: Path, *, hashed: bool) -> Extracted:
    if not target.parent.is_dir():
        raise OCIError("parent directory does not exist", Location(target))
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        stager = _Stager(image, staging / "members", hashed)
        view = stager.read_all(in_image_path)
        rel = resolve(view, [], in_image_path, 0, in_image_path, follow_last=True)
        if rel and view.get("/".join(rel)) is None:
            raise OCIError(f"{in_image_path!r} is not in the image")
        entry = view.get("/".join(rel)) if rel else None
        if entry is not None and entry.kind != "dir":
            if entry.kind not in ("file", "hardlink"):
                raise OCIError(f"{in_image_path!r} is a {entry.kind}; only files can be extracted")
            return _place_file(stager, entry, target)
        return _place_tree(stager, view, rel, target, staging / "tree")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Stager:
    """Member files written (and hashed) while their layer is read, by (layer, offset)."""

    def __init__(self, image: Image, directory: Path, hashed: bool) -> None:
        directory.mkdir()
        self.hashed = hashed  # a sha256 per file costs as much as the layer's own check
        self.image = image
        self.directory = directory
        self.staged: dict[_Key, tuple[Path, str]] = {}
        self._clone_fd: int | None = None

    def read_all(self, asked: str) -> dict[str, ImageFile]:
        """Every layer read once, into the merged view; the request's members staged."""
        view: dict[str, ImageFile] = {}
        named = posixpath.normpath("/" + asked).lstrip("/")
        for index in range(len(self.image.layers)):
            prefixes = {named}
            with contextlib.suppress(OCIError):  # a bad link is reported after the last layer
                prefixes.add("/".join(resolve(view, [], asked, 0, asked, follow_last=True)))

            def keep(
                member: tarfile.TarInfo,
                rel: str,
                data: Chunks,
                index: int = index,
                prefixes: set[str] = prefixes,
            ) -> None:
                if any(not p or rel == p or rel.startswith(p + "/") for p in prefixes):
                    self._write(index, member, data)

            with self._reading(index) as file:
                merge_layer(self.image, index, view, keep, file)
            used = {(e.layer, e.offset) for e in view.values() if e.kind in ("file", "hardlink")}
            for key in [key for key in self.staged if key not in used]:
                self.staged.pop(key)[0].unlink()
        return view

    def fill(self, keys: set[_Key]) -> None:
        """Stage what the one pass did not keep: the second read, of those layers only."""
        missing = keys - self.staged.keys()
        for index in sorted({layer for layer, _ in missing}):
            descriptor = self.image.layers[index]
            blob = self.image.blob_path(descriptor.digest)
            diff_id = layer_diff_id(self.image, index)
            with self._reading(index) as file:
                for member, data in iter_layer(blob, descriptor, diff_id, file):
                    if (index, member.offset) in missing:
                        self._write(index, member, data)

    @contextlib.contextmanager
    def _reading(self, index: int) -> Iterator[BinaryIO]:
        descriptor = self.image.layers[index]
        blob = self.image.blob_path(descriptor.digest)
        check_blob_size(blob, descriptor)
        with open(blob, "rb") as file:
            local = layer_compression(descriptor.media_type) == "none"
            self._clone_fd = file.fileno() if local else None
            before = clone_stamp(file.fileno())
            yield file
            self._clone_fd = None
            # Cloned blocks are the blob as it was when cloned, the digest is of the bytes as
            # read: the same only if the file did not change in between.
            if clone_stamp(file.fileno()) != before:
                raise OCIError("the blob changed while it was extracted", Location(blob))

    def _write(self, index: int, member: tarfile.TarInfo, data: Chunks) -> None:
        # A name of our own; the member's extension, when a plain one, says what it is.
        suffix = posixpath.splitext(member.name)[1]
        plain = _PLAIN_SUFFIX.fullmatch(suffix) is not None
        path = self.directory / f"{index}-{member.offset}{suffix if plain else ''}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        digest = hashlib.sha256() if self.hashed else None
        with os.fdopen(fd, "wb") as out:
            shared = self._clone(member, fd)
            out.seek(shared)
            done = 0
            for chunk in data():
                # The shared bytes are still read: they feed the layer's digest and the file's.
                if digest is not None:
                    digest.update(chunk)
                if done + len(chunk) > shared:
                    out.write(chunk[max(0, shared - done) :])
                done += len(chunk)
        hexdigest = "" if digest is None else "sha256:" + digest.hexdigest()
        self.staged[(index, member.offset)] = (path, hexdigest)

    def _clone(self, member: tarfile.TarInfo, fd: int) -> int:
        """How many of the member's first bytes now share the layer blob's blocks: its whole
        blocks when its data is block-aligned in an uncompressed local blob (as harness.oci
        writes big files) and the filesystem can, else none (and no further try this layer)."""
        if self._clone_fd is None:
            return 0
        shared = clone_head(self._clone_fd, member.offset_data, member.size, fd)
        if shared is None:
            self._clone_fd = None
        return shared or 0


def _place_file(stager: _Stager, entry: ImageFile, dest: Path) -> Extracted:
    if dest.is_dir() and not dest.is_symlink():
        raise OCIError("is a directory; give the file's own path", Location(dest))
    key = (entry.layer, entry.offset)
    stager.fill({key})
    staged, digest = stager.staged[key]
    os.chmod(staged, unpacked_mode(entry.mode, directory=False))
    os.replace(staged, dest)
    return Extracted(dest, {"": digest})


def _place_tree(
    stager: _Stager, view: dict[str, ImageFile], root: list[str], dest: Path, tree: Path
) -> Extracted:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise OCIError("exists and is not a directory", Location(dest))
    if dest.is_dir() and any(dest.iterdir()):
        raise OCIError("directory is not empty; refusing to extract over it", Location(dest))
    prefix = "/".join(root)
    chosen = [
        (rel[len(prefix) :].lstrip("/"), entry)
        for rel, entry in sorted(view.items())
        if not prefix or rel.startswith(prefix + "/")
    ]
    check_tree(view, root, chosen)
    stager.fill({(e.layer, e.offset) for _, e in chosen if e.kind in ("file", "hardlink")})
    tree.mkdir(mode=0o700)
    digests: dict[str, str] = {}
    placed: dict[_Key, Path] = {}
    for sub, entry in chosen:  # sorted: a directory before what it holds
        if entry.kind == "dir":
            (tree / sub).mkdir(mode=0o700, exist_ok=True)
        elif entry.kind in ("file", "hardlink"):
            key = (entry.layer, entry.offset)
            staged, digests[sub] = stager.staged[key]
            if key in placed:
                _duplicate(placed[key], tree / sub)
            else:
                os.rename(staged, tree / sub)
                placed[key] = tree / sub
    for sub, entry in chosen:
        if entry.kind == "symlink":
            assert entry.link is not None
            os.symlink(entry.link, tree / sub)
        elif entry.kind != "dir":
            os.chmod(tree / sub, unpacked_mode(entry.mode, directory=False))
    for sub, entry in reversed(chosen):  # deepest first: a read-only dir stays writable
        if entry.kind == "dir":
            os.chmod(tree / sub, unpacked_mode(entry.mode, directory=True) | 0o700)
    top = view.get(prefix) if prefix else None
    os.chmod(tree, unpacked_mode(top.mode, directory=True) | 0o700 if top is not None else 0o755)
    if dest.is_dir():
        dest.rmdir()
    os.rename(tree, dest)
    return Extracted(dest, digests)


def _duplicate(first: Path, other: Path) -> None:
    try:
        os.link(first, other)
    except OSError:
        shutil.copyfile(first, other)
