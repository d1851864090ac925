"""One pull's staging area: blobs fetched and verified, layers unpacked and checked, all
under ``tmp/`` until ``commit`` renames them into the store (the caller holds the lock).

Before the staging area is made, ``room_needed`` sizes the whole pull (what the store lacks, at
its peak) so that a pull that cannot fit fails at once instead of filling the disk; and
``sweep_staging`` removes what pulls killed earlier left under ``tmp/``, but the resumable
layers (``_resume``: uncompressed tar layers from a registry) this pull is about to fetch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness._fs import sweep_stale
from harness.distribution import ImageSource, open_blob
from harness.errors import DigestError, StoreError
from harness.oci import Descriptor

from ._collect import remove_tree
from ._merge import Placed
from ._resume import Journal, Spot, adopt, resumed_blob, staged_bytes, sweep_resumable
from ._root import StorePaths
from ._unpack import LayerIndex, UnpackLimits, layer_compression, unpack_layer

__all__ = ["Staging", "fetch_small", "fsync_dir", "relocate", "room_needed", "sweep_staging"]

_MAX_CONFIG = 64 << 20


def fetch_small(source: ImageSource, descriptor: Descriptor, name: str) -> bytes:
    """A config blob, into memory: it is read before the disk is checked and staging begins."""
    if descriptor.size > _MAX_CONFIG:
        raise StoreError(f"{name}: config blob of {descriptor.size} bytes is too large")
    out = io.BytesIO()
    source.fetch(descriptor, out)
    return out.getvalue()


def room_needed(
    paths: StorePaths,
    small: Sequence[Descriptor],
    layers: Sequence[Descriptor],
    config: Mapping[str, Any],
) -> int:
    """The most disk a pull takes while it runs: the blobs the store lacks (``small``: the
    manifest, index and config; raw layers) and every tar layer it lacks unpacked (a download
    is unpacked as it comes in: it takes no room of its own).

    A compressed layer's unpacked size is only known once unpacked; the floor taken is its
    compressed size (quantized weights hardly compress), raised to the GGUF bytes a seed
    image's config declares (``config.Size``) when every tar layer is new.
    """
    needed = 0
    seen: set[str] = set()
    for descriptor in small:
        if descriptor.digest not in seen and not paths.blob(descriptor.digest).is_file():
            needed += descriptor.size
        seen.add(descriptor.digest)
    tars: dict[str, Descriptor] = {}
    all_tars = 0
    for descriptor in layers:
        if descriptor.digest in seen:
            continue  # the same layer twice is fetched and unpacked once
        seen.add(descriptor.digest)
        if layer_compression(descriptor.media_type) is None:
            if not paths.blob(descriptor.digest).is_file():
                needed += descriptor.size
            continue
        all_tars += 1
        if not (paths.layer(descriptor.digest) / "index.json").is_file():
            tars[descriptor.digest] = descriptor
            needed -= staged_bytes(paths.tmp, descriptor.digest)  # a killed pull's, resumed
    unpacked = sum(d.size for d in tars.values())
    if tars and len(tars) == all_tars:
        unpacked = max(unpacked, _declared_size(config))
    return needed + unpacked


def sweep_staging(paths: StorePaths, keep: set[str]) -> None:
    """Remove the staging directories of pulls whose process is gone (``tmp/<pid>-<random>``)
    and the resumable layers (``_resume``) no pull holds, but those of ``keep`` (digests: the
    layers this pull will resume); the caller holds the writer lock."""
    sweep_stale(paths.tmp, "", remove_tree)
    sweep_resumable(paths.tmp, keep, remove_tree)


def _declared_size(config: Mapping[str, Any]) -> int:
    inner = config.get("config")
    size = inner.get("Size") if isinstance(inner, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 0


class Staging:
    """Blobs and layers of one pull, in its staging directory until ``commit``."""

    def __init__(
        self,
        paths: StorePaths,
        txn: Path,
        limits: UnpackLimits,
        source: ImageSource,
        say: Callable[[str], None],
        name: str,
    ) -> None:
        self.paths, self.txn, self.limits, self.source, self.say = paths, txn, limits, source, say
        self.name = name
        self.blobs: dict[str, Path] = {}  # digest -> staged file
        self.layers: dict[str, Path] = {}  # digest -> staged layer directory
        self.spots: list[Spot] = []  # resumable layers held by this pull

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
        if local is None and layer_compression(descriptor.media_type) == "none":
            spot = adopt(self.paths.tmp, descriptor.digest)
            if spot is not None:  # else another pull fetches it now: this one on its own
                self.spots.append(spot)
                index = self._resumable(spot, descriptor, diff_id)
                self.layers[descriptor.digest] = spot.layer
                return index, spot.layer / "fs"
        if local is not None:  # unverified: unpack_layer checks its digest as it reads
            index = unpack_layer(local, descriptor, diff_id, staged, self.limits)
        else:
            # Unpacked as it downloads: the model's bytes are written once, never read back;
            # the stream ends only once the download's digest checked.
            self.say(f"fetching {descriptor.digest[:19]} ({descriptor.size} bytes)")
            with open_blob(self.source, descriptor) as stream:
                index = unpack_layer(
                    stream, descriptor, diff_id, staged, self.limits, verify_digest=False
                )
        self.layers[descriptor.digest] = staged
        return index, staged / "fs"

    def _resumable(self, spot: Spot, descriptor: Descriptor, diff_id: str | None) -> LayerIndex:
        """Unpack the layer as it downloads, after what a killed pull left of it (replayed);
        a journal that proves wrong is dropped and the layer fetched again from byte 0."""
        while True:
            journal = Journal(spot, descriptor.size)
            resumed = journal.offset
            if resumed:
                self.say(f"resuming {descriptor.digest[:19]} at byte {resumed}")
            else:
                self.say(f"fetching {descriptor.digest[:19]} ({descriptor.size} bytes)")
            try:
                with resumed_blob(self.source, descriptor, journal) as stream:
                    return unpack_layer(
                        stream, descriptor, diff_id, spot.layer, self.limits,
                        verify_digest=False, journal=journal,
                    )  # fmt: skip
            except (StoreError, DigestError):
                if not resumed:
                    spot.finish()  # a refused layer leaves nothing; a network error keeps it
                    raise
                spot.reset()
                self.say(f"{descriptor.digest[:19]}: the staged part is wrong, again from 0")
            finally:
                journal.close()

    def release(self, *, drop: bool = False) -> None:
        """Let go of the resumable layers: kept for the next pull, unless ``drop`` (the image
        was refused: nothing of it is worth resuming)."""
        for spot in self.spots:
            if drop:
                spot.finish()
            spot.release()

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
        for spot in self.spots:
            spot.finish()  # its layer is in place: the journal goes
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
