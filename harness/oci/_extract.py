"""The files an image holds: its layers merged, whiteouts applied, every name checked.

A layer is a tar from anyone: ``..`` and absolute member names, paths under a non-directory and
hard links to anything but an earlier file are refused with an OCIError as the layer is read.
The checks on what extraction would create (links leaving the tree, devices) are here too;
writing files out is ``_extract_write``.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from harness.errors import Location, OCIError

from ._layout import Image
from ._tarread import Chunks, iter_layer

__all__ = ["ImageFile", "Keep", "check_tree", "files", "merge_layer", "resolve", "unpacked_mode"]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MAX_HOPS = 40  # Linux's limit on symlinks followed while resolving one path


#: Given each regular file's member as a layer is read: the member, its in-image path (relative)
#: and its bytes, to be read before the next member.
Keep = Callable[[tarfile.TarInfo, str, Chunks], None]


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
        merge_layer(image, index, view)
    return {"/" + rel: view[rel] for rel in sorted(view)}


def merge_layer(
    image: Image,
    index: int,
    view: dict[str, ImageFile],
    keep: Keep | None = None,
    file: BinaryIO | None = None,
) -> None:
    """Read layer ``index`` once (verifying it) and apply it to ``view``. ``keep`` is handed
    each regular file's member, in-image path and bytes as they go by, after its name passed
    the checks; ``file``: the blob, opened by the caller (who may share its blocks)."""
    descriptor = image.layers[index]
    blob = image.blob_path(descriptor.digest)
    entries: list[ImageFile] = []
    deleted: list[str] = []
    opaque: list[str] = []
    own: dict[str, ImageFile] = {}  # this layer's files, for its hard links
    for member, data in iter_layer(blob, descriptor, layer_diff_id(image, index), file):
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
            if keep is not None and entry.kind == "file":
                keep(member, rel, data)
    # Whiteouts hide what lower layers hold; this layer's own entries then go on top.
    for directory in opaque:
        remove_under(view, directory)
    for rel in deleted:
        view.pop(rel, None)
        remove_under(view, rel)
    for entry in entries:
        _place(view, entry, blob)


def layer_diff_id(image: Image, index: int) -> str | None:
    diff_ids = image.diff_ids
    return diff_ids[index] if len(diff_ids) == len(image.layers) else None


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
        remove_under(view, rel)
    view[rel] = entry


def remove_under(view: dict[str, ImageFile], rel: str) -> None:
    prefix = rel + "/" if rel else ""
    for key in [key for key in view if key.startswith(prefix)]:
        del view[key]


# Resolution is done here rather than with posixpath.normpath, which ignores symlinks: a link
# to "." followed by ".." is exactly the escape a lexical check misses.
def resolve(
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
        stack = resolve(
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


def check_tree(
    view: dict[str, ImageFile], root: list[str], chosen: list[tuple[str, ImageFile]]
) -> None:
    for _sub, entry in chosen:
        if entry.kind in ("device", "fifo"):
            raise OCIError(f"{entry.path!r} is a {entry.kind}; refusing to create it")
        if entry.kind == "symlink":
            assert entry.link is not None
            parent = entry.path[1:].split("/")[:-1]
            resolve(
                view,
                parent,
                entry.link,
                len(root),
                entry.path,
                follow_last=True,
                on_disk_root_is_image_root=False,
            )
