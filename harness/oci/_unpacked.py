"""An image's files on this host: one directory per manifest digest, filled once.

Every stage that needs an image's files as files — the checks' GGUF facts and memory estimate,
the smoke server, publishing to other formats — takes them from here, so an image is unpacked
once per machine whichever stage asks first, and a file the builder already holds is hard-linked
from its store rather than copied out of a layer again.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from harness._fs import cache_root, ensure_room, owned_name, sweep_stale
from harness.errors import OCIError

from ._extract_write import extract
from ._layout import Image

__all__ = ["in_image_relative", "is_unpacked", "unpack", "unpack_root"]

# Beside a digest's directory, never inside it: the directory holds the image's tree and nothing
# else, so that a consumer walking it (publish) sees only the image's files.
_WHOLE = ".whole"
_STAGING = ".unpack-"


def in_image_relative(path: str) -> str:
    """``path`` as written in an image's Cmd, relative to the image root: images carry no
    WorkingDir, so a relative path is relative to ``/`` (as in the seed). ``""`` is the root."""
    return posixpath.normpath(posixpath.join("/", path)).lstrip("/")


def unpack_root(digest: str, base: Path | None = None) -> Path:
    """The directory an image's files are unpacked into: ``base/<digest>``, by default under
    the harness cache (``images/``)."""
    home = base if base is not None else cache_root() / "images"
    return home / digest.replace(":", "-")


def is_unpacked(digest: str, base: Path | None = None) -> bool:
    """Whether the whole tree of the image with manifest ``digest`` is unpacked already."""
    root = unpack_root(digest, base)
    return root.with_name(root.name + _WHOLE).is_file() and root.is_dir()


def unpack(
    image: Image,
    paths: Iterable[str] | None = None,
    *,
    have: Mapping[str, Path] | None = None,
    base: Path | None = None,
) -> Path:
    """Make each in-image path of ``paths`` a file at ``root/<path>`` (``None``: the image's whole
    tree) and return ``root``. ``have`` maps in-image paths to host files already holding their
    bytes (the builder's store): those are hard-linked, not extracted. Each file appears
    atomically, from a staging directory beside ``root`` that a killed run leaves for the next
    to sweep; a path that names no regular file in the image is an OCIError."""
    root = unpack_root(image.descriptor.digest, base)
    root.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(root.parent, _STAGING)
    if not is_unpacked(image.descriptor.digest, base):
        # A full disk is found before the first byte, with the figures, not mid-write.
        ensure_room(root.parent, _bound(image), f"unpacking {image.root}")
    if paths is None:
        _unpack_whole(image, root)
        return root
    wanted = list(dict.fromkeys(paths))
    for path in wanted:
        if in_image_relative(path) in ("", ".", ".."):
            raise OCIError(f"{path!r} names no file in the image")
    missing = [p for p in wanted if not (root / in_image_relative(p)).is_file()]
    if len(missing) > 1 and not root.exists() and not have:
        # One pass over the layers for the whole tree (the seed's flattened layers dir) costs
        # less than a pass per file; an image whose tree cannot be written safely (device
        # files, links leaving it) is taken file by file instead.
        with contextlib.suppress(OCIError):
            _unpack_whole(image, root)
    for path in missing:
        target = root / in_image_relative(path)
        if target.is_file():
            continue
        with _staging(root) as staging:
            staged = staging / "file"
            stored = (have or {}).get(path)
            if stored is None or not _linked(stored, staged):
                extract(image, "/" + in_image_relative(path), staged)
            if not staged.is_file():
                raise OCIError(f"{path!r} in the image is not a file")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
    return root


def _unpack_whole(image: Image, root: Path) -> None:
    if is_unpacked(image.descriptor.digest, root.parent):
        return
    marker = root.with_name(root.name + _WHOLE)
    with _staging(root) as staging:
        tree = staging / "tree"
        extract(image, "/", tree)
        # Files unpacked one by one earlier are the same bytes: the whole tree replaces them.
        if root.exists():
            os.rename(root, staging / "old")
        os.rename(tree, root)
        marker.touch()


def _bound(image: Image) -> int:
    """At most what unpacking writes: the layers (model weights hardly compress), or the GGUF
    bytes a seed config declares if more; files already in place are not subtracted."""
    layers = sum(d.size for d in image.layers)
    inner = image.config.get("config")
    declared = inner.get("Size") if isinstance(inner, Mapping) else None
    size = declared if isinstance(declared, int) and not isinstance(declared, bool) else 0
    return max(layers, size)


@contextlib.contextmanager
def _staging(root: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix=owned_name(_STAGING), dir=root.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _linked(stored: Path, target: Path) -> bool:
    try:
        os.link(stored, target)
    except OSError:
        return False
    return True
