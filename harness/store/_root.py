"""Where the store lives, how its parts are laid out, its lock, and its list of references.

::

    $GGUF_HARNESS_STORE (default $XDG_DATA_HOME/gguf-harness, else ~/.local/share/gguf-harness)
      refs.json               reference -> manifest digest; rewritten atomically, the commit point
      lock                    flock: one writer at a time (pull's commit, remove, collect)
      blobs/sha256/<hex>      manifests, indexes, configs, and raw (non-tar) layers such as a
                              ModelPack or Docker Model Runner GGUF: each stored once, read-only
      layers/sha256/<hex>/    one tar layer unpacked (fs/) with its entry list (index.json)
      models/<manifest hex>/  the image's files merged: hard links into layers/ and blobs/, so a
                              GGUF is on disk once and llama.cpp opens it in place
      tmp/<pid>-<random>/     a pull in progress; swept when its process is gone

Nothing outside ``tmp/`` is written except by rename, and ``refs.json`` is renamed last: a kill
at any moment leaves either the old state or the new one, plus unreferenced files that
``Store.collect`` removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness._fs import atomic_write
from harness.errors import StoreError

__all__ = ["RefEntry", "StorePaths", "read_refs", "store_root", "write_refs"]

_FORMAT = 1


def store_root(env: Mapping[str, str] | None = None) -> Path:
    """``$GGUF_HARNESS_STORE``, else ``$XDG_DATA_HOME/gguf-harness``, else
    ``~/.local/share/gguf-harness``."""
    environ = os.environ if env is None else env
    explicit = environ.get("GGUF_HARNESS_STORE")
    if explicit:
        return Path(explicit).expanduser()
    data = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "gguf-harness"


@dataclass(frozen=True)
class StorePaths:
    root: Path

    @property
    def refs(self) -> Path:
        return self.root / "refs.json"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def layers(self) -> Path:
        return self.root / "layers" / "sha256"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def blob(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def layer(self, digest: str) -> Path:
        return self.layers / _hex(digest)

    def model(self, manifest_digest: str) -> Path:
        return self.models / _hex(manifest_digest)

    def create(self) -> None:
        for folder in (self.blobs, self.layers, self.models, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's writer lock (blocking)."""
        self.create()
        with open(self.root / "lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class RefEntry:
    """What a reference points at in the store."""

    manifest: str  # digest of the image manifest (the model directory's name)
    index: str | None  # digest of the index it was chosen from, kept for re-verification
    added: str  # RFC 3339 time of the pull or import

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"manifest": self.manifest}
        if self.index:
            value["index"] = self.index
        value["added"] = self.added
        return value


def read_refs(paths: StorePaths) -> dict[str, RefEntry]:
    try:
        text = paths.refs.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StoreError(f"cannot read the store's reference list: {exc.strerror}") from None
    try:
        data = json.loads(text)
        refs = data["refs"]
        return {
            str(name): RefEntry(str(v["manifest"]), v.get("index"), str(v.get("added", "")))
            for name, v in refs.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StoreError(f"{paths.refs} is corrupt; remove it to start an empty store") from None


def write_refs(paths: StorePaths, refs: Mapping[str, RefEntry]) -> None:
    document = {
        "format": _FORMAT,
        "refs": {name: refs[name].to_json() for name in sorted(refs)},
    }
    atomic_write(paths.refs, (json.dumps(document, indent=1) + "\n").encode())


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise StoreError(f"{digest!r} is not a sha256 digest")
    return value
