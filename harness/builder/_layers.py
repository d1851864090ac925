"""A filesystem step's layer: written once per (format, mtime, files), kept in the store.

A layer is recorded under a key of its files' digests, so a rebuild reuses it without reading
a byte. A file the build has not hashed yet (a context file seen for the first time, a CONVERT
or QUANTIZE output) gets its digest from the very pass that writes it into the layer: a
multi-GB model is read once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness._fs import ensure_room
from harness.builder._cache import step_key
from harness.builder._store import ContentStore
from harness.builder._tree import Node
from harness.oci import (
    COMPRESSIONS,
    TAR_LAYOUT,
    Descriptor,
    Layer,
    LayerEntry,
    default_mtime,
    layer_bound,
    write_layer,
)

__all__ = ["Layers", "Pending"]

# Quantized weights barely compress (benchmarks/layer_compression.py: 0.94 at any gzip level),
# so gzip's fastest level costs nothing in size; zstd-3 is as small and 6x faster to write.
_LEVELS: dict[str, int | None] = {"gzip": 1, "zstd": 3, "none": None}


@dataclass(frozen=True)
class Pending:
    """A file outside the store, not hashed yet: ``stamp`` is its identity when it was named."""

    path: Path
    stamp: list[object]
    size: int
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    output: bool = False  # a step's output in scratch: moved into the store, not remembered

    def owned(self, uid: int | None, gid: int | None, mode: int | None) -> Pending:
        return Pending(
            self.path,
            self.stamp,
            self.size,
            self.mode if mode is None else mode,
            self.uid if uid is None else uid,
            self.gid if gid is None else gid,
            self.output,
        )


class Layers:
    def __init__(self, store: ContentStore, compression: str) -> None:
        self.store = store
        self.compression = compression
        self.mtime = default_mtime()

    def layer(self, files: Mapping[str, Node]) -> tuple[Layer, Path]:
        """The layer of ``files``: the recorded one, else written now."""
        known = self._known(files)
        if known is not None:
            return known
        self.write(files, {})
        found = self._known(files)
        assert found is not None  # write() records it
        return found

    def write(self, files: Mapping[str, Node], pending: Mapping[str, Pending]) -> dict[str, Node]:
        """Write the layer of ``files`` and ``pending``, hashing each pending file on the way
        in; return every file as a stored node (the layer recorded under their digests)."""
        entries = [
            LayerEntry(path, self.store.path(n.digest), n.mode, n.uid, n.gid)
            for path, n in files.items()
        ] + [
            LayerEntry(path, p.path, p.mode, p.uid, p.gid, hash_source=True)
            for path, p in pending.items()
        ]
        # A full disk found before the first byte, with the figures, not mid-write.
        ensure_room(self.store.root, layer_bound(entries), "the layer")
        scratch = self.store.scratch()
        try:
            tmp = scratch / "layer"
            with open(tmp, "wb") as out:
                level = _LEVELS[self.compression]
                stats = write_layer(entries, out, self.compression, level, self.mtime)
            # The digest as written: the layer is never read back (one pass over the bytes).
            digest = self.store.adopt(tmp, stats.digest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        nodes = dict(files)
        for path, p in pending.items():
            if p.output:
                self.store.adopt(p.path, stats.sources[path])
            else:
                self.store.put_hashed(p.path, p.stamp, stats.sources[path])
            nodes[path] = Node(stats.sources[path], p.size, p.mode, p.uid, p.gid)
        record = {
            "digest": digest,
            "size": stats.size,
            "diff_id": stats.diff_id,
            "tar_size": stats.tar_size,
            "media_type": COMPRESSIONS[self.compression],
        }
        where = self._record(nodes)
        where.parent.mkdir(exist_ok=True)
        where.write_text(json.dumps(record))
        return nodes

    def _record(self, files: Mapping[str, Node]) -> Path:
        listing = sorted((path, n.digest, n.mode, n.uid, n.gid) for path, n in files.items())
        key = step_key("layer", TAR_LAYOUT, self.compression, self.mtime, listing)
        return self.store.root / "layers" / f"{key}.json"

    def _known(self, files: Mapping[str, Node]) -> tuple[Layer, Path] | None:
        try:
            known = json.loads(self._record(files).read_text())
            blob = self.store.path(known["digest"])
            if blob.is_file():
                descriptor = Descriptor(known["media_type"], known["digest"], known["size"])
                return Layer(descriptor, known["diff_id"], known["tar_size"]), blob
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None
