"""The step cache: an instruction's outputs, keyed by everything that decides them.

The key is the expanded instruction, the digests of its inputs and the identity of the tools
that run it (this harness and the pinned llama.cpp), so a cache hit is exact: an unchanged
rebuild runs no download, conversion or quantization, and a changed input never reuses a stale
output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness import __version__
from harness._fs import atomic_write
from harness.builder._store import ContentStore
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
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Node] | None:
        if self.disabled:
            self.misses += 1
            return None
        try:
            raw = json.loads((self._dir / f"{key}.json").read_text())
            files = {path: Node(*fields) for path, fields in raw.items()}
        except (OSError, ValueError, TypeError):
            self.misses += 1
            return None
        if not all(self.store.has(node.digest) for node in files.values()):
            self.misses += 1
            return None
        self.hits += 1
        return files

    def put(self, key: str, files: dict[str, Node]) -> None:
        raw = {path: [n.digest, n.size, n.mode, n.uid, n.gid] for path, n in files.items()}
        atomic_write(self._dir / f"{key}.json", json.dumps(raw, sort_keys=True).encode())

    def path(self, key: str) -> Path:
        return self._dir / f"{key}.json"
