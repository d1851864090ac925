"""Writing one layer's members to disk, each checked before anything is created.

Names are made relative and refused if absolute or holding ``..``; a member under a symlink or
file of the same layer is refused; files are created with O_EXCL|O_NOFOLLOW inside directories
this code made itself, so nothing is ever written through a link.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness._fs import clone_head
from harness.errors import UnsafeLayerError

from ._resume import Journal

__all__ = ["FsEntry", "TarWriter", "clean_name"]

_CHUNK = 1 << 20
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class FsEntry:
    path: str  # relative to the layer root, no leading slash
    kind: str  # "file", "dir", "symlink" or "hardlink"
    mode: int
    size: int = 0
    target: str | None = None  # symlink: as stored; hardlink: the linked path (relative)


def clean_name(name: str, what: str) -> str:
    """A member name as a relative path, refusing absolute names and ``..``."""
    if name.startswith("/"):
        raise UnsafeLayerError(f"{what}: member {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in name:
        raise UnsafeLayerError(f"{what}: member {name!r} leads out of the model root ('..')")
    return "/".join(parts)


class TarWriter:
    """Writes members under ``root`` and keeps the layer's entry list. ``clone_from``: the
    descriptor of the uncompressed layer file being read, whose blocks a member's file may
    share instead of holding a copy (a reflink filesystem); None when the layer streams."""

    def __init__(
        self,
        root: Path,
        what: str,
        max_entries: int,
        journal: Journal | None = None,
        clone_from: int | None = None,
    ) -> None:
        self.root = root
        self.journal = journal  # a resumable layer's: what the staged files already hold
        self.clone_from = clone_from
        self.what = what
        self.max_entries = max_entries
        self.entries: dict[str, FsEntry] = {}
        self.whiteouts: list[str] = []
        self.opaque: list[str] = []
        self._count = 0

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._count += 1
        if self._count > self.max_entries:
            raise UnsafeLayerError(f"{self.what} has more than {self.max_entries} entries")
        rel = clean_name(member.name, self.what)
        if not rel:
            return
        if member.sparse is not None:
            # Python's reader fills a sparse file's holes with zeros the layer never carried
            # (and with an empty map never finishes): unbounded from a few kilobytes.
            raise UnsafeLayerError(f"{self.what}: {rel!r} is a sparse file: refused")
        parent, _, base = rel.rpartition("/")
        if base == _OPAQUE:
            self.opaque.append(parent)
            return
        if base.startswith(_WHITEOUT):
            gone = base[len(_WHITEOUT) :]
            if gone in ("", ".", ".."):
                raise UnsafeLayerError(f"{self.what}: whiteout {member.name!r} names nothing")
            self.whiteouts.append(f"{parent}/{gone}" if parent else gone)
            return
        self._check_parents(rel, member.name)
        mode = member.mode & 0o7777
        if member.isreg():
            self._file(tar, member, rel)
            self._put(FsEntry(rel, "file", mode, member.size))
        elif member.isdir():
            self._dir(rel)
            self._put(FsEntry(rel, "dir", mode))
        elif member.issym():
            target = member.linkname
            if target.startswith("/"):
                raise UnsafeLayerError(
                    f"{self.what}: symlink {member.name!r} -> {target!r} is absolute: on disk it "
                    "would point outside the model root"
                )
            self._clear(rel)
            os.symlink(target, self.root / rel)
            self._put(FsEntry(rel, "symlink", mode, 0, target))
        elif member.islnk():
            target = clean_name(member.linkname, self.what)
            self._clear(rel)
            source = self.entries.get(target)
            if source is not None and source.kind == "file":
                # Same layer: a real hard link, after which it is just another file.
                os.link(self.root / target, self.root / rel, follow_symlinks=False)
                self._put(FsEntry(rel, "file", source.mode, source.size))
            else:
                # A file of a lower layer (or nothing): resolved when the layers are merged.
                self._put(FsEntry(rel, "hardlink", mode, 0, target))
        elif member.ischr() or member.isblk():
            raise UnsafeLayerError(f"{self.what}: {member.name!r} is a device file")
        elif member.isfifo():
            raise UnsafeLayerError(f"{self.what}: {member.name!r} is a FIFO")
        else:
            raise UnsafeLayerError(
                f"{self.what}: {member.name!r} has unsupported type {member.type!r}"
            )

    def _check_parents(self, rel: str, name: str) -> None:
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            found = self.entries.get("/".join(parts[:depth]))
            if found is not None and found.kind != "dir":
                raise UnsafeLayerError(
                    f"{self.what}: {name!r} lies under {found.path!r}, a {found.kind}: writing it "
                    f"would go through that {found.kind}"
                )

    def _put(self, entry: FsEntry) -> None:
        self.entries.pop(entry.path, None)  # a later member of the same path wins, in order
        self.entries[entry.path] = entry

    def _dir(self, rel: str) -> None:
        path = self.root / rel
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        self._parents(rel)
        path.mkdir(exist_ok=True)

    def _parents(self, rel: str) -> None:
        current = self.root
        for part in rel.split("/")[:-1]:
            current = current / part
            if current.is_symlink():
                raise UnsafeLayerError(f"{self.what}: {rel!r} would be written through a symlink")
            current.mkdir(exist_ok=True)

    def _clear(self, rel: str) -> None:
        self._parents(rel)
        path = self.root / rel
        if path.is_dir() and not path.is_symlink():
            _remove_tree(path)
            for key in [k for k in self.entries if k.startswith(rel + "/")]:
                del self.entries[key]
        elif path.is_symlink() or path.exists():
            path.unlink()

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str) -> None:
        path = self.root / rel
        # Straight from the layer's stream (tarfile's file object for this member would
        # copy every piece twice more): the reader is at the member's data.
        source = tar.fileobj
        assert source is not None
        source.seek(member.offset_data)
        journal = self.journal
        covered = journal.begin_file(rel, member.offset_data, member.size) if journal else 0
        if covered:
            # Written by a killed pull: its bytes (replayed from this very file) only go by,
            # and the rest is appended; nothing is written through a link.
            self._parents(rel)
            source.seek(member.offset_data + covered)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            os.fchmod(fd, 0o600)
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            os.ftruncate(fd, covered)
            os.lseek(fd, covered, os.SEEK_SET)
        else:
            self._clear(rel)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            # A resumed file (a stream, never a local layer) shares no blocks.
            shared = 0 if covered else self._clone(member, fd)
            if shared:
                out.seek(shared)
            left = member.size - covered
            while left:
                chunk = source.read(min(_CHUNK, left))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                # The shared bytes are still read: they feed the layer's digest check.
                done = member.size - left
                if done + len(chunk) > shared:
                    out.write(chunk[max(0, shared - done) :])
                left -= len(chunk)
                if journal is not None:
                    journal.wrote(out)
            out.flush()
            os.fsync(out.fileno())
        # Read-only: the file is hard-linked into every model that uses it.
        os.chmod(path, (member.mode & 0o555) | 0o444)

    def _clone(self, member: tarfile.TarInfo, fd: int) -> int:
        """How many of the member's first bytes now share the layer file's blocks: its whole
        blocks when its data is block-aligned in the layer (as harness.oci writes big files)
        and the filesystem can, else none (and no further try for this layer)."""
        if self.clone_from is None:
            return 0
        shared = clone_head(self.clone_from, member.offset_data, member.size, fd)
        if shared is None:
            self.clone_from = None
        return shared or 0


def _remove_tree(path: Path) -> None:
    for child in path.rglob("*"):
        if child.is_dir() and not child.is_symlink():
            child.chmod(stat.S_IRWXU)
    shutil.rmtree(path)
