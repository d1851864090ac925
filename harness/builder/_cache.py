"""The step cache: an instruction's outputs, keyed by everything that decides them.

The key is the expanded instruction, the digests of its inputs and the identity of the tools
that run it (this harness and the pinned llama.cpp), so a cache hit is exact: an unchanged
rebuild runs no download, conversion or quantization, and a changed input never reuses a stale
output.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from harness import __version__
from harness._fs import atomic_write
from harness.builder._store import ContentStore, stamp_of
from harness.builder._tree import Node

__all__ = ["StepCache", "step_key"]


def step_key(*parts: Any) -> str:
    text = json.dumps([__version__, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StepCache:
    def __init__(self, store: ContentStore, *, disabled: bool = False) -> None:
        self.store = store
        self.disabled = disabled
        self._dir = store.root / "steps"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._outputs = store.root / "outputs"
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Node] | None:
        files = None if self.disabled else self._read(key)
        if files is None or not all(self.store.has(node.digest) for node in files.values()):
            self.misses += 1
            return None
        self.hits += 1
        return files

    def _read(self, key: str) -> dict[str, Node] | None:
        try:
            raw = json.loads(self.path(key).read_text())
            if isinstance(raw, list):
                output = self._output(key, raw)
                return None if output is None else {"": output}
            return {path: Node(*fields) for path, fields in raw.items()}
        except (OSError, ValueError, TypeError):
            return None

    def put(self, key: str, files: dict[str, Node]) -> None:
        raw = {path: [n.digest, n.size, n.mode, n.uid, n.gid] for path, n in files.items()}
        atomic_write(self._dir / f"{key}.json", json.dumps(raw, sort_keys=True).encode())

    def put_output(self, key: str, out: Path) -> Node:
        """A step's output in a stage outside the image, kept under this key without reading
        it: it stands in (the store's ``unhashed``) until the image's layer pass hashes it or
        a step needs its digest, so a model is read once. The entry is made now, so a build
        that fails later keeps the step."""
        self._outputs.mkdir(exist_ok=True)
        kept = self._outputs / f"{key}.gguf"
        os.replace(out, kept)
        stamp, size = stamp_of(kept), kept.stat().st_size
        atomic_write(self.path(key), json.dumps(["unhashed", kept.name, stamp, size]).encode())
        return Node(self.store.unhashed(kept, stamp), size)

    def _output(self, key: str, raw: list[object]) -> Node | None:
        """A kept output: a stand-in while nothing has hashed it; once something has (a build
        that wrote its layer, or a step that needed it), an ordinary entry of its digest."""
        _kind, name, stamp, size = raw
        kept = self._outputs / str(name)
        if not isinstance(stamp, list) or not isinstance(size, int) or stamp_of(kept) != stamp:
            return None
        digest = self.store.known_digest(kept)
        if digest is None:
            return Node(self.store.unhashed(kept, stamp), size)
        node = Node(digest, size)
        self.put(key, {"": node})
        self.store.forget(kept, digest)
        return node

    def path(self, key: str) -> Path:
        return self._dir / f"{key}.json"
