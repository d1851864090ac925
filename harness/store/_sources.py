"""Where a model's blobs come from when it enters the store: a registry or an OCI layout."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Protocol

from harness.distribution import RegistryClient
from harness.errors import StoreError
from harness.oci import Descriptor

__all__ = ["BlobSource", "LayoutSource", "RegistrySource"]

_CHUNK = 1 << 20


class BlobSource(Protocol):
    verifies: bool  # fetch checks size and digest itself

    def local(self, descriptor: Descriptor) -> Path | None:
        """A file on this machine holding the blob (unverified), if there is one."""

    def fetch(self, descriptor: Descriptor, out: BinaryIO) -> None:
        """Write the blob's bytes to ``out``."""


class RegistrySource:
    verifies = True

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self._client = client
        self._repository = repository

    def local(self, descriptor: Descriptor) -> Path | None:
        return None

    def fetch(self, descriptor: Descriptor, out: BinaryIO) -> None:
        self._client.fetch_blob(self._repository, descriptor, out)


class LayoutSource:
    verifies = True

    def __init__(self, root: Path) -> None:
        self._root = root

    def local(self, descriptor: Descriptor) -> Path | None:
        algorithm, hex_digest = descriptor.digest.split(":", 1)
        path = self._root / "blobs" / algorithm / hex_digest
        return path if path.is_file() else None

    def fetch(self, descriptor: Descriptor, out: BinaryIO) -> None:
        path = self.local(descriptor)
        if path is None:
            raise StoreError(f"blob {descriptor.digest} is missing from the layout {self._root}")
        digest = hashlib.new(descriptor.digest.split(":", 1)[0])
        size = 0
        with open(path, "rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        actual = f"{digest.name}:{digest.hexdigest()}"
        if actual != descriptor.digest or size != descriptor.size:
            raise StoreError(f"blob {descriptor.digest} in {self._root} hashes to {actual}")
