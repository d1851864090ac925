"""The files an image holds (its layers merged, whiteouts applied) and safe extraction of them.

A layer is a tar from anyone; extraction treats every name and link as hostile. Nothing is
written until the whole request has been checked: ``..`` and absolute member names, paths under
a symlink, links whose targets leave the extracted tree, device files and FIFOs are refused
with an OCIError, and the bytes are written into a staging area that is renamed into place only
after every layer read for the request has passed its digest check.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import Location, OCIError

from ._layout import Image
from ._tarread import iter_layer

__all__ = ["ImageFile", "extract", "files"]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MAX_HOPS = 40  # Linux's limit on symlinks followed while resolving one path


@dataclass(frozen=True)
class ImageFile:
    """One path in the merged filesystem of an image."""

    path: str  # absolute in-image path, e.g. "/app/model.gguf"
    kind: str  # "file", "dir", "symlink", "hardlink", "device" or "fifo"
    size: int  # bytes of content (a hard link: its target's)
    mode: int
    uid: int
    gid: int
    mtime: int
    link: str | None  # symlink target as stored; hard link target as an in-image path
    # Index in Image.layers of the member holding the bytes (a hard link: its target's); -1 for
    # a directory no tar lists but a path below it implies.
    layer: int
    offset: int  # that member's header offset in the uncompressed layer tar


def files(image: Image) -> dict[str, ImageFile]:
    """Every path in the image, sorted: later layers win, whiteouts and opaque dirs applied.

    Reads (and verifies) every layer. Names that are absolute or hold ``..``, and paths that
    lie under a non-directory, are refused: no runtime could apply such a layer safely.
    """
    view: dict[str, ImageFile] = {}
    for index in range(len(image.layers)):
        _merge_layer(image, index, view)
    return {"/" + rel: view[rel] for rel in sorted(view)}


def extract(image: Image, in_image_path: str, dest: str | os.PathLike[str]) -> Path:
    """Copy one file, or a directory tree, out of the image to ``dest``; return ``dest``.

    A symlink named by ``in_image_path`` is followed inside the image. A file replaces
    ``dest``; a tree needs ``dest`` absent or empty. Ownership is not restored and modes lose
    their setuid/setgid/sticky bits.
    """
    view = {path[1:]: entry for path, entry in files(image).items()}
    rel = _resolve(view, [], in_image_path, 0, in_image_path, follow_last=True)
    target = Path(dest)
    if rel and view.get("/".join(rel)) is None:
        raise OCIError(f"{in_image_path!r} is not in the image")
    entry = view.get("/".join(rel)) if rel else None
    if entry is not None and entry.kind != "dir":
        if entry.kind not in ("file", "hardlink"):
            raise OCIError(f"{in_image_path!r} is a {entry.kind}; only files can be extracted")
        _extract_file(image, entry, target)
    else:
        _extract_tree(image, view, rel, target)
    return target


def _merge_layer(image: Image, index: int, view: dict[str, ImageFile]) -> None:
    descriptor = image.layers[index]
    blob = image.blob_path(descriptor.digest)
    diff_ids = image.diff_ids
    diff_id = diff_ids[index] if len(diff_ids) == len(image.layers) else None
    entries: list[ImageFile] = []
    deleted: list[str] = []
    opaque: list[str] = []
    own: dict[str, ImageFile] = {}  # this layer's files, for its hard links
    for member, _data in iter_layer(blob, descriptor, diff_id):
        rel = _member_name(member.name, member.offset, blob)
        if not rel:
            continue  # the root directory itself ("./")
        parent, _, base = rel.rpartition("/")
        if base == _OPAQUE:
            opaque.append(parent)
        elif base.startswith(_WHITEOUT):
            gone = base[len(_WHITEOUT) :]
            if gone in ("", ".", ".."):
                raise _bad_member(f"whiteout {member.name!r} names nothing", member, blob)
            deleted.append(f"{parent}/{gone}" if parent else gone)
        else:
            entry = _entry(member, rel, index, own, view, blob)
            entries.append(entry)
            if entry.kind in ("file", "hardlink"):
                own[rel] = entry
    # Whiteouts hide what lower layers hold; this layer's own entries then go on top.
    for directory in opaque:
        _remove_under(view, directory)
    for rel in deleted:
        view.pop(rel, None)
        _remove_under(view, rel)
    for entry in entries:
        _place(view, entry, blob)


def _member_name(name: str, offset: int, blob: Path, what: str = "member") -> str:
    if name.startswith("/"):
        raise OCIError(f"{what} {name!r} (tar byte {offset}) is absolute", Location(blob))
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts or "\0" in name:
        raise OCIError(f"{what} {name!r} (tar byte {offset}) escapes the root", Location(blob))
    return "/".join(parts)


def _bad_member(message: str, member: tarfile.TarInfo, blob: Path) -> OCIError:
    return OCIError(f"{message} (tar byte {member.offset})", Location(blob))


def _entry(
    member: tarfile.TarInfo,
    rel: str,
    index: int,
    own: dict[str, ImageFile],
    view: dict[str, ImageFile],
    blob: Path,
) -> ImageFile:
    kind, link = _kind(member), None
    size, layer, offset = member.size, index, member.offset
    if kind == "symlink":
        link = member.linkname
    elif kind == "hardlink":
        target = _member_name(member.linkname, member.offset, blob, "hard link target")
        source = own.get(target) or view.get(target)
        if source is None or source.kind not in ("file", "hardlink"):
            raise OCIError(
                f"hard link {member.name!r} (tar byte {member.offset}) points to "
                f"{member.linkname!r}, which is not an earlier regular file",
                Location(blob),
            )
        link, size, layer, offset = "/" + target, source.size, source.layer, source.offset
    elif kind == "other":
        raise OCIError(
            f"member {member.name!r} (tar byte {member.offset}) has "
            f"unsupported type {member.type!r}",
            Location(blob),
        )
    return ImageFile(
        "/" + rel, kind, size, member.mode, member.uid, member.gid, int(member.mtime), link,
        layer, offset,
    )  # fmt: skip


def _kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return "other"


def _place(view: dict[str, ImageFile], entry: ImageFile, blob: Path) -> None:
    rel = entry.path[1:]
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        ancestor = "/".join(parts[:depth])
        found = view.get(ancestor)
        if found is None:
            # Tars may omit parent directories; a runtime creates them.
            view[ancestor] = ImageFile("/" + ancestor, "dir", 0, 0o755, 0, 0, 0, None, -1, -1)
        elif found.kind != "dir":
            raise OCIError(
                f"{entry.path!r} lies under {found.path!r}, which is a "
                f"{found.kind}; writing it would go through that {found.kind}",
                Location(blob),
            )
    current = view.get(rel)
    if current is not None and current.kind == "dir" and entry.kind != "dir":
        _remove_under(view, rel)
    view[rel] = entry


def _remove_under(view: dict[str, ImageFile], rel: str) -> None:
    prefix = rel + "/" if rel else ""
    for key in [key for key in view if key.startswith(prefix)]:
        del view[key]


# Resolution is done here rather than with posixpath.normpath, which ignores symlinks: a link
# to "." followed by ".." is exactly the escape a lexical check misses.
def _resolve(
    view: dict[str, ImageFile],
    start: list[str],
    path: str,
    floor: int,
    asked: str,
    *,
    follow_last: bool,
    on_disk_root_is_image_root: bool = True,
    hops: int = 0,
) -> list[str]:
    """Resolve ``path`` from directory ``start`` in the image, following symlinks.

    ``floor`` is how many leading components must stay: going above it by ``..`` means leaving
    the tree being extracted. Absolute links are followed from the image root while resolving
    a path the caller names, and refused when checking links that will exist on disk.
    """
    if path.startswith("/"):
        if not on_disk_root_is_image_root:
            # On disk an absolute target would name the host's file, not the image's.
            raise OCIError(f"{asked!r}: absolute link {path!r} leaves the extracted tree")
        stack: list[str] = []
    else:
        stack = list(start)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for number, part in enumerate(parts, start=1):
        if part == "..":
            if len(stack) <= floor:
                where = "the image root" if floor == 0 else "the extracted tree"
                raise OCIError(f"{asked!r}: link target {path!r} leads above {where}")
            stack.pop()
            continue
        stack.append(part)
        entry = view.get("/".join(stack))
        if entry is None or entry.kind != "symlink" or (number == len(parts) and not follow_last):
            continue
        if hops >= _MAX_HOPS:
            raise OCIError(f"{asked!r}: too many levels of symbolic links")
        assert entry.link is not None
        stack = _resolve(
            view,
            stack[:-1],
            entry.link,
            floor,
            asked,
            follow_last=True,
            on_disk_root_is_image_root=on_disk_root_is_image_root,
            hops=hops + 1,
        )
    return stack


def unpacked_mode(mode: int, *, directory: bool) -> int:
    """The permission bits an unpacked entry gets, as a container runtime would give them: no
    setuid or setgid, no world-write, except that a sticky directory (``/tmp``'s 01777) keeps its
    bit and the world-write the bit makes safe."""
    if directory and mode & 0o1000:
        return mode & 0o1777
    return mode & 0o775


def _extract_file(image: Image, entry: ImageFile, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        raise OCIError("is a directory; give the file's own path", Location(dest))
    if not dest.parent.is_dir():
        raise OCIError("parent directory does not exist", Location(dest))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_members(image, {(entry.layer, entry.offset): [tmp]})
        os.chmod(tmp, unpacked_mode(entry.mode, directory=False))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _extract_tree(image: Image, view: dict[str, ImageFile], root: list[str], dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise OCIError("exists and is not a directory", Location(dest))
    if dest.is_dir() and any(dest.iterdir()):
        raise OCIError("directory is not empty; refusing to extract over it", Location(dest))
    if not dest.parent.is_dir():
        raise OCIError("parent directory does not exist", Location(dest))
    prefix = "/".join(root)
    chosen = [
        (rel[len(prefix) :].lstrip("/"), entry)
        for rel, entry in sorted(view.items())
        if not prefix or rel.startswith(prefix + "/")
    ]
    _check_tree(view, root, chosen)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        wanted: dict[tuple[int, int], list[Path]] = {}
        for sub, entry in chosen:
            if entry.kind in ("file", "hardlink"):
                wanted.setdefault((entry.layer, entry.offset), []).append(staging / sub)
            elif entry.kind == "dir":
                (staging / sub).mkdir(mode=0o700, exist_ok=True)
        _write_members(image, wanted)
        for sub, entry in chosen:
            if entry.kind == "symlink":
                assert entry.link is not None
                os.symlink(entry.link, staging / sub)
            elif entry.kind != "dir":
                os.chmod(staging / sub, unpacked_mode(entry.mode, directory=False))
        for sub, entry in reversed(chosen):  # deepest first: a read-only dir stays writable
            if entry.kind == "dir":
                os.chmod(staging / sub, unpacked_mode(entry.mode, directory=True) | 0o700)
        top = view.get(prefix) if prefix else None
        os.chmod(
            staging, unpacked_mode(top.mode, directory=True) | 0o700 if top is not None else 0o755
        )
        if dest.is_dir():
            dest.rmdir()
        os.rename(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _check_tree(
    view: dict[str, ImageFile], root: list[str], chosen: list[tuple[str, ImageFile]]
) -> None:
    for _sub, entry in chosen:
        if entry.kind in ("device", "fifo"):
            raise OCIError(f"{entry.path!r} is a {entry.kind}; refusing to create it")
        if entry.kind == "symlink":
            assert entry.link is not None
            parent = entry.path[1:].split("/")[:-1]
            _resolve(
                view,
                parent,
                entry.link,
                len(root),
                entry.path,
                follow_last=True,
                on_disk_root_is_image_root=False,
            )


def _write_members(image: Image, wanted: dict[tuple[int, int], list[Path]]) -> None:
    """Write each wanted member's bytes to its first path, then link or copy to the rest."""
    layers = sorted({layer for layer, _ in wanted})
    diff_ids = image.diff_ids
    for index in layers:
        descriptor = image.layers[index]
        diff_id = diff_ids[index] if len(diff_ids) == len(image.layers) else None
        blob = image.blob_path(descriptor.digest)
        for member, data in iter_layer(blob, descriptor, diff_id):
            paths = wanted.get((index, member.offset))
            if not paths:
                continue
            with open(paths[0], "wb") as out:
                for chunk in data():
                    out.write(chunk)
            _duplicate(paths[0], paths[1:])


def _duplicate(first: Path, others: Iterable[Path]) -> None:
    for other in others:
        try:
            os.link(first, other)
        except OSError:
            shutil.copyfile(first, other)
