"""One pull's staging area: blobs fetched and verified, layers unpacked and checked, all
under ``tmp/`` until ``commit`` renames them into the store (the caller holds the lock)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

from harness.errors import StoreError
from harness.oci import Descriptor

from ._merge import Placed
from ._root import StorePaths
from ._sources import BlobSource
from ._unpack import LayerIndex, UnpackLimits, unpack_layer

__all__ = ["Staging", "fsync_dir", "relocate"]

_MAX_CONFIG = 64 << 20


class Staging:
    """Blobs and layers of one pull, in its staging directory until ``commit``."""

    def __init__(
        self,
        paths: StorePaths,
        txn: Path,
        limits: UnpackLimits,
        source: BlobSource,
        say: Callable[[str], None],
        name: str,
    ) -> None:
        self.paths, self.txn, self.limits, self.source, self.say = paths, txn, limits, source, say
        self.name = name
        self.blobs: dict[str, Path] = {}  # digest -> staged file
        self.layers: dict[str, Path] = {}  # digest -> staged layer directory

    def small_blob(self, descriptor: Descriptor) -> bytes:
        if descriptor.size > _MAX_CONFIG:
            raise StoreError(f"{self.name}: config blob of {descriptor.size} bytes is too large")
        out = io.BytesIO()
        self.source.fetch(descriptor, out)
        return out.getvalue()

    def put_bytes(self, digest: str, data: bytes) -> None:
        if self.paths.blob(digest).exists() or digest in self.blobs:
            return
        path = self.txn / f"blob-{digest[7:]}"
        with open(path, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        self.blobs[digest] = path

    def raw(self, descriptor: Descriptor) -> Path:
        final = self.paths.blob(descriptor.digest)
        if final.is_file():
            return final
        path = self.txn / f"blob-{descriptor.digest[7:]}"
        if descriptor.digest not in self.blobs:
            self.say(f"fetching {descriptor.digest[:19]} ({descriptor.size} bytes)")
            with open(path, "wb") as out:
                self.source.fetch(descriptor, out)
                out.flush()
                os.fsync(out.fileno())
            self.blobs[descriptor.digest] = path
        return path

    def layer(self, descriptor: Descriptor, diff_id: str | None) -> tuple[LayerIndex, Path]:
        final = self.paths.layer(descriptor.digest)
        if (final / "index.json").is_file():
            return LayerIndex.load(final / "index.json"), final / "fs"
        staged = self.txn / f"layer-{descriptor.digest[7:]}"
        if descriptor.digest in self.layers:
            return LayerIndex.load(staged / "index.json"), staged / "fs"
        local = self.source.local(descriptor)
        blob = local or self.txn / f"download-{descriptor.digest[7:]}"
        if local is None:
            self.say(f"fetching {descriptor.digest[:19]} ({descriptor.size} bytes)")
            with open(blob, "wb") as out:
                self.source.fetch(descriptor, out)
        try:
            # A local file is unverified; a download was verified as it came in.
            index = unpack_layer(
                blob, descriptor, diff_id, staged, self.limits, verify_digest=local is not None
            )
        finally:
            if local is None:
                blob.unlink(missing_ok=True)
        self.layers[descriptor.digest] = staged
        return index, staged / "fs"

    def commit(self) -> dict[Path, Path]:
        """Rename staged parts into place (keeping what is already there); returns the
        mapping of staged paths to their final paths."""
        moved: dict[Path, Path] = {}
        for digest, path in self.blobs.items():
            final = self.paths.blob(digest)
            if not final.exists():
                os.chmod(path, 0o444)
                os.rename(path, final)
            moved[path] = final
        for digest, path in self.layers.items():
            final = self.paths.layer(digest)
            if not final.exists():
                os.rename(path, final)
            moved[path / "fs"] = final / "fs"
        fsync_dir(self.paths.blobs)
        fsync_dir(self.paths.layers)
        return moved


def relocate(placed: Placed, moved: dict[Path, Path]) -> Placed:
    if placed.source is None:
        return placed
    for staged, final in moved.items():
        if placed.source == staged or placed.source.is_relative_to(staged):
            source = final / placed.source.relative_to(staged)
            return Placed(placed.path, placed.kind, placed.mode, placed.size, source, None)
    return placed


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
